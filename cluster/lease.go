package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrTurnLost is returned by DrainTurn.Release when the turn had already
// been lost (not refreshed within Options.LeaseTTL, e.g. cut off from
// NATS), so another node may have taken it.
var ErrTurnLost = errors.New("cluster: the drain turn was lost before it was released")

// turnKey is the key of the drain lease in the bucket.
const turnKey = "turn"

// DrainTurnOptions tune AcquireDrainTurn.
type DrainTurnOptions struct {
	// MinServing makes the call wait, before taking the turn, until at
	// least this many nodes are live and not draining, this one included:
	// pass the cluster's size so that a node drains only once the node
	// before it is back. 0 does not wait.
	MinServing int
	// SkipHistoryCheck takes the turn without waiting for every replica
	// of the history and the lease to be current. By default the call
	// waits, so that the node before, restarted with an empty store, has
	// caught up before another server goes away.
	SkipHistoryCheck bool
}

// DrainTurn is this node's exclusive turn to drain: while it holds it, no
// other node of the cluster holds one. It is a key in a JetStream
// key-value bucket, created only if absent, refreshed every LeaseTTL/3 by
// a revision-checked update, deleted on Release; a holder that crashes
// loses it after LeaseTTL.
type DrainTurn struct {
	n     *Node
	since time.Time
	lost  chan struct{}
	stop  chan struct{}
	done  chan struct{}

	mu       sync.Mutex
	rev      uint64
	released bool
	isLost   bool
}

// turnValue is what the lease key holds, for operators.
type turnValue struct {
	Node  string    `json:"node"`
	Inc   string    `json:"inc"`
	Since time.Time `json:"since"`
}

// AcquireDrainTurn waits for this node's turn to drain and takes it. It
// waits while another node holds the turn, until opts' conditions hold
// (enough serving nodes, history replicas current), and until ctx ends.
// Taking the turn marks this node as draining in its reports (see
// SetDraining). Release the turn when the drain is done (Leave does it
// too).
func (n *Node) AcquireDrainTurn(ctx context.Context, opts DrainTurnOptions) (*DrainTurn, error) {
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	n.mu.Lock()
	kv, held := n.kv, n.turn != nil
	n.mu.Unlock()
	if held {
		return nil, fmt.Errorf("cluster: node %s already holds the drain turn: release it first", n.opts.Name)
	}
	now := time.Now()
	val, _ := json.Marshal(turnValue{Node: n.opts.Name, Inc: n.incarnation, Since: now})
	var lastWhy string
	for {
		why, err := n.turnBlocked(ctx, opts)
		if err == nil && why == "" {
			var rev uint64
			rev, err = kv.Create(ctx, turnKey, val)
			if err == nil {
				t := &DrainTurn{n: n, since: time.Now(), rev: rev, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
				n.mu.Lock()
				n.turn = t
				n.draining = true
				n.mu.Unlock()
				n.Report()
				go t.refresh()
				n.log.Info("cluster: drain turn taken", slog.String("node", n.opts.Name))
				return t, nil
			}
			why = "another node holds the turn"
			if !errors.Is(err, jetstream.ErrKeyExists) {
				why = err.Error()
			}
		} else if err != nil {
			why = err.Error()
		}
		if why != lastWhy {
			n.log.Info("cluster: waiting for the drain turn", slog.String("why", why))
			lastWhy = why
		}
		// Poll, jittered so that waiting nodes do not ask in step.
		wait := time.Duration((0.5 + rand.Float64()) * float64(n.opts.ReportInterval))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: waiting for the drain turn (%s): %w", why, ctx.Err())
		case <-n.done:
			return nil, ErrClosed
		case <-time.After(wait):
		}
	}
}

