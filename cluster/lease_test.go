package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestDrainTurnExclusive: four nodes contend for the drain turn; one at a
// time holds it, every one gets it.
func TestDrainTurnExclusive(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	const k = 4
	var nodes []*Node
	for i := range k {
		o := fast("lease", fmt.Sprintf("n%d", i))
		o.NATSURL = url
		nodes = append(nodes, join(t, o))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var holders, maxHolders, turns atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, k)
	for _, n := range nodes {
		wg.Go(func() {
			for range 2 {
				turn, err := n.AcquireDrainTurn(ctx, DrainTurnOptions{})
				if err != nil {
					errs <- err
					return
				}
				h := holders.Add(1)
				for {
					m := maxHolders.Load()
					if h <= m || maxHolders.CompareAndSwap(m, h) {
						break
					}
				}
				turns.Add(1)
				time.Sleep(150 * time.Millisecond)
				holders.Add(-1)
				if err := turn.Release(ctx); err != nil {
					errs <- err
					return
				}
				n.SetDraining(false)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if maxHolders.Load() != 1 || turns.Load() != 2*k {
		t.Fatalf("%d turns taken, at most %d at once: want %d, 1", turns.Load(), maxHolders.Load(), 2*k)
	}
}

// TestDrainTurnExpiresAfterCrash: a holder that crashes keeps the turn
// until LeaseTTL has passed since its last refresh, then the next node
// gets it; a lease held across more than one TTL stays held while
// refreshed.
func TestDrainTurnExpiresAfterCrash(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	var nodes []*Node
	for i := range 2 {
		o := fast("expiry", fmt.Sprintf("n%d", i))
		o.NATSURL = url
		nodes = append(nodes, join(t, o))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := nodes[0].AcquireDrainTurn(ctx, DrainTurnOptions{}); err != nil {
		t.Fatal(err)
	}
	// Held and refreshed for 2.5 TTLs: nobody else gets it.
	wctx, wcancel := context.WithTimeout(ctx, 2500*time.Millisecond)
	_, err := nodes[1].AcquireDrainTurn(wctx, DrainTurnOptions{})
	wcancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second node got the turn while the first held it: %v", err)
	}
	crashed := time.Now()
	nodes[0].crash()
	turn, err := nodes[1].AcquireDrainTurn(ctx, DrainTurnOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(crashed)
	// The last refresh was at most TTL/3 before the crash.
	if d < 2*time.Second/3-100*time.Millisecond || d > 3*time.Second {
		t.Fatalf("turn passed %v after the crash: want between 2/3 TTL and TTL plus polling (TTL 1s)", d)
	}
	t.Logf("crashed holder's turn passed after %v (LeaseTTL 1s)", d.Round(time.Millisecond))
	if err := turn.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestDrainTurnWaitsForServing: with MinServing, the turn waits until
// enough nodes are back and not draining; Leave releases a held turn.
func TestDrainTurnWaitsForServing(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	mk := func(i int) *Node {
		o := fast("serving", fmt.Sprintf("n%d", i))
		o.NATSURL = url
		return join(t, o)
	}
	n0, n1 := mk(0), mk(1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	turn, err := n0.AcquireDrainTurn(ctx, DrainTurnOptions{MinServing: 2})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		t2, err := n1.AcquireDrainTurn(ctx, DrainTurnOptions{MinServing: 2})
		if err == nil {
			err = t2.Release(ctx)
		}
		got <- err
	}()
	// n0 leaves holding the turn: Leave releases it, but n1 must still
	// wait for a second serving node.
	time.Sleep(200 * time.Millisecond)
	if err := n0.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		t.Fatalf("n1 took the turn with only itself serving: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := turn.Release(ctx); err != nil { // already released by Leave
		t.Fatal(err)
	}
	mk(2)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("n1 never got the turn after n2 joined")
	}
}
