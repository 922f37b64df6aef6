package closecode

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestValidOnWire(t *testing.T) {
	t.Parallel()
	valid := map[Code]bool{
		1000: true, 1001: true, 1002: true, 1003: true, 1007: true, 1008: true, 1009: true,
		1010: true, 1011: true, 1012: true, 1013: true, 1014: true,
	}
	for c := Code(-1); c <= 70000; c++ {
		want := valid[c] || (c >= 3000 && c <= 4999)
		if got := ValidOnWire(c); got != want {
			t.Fatalf("ValidOnWire(%d) = %v, want %v", c, got, want)
		}
	}
}

func TestMaySend(t *testing.T) {
	t.Parallel()
	if MaySend(MandatoryExtension, true) {
		t.Error("a server may not send 1010")
	}
	if !MaySend(MandatoryExtension, false) {
		t.Error("a client may send 1010")
	}
	if MaySend(NoStatusReceived, false) || MaySend(AbnormalClosure, true) {
		t.Error("local-only codes may not be sent")
	}
	if !MaySend(TryAgainLater, true) || !MaySend(ServiceRestart, true) || !MaySend(BadGateway, true) {
		t.Error("1012–1014 must be sendable")
	}
}

func TestRegistryIsComplete(t *testing.T) {
	t.Parallel()
	for c := Code(1000); c <= 1015; c++ {
		if !Known(c) {
			t.Errorf("%d has no entry", c)
		}
	}
	for _, info := range All() {
		if info.Name == "" || info.Description == "" || info.When == "" || info.Fix == "" || info.Retry == 0 || info.Reference == "" {
			t.Errorf("%d: incomplete entry %+v", info.Code, info)
		}
		if !info.Range && info.OnWire != ValidOnWire(info.Code) {
			t.Errorf("%d: OnWire %v disagrees with ValidOnWire", info.Code, info.OnWire)
		}
		if !info.OnWire && info.Sender != SenderLocal {
			t.Errorf("%d: never on the wire but sent by %v", info.Code, info.Sender)
		}
	}
}

// TestMissionTexts checks that the two codes ebb exists for say what an
// operator needs to know.
func TestMissionTexts(t *testing.T) {
	t.Parallel()
	me := Lookup(MandatoryExtension)
	for _, want := range []string{"client", "permessage-deflate", "Sec-WebSocket-Extensions", "enable", "optional"} {
		if !strings.Contains(me.Description+me.When+me.Fix, want) {
			t.Errorf("1010 text does not mention %q", want)
		}
	}
	if me.Sender != SenderClient || me.Retry != UntilConfigChange {
		t.Errorf("1010 sender %v retry %v", me.Sender, me.Retry)
	}
	ta := Lookup(TryAgainLater)
	for _, want := range []string{"overloaded", "throttling", "1012", "exponential backoff", "1 s", "double", "add capacity", "scale out", "lower the number of concurrent connections", "retry-after="} {
		if !strings.Contains(ta.Description+ta.When+ta.Fix, want) {
			t.Errorf("1013 text does not mention %q", want)
		}
	}
	if ta.Retry != Backoff || !ta.OnWire {
		t.Errorf("1013 retry %v on wire %v", ta.Retry, ta.OnWire)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code Code
		want RetryClass
	}{
		{1000, Done}, {1001, Backoff}, {1002, Permanent}, {1003, Permanent}, {1005, Depends},
		{1006, Backoff}, {1007, Permanent}, {1008, Permanent}, {1009, Permanent},
		{1010, UntilConfigChange}, {1011, Backoff}, {1012, Soon}, {1013, Backoff}, {1014, Backoff},
		{1015, Permanent}, {1004, Invalid}, {1500, Invalid}, {3000, Permanent}, {3008, Backoff},
		{3500, Application}, {4000, Application}, {4999, Application}, {5000, Invalid}, {999, Invalid},
	}
	for _, tt := range tests {
		if got := Classify(tt.code); got != tt.want {
			t.Errorf("Classify(%d) = %v, want %v", tt.code, got, tt.want)
		}
	}
}

func TestLookupRanges(t *testing.T) {
	t.Parallel()
	if info := Lookup(4321); info.Code != 4321 || info.Name != "Private Use" || !info.Range {
		t.Errorf("Lookup(4321) = %+v", info)
	}
	if lo, hi := Range(4321); lo != 4000 || hi != 4999 {
		t.Errorf("Range(4321) = %d, %d", lo, hi)
	}
	if got := Code(1013).String(); got != "1013 Try Again Later" {
		t.Errorf("String() = %q", got)
	}
	if got := Lookup(70000); got.Retry != Invalid {
		t.Errorf("Lookup(70000) = %+v", got)
	}
}

func TestParse(t *testing.T) {
	t.Parallel()
	if c, err := Parse("1013"); err != nil || c != 1013 {
		t.Errorf("Parse(1013) = %d, %v", c, err)
	}
	for _, bad := range []string{"", "abc", "10.13", "-1", "65536", "99999999999999999999"} {
		if _, err := Parse(bad); err == nil || !strings.HasPrefix(err.Error(), "closecode: ") {
			t.Errorf("Parse(%q) = %v, want a closecode: error", bad, err)
		}
	}
}

