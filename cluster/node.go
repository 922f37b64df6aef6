package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrClosed is returned by a Node's methods after Leave or Close, and by
// Subscription.Next after the subscription or its node closed.
var ErrClosed = errors.New("cluster: node has left the cluster")

// maxHeavyIPs bounds Load.HeavyIPs in a report this node accepts.
const maxHeavyIPs = 1024

// Node is this process's membership in a cluster: it publishes its Load,
// keeps the View, carries broadcasts and drain turns. All methods are safe
// for concurrent use.
type Node struct {
	opts        Options
	em          *embedded // nil with Options.NATSURL
	nc          *nats.Conn
	js          jetstream.JetStream
	incarnation string
	log         *slog.Logger
	subjLoad    string
	subjBcast   string
	stream      string
	bucket      string

	loadSub  *nats.Subscription
	reportMu sync.Mutex    // serializes reports
	leaving  bool          // the leave report is out; under reportMu
	kick     chan struct{} // capacity 1: report now
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	done     chan struct{} // closed when the node has left
	once     sync.Once
	leftErr  error

	ready chan struct{} // closed when history and lease are usable

	mu       sync.Mutex
	members  map[string]*memberState
	changed  chan struct{}
	draining bool
	seq      uint64 // reports sent
	left     bool
	// bus state, see bus.go
	kv       jetstream.KeyValue
	last     uint64 // highest sequence delivered locally
	cache    ring
	subs     map[*Subscription]struct{}
	feed     jetstream.MessagesContext
	replicas int // replicas last applied to the stream and bucket
	turn     *DrainTurn
}

type memberState struct {
	m     Member
	stale bool // as last notified
}

// Join starts this node: it starts the embedded NATS server (or connects
// to Options.NATSURL), publishes its Load every ReportInterval and starts
// tracking the other members. It returns once the node is on NATS; the
// history and the drain lease become usable in the background, as soon as
// JetStream is (Node.Ready), which for a clustered embedded server means as
// soon as a second server has joined.
//
// Call Leave (or Close) to leave cleanly; a node that just stops is
// noticed as stale after Options.StaleAfter.
func Join(ctx context.Context, o Options) (*Node, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	n := &Node{
		opts:        o,
		incarnation: randomID(),
		log:         o.Logger,
		subjLoad:    "ebb." + o.Cluster + ".load",
		subjBcast:   "ebb." + o.Cluster + ".bcast",
		stream:      "EBB_" + o.Cluster + "_BCAST",
		bucket:      "ebb_" + o.Cluster + "_drain",
		kick:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		ready:       make(chan struct{}),
		members:     make(map[string]*memberState),
		changed:     make(chan struct{}),
		subs:        make(map[*Subscription]struct{}),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	n.cache.init(o.History.CacheMsgs, o.History.CacheBytes)
	url := o.NATSURL
	if url == "" {
		em, err := startEmbedded(&n.opts)
		if err != nil {
			return nil, err
		}
		n.em = em
		url = em.clientURL()
	}
	nopts := []nats.Option{
		nats.Name("ebb-" + o.Cluster + "-" + o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, 100*time.Millisecond),
		nats.Timeout(5 * time.Second),
	}
	nopts = append(nopts, o.NATSOptions...)
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		n.stopEmbedded()
		return nil, fmt.Errorf("cluster: connecting to NATS at %s: %w (is it running, with JetStream?)", url, err)
	}
	n.nc = nc
	n.js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		n.stopEmbedded()
		return nil, fmt.Errorf("cluster: opening JetStream on %s: %w", url, err)
	}
	n.loadSub, err = nc.Subscribe(n.subjLoad+".*", n.onReport)
	if err == nil {
		err = nc.FlushWithContext(ctx)
	}
	if err != nil {
		nc.Close()
		n.stopEmbedded()
		return nil, fmt.Errorf("cluster: subscribing to %s.* on %s: %w", n.subjLoad, url, err)
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.report(false)
	n.wg.Add(2)
	go n.reportLoop()
	go n.jetStreamLoop()
	n.log.Info("cluster: joined", slog.String("cluster", o.Cluster), slog.String("node", o.Name), slog.String("nats", url))
	return n, nil
}

// Name returns this node's name.
func (n *Node) Name() string { return n.opts.Name }

// Cluster returns the cluster's name.
func (n *Node) Cluster() string { return n.opts.Cluster }

// ClientURL returns the URL NATS clients (the nats CLI, another ebb node
// with Options.NATSURL) can use to reach the NATS this node uses.
func (n *Node) ClientURL() string {
	if n.em != nil {
		return n.em.clientURL()
	}
	return n.nc.ConnectedUrlRedacted()
}

// RouteURL returns the route URL of this node's embedded server, which
// other nodes put in Options.Embedded.Routes to join it; "" when the
// server accepts no routes or NATS is external.
func (n *Node) RouteURL() string {
	if n.em == nil {
		return ""
	}
	return n.em.routeURL()
}

// Ready returns a channel closed once the history and the drain lease can
// be used (JetStream answered and the stream exists).
func (n *Node) Ready() <-chan struct{} { return n.ready }

