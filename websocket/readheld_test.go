package websocket

import (
	"context"
	"testing"
	"time"
)

// TestReadHeldKeepsTheBudget: a message read with ReadHeld stays counted in
// the budget until release, so a second large message waits for it; a
// message within BudgetFreeBytes counts nothing.
func TestReadHeldKeepsTheBudget(t *testing.T) {
	t.Parallel()
	const size = 3 << 20
	budget := NewMemoryBudget(4 << 20)
	ao := &AcceptOptions{MemoryBudget: budget}
	s1, c1 := testPair(t, ao, nil)
	s2, c2 := testPair(t, ao, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	go c1.Write(ctx, MessageBinary, make([]byte, size))
	_, p, release, err := s1.ReadHeld(ctx, nil)
	if err != nil || len(p) != size {
		t.Fatalf("ReadHeld: %d bytes, %v", len(p), err)
	}
	if in := budget.Stats().InUse; in < size {
		t.Fatalf("budget in use %d after ReadHeld, want at least the message's %d", in, size)
	}

	go c2.Write(ctx, MessageBinary, make([]byte, size))
	second := make(chan error, 1)
	go func() {
		_, _, err := s2.Read(ctx)
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("a second %d-byte message was read while the first was held (%v); the budget is %d", size, err, budget.Limit())
	case <-time.After(300 * time.Millisecond):
	}
	release()
	release() // a second call does nothing
	if err := <-second; err != nil {
		t.Fatalf("second message after release: %v", err)
	}
	if in := budget.Stats().InUse; in != 0 {
		t.Errorf("budget in use %d once both are delivered and released, want 0", in)
	}

	go c1.Write(ctx, MessageText, []byte("small"))
	_, p, release, err = s1.ReadHeld(ctx, nil)
	if err != nil || string(p) != "small" || budget.Stats().InUse != 0 {
		t.Fatalf("small ReadHeld: %q %v, in use %d", p, err, budget.Stats().InUse)
	}
	release()
}
