package main

import (
	"context"
	"encoding/json"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemo runs a small, fast demo end to end through the command: it
// must exit 0, print a JSON summary in which every close code is
// attributed to the side that sent it, and write its timeline where
// --plot says.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for several seconds")
	}
	t.Parallel()
	plot := filepath.Join(t.TempDir(), "timeline.png")
	r := runCmd(t, context.Background(), nil, "demo", "--crowd", "8", "--limit", "4", "--pace", "0.3", "--json", "--plot", plot)
	if r.code != exitOK {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var s struct {
		Crowd    int `json:"crowd"`
		Chapters []struct {
			Name string `json:"name"`
		} `json:"chapters"`
		Codes []struct {
			Code   int    `json:"code"`
			Sender string `json:"sender"`
			Count  int    `json:"count"`
		} `json:"codes"`
		Timeline string `json:"timeline"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("demo --json: %v\n%s", err, r.stdout)
	}
	if len(s.Chapters) != 4 || s.Chapters[1].Name != "scale-out" || s.Crowd != 8 {
		t.Fatalf("chapters %+v, crowd %d", s.Chapters, s.Crowd)
	}
	bySender := map[int]string{}
	count := map[int]int{}
	for _, c := range s.Codes {
		bySender[c.Code] += c.Sender
		count[c.Code] += c.Count
	}
	if bySender[1013] != "server" || bySender[1012] != "server" || bySender[1010] != "client" || count[1010] != 1 || count[1012] < 8 {
		t.Fatalf("codes %+v: want 1013 and 1012 from the server (a 1012 per client at least), one 1010 from the client", s.Codes)
	}
	if s, ok := bySender[1006]; ok && s != "local" {
		t.Fatalf("1006 attributed to %q: it never travels on the wire", s)
	}
	if s.Timeline != plot {
		t.Errorf("timeline %q, want %q", s.Timeline, plot)
	}
	f, err := os.Open(plot)
	if err != nil {
		t.Fatalf("timeline not written: %v", err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("timeline is not a PNG: %v", err)
	}
	if !strings.Contains(r.stderr, "== 2/4 full node → scale out") || !strings.Contains(r.stderr, "== 4/4 missing extension") {
		t.Errorf("progress on stderr lacks the chapters:\n%s", r.stderr)
	}
}

// TestDemoFlags covers the flags that need no run: where the PNG goes by
// default, and the usage mistakes.
func TestDemoFlags(t *testing.T) {
	t.Parallel()
	root := newRootCmd(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	cmd, _, err := root.Find([]string{"demo"})
	if err != nil {
		t.Fatal(err)
	}
	if def := cmd.Flags().Lookup("plot").DefValue; def != defaultPlot || filepath.IsAbs(def) || strings.Contains(def, os.TempDir()) {
		t.Errorf("--plot defaults to %q: want a file in the current directory", def)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"demo", "--quick", "--pace", "0.5"}, "--quick is --pace 0.45"},
		{[]string{"demo", "--pace", "0"}, "--pace 0: want a factor above 0"},
		{[]string{"demo", "--crowd", "4", "--limit", "4"}, "want --limit ≥ 1 and --crowd > --limit (got --limit 4, --crowd 4)"},
	} {
		r := runCmd(t, context.Background(), nil, tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, "ebb demo: "+tc.want) {
			t.Errorf("ebb %s: exit %d, stderr %q; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, exitUsage, tc.want)
		}
	}
}