// waitReady waits for Ready, the node's end, or ctx.
func (n *Node) waitReady(ctx context.Context) error {
	select {
	case <-n.ready:
		select {
		case <-n.done:
			return ErrClosed
		default:
			return nil
		}
	case <-n.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("cluster: JetStream not ready yet (a clustered embedded server waits for a second server to join): %w", ctx.Err())
	}
}

// SetDraining marks this node as draining in its reports (on top of
// Load.Draining), or clears the mark. Taking a drain turn sets it, and it
// stays set after the turn is released: a node that drained is on its
// way out. Clear it if the node stays.
func (n *Node) SetDraining(on bool) {
	n.mu.Lock()
	n.draining = on
	n.mu.Unlock()
	n.Report()
}

// Report makes the node publish its Load now rather than at the next
// interval, e.g. right after it starts draining.
func (n *Node) Report() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// report is the wire format of a load report.
type report struct {
	V    int    `json:"v"`
	Node string `json:"node"`
	Inc  string `json:"inc"`
	Seq  uint64 `json:"seq"`
	Left bool   `json:"left,omitempty"`
	Load Load   `json:"load"`
}

func (n *Node) reportLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.ReportInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		n.report(false)
		n.sweep(time.Now())
	}
}

// report publishes this node's load (or its leave) and updates its own
// entry in the view.
func (n *Node) report(left bool) {
	// One report at a time, and none after the leave: a report published
	// after it would bring this node back into the others' views.
	n.reportMu.Lock()
	defer n.reportMu.Unlock()
	if n.leaving {
		return
	}
	n.leaving = left
	var l Load
	if n.opts.Load != nil && !left {
		l = n.opts.Load()
	}
	now := time.Now()
	n.mu.Lock()
	l.Draining = l.Draining || n.draining
	n.seq++
	r := report{V: 1, Node: n.opts.Name, Inc: n.incarnation, Seq: n.seq, Left: left, Load: l}
	if !left {
		ms := n.members[n.opts.Name]
		if ms == nil || ms.m.Incarnation != n.incarnation {
			ms = &memberState{m: Member{Name: n.opts.Name, Joined: now, Incarnation: n.incarnation, Self: true}}
			n.members[n.opts.Name] = ms
			n.notifyLocked()
		} else if ms.m.Load.Draining != l.Draining || ms.m.Load.Limit != l.Limit {
			n.notifyLocked()
		}
		ms.m.Load, ms.m.Seen = l, now
	}
	n.mu.Unlock()
	b, err := json.Marshal(r)
	if err == nil {
		err = n.nc.Publish(n.subjLoad+"."+n.opts.Name, b)
	}
	if err != nil {
		n.log.Debug("cluster: publishing the load report failed", slog.Any("err", err))
	}
}

// onReport handles a report from any member (this one's own included,
// which it ignores).
func (n *Node) onReport(msg *nats.Msg) {
	var r report
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		n.log.Debug("cluster: ignoring a malformed load report", slog.String("subject", msg.Subject), slog.Any("err", err))
		return
	}
	if err := r.validate(msg.Subject, n.subjLoad); err != nil {
		n.log.Debug("cluster: ignoring a load report", slog.Any("err", err))
		return
	}
	if r.Node == n.opts.Name {
		if r.Inc != n.incarnation {
			n.log.Warn("cluster: another node reports under this node's name; names must be unique", slog.String("node", r.Node))
		}
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.left {
		return
	}
	ms := n.members[r.Node]
	if r.Left {
		if ms != nil && ms.m.Incarnation == r.Inc {
			delete(n.members, r.Node)
			n.notifyLocked()
		}
		return
	}
	if ms == nil || ms.m.Incarnation != r.Inc {
		ms = &memberState{m: Member{Name: r.Node, Joined: now, Incarnation: r.Inc}}
		n.members[r.Node] = ms
	}
	ms.stale = false
	ms.m.Load, ms.m.Seen = r.Load, now
	// Every report may move the totals: wake the watchers.
	n.notifyLocked()
}

func (r *report) validate(subject, prefix string) error {
	if r.V != 1 {
		return fmt.Errorf("report version %d on %s: want 1 (a newer ebb? upgrade this node)", r.V, subject)
	}
	if !nameRE.MatchString(r.Node) || subject != prefix+"."+r.Node {
		return fmt.Errorf("report from node %q on subject %q: want a valid name matching the subject", r.Node, subject)
	}
	l := &r.Load
	if l.Conns < 0 || l.Limit < 0 {
		return fmt.Errorf("report from %s: conns %d, limit %d: want non-negative counts", r.Node, l.Conns, l.Limit)
	}
	for _, f := range []float64{l.Rate, l.Demand, l.Pressure} {
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("report from %s: rate %v, demand %v, pressure %v: want finite non-negative numbers", r.Node, l.Rate, l.Demand, l.Pressure)
		}
	}
	if len(l.HeavyIPs) > maxHeavyIPs {
		return fmt.Errorf("report from %s: %d heavy addresses: want at most %d", r.Node, len(l.HeavyIPs), maxHeavyIPs)
	}
	for ip, c := range l.HeavyIPs {
		if c < 0 || len(ip) > 64 {
			return fmt.Errorf("report from %s: heavy address %.64q with %d connections: want a short address and a non-negative count", r.Node, ip, c)
		}
	}
	return nil
}