// turnBlocked says why the turn cannot be taken now ("" when it can).
func (n *Node) turnBlocked(ctx context.Context, opts DrainTurnOptions) (string, error) {
	if opts.MinServing > 0 {
		v := n.View()
		serving := 0
		for _, m := range v.Members {
			if m.Self || m.serving() {
				serving++
			}
		}
		if serving < opts.MinServing {
			return fmt.Sprintf("%d of %d nodes serving", serving, opts.MinServing), nil
		}
	}
	if opts.SkipHistoryCheck {
		return "", nil
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, name := range []string{n.stream, "KV_" + n.bucket} {
		st, err := n.js.Stream(cctx, name)
		if err != nil {
			return "", err
		}
		info, err := st.Info(cctx)
		if err != nil {
			return "", err
		}
		if info.Cluster == nil || info.Config.Replicas <= 1 {
			continue
		}
		if info.Cluster.Leader == "" {
			return fmt.Sprintf("%s has no leader", name), nil
		}
		current := 1
		for _, r := range info.Cluster.Replicas {
			if r.Current && !r.Offline {
				current++
			}
		}
		if current < info.Config.Replicas {
			return fmt.Sprintf("%s has %d of %d replicas current", name, current, info.Config.Replicas), nil
		}
	}
	return "", nil
}

// Lost returns a channel closed if the turn is lost: not refreshed within
// LeaseTTL (this node cut off from NATS), so another node may drain at
// the same time. A drain in progress may go on; the caller decides.
func (t *DrainTurn) Lost() <-chan struct{} { return t.lost }

// Since returns when the turn was taken.
func (t *DrainTurn) Since() time.Time { return t.since }

func (t *DrainTurn) refresh() {
	defer close(t.done)
	ttl := t.n.opts.LeaseTTL
	every := ttl / 3
	lastOK := time.Now()
	val, _ := json.Marshal(turnValue{Node: t.n.opts.Name, Inc: t.n.incarnation, Since: t.since})
	timer := time.NewTimer(every)
	defer timer.Stop()
	for {
		select {
		case <-t.stop:
			return
		case <-timer.C:
		}
		t.mu.Lock()
		rev := t.rev
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), every)
		nrev, err := t.n.kv.Update(ctx, turnKey, val, rev)
		cancel()
		switch {
		case err == nil:
			t.mu.Lock()
			t.rev = nrev
			t.mu.Unlock()
			lastOK = time.Now()
			timer.Reset(every)
		case errors.Is(err, jetstream.ErrKeyExists) || time.Since(lastOK) >= ttl:
			// The revision moved (another node took the turn after it
			// expired) or too long without a refresh.
			t.n.log.Warn("cluster: drain turn lost", slog.Any("err", err))
			t.markLost()
			return
		default:
			timer.Reset(every / 4)
		}
	}
}

func (t *DrainTurn) markLost() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.isLost {
		t.isLost = true
		close(t.lost)
	}
}

// Release gives the turn to the next node: it stops refreshing and
// deletes the key (only if it still holds this node's revision). It
// returns ErrTurnLost if the turn had been lost. The node keeps reporting
// itself as draining (see SetDraining). Calling it again returns nil.
func (t *DrainTurn) Release(ctx context.Context) error {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return nil
	}
	t.released = true
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	t.n.mu.Lock()
	if t.n.turn == t {
		t.n.turn = nil
	}
	t.n.mu.Unlock()
	t.mu.Lock()
	rev, lost := t.rev, t.isLost
	t.mu.Unlock()
	if lost {
		return ErrTurnLost
	}
	if err := t.n.kv.Delete(ctx, turnKey, jetstream.LastRevision(rev)); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrTurnLost
		}
		return fmt.Errorf("cluster: releasing the drain turn: %w (it expires by itself after %v)", err, t.n.opts.LeaseTTL)
	}
	t.n.log.Info("cluster: drain turn released", slog.String("node", t.n.opts.Name), slog.Duration("held", time.Since(t.since)))
	return nil
}

// abandon stops refreshing without deleting: the turn expires after
// LeaseTTL, as after a crash. For tests.
func (t *DrainTurn) abandon() {
	t.mu.Lock()
	if t.released {
		t.mu.Unlock()
		return
	}
	t.released = true
	t.mu.Unlock()
	close(t.stop)
	<-t.done
	if t.n.turn == t {
		t.n.turn = nil
	}
}
