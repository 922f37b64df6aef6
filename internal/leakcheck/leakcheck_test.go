package leakcheck

import (
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

func TestFindReportsARunningGoroutine(t *testing.T) {
	stop := make(chan struct{})
	go func() { <-stop }()
	err := Find()
	close(stop)
	if err == nil {
		t.Fatal("Find returned nil with a goroutine blocked on a channel")
	}
	if !strings.Contains(err.Error(), "TestFindReportsARunningGoroutine") {
		t.Errorf("the report does not name the goroutine's creator:\n%v", err)
	}
}

func TestFindWaitsForGoroutinesOnTheirWayOut(t *testing.T) {
	go func() { time.Sleep(50 * time.Millisecond) }()
	if err := Find(); err != nil {
		t.Fatalf("a goroutine that ends within the grace period counted as a leak: %v", err)
	}
}

func TestFindIgnoresParallelTests(t *testing.T) {
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			time.Sleep(10 * time.Millisecond)
		})
	}
}

func TestIgnoreCreatedByLeavesOutOnlyThatCreator(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go blockUntil(stop)
	if err := Find(IgnoreCreatedBy("github.com/ebb-ws/ebb/internal/leakcheck.TestSomethingElse")); err == nil {
		t.Fatal("a creator that did not start the goroutine hid it")
	}
	if err := Find(IgnoreCreatedBy("github.com/ebb-ws/ebb/internal/leakcheck.TestIgnoreCreatedByLeavesOutOnlyThatCreator")); err != nil {
		t.Fatalf("the named creator's goroutine still counted: %v", err)
	}
}

func blockUntil(stop chan struct{}) { <-stop }
