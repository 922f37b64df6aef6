package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRollingRestart restarts the three nodes of an embedded, routed
// cluster one after another — each taking the drain turn first — while a
// publisher sends 200 messages per second and three clients follow the
// broadcast, hopping to another node when theirs goes away. After each
// restart the view reconverges, the drain turn still works and the
// history still holds a sequence taken before the restart; at the end
// every client has every message exactly once.
func TestRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("rolling restart takes about 20 s")
	}
	nodes, opts := mesh(t, "roll", 3)
	waitAllReady(t, 30*time.Second, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	// Wait for three replicas, so one restart at a time keeps a quorum.
	for _, n := range nodes {
		for n.currentReplicas() < 3 {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: replicas stuck at %d", n.Name(), n.currentReplicas())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}

	var mu sync.Mutex // guards nodes[i] swaps
	node := func(i int) *Node { mu.Lock(); defer mu.Unlock(); return nodes[i%3] }
	down := atomic.Int64{}
	down.Store(-1)
	up := func(i int) *Node { // a node that is not restarting
		for k := range 3 {
			if int64((i+k)%3) != down.Load() {
				return node(i + k)
			}
		}
		return nil
	}

	// Publisher: 200 messages per second, each carrying its send time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var published atomic.Uint64
	var lastPub atomic.Uint64
	pubErr := make(chan error, 1)
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(time.Now().UnixNano()))
			var seq uint64
			var err error
			for try := 0; try < 5; try++ {
				seq, err = up(i).Publish(ctx, Binary, b[:])
				if !errors.Is(err, ErrClosed) {
					break
				}
			}
			if err != nil {
				pubErr <- err
				return
			}
			published.Add(1)
			lastPub.Store(max(lastPub.Load(), seq))
		}
	})

	// Clients: each follows the broadcast on one node and resumes on the
	// next one when its node leaves.
	type client struct {
		seqs []uint64
		lat  []time.Duration
		sent []time.Time
		last atomic.Uint64 // for the final wait
		hops int
		err  error
	}
	clients := make([]*client, 3)
	start := node(0).LastSeq() + 1
	cctx, ccancel := context.WithCancel(ctx)
	for c := range clients {
		cl := &client{}
		clients[c] = cl
		wg.Go(func() {
			next := start
			at := c
			for cctx.Err() == nil {
				n := up(at)
				s, err := n.Subscribe(cctx, next, SubscribeOptions{MaxBytes: 1 << 20})
				if err != nil {
					if errors.Is(err, ErrClosed) || cctx.Err() != nil {
						at++
						continue
					}
					cl.err = err
					return
				}
				live := false
				for {
					m, err := s.Next(cctx)
					if err != nil {
						s.Close()
						if errors.Is(err, ErrClosed) {
							cl.hops++
							at++
							break
						}
						if cctx.Err() == nil {
							cl.err = err
						}
						return
					}
					cl.seqs = append(cl.seqs, m.Seq)
					cl.last.Store(m.Seq)
					next = m.Seq + 1
					if !live && m.Seq >= n.LastSeq() {
						live = true // caught up: what follows is live
					}
					if live {
						sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))
						cl.lat = append(cl.lat, time.Since(sent))
						cl.sent = append(cl.sent, sent)
					}
				}
			}
		})
	}

	time.Sleep(3 * time.Second) // a steady phase to measure latency in
	var reconverge []time.Duration
	type window struct{ from, to time.Time }
	var restarts []window
	for i := range 3 {
		n := node(i)
		before := lastPub.Load()
		turn, err := n.AcquireDrainTurn(ctx, DrainTurnOptions{MinServing: 3})
		if err != nil {
			t.Fatalf("restart %d: drain turn: %v", i, err)
		}
		if err := turn.Release(ctx); err != nil {
			t.Fatalf("restart %d: release: %v", i, err)
		}
		down.Store(int64(i))
		restartAt := time.Now()
		if err := n.Leave(ctx); err != nil {
			t.Fatalf("restart %d: leave: %v", i, err)
		}
		nn, err := Join(ctx, opts[i])
		if err != nil {
			t.Fatalf("restart %d: join: %v", i, err)
		}
		t.Cleanup(func() { _ = nn.Close() })
		mu.Lock()
		nodes[i] = nn
		mu.Unlock()
		for k := range 3 {
			waitMembers(t, node(k), 3, 20*time.Second)
		}
		reconverge = append(reconverge, time.Since(restartAt))
		waitAllReady(t, 30*time.Second, nn)
		down.Store(-1)
		restarts = append(restarts, window{restartAt, time.Now()})
		// The history still holds what was published before.
		var count int
		if err := nn.Replay(ctx, before, before+50, func(m Message) error { count++; return nil }); err != nil || count != 51 {
			t.Fatalf("restart %d: replay from %d on the restarted node: %d messages, %v", i, before, count, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Every client catches up with the last message, then stop.
	close(stop)
	final := lastPub.Load()
	deadline := time.Now().Add(20 * time.Second)
	for _, cl := range clients {
		for {
			if cl.last.Load() >= final || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ccancel()
	wg.Wait()
	select {
	case err := <-pubErr:
		t.Fatalf("publisher: %v", err)
	default:
	}
	var lat, steady []time.Duration
	inRestart := func(ts time.Time) bool {
		for _, w := range restarts {
			if !ts.Before(w.from.Add(-time.Second)) && !ts.After(w.to.Add(2*time.Second)) {
				return true
			}
		}
		return false
	}
	for c, cl := range clients {
		if cl.err != nil {
			t.Fatalf("client %d: %v", c, cl.err)
		}
		for k, s := range cl.seqs {
			if s != start+uint64(k) {
				t.Fatalf("client %d: message %d has seq %d, want %d (lost or duplicated)", c, k, s, start+uint64(k))
			}
		}
		if len(cl.seqs) == 0 || cl.seqs[len(cl.seqs)-1] < final {
			t.Fatalf("client %d: got up to %d, want %d", c, cl.seqs[len(cl.seqs)-1], final)
		}
		lat = append(lat, cl.lat...)
		for k, d := range cl.lat {
			if !inRestart(cl.sent[k]) {
				steady = append(steady, d)
			}
		}
		t.Logf("client %d: %d messages, %d hops, none lost or repeated", c, len(cl.seqs), cl.hops)
	}
	t.Logf("published %d at 200/s through 3 restarts; view reconverged after each restart in %v", published.Load(), roundAll(reconverge))
	t.Logf("publish→deliver latency, live messages, all: %s", percentiles(lat))
	t.Logf("publish→deliver latency, live messages, away from restarts (1 s before to 2 s after): %s", percentiles(steady))
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	slices.Sort(d)
	return fmt.Sprintf("p50 %v, p99 %v, max %v (n=%d)", d[len(d)/2].Round(10*time.Microsecond),
		d[len(d)*99/100].Round(10*time.Microsecond), d[len(d)-1].Round(time.Millisecond), len(d))
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
