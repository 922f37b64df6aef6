package interop

import (
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/ebb-ws/ebb/internal/heavytest"
	"github.com/ebb-ws/ebb/internal/leakcheck"
)

// tableEnv names the file that receives one JSON line per interop result
// (peer × role × feature → pass/fail/skip) when set; go run ./interop/cmd/table
// turns that file into the README's table.
const tableEnv = "EBB_INTEROP_TABLE"

// Result is one line of the results file. interop/cmd/table reads the same
// fields.
type Result struct {
	Peer    string `json:"peer"`
	Role    string `json:"role"` // the peer's role: "client" (ebb serves) or "server" (ebb dials)
	Feature string `json:"feature"`
	Rank    int    `json:"rank"` // row order in the table
	Result  string `json:"result"`
}

var (
	resultsMu sync.Mutex
	results   []Result
)

// features lists the table's rows in order; record refuses any other name
// so that the table stays readable.
var features = []string{
	"echo text, whole, 0 B–16 MiB",
	"echo text, fragmented, 0 B–16 MiB",
	"echo binary, whole, 0 B–16 MiB",
	"echo binary, fragmented, 0 B–16 MiB",
	"ping/pong both ways",
	"subprotocol selection",
	"close 1000 both ways",
	"close 1001 both ways",
	"close 1008 both ways",
	"close 1011 both ways",
	"close 1012 both ways",
	"close 1013 + retry-after both ways",
	"close 1014 both ways",
	"close 3000 both ways",
	"close 4000 both ways",
	"invalid close code answered with 1002",
	"1010 when permessage-deflate is required but refused",
	"permessage-deflate, peer's defaults",
	"permessage-deflate, no context takeover",
	"permessage-deflate, max window bits 10",
	"permessage-deflate, no takeover + window bits 9",
	featureOverload,
	featureDrain,
}

// record registers the outcome of the running test as one cell of the
// table: pass if it ends without failing, fail otherwise, skip if skipped.
// Several tests may record the same cell; the cell passes only if all do.
func record(t *testing.T, p *peer, role, feature string) {
	t.Helper()
	rank := -1
	for i, f := range features {
		if f == feature {
			rank = i
		}
	}
	if rank < 0 {
		t.Fatalf("interop: feature %q is not in the features list", feature)
	}
	t.Cleanup(func() {
		r := "pass"
		switch {
		case t.Skipped():
			r = "skip"
		case t.Failed():
			r = "fail"
		}
		resultsMu.Lock()
		results = append(results, Result{Peer: p.label, Role: role, Feature: feature, Rank: rank, Result: r})
		resultsMu.Unlock()
	})
}

func writeResults(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	resultsMu.Lock()
	defer resultsMu.Unlock()
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func TestMain(m *testing.M) {
	code := heavytest.RunExclusive(m) // the machine to itself: see heavytest
	tellMissing()
	if path := os.Getenv(tableEnv); path != "" {
		if err := writeResults(path); err != nil {
			fmt.Fprintf(os.Stderr, "interop: writing %s=%s: %v\n", tableEnv, path, err)
			code = 1
		}
	}
	if code == 0 {
		if err := leakcheck.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "interop: goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
