package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/closecode"
)

func TestExplainCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		arg      string
		code     closecode.Code
		wantText []string // besides name, texts and retry class from the registry
	}{
		{arg: "1010", code: 1010, wantText: []string{"1010 Mandatory Extension", "client to server only"}},
		{arg: "1013", code: 1013, wantText: []string{"1013 Try Again Later", "on the wire: yes"}},
		{arg: "4000", code: 4000, wantText: []string{"4000 Private Use (range 4000–4999)"}},
		{arg: "3999", code: 3999, wantText: []string{"(range 3000–3999)"}},
		{arg: "1005", code: 1005, wantText: []string{"on the wire: never"}},
		{arg: "try-again-later", code: 1013, wantText: []string{"1013 Try Again Later"}},
		{arg: "TryAgainLater", code: 1013, wantText: []string{"1013 Try Again Later"}},
		{arg: "Mandatory Extension", code: 1010, wantText: []string{"1010 Mandatory Extension"}},
		{arg: "0", code: 0, wantText: []string{"(range 0–999)"}},
		{arg: "65535", code: 65535, wantText: []string{"(range 5000–65535)"}},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, "explain", tt.arg)
			if r.code != exitOK {
				t.Fatalf("exit status = %d, want 0; stderr:\n%s", r.code, r.stderr)
			}
			if r.stderr != "" {
				t.Errorf("stderr not empty:\n%s", r.stderr)
			}
			info := closecode.Lookup(tt.code)
			got := squash(r.stdout)
			want := append([]string{
				info.Name, info.Sender.String(), info.Retry.String(), info.Reference,
				squash(info.Description), squash(info.When), squash(info.Fix),
			}, tt.wantText...)
			for _, w := range want {
				if !strings.Contains(got, squash(w)) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
}

func TestExplainBadCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"explain", "abc"}, want: `"abc" is neither a close code nor a registered name`},
		{args: []string{"explain", "70000"}, want: "70000 is out of range"},
		{args: []string{"explain", "-1"}, want: "-1 is out of range"},
		{args: []string{"explain", "--", "-1"}, want: "-1 is out of range"},
		{args: []string{"explain", "10.13"}, want: `"10.13" is neither a close code`},
		{args: []string{"explain", "1000", "1001"}, want: "explain takes one close code, got 2 arguments"},
		{args: []string{"explain", "--jsn", "1000"}, want: "unknown flag: --jsn"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[1:], " "), func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, tt.args...)
			if r.code != exitUsage {
				t.Fatalf("exit status = %d, want %d; stderr:\n%s", r.code, exitUsage, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout not empty:\n%s", r.stdout)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, r.stderr)
			}
			if !strings.Contains(r.stderr, "Run 'ebb explain --help' for usage.") {
				t.Errorf("stderr lacks the pointer to explain --help:\n%s", r.stderr)
			}
		})
	}
}

func TestExplainJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []closecode.Code{1010, 1013, 4000, 1006} {
		t.Run(strconv.Itoa(int(c)), func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, "explain", "--json", strconv.Itoa(int(c)))
			if r.code != exitOK {
				t.Fatalf("exit status = %d, want 0; stderr:\n%s", r.code, r.stderr)
			}
			var got entryJSON
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatalf("output is not one JSON entry: %v\n%s", err, r.stdout)
			}
			info := closecode.Lookup(c)
			want := toJSON(info)
			if got.Code != int(c) || got.Name != want.Name || got.SentBy != want.SentBy || got.OnWire != info.OnWire ||
				got.RetryClass != info.Retry.String() || got.ShouldRetry != info.Retry.ShouldRetry() ||
				got.Description != info.Description || got.When != info.When || got.Fix != info.Fix {
				t.Errorf("entry = %+v, want %+v", got, want)
			}
			lo, hi := closecode.Range(c)
			if (got.Range != nil) != info.Range || (got.Range != nil && (got.Range.From != int(lo) || got.Range.To != int(hi))) {
				t.Errorf("range = %+v, want %d–%d (nil for a code of its own)", got.Range, lo, hi)
			}
		})
	}
}

func TestExplainTable(t *testing.T) {
	t.Parallel()
	all := closecode.All()

	r := runCmd(t, context.Background(), nil, "explain")
	if r.code != exitOK {
		t.Fatalf("exit status = %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != len(all)+1 {
		t.Fatalf("table has %d lines, want a header and %d entries:\n%s", len(lines), len(all), r.stdout)
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

	r = runCmd(t, context.Background(), nil, "explain", "--json")
	var entries []entryJSON
	if err := json.Unmarshal([]byte(r.stdout), &entries); err != nil {
		t.Fatalf("--json table is not a JSON array: %v", err)
	}
	if len(entries) != len(all) {
		t.Fatalf("--json table has %d entries, want %d", len(entries), len(all))
	}
	for i, info := range all {
		if entries[i].Code != int(info.Code) || entries[i].Name != info.Name {
			t.Errorf("entry %d = %d %q, want %d %q", i, entries[i].Code, entries[i].Name, info.Code, info.Name)
		}
	}
}
