package websocket

import (
	"context"
	"errors"
	"math"
	"runtime/debug"
	"testing"
	"time"
)

// acquireAsync runs b.acquire in a goroutine and returns its result
// channel.
func acquireAsync(b *MemoryBudget, ctx context.Context, done <-chan struct{}, held, want int64) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- b.acquire(ctx, done, held, want) }()
	return ch
}

// waitWaiters waits until n reads wait in b.
func waitWaiters(t *testing.T, b *MemoryBudget, n int) {
	t.Helper()
	waitUntil(t, "waiters in the memory budget", func() bool { return b.Stats().Waiters == n })
}

func recvWithin(t *testing.T, ch <-chan error, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("%s: no answer within %v", what, d)
		return nil
	}
}

// TestMemoryBudgetGrantsInOrder: a waiter is served once room is released,
// the one holding most first, then in arrival order.
func TestMemoryBudgetGrantsInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := NewMemoryBudget(100)
	if err := b.acquire(ctx, nil, 0, 100); err != nil {
		t.Fatal(err)
	}
	small := acquireAsync(b, ctx, nil, 0, 10) // holds nothing yet
	waitWaiters(t, b, 1)
	later := acquireAsync(b, ctx, nil, 0, 10)
	waitWaiters(t, b, 2)
	b.release(10)
	if err := recvWithin(t, small, time.Second, "first waiter"); err != nil {
		t.Fatalf("first waiter: %v", err)
	}
	select {
	case err := <-later:
		t.Fatalf("second waiter served before any room: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	b.release(10)
	if err := recvWithin(t, later, time.Second, "second waiter"); err != nil {
		t.Fatalf("second waiter: %v", err)
	}
	// A waiter that holds more goes before one that came earlier.
	b2 := NewMemoryBudget(100)
	b2.acquire(ctx, nil, 0, 100) // readers hold everything, 20 of it the one below
	first := acquireAsync(b2, ctx, nil, 0, 30)
	waitWaiters(t, b2, 1)
	big := acquireAsync(b2, ctx, nil, 20, 30)
	waitWaiters(t, b2, 2)
	b2.release(30)
	if err := recvWithin(t, big, time.Second, "largest holder"); err != nil {
		t.Fatalf("largest holder: %v", err)
	}
	select {
	case err := <-first:
		t.Fatalf("the waiter holding nothing went first or alongside: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	b2.release(30)
	if err := recvWithin(t, first, time.Second, "the other waiter"); err != nil {
		t.Fatal(err)
	}
	if s := b2.Stats(); s.Waits != 2 || s.Waiters != 0 || s.InUse != 100 || s.Peak != 100 {
		t.Fatalf("stats %+v, want 3 waits, none waiting, 100 in use, peak 100", s)
	}
}

// TestMemoryBudgetBreaksDeadlock: when every byte is held by readers all
// waiting for more, the one holding most goes on past the limit, long
// before the maximum wait; the others follow once it has released.
func TestMemoryBudgetBreaksDeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := NewMemoryBudget(4 << 20)
	b.maxWait = time.Minute
	for range 3 {
		b.acquire(ctx, nil, 0, 1<<20) // A, B: 1 MiB each; C: 2 MiB
	}
	b.acquire(ctx, nil, 1<<20, 1<<20)
	start := time.Now()
	a := acquireAsync(b, ctx, nil, 1<<20, 1<<20)
	waitWaiters(t, b, 1)
	bb := acquireAsync(b, ctx, nil, 1<<20, 1<<20)
	waitWaiters(t, b, 2)
	// C, holding 2 MiB and reading, may still finish: no deadlock yet.
	select {
	case err := <-a:
		t.Fatalf("A answered while C could still release: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	c := acquireAsync(b, ctx, nil, 2<<20, 1<<20)
	// Now all wait: C, holding most, goes on beyond the limit.
	if err := recvWithin(t, c, time.Second, "C"); err != nil {
		t.Fatalf("C = %v, want granted", err)
	}
	if s := b.Stats(); s.InUse != 5<<20 || s.Overdrafts != 1 || s.Waiters != 2 {
		t.Fatalf("stats %+v: want C granted past the limit (5 MiB in use), A and B waiting", s)
	}
	select {
	case err := <-a:
		t.Fatalf("A answered while the budget is overdrawn: %v", err)
	case err := <-bb:
		t.Fatalf("B answered while the budget is overdrawn: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	b.release(3 << 20) // C delivered its message
	for _, w := range []struct {
		name string
		ch   <-chan error
	}{{"A", a}, {"B", bb}} {
		if err := recvWithin(t, w.ch, time.Second, w.name); err != nil {
			t.Fatalf("%s = %v, want granted", w.name, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("deadlock broken after %v", d)
	}
	s := b.Stats()
	if s.InUse != 4<<20 || s.Overdrafts != 1 || s.RefusedTryLater != 0 || s.Waiters != 0 || s.Peak != 5<<20 {
		t.Fatalf("stats %+v: want 4 MiB in use (A, B), 1 overdraft, peak 5 MiB", s)
	}
}

// TestMemoryBudgetWaitEnds: a wait ends with the maximum wait, the
// context, or the connection, and gives its place up.
func TestMemoryBudgetWaitEnds(t *testing.T) {
	t.Parallel()
	b := NewMemoryBudget(10)
	b.maxWait = 50 * time.Millisecond
	b.acquire(context.Background(), nil, 0, 10)
	start := time.Now()
	if err := b.acquire(context.Background(), nil, 0, 5); err != errBudgetTimeout {
		t.Fatalf("acquire = %v, want errBudgetTimeout", err)
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 4*time.Second {
		t.Fatalf("timed out after %v, want about 50 ms", d)
	}
	b.maxWait = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(b, ctx, nil, 0, 5)
	waitWaiters(t, b, 1)
	cancel()
	if err := recvWithin(t, ch, time.Second, "canceled wait"); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire = %v, want context.Canceled", err)
	}
	done := make(chan struct{})
	ch = acquireAsync(b, context.Background(), done, 0, 5)
	waitWaiters(t, b, 1)
	close(done)
	if err := recvWithin(t, ch, time.Second, "closed connection"); err != errConnDone {
		t.Fatalf("acquire = %v, want errConnDone", err)
	}
	if s := b.Stats(); s.Waiters != 0 || s.InUse != 10 || s.RefusedTryLater != 1 {
		t.Fatalf("stats %+v: want no waiter left, 10 in use, 1 refusal", s)
	}
}

func TestDefaultBudgetSize(t *testing.T) {
	// The default budget is sized once, at first use: before the limit
	// changes below.
	if b := DefaultMemoryBudget(); b != DefaultMemoryBudget() || b.Limit() != defaultBudgetSize() {
		t.Fatal("DefaultMemoryBudget is not one process-wide budget of the default size")
	}
	if got := defaultBudgetSize(); got != defaultBudgetBytes && debug.SetMemoryLimit(-1) == math.MaxInt64 {
		t.Fatalf("without GOMEMLIMIT the default budget is %d, want %d", got, defaultBudgetBytes)
	}
	old := debug.SetMemoryLimit(2 << 30)
	defer debug.SetMemoryLimit(old)
	if got := defaultBudgetSize(); got != 512<<20 {
		t.Fatalf("with GOMEMLIMIT=2GiB the default budget is %d, want a quarter (512 MiB)", got)
	}
	debug.SetMemoryLimit(8 << 20)
	if got := defaultBudgetSize(); got != minDefaultBudgetBytes {
		t.Fatalf("with GOMEMLIMIT=8MiB the default budget is %d, want the floor %d", got, minDefaultBudgetBytes)
	}
}
