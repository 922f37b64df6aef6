package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/closecode"
)

// The registry's formatting is tested in package explain; these tests hold
// what package main adds: arguments, flags, exit statuses.

func TestExplainCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"explain", "1013"}, want: "1013 Try Again Later"},
		{args: []string{"explain", "try-again-later"}, want: "1013 Try Again Later"},
		{args: []string{"explain"}, want: "RETRY CLASS\n1000 "},
		{args: []string{"explain", "--json", "1013"}, want: `"code": 1013`},
		{args: []string{"explain", "--json"}, want: `"code": 1000`},
	}
	for _, tt := range tests {
		r := runCmd(t, context.Background(), nil, tt.args...)
		if r.code != exitOK || r.stderr != "" || !strings.Contains(r.stdout, tt.want) {
			t.Errorf("ebb %s: exit %d, stderr %q, stdout lacks %q:\n%s", strings.Join(tt.args, " "), r.code, r.stderr, tt.want, r.stdout)
		}
	}
	// --json is neither HTML-escaped nor anything but JSON: 1013's "when"
	// mentions retry-after=<seconds>.
	r := runCmd(t, context.Background(), nil, "explain", "--json", "1013")
	var e struct{ When string }
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || e.When != closecode.Lookup(1013).When || !strings.Contains(r.stdout, "retry-after=<seconds>") || strings.Contains(r.stdout, `\u003c`) {
		t.Errorf("explain --json 1013 (%v):\n%s\nwant the registry's text unescaped", err, r.stdout)
	}
}

func TestExplainBadCode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"abc"}, want: `"abc" is neither a close code nor a registered name`},
		{args: []string{"70000"}, want: "70000 is out of range"},
		{args: []string{"-1"}, want: "-1 is out of range"},
		{args: []string{"--", "-1"}, want: "-1 is out of range"},
		{args: []string{"10.13"}, want: `"10.13" is neither a close code`},
		{args: []string{"1000", "1001"}, want: "explain takes one close code, got 2 arguments"},
		{args: []string{"--jsn", "1000"}, want: "unknown flag: --jsn"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			wantUsage(t, runCmd(t, context.Background(), nil, append([]string{"explain"}, tt.args...)...), "explain", tt.want)
		})
	}
}
