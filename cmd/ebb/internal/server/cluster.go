package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/shed"
)

// ClusterConfig makes the server one node of an ebb cluster on NATS
// (package cluster): admission asks the cluster before refusing (shed's
// Advisor), /broadcast spans every node with one numbered history, and a
// drain takes its turn and paces its 1012s to what the other nodes can
// admit.
type ClusterConfig struct {
	// Options are the node's: Cluster (required), Name, NATSURL or
	// Embedded, History and timings; see cluster.Options. Load is the
	// server's (any value here is replaced), and Logger defaults to the
	// server's.
	Options cluster.Options
	// Policy is the cluster-wide admission policy: Policy.MaxConns is the
	// cluster-wide connection limit, on top of every node's own
	// (shed.Limits.MaxConns). RetryBase and RetryMax default to the Shed
	// options', so a cluster's hints read like a node's. Every node of a
	// cluster should use the same Policy.
	Policy cluster.Policy
	// PerIP makes shed.Limits.MaxConnsPerIP cluster-wide: a client
	// address is refused once it holds that many connections across the
	// nodes. Each node publishes the addresses holding at least a tenth
	// of the limit, so the count may fall short by that much per other
	// node. Off: the limit is per node.
	PerIP bool
	// Plan tunes the drain plan (cluster.PlanDrain). Plan.Hint defaults
	// to the Shed options' DrainHint.
	Plan cluster.PlanOptions
	// MinServing makes a drain wait, before taking its turn, until this
	// many nodes serve (this one included): give the cluster's size, and
	// a rolling restart drains a node only once the one before it is
	// back. 0 does not wait. The wait counts in TurnWait.
	MinServing int
	// TurnWait bounds the wait for the drain turn; past it the node
	// drains anyway (and says so). Default: Plan.MaxWindow plus 30 s, so
	// that one other node's drain fits.
	TurnWait time.Duration
	// ShortfallWait is how long a drain waits, once it holds the turn,
	// for the other nodes to have room for every connection it holds;
	// then it drains anyway (the excess is refused with the cluster's
	// overload hint, which is the truth). Default 10 s.
	ShortfallWait time.Duration
	// JoinTimeout bounds New's joining of the cluster. Default 30 s.
	JoinTimeout time.Duration
}

// Defaults for ClusterConfig.
const (
	DefaultShortfallWait = 10 * time.Second
	DefaultJoinTimeout   = 30 * time.Second
)

func (c *ClusterConfig) setDefaults(o *shed.Options) {
	if c.Policy.RetryBase <= 0 {
		c.Policy.RetryBase = o.RetryBase
	}
	if c.Policy.RetryMax <= 0 {
		c.Policy.RetryMax = o.RetryMax
	}
	if c.Plan.Hint <= 0 {
		c.Plan.Hint = o.DrainHint
	}
	if c.Plan.MaxWindow <= 0 {
		c.Plan.MaxWindow = cluster.DefaultMaxWindow
	}
	if c.TurnWait <= 0 {
		c.TurnWait = c.Plan.MaxWindow + 30*time.Second
	}
	if c.ShortfallWait <= 0 {
		c.ShortfallWait = DefaultShortfallWait
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = DefaultJoinTimeout
	}
}

// join makes s a cluster node.
func (s *Server) join(cc *ClusterConfig) error {
	o := cc.Options
	o.Load = s.clusterLoad
	if o.Logger == nil {
		o.Logger = s.cfg.Logger
	}
	ctx, cancel := context.WithTimeout(context.Background(), cc.JoinTimeout)
	defer cancel()
	n, err := cluster.Join(ctx, o)
	if err != nil {
		return err
	}
	s.node = n
	s.routeURL = n.RouteURL() // kept for RestartConfig: it is gone once the node has left
	s.advisor.node.Store(n)
	return nil
}

// Node returns the server's cluster node, nil without ClusterConfig: its
// View, Name, ClientURL and RouteURL (for --join), drain turns.
func (s *Server) Node() *cluster.Node { return s.node }

