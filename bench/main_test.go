package main

import (
	"strings"
	"testing"
)

func TestOnlyRejectsUnknownMeasures(t *testing.T) {
	err := run([]string{"--all", "--only", "throughput,bogus", "--out", t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `no measure "bogus"`) {
		t.Fatalf("--only with an unknown measure: %v, want an error naming it before anything runs", err)
	}
}