func TestRetryHint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		reason string
		d      time.Duration
		want   string
	}{
		{"server at capacity", 4500 * time.Millisecond, "server at capacity; retry-after=4.5"},
		{"", 3 * time.Second, "retry-after=3"},
		{"busy", 1001 * time.Millisecond, "busy; retry-after=1.1"},
		{"busy", 0, "busy; retry-after=0"},
		{"busy", -time.Second, "busy; retry-after=0"},
	}
	for _, tt := range tests {
		got := FormatRetryHint(tt.reason, tt.d)
		if got != tt.want {
			t.Errorf("FormatRetryHint(%q, %v) = %q, want %q", tt.reason, tt.d, got, tt.want)
		}
		d, ok := ParseRetryHint(got)
		if !ok || d < tt.d {
			t.Errorf("ParseRetryHint(%q) = %v, %v: the hint must never be shorter than asked", got, d, ok)
		}
	}
	long := FormatRetryHint(strings.Repeat("é", 200), 12*time.Second)
	if len(long) > MaxReasonBytes || !utf8.ValidString(long) || !strings.HasSuffix(long, "retry-after=12") {
		t.Errorf("long reason not fitted: %d bytes %q", len(long), long)
	}
	if d, ok := ParseRetryHint("draining (retry-after=2.25) thanks"); !ok || d != 2250*time.Millisecond {
		t.Errorf("embedded hint = %v %v", d, ok)
	}
}

// TestParseRetryHintIsStrict: only plain decimal seconds up to
// MaxRetryHint, standing apart from neighbouring words, are a hint.
func TestParseRetryHintIsStrict(t *testing.T) {
	t.Parallel()
	// The vectors are shared with ebb.js's parseRetryHint (web/ebb_test.mjs),
	// so the browser client reads hints exactly as the Go one does.
	raw, err := os.ReadFile("testdata/retry_hints.json")
	if err != nil {
		t.Fatal(err)
	}
	var tests []struct {
		Reason string `json:"reason"`
		NS     *int64 `json:"ns"` // null: no hint
	}
	if err := json.Unmarshal(raw, &tests); err != nil {
		t.Fatal(err)
	}
	if len(tests) < 30 {
		t.Fatalf("%d vectors in testdata/retry_hints.json; the file lost its cases", len(tests))
	}
	for _, tt := range tests {
		d, ok := ParseRetryHint(tt.Reason)
		want, wantOK := time.Duration(0), tt.NS != nil
		if wantOK {
			want = time.Duration(*tt.NS)
		}
		if ok != wantOK || d != want {
			t.Errorf("ParseRetryHint(%q) = %v, %v; want %v, %v", tt.Reason, d, ok, want, wantOK)
		}
	}
	// Everything FormatRetryHint writes, up to the bound, parses back.
	for _, d := range []time.Duration{0, time.Millisecond, 100 * time.Millisecond, 4500 * time.Millisecond, time.Hour, MaxRetryHint} {
		reason := FormatRetryHint("server at capacity", d)
		if got, ok := ParseRetryHint(reason); !ok || got < d || got > d+100*time.Millisecond {
			t.Errorf("ParseRetryHint(FormatRetryHint(%v)) = %v, %v", d, got, ok)
		}
	}
}

// strictHint matches what a valid hint looks like, to check the parser
// against in the fuzz target.
var strictHint = regexp.MustCompile(`(^|[^A-Za-z0-9._+-])retry-after=([0-9]+(\.[0-9]+)?)($|[^A-Za-z0-9._+-])`)

func FuzzParseRetryHint(f *testing.F) {
	f.Add("server at capacity; retry-after=4.5")
	f.Add("retry-after=.5")
	f.Add("retry-after=1e9")
	f.Add("retry-after=1e308")
	f.Add("retry-after=4.5abc")
	f.Add("retry-after=86400.000000001")
	f.Fuzz(func(t *testing.T, reason string) {
		d, ok := ParseRetryHint(reason)
		if ok && (d < 0 || d > MaxRetryHint) {
			t.Fatalf("hint %v out of range", d)
		}
		if ok {
			i := strings.LastIndex(reason, "retry-after=")
			start := max(i-1, 0)
			if m := strictHint.FindStringSubmatch(reason[start:]); m == nil {
				t.Fatalf("ParseRetryHint(%q) accepted a hint that is not plain decimal seconds standing apart", reason)
			}
		}
		out := FormatRetryHint(reason, time.Second)
		if len(out) > MaxReasonBytes {
			t.Fatalf("formatted reason of %d bytes", len(out))
		}
		if utf8.ValidString(reason) && !utf8.ValidString(out) {
			t.Fatal("formatting broke UTF-8")
		}
		if d, ok := ParseRetryHint(out); !ok || d != time.Second {
			t.Fatalf("round trip of %q gave %v %v", out, d, ok)
		}
	})
}