// clusterLoad is what the node reports every ReportInterval.
func (s *Server) clusterLoad() cluster.Load {
	st := s.shedder.Stats()
	l := cluster.Load{
		Conns:    st.Connections,
		Limit:    st.Limits.MaxConns,
		Rate:     st.Limits.Rate,
		Demand:   st.Demand,
		Pressure: st.Pressure,
		Draining: st.Draining || s.healthDown.Load(),
		Addr:     s.Addr(),
		Admitted: st.Admitted,
		Refused:  st.RefusedTotal,
	}
	if s.cfg.Cluster.PerIP && st.Limits.MaxConnsPerIP > 0 {
		heavy := s.shedder.HeavyAddrs(max(1, st.Limits.MaxConnsPerIP/10), maxHeavyIPs)
		if len(heavy) > 0 {
			l.HeavyIPs = make(map[string]int, len(heavy))
			for a, n := range heavy {
				l.HeavyIPs[a.String()] = n
			}
		}
	}
	return l
}

// maxHeavyIPs bounds the addresses one report carries.
const maxHeavyIPs = 256

// clusterAdvisor adapts cluster.Advise to shed.Advisor. Until the node
// has joined it has no opinion.
type clusterAdvisor struct {
	s    *Server
	node atomic.Pointer[cluster.Node]

	// The view, summed up, until it changes (a report, a member joining,
	// leaving or going stale): a decision then costs no copy of the view.
	// shed calls one at a time (under its lock); mu is for other callers.
	mu       sync.Mutex
	changed  <-chan struct{}
	view     cluster.View
	prepared cluster.Prepared
}

// current returns the view and its sums, read again if it has changed.
func (a *clusterAdvisor) current(n *cluster.Node) (cluster.View, cluster.Prepared) {
	if a.changed != nil {
		select {
		case <-a.changed:
		default:
			return a.view, a.prepared
		}
	}
	a.changed = n.Changed() // before the view: a change after it is not lost
	a.view = n.View()
	a.prepared = cluster.Prepare(a.view, a.s.cfg.Cluster.Policy)
	return a.view, a.prepared
}

// Advise decides as cluster.Advise does, from the node's view and this
// node's load as shed sees it now, fresher than its last report.
func (a *clusterAdvisor) Advise(r shed.AdviceRequest) shed.Advice {
	n := a.node.Load()
	if n == nil {
		return shed.Advice{}
	}
	cc := a.s.cfg.Cluster
	a.mu.Lock()
	v, prepared := a.current(n)
	a.mu.Unlock()
	if cc.PerIP && r.MaxConnsPerIP > 0 && r.ClientIP.IsValid() {
		total := r.IPConns + v.IPConns(r.ClientIP.String())
		if total >= r.MaxConnsPerIP {
			ratio := max(1, float64(total+1)/float64(r.MaxConnsPerIP))
			hint := time.Duration(min(float64(cc.Policy.RetryBase)*ratio, float64(cc.Policy.RetryMax)))
			return shed.Advice{Verdict: shed.VerdictAddrFull, Hint: hint, Text: "too many connections from your address in the cluster"}
		}
	}
	adv := prepared.Advise(cluster.Load{
		Conns:    r.Conns,
		Limit:    r.MaxConns,
		Rate:     r.Rate,
		Demand:   r.Demand,
		Pressure: r.Pressure,
		Draining: a.s.healthDown.Load(),
	})
	switch adv.Verdict {
	case cluster.NodeFull:
		return shed.Advice{Verdict: shed.VerdictNodeFull, Hint: adv.Hint, Text: adv.Reason}
	case cluster.ClusterFull:
		return shed.Advice{Verdict: shed.VerdictClusterFull, Hint: adv.Hint, Text: adv.Reason}
	case cluster.Admit:
		return shed.Advice{Verdict: shed.VerdictAdmit}
	}
	return shed.Advice{}
}

