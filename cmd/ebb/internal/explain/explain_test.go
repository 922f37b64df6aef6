package explain_test

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/explain"
)

// squash folds runs of white space so wrapped output can be compared with
// the registry's one-line texts.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestParseCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    closecode.Code
		wantErr string
	}{
		{in: "1013", want: 1013},
		{in: "0", want: 0},
		{in: "65535", want: 65535},
		{in: "try-again-later", want: 1013},
		{in: "TryAgainLater", want: 1013},
		{in: "Mandatory Extension", want: 1010},
		{in: "abc", wantErr: `"abc" is neither a close code nor a registered name`},
		{in: "70000", wantErr: "70000 is out of range"},
		{in: "-1", wantErr: "-1 is out of range"},
		{in: "10.13", wantErr: `"10.13" is neither a close code`},
		{in: "Private Use", wantErr: "neither"}, // a range, not a code
	}
	for _, tt := range tests {
		got, err := explain.ParseCode(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseCode(%q) = %d, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseCode(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestWriteText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code     closecode.Code
		wantText []string // besides name, texts and retry class from the registry
	}{
		{code: 1010, wantText: []string{"1010 Mandatory Extension", "client to server only"}},
		{code: 1013, wantText: []string{"1013 Try Again Later", "on the wire: yes"}},
		{code: 4000, wantText: []string{"4000 Private Use (range 4000–4999)"}},
		{code: 3999, wantText: []string{"(range 3000–3999)"}},
		{code: 1005, wantText: []string{"on the wire: never"}},
		{code: 0, wantText: []string{"(range 0–999)"}},
		{code: 65535, wantText: []string{"(range 5000–65535)"}},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := explain.WriteText(&b, tt.code); err != nil {
			t.Fatal(err)
		}
		info := closecode.Lookup(tt.code)
		got := squash(b.String())
		for _, w := range append([]string{info.Name, info.Sender.String(), info.Retry.String(), info.Reference, info.Description, info.When, info.Fix}, tt.wantText...) {
			if !strings.Contains(got, squash(w)) {
				t.Errorf("%d: output lacks %q:\n%s", tt.code, w, b.String())
			}
		}
		for _, line := range strings.Split(b.String(), "\n") {
			if len([]rune(line)) > 76 {
				t.Errorf("%d: line longer than 76 columns: %q", tt.code, line)
			}
		}
	}
}

func TestWriteJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []closecode.Code{1010, 1013, 4000, 1006} {
		var b bytes.Buffer
		if err := explain.WriteJSON(&b, c); err != nil {
			t.Fatal(err)
		}
		var got explain.Entry
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("%d: output is not one JSON entry: %v\n%s", c, err, b.String())
		}
		info := closecode.Lookup(c)
		want := explain.EntryOf(info)
		if got.Code != int(c) || got.Name != want.Name || got.SentBy != want.SentBy || got.OnWire != info.OnWire ||
			got.RetryClass != info.Retry.String() || got.ShouldRetry != info.Retry.ShouldRetry() ||
			got.Description != info.Description || got.When != info.When || got.Fix != info.Fix {
			t.Errorf("%d: entry = %+v, want %+v", c, got, want)
		}
		lo, hi := closecode.Range(c)
		if (got.Range != nil) != info.Range || (got.Range != nil && (got.Range.From != int(lo) || got.Range.To != int(hi))) {
			t.Errorf("%d: range = %+v, want %d–%d (nil for a code of its own)", c, got.Range, lo, hi)
		}
		if strings.Contains(b.String(), `\u003c`) || strings.Contains(b.String(), `\u0026`) {
			t.Errorf("%d: HTML escaping in JSON:\n%s", c, b.String())
		}
	}
	// 1013's text holds "<seconds>": it must come out as it is.
	var b bytes.Buffer
	explain.WriteJSON(&b, 1013)
	if !strings.Contains(b.String(), "retry-after=<seconds>") {
		t.Errorf("1013's JSON lacks retry-after=<seconds> as written:\n%s", b.String())
	}
}

func TestWriteTable(t *testing.T) {
	t.Parallel()
	all := closecode.All()
	var b bytes.Buffer
	if err := explain.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != len(all)+1 {
		t.Fatalf("table has %d lines, want a header and %d entries:\n%s", len(lines), len(all), b.String())
	}
	for i, info := range all {
		line := lines[i+1]
		code := strconv.Itoa(int(info.Code))
		if info.Range {
			lo, hi := closecode.Range(info.Code + 1)
			code = strconv.Itoa(int(lo)) + "–" + strconv.Itoa(int(hi))
		}
		if !strings.HasPrefix(line, code+" ") || !strings.Contains(line, info.Name) || !strings.Contains(line, info.Retry.String()) {
			t.Errorf("line %d = %q, want code %s, name %q and retry class %q", i+1, line, code, info.Name, info.Retry)
		}
	}

	b.Reset()
	if err := explain.WriteTableJSON(&b); err != nil {
		t.Fatal(err)
	}
	var entries []explain.Entry
	if err := json.Unmarshal(b.Bytes(), &entries); err != nil {
		t.Fatalf("JSON table is not a JSON array: %v", err)
	}
	if len(entries) != len(all) {
		t.Fatalf("JSON table has %d entries, want %d", len(entries), len(all))
	}
	for i, info := range all {
		if entries[i].Code != int(info.Code) || entries[i].Name != info.Name {
			t.Errorf("entry %d = %d %q, want %d %q", i, entries[i].Code, entries[i].Name, info.Code, info.Name)
		}
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	for _, info := range closecode.All() {
		info = closecode.Lookup(info.Code) // a range entry's first code may have an entry of its own
		s := explain.Summary(info.Code)
		if s == "" || !strings.HasPrefix(info.Description, s) || !strings.HasSuffix(s, ".") || strings.Contains(s, ". ") {
			t.Errorf("Summary(%d) = %q, want the first sentence of %q", info.Code, s, info.Description)
		}
	}
	if got, want := explain.Summary(1013), "The server is up but temporarily cannot serve this client: it is overloaded or throttling."; got != want {
		t.Errorf("Summary(1013) = %q, want %q", got, want)
	}
}

func TestWriteField(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	explain.WriteField(&b, "  ", "fix:", 6, "one two three four five six seven", 28)
	want := "  fix:  one two three four\n        five six seven\n"
	if b.String() != want {
		t.Errorf("WriteField wrote\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	explain.WriteField(&b, "", "empty:", 8, "", 40)
	if b.String() != "empty:\n" {
		t.Errorf("WriteField with no text wrote %q, want the label alone", b.String())
	}
}

func TestWrap(t *testing.T) {
	t.Parallel()
	tests := []struct {
		text  string
		width int
		want  []string
	}{
		{"", 10, nil},
		{"a b c", 10, []string{"a b c"}},
		{"aaaa bbbb cccc", 9, []string{"aaaa bbbb", "cccc"}},
		{"averyveryverylongword x", 5, []string{"averyveryverylongword", "x"}},
		{"  spaced   out  ", 20, []string{"spaced out"}},
	}
	for _, tt := range tests {
		if got := explain.Wrap(tt.text, tt.width); strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("Wrap(%q, %d) = %q, want %q", tt.text, tt.width, got, tt.want)
		}
	}
}