// sweep flags members that stopped reporting and forgets the long gone.
func (n *Node) sweep(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, ms := range n.members {
		if ms.m.Self && name == n.opts.Name {
			continue
		}
		age := now.Sub(ms.m.Seen)
		switch {
		case age > n.opts.StaleAfter+n.opts.ForgetAfter:
			delete(n.members, name)
			n.notifyLocked()
		case age > n.opts.StaleAfter && !ms.stale:
			ms.stale = true
			n.log.Info("cluster: member stopped reporting", slog.String("node", name), slog.Duration("silent", age))
			n.notifyLocked()
		}
	}
}

// notifyLocked wakes everyone waiting on Changed.
func (n *Node) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// View returns the cluster as this node sees it now. It costs a copy of
// the member list.
func (n *Node) View() View {
	now := time.Now()
	n.mu.Lock()
	v := View{Cluster: n.opts.Cluster, Self: n.opts.Name, At: now, Members: make([]Member, 0, len(n.members))}
	for _, ms := range n.members {
		m := ms.m
		m.Stale = !m.Self && now.Sub(m.Seen) > n.opts.StaleAfter
		v.Members = append(v.Members, m)
	}
	n.mu.Unlock()
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].Name < v.Members[j].Name })
	return v
}

// Changed returns a channel that is closed at the next change of the view:
// a report received (so loads move), a member joining, leaving, going
// stale. Call it again after each wake-up; a change between two calls is
// not lost as long as the view is read after the call.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

// WaitView waits until cond holds for the view and returns that view, or
// returns ctx's error (with the last view). cond is called on every change
// and at least every ReportInterval.
func (n *Node) WaitView(ctx context.Context, cond func(View) bool) (View, error) {
	t := time.NewTicker(n.opts.ReportInterval)
	defer t.Stop()
	for {
		ch := n.Changed()
		v := n.View()
		if cond(v) {
			return v, nil
		}
		select {
		case <-ch:
		case <-t.C:
		case <-n.done:
			return v, ErrClosed
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}

// Advise is Advise(n.View(), local, p): the admission advice for a new
// connection given this node's current load.
func (n *Node) Advise(local Load, p Policy) Advice { return Advise(n.View(), local, p) }

// PlanDrain is PlanDrain(n.View(), conns, o).
func (n *Node) PlanDrain(conns int, o PlanOptions) DrainPlan { return PlanDrain(n.View(), conns, o) }

// Leave leaves the cluster cleanly: it releases a drain turn still held,
// tells the others (who drop this node from their views at once), ends
// every Subscription with ErrClosed, closes the NATS connection and stops
// the embedded server (whose JetStream leaderships move to the other
// servers first). It waits for all of this until ctx ends. Calling it
// again returns the first call's result.
func (n *Node) Leave(ctx context.Context) error {
	n.once.Do(func() {
		var errs []error
		n.mu.Lock()
		t := n.turn
		n.mu.Unlock()
		if t != nil {
			if err := t.Release(ctx); err != nil && !errors.Is(err, ErrTurnLost) {
				errs = append(errs, err)
			}
		}
		n.report(true)
		if err := n.nc.FlushWithContext(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster: telling the cluster this node leaves: %w", err))
		}
		n.shutdown()
		n.leftErr = errors.Join(errs...)
		n.log.Info("cluster: left", slog.String("cluster", n.opts.Cluster), slog.String("node", n.opts.Name))
	})
	return n.leftErr
}

// Close is Leave with a 5-second limit.
func (n *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.Leave(ctx)
}

// shutdown stops everything without telling anyone.
func (n *Node) shutdown() {
	n.mu.Lock()
	n.left = true
	feed := n.feed
	subs := n.subs
	n.subs = map[*Subscription]struct{}{}
	n.mu.Unlock()
	close(n.done)
	n.cancel()
	if feed != nil {
		feed.Stop()
	}
	for s := range subs {
		s.fail(ErrClosed)
	}
	n.wg.Wait()
	_ = n.loadSub.Unsubscribe()
	n.nc.Close()
	n.stopEmbedded()
}

// crash stops the node as a crash would: no leave report, no release.
// For tests.
func (n *Node) crash() {
	n.once.Do(func() {
		n.mu.Lock()
		if n.turn != nil {
			n.turn.abandon()
		}
		n.mu.Unlock()
		n.shutdown()
	})
}

func (n *Node) stopEmbedded() {
	if n.em != nil {
		n.em.stop()
	}
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func defaultName() string {
	h, _ := os.Hostname()
	h = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, h)
	if len(h) > 40 {
		h = h[:40]
	}
	if h == "" {
		h = "node"
	}
	return h + "-" + randomID()[:6]
}