// drainTurn waits for the cluster's drain turn, within TurnWait and ctx.
// Without it the node drains anyway: nil turn. A node that no other node
// could take clients from (every other one is draining, stale or gone:
// the whole cluster is stopping) does not wait.
func (s *Server) drainTurn(ctx context.Context, progress io.Writer) *cluster.DrainTurn {
	cc := s.cfg.Cluster
	tctx, cancel := context.WithTimeout(ctx, cc.TurnWait)
	defer cancel()
	var alone atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		_, err := s.node.WaitView(tctx, func(v cluster.View) bool { return othersServing(v) == 0 })
		if err == nil {
			alone.Store(true)
			cancel()
		}
	}()
	defer func() { cancel(); <-watched }()
	start := time.Now()
	fmt.Fprintf(progress, "draining: waiting for the cluster's drain turn (at most %s)\n", roundDur(cc.TurnWait))
	turn, err := s.node.AcquireDrainTurn(tctx, cluster.DrainTurnOptions{MinServing: cc.MinServing})
	if err != nil {
		s.node.SetDraining(true)
		if alone.Load() {
			fmt.Fprintf(progress, "draining: no other node serves, so there is no turn to wait for\n")
		} else {
			fmt.Fprintf(progress, "draining without the drain turn: %v\n", err)
		}
		return nil
	}
	s.turnHeld.Store(true)
	fmt.Fprintf(progress, "draining: took the drain turn after %s\n", roundDur(time.Since(start)))
	return turn
}

// othersServing counts the members other than this one that are live and
// not draining: those a drain could move clients to.
func othersServing(v cluster.View) int {
	n := 0
	for _, m := range v.Members {
		if !m.Self && !m.Stale && !m.Load.Draining {
			n++
		}
	}
	return n
}

// releaseTurn gives the turn to the next node. A release that NATS does
// not answer (the cluster is stopping too, or lost its quorum) is logged,
// not returned: the connections are drained, and the turn expires by itself
// after the lease's TTL, so the next node waits at most that long.
func (s *Server) releaseTurn(ctx context.Context, turn *cluster.DrainTurn) {
	if turn == nil {
		return
	}
	defer s.turnHeld.Store(false)
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
	}
	if err := turn.Release(ctx); err != nil && !errors.Is(err, cluster.ErrTurnLost) {
		s.cfg.Logger.Warn("draining: the drain turn was not released; it expires by itself", slog.Any("err", err))
	}
}

// clusterPlan plans the drain of the node's connections onto the others:
// it waits (up to ShortfallWait) for room for all of them, then paces the
// closes to what the others admit.
func (s *Server) clusterPlan(ctx context.Context, progress io.Writer) shed.DrainPlan {
	cc := s.cfg.Cluster
	conns := s.shedder.Stats().Connections
	p := s.node.PlanDrain(conns, cc.Plan)
	if p.Shortfall > 0 {
		fmt.Fprintf(progress, "draining: the other nodes have room for %d of %d connections; waiting up to %s for more\n",
			p.Absorbable, p.Conns, roundDur(cc.ShortfallWait))
		wctx, cancel := context.WithTimeout(ctx, cc.ShortfallWait)
		_, _ = s.node.WaitView(wctx, func(v cluster.View) bool {
			return cluster.PlanDrain(v, s.shedder.Stats().Connections, cc.Plan).Shortfall == 0
		})
		cancel()
		p = s.node.PlanDrain(s.shedder.Stats().Connections, cc.Plan)
	}
	s.planMu.Lock()
	s.plan = &p
	s.planMu.Unlock()
	return shed.DrainPlan{Window: p.Window, Interval: p.Interval, Hint: p.Hint, Spread: p.Spread}
}

// LastDrainPlan returns the plan of the cluster drain this server has
// started, or nil: for tests and reports.
func (s *Server) LastDrainPlan() *cluster.DrainPlan {
	s.planMu.Lock()
	defer s.planMu.Unlock()
	if s.plan == nil {
		return nil
	}
	p := *s.plan
	return &p
}

// leaveCluster leaves cleanly, even when ctx has ended (then within 2 s).
func (s *Server) leaveCluster(ctx context.Context) error {
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
	}
	return s.node.Leave(ctx)
}

