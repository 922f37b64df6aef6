package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestDemo runs the quick demo end to end: it must finish with exit 0 and
// report 1013, 1012 and 1010, and write its timeline.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo runs for about 20 seconds")
	}
	plot := filepath.Join(t.TempDir(), "timeline.png")
	r := runCmd(t, context.Background(), nil, "demo", "--quick", "--json", "--plot", plot)
	if r.code != exitOK {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var s demoSummary
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("demo --json: %v\n%s", err, r.stdout)
	}
	seen := map[int]int{}
	for _, c := range s.Codes {
		seen[c.Code] = c.Count
	}
	// A client that comes back while the drain is still closing others
	// meets the draining server and gets a second 1012.
	if seen[1013] == 0 || seen[1012] < s.Overload.Crowd || seen[1010] != 1 {
		t.Fatalf("codes seen %v: want 1013s, at least one 1012 per client (%d) and one 1010", seen, s.Overload.Crowd)
	}
	if s.Overload.Sessions != s.Overload.Crowd || s.Restart.ReconnectedClients < s.Overload.Crowd {
		t.Fatalf("overload %+v restart %+v: every client must get in, and come back", s.Overload, s.Restart)
	}
	if s.Overload.DistinctHints < 2 || !s.Mandatory.ServerReceived1010 || len(s.Mandatory.Missing) != 1 {
		t.Fatalf("hints %d, mandatory %+v", s.Overload.DistinctHints, s.Mandatory)
	}
	if fi, err := os.Stat(plot); err != nil || fi.Size() < 1000 {
		t.Fatalf("timeline not written: %v", err)
	}
}
