package clustertest

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/internal/heavytest"
	"github.com/ebb-ws/ebb/internal/leakcheck"
)

// TestMain runs the tests, writes the report when EBB_CLUSTER_REPORT asks
// for one, and fails the run if goroutines are left behind.
func TestMain(m *testing.M) {
	code := heavytest.RunExclusive(m) // the machine to itself: see heavytest
	if err := writeReport(os.Getenv("EBB_CLUSTER_REPORT")); err != nil {
		fmt.Fprintf(os.Stderr, "clustertest: %v\n", err)
		code = 1
	}
	if code == 0 {
		if err := leakcheck.Find(leakcheck.IgnoreEmbeddedNATSStores()); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines still running after the tests passed:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// heavy skips the test under -short: it starts a cluster, HAProxy and a
// crowd for tens of seconds.
func heavy(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("clustertest: starts a cluster, HAProxy and a crowd of clients for tens of seconds (skipped with -short)")
	}
}

// envInt reads a positive integer from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

// envFloat reads a positive number from the environment, or def.
func envFloat(t *testing.T, name string, def float64) float64 {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return f
}

// envDuration reads a positive duration from the environment, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration, e.g. 5s", name, s)
	}
	return d
}

// envChoice reads one of choices from the environment, or the first.
func envChoice(t *testing.T, name string, choices ...string) string {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return choices[0]
	}
	for _, c := range choices {
		if s == c {
			return s
		}
	}
	t.Fatalf("%s=%q: want one of %q", name, s, choices)
	return ""
}