// writeClusterMetrics appends the cluster's gauges to /metrics.
func (s *Server) writeClusterMetrics(w io.Writer) {
	n := s.node
	if n == nil {
		return
	}
	v := n.View()
	t := v.Totals()
	capacity, finite := t.Limit, !t.Unlimited && t.Limit > 0
	if mc := s.cfg.Cluster.Policy.MaxConns; mc > 0 && (!finite || mc < capacity) {
		capacity, finite = mc, true
	}
	headroom := math.Inf(1)
	overload := 0.0
	if finite {
		headroom = float64(max(0, capacity-t.Conns))
		overload = t.Demand / float64(capacity)
	}
	if !finite {
		capacity = 0
	}
	fmt.Fprintf(w, "# HELP ebb_cluster_members Members of the cluster as this node sees them, by state: serving, draining (reporting, capacity not counted) or stale (silent past StaleAfter, not counted at all).\n# TYPE ebb_cluster_members gauge\n")
	fmt.Fprintf(w, "ebb_cluster_members{state=\"serving\"} %d\nebb_cluster_members{state=\"draining\"} %d\nebb_cluster_members{state=\"stale\"} %d\n", t.Serving, t.Draining, t.Stale)
	fmt.Fprintf(w, "# HELP ebb_cluster_connections Connections held by the live members, draining ones included.\n# TYPE ebb_cluster_connections gauge\nebb_cluster_connections %d\n", t.Conns)
	fmt.Fprintf(w, "# HELP ebb_cluster_limit The cluster's capacity: the serving members' limits, or the cluster-wide limit if lower; 0 when unlimited.\n# TYPE ebb_cluster_limit gauge\nebb_cluster_limit %d\n", capacity)
	fmt.Fprintf(w, "# HELP ebb_cluster_headroom Connections the cluster can still take (+Inf when unlimited).\n# TYPE ebb_cluster_headroom gauge\nebb_cluster_headroom %s\n", promFloat(headroom))
	fmt.Fprintf(w, "# HELP ebb_cluster_overload_ratio The cluster's demand (connections plus recent refusals) over its capacity; refused clients' hints grow with it past 1.\n# TYPE ebb_cluster_overload_ratio gauge\nebb_cluster_overload_ratio %s\n", promFloat(overload))
	held := 0
	if s.turnHeld.Load() {
		held = 1
	}
	fmt.Fprintf(w, "# HELP ebb_cluster_drain_turn_held 1 while this node holds the cluster's drain turn.\n# TYPE ebb_cluster_drain_turn_held gauge\nebb_cluster_drain_turn_held %d\n", held)
	window := 0.0
	if p := s.LastDrainPlan(); p != nil {
		window = p.Window.Seconds()
	}
	fmt.Fprintf(w, "# HELP ebb_cluster_drain_window_seconds The window of this node's drain plan, once it drains (0 before).\n# TYPE ebb_cluster_drain_window_seconds gauge\nebb_cluster_drain_window_seconds %s\n", promFloat(window))
}

// promFloat formats a sample value: +Inf, or at most 4 decimals.
func promFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return fmt.Sprintf("%.4g", math.Round(v*1e4)/1e4)
}

func roundDur(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(10 * time.Millisecond)
}

// RestartConfig returns the configuration that brings this node back as
// itself after Shutdown or Close: New(RestartConfig()) listens on the
// same addresses and joins under the same node name, its embedded NATS
// server on the same route address (with the same store, when
// Embedded.StoreDir was set; a temporary store is gone, and the node
// catches up from its peers).
func (s *Server) RestartConfig() Config {
	cfg := s.cfg
	cfg.Addr = s.Addr()
	if s.mln != nil {
		cfg.MetricsAddr = s.MetricsAddr()
	}
	if s.node != nil {
		cc := *cfg.Cluster
		cc.Options.Name = s.node.Name()
		if r := s.routeURL; r != "" {
			if _, hp, ok := strings.Cut(r, "://"); ok {
				if host, port, err := net.SplitHostPort(hp); err == nil {
					if h, _, err := net.SplitHostPort(cc.Options.Embedded.ClusterAddr); err == nil && h != "" {
						host = h // keep the host it was asked to listen on
					}
					cc.Options.Embedded.ClusterAddr = net.JoinHostPort(host, port)
					if len(cc.Options.Embedded.Routes) == 0 && s.hadPeers.Load() {
						// A seed that had peers rejoins them: its own
						// route names the cluster it comes back to (the
						// server drops the route to itself), so its
						// /healthz says "starting" until its history is
						// rebuilt, as a joining node's does.
						cc.Options.Embedded.Routes = []string{net.JoinHostPort(host, port)}
					}
				}
			}
		}
		cfg.Cluster = &cc
	}
	return cfg
}
