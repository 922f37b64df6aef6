package clustertest

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/shed"
)

// The nodes run in this process, as server.New builds them for `ebb
// serve` (same handlers, admission, drain and cluster code), rather than
// as ebb processes: the test reads each node's admission counters, drain
// plan and cluster view directly instead of scraping /metrics, and
// restarts a node as itself with Server.RestartConfig (same name, ports,
// store). On a 2-core machine separate processes would not change what
// competes for the CPU; what differs is one Go scheduler and collector for
// the nodes and the clients, which the report's CPU figures account for.

// nodeParams are one node's limits, the same for every node.
type nodeParams struct {
	MaxConns   int
	Rate       float64 // handshakes admitted per second (token bucket)
	Burst      int
	DrainDelay time.Duration // /healthz 503 before the closes: HAProxy's inter × (fall + 1)
	MinServing int           // ebb serve --cluster-size
	Jitter     float64       // shed's hint jitter; negative: off
	Plan       cluster.PlanOptions
}

// node is one incarnation of a cluster node.
type node struct {
	slot    int
	name    string
	srv     *server.Server
	served  chan error
	started time.Time // when New returned (joined, listening)
}

// nodeSet is the cluster: slot i is node "n<i>", whose incarnations follow
// one another across restarts.
type nodeSet struct {
	t       *testing.T
	cluster string
	dir     string
	params  nodeParams
	refused *refusalLog

	mu    sync.Mutex
	nodes []*node // current incarnation per slot; nil before its start
	seed  string  // route URL of the first node's NATS
	all   []*node // every incarnation, for the cleanup
}

func newNodeSet(t *testing.T, name string, slots int, p nodeParams) *nodeSet {
	ns := &nodeSet{t: t, cluster: name, dir: t.TempDir(), params: p, refused: &refusalLog{}, nodes: make([]*node, slots)}
	ns.refused.view = func(name string) string {
		ns.mu.Lock()
		defer ns.mu.Unlock()
		for _, n := range ns.nodes {
			if n != nil && n.name == name {
				return describeView(n.srv.Node().View())
			}
		}
		return "?"
	}
	t.Cleanup(ns.closeAll)
	return ns
}

// config is the configuration of slot i's first incarnation: `ebb serve
// --cluster NAME --node n<i> --store DIR --cluster-addr 127.0.0.1:0
// [--join SEED] --max-conns … --rate … --burst … --drain-delay …
// --cluster-size … --trusted-proxy 127.0.0.1/32`, with the listener's
// default bound, as ebb serve sets it.
func (ns *nodeSet) config(i int) server.Config {
	name := fmt.Sprintf("n%d", i)
	o := cluster.Options{
		Cluster:  ns.cluster,
		Name:     name,
		Embedded: cluster.Embedded{StoreDir: filepath.Join(ns.dir, name), ClusterAddr: "127.0.0.1:0"},
	}
	ns.mu.Lock()
	if ns.seed != "" {
		o.Embedded.Routes = []string{ns.seed}
	}
	ns.mu.Unlock()
	logger := slog.New(slog.DiscardHandler)
	if lv := os.Getenv("EBB_CLUSTER_LOG"); lv != "" {
		level := slog.LevelInfo
		if lv == "debug" {
			level = slog.LevelDebug
		}
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("node", name)
		o.Logger = logger
	}
	p := ns.params
	return server.Config{
		Addr: "127.0.0.1:0",
		Shed: shed.Options{
			Limits:         shed.Limits{MaxConns: p.MaxConns, Rate: p.Rate, Burst: p.Burst},
			TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
			Jitter:         p.Jitter,
			// Refusals are logged at debug level, with their reason and
			// hint: the record of what every node told every client.
			Logger: slog.New(ns.refused.handler(name, logger.Handler())),
		},
		Listener:   shed.ListenerOptions{MaxPending: server.DefaultMaxPending},
		Logger:     logger,
		DrainDelay: p.DrainDelay,
		Cluster: &server.ClusterConfig{
			Options:    o,
			MinServing: p.MinServing,
			Plan:       p.Plan,
		},
	}
}

// start starts slot i with cfg and serves it.
func (ns *nodeSet) start(i int, cfg server.Config) *node {
	ns.t.Helper()
	s, err := server.New(cfg)
	if err != nil {
		ns.t.Fatalf("n%d: %v", i, err)
	}
	n := &node{slot: i, name: s.Node().Name(), srv: s, served: make(chan error, 1), started: time.Now()}
	go func() { n.served <- s.Serve() }()
	ns.mu.Lock()
	ns.nodes[i] = n
	ns.all = append(ns.all, n)
	if ns.seed == "" {
		ns.seed = s.Node().RouteURL()
	}
	ns.mu.Unlock()
	return n
}

// startAll starts every slot in order (the first is the others' seed),
// each with its config changed by adjust when given, and waits until each
// sees them all and has its broadcast history.
func (ns *nodeSet) startAll(ctx context.Context, slots int, adjust ...func(*server.Config)) {
	ns.t.Helper()
	for i := range slots {
		cfg := ns.config(i)
		for _, f := range adjust {
			f(&cfg)
		}
		ns.start(i, cfg)
	}
	for i := range slots {
		ns.waitView(ctx, i, fmt.Sprintf("%d live members", slots), func(v cluster.View) bool { return len(v.Live()) == slots })
	}
	for i := range slots {
		select {
		case <-ns.node(i).srv.Node().Ready():
		case <-ctx.Done():
			ns.t.Fatalf("n%d: the broadcast history is not ready: %v", i, ctx.Err())
		}
	}
}

// node returns slot i's current incarnation.
func (ns *nodeSet) node(i int) *node {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	return ns.nodes[i]
}

// waitView waits until slot i's view satisfies cond.
func (ns *nodeSet) waitView(ctx context.Context, i int, what string, cond func(cluster.View) bool) cluster.View {
	ns.t.Helper()
	n := ns.node(i)
	v, err := n.srv.Node().WaitView(ctx, cond)
	if err != nil {
		ns.t.Fatalf("%s: waiting for %s: %v (view: %s)", n.name, what, err, describeView(v))
	}
	return v
}

// restart drains slot i (Shutdown, as SIGTERM makes ebb serve do) and
// starts it again as itself.
func (ns *nodeSet) restart(ctx context.Context, i int) (old, fresh *node, drained time.Time, err error) {
	old = ns.node(i)
	if err := old.srv.Shutdown(ctx); err != nil {
		return old, nil, time.Time{}, fmt.Errorf("%s: Shutdown: %w", old.name, err)
	}
	drained = time.Now()
	if err := <-old.served; err != nil {
		return old, nil, drained, fmt.Errorf("%s: Serve: %w", old.name, err)
	}
	old.served <- nil // for closeAll
	return old, ns.start(i, old.srv.RestartConfig()), drained, nil
}

// closeAll stops every incarnation still running.
func (ns *nodeSet) closeAll() {
	ns.mu.Lock()
	all := ns.all
	ns.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range all {
		wg.Go(func() {
			n.srv.Close()
			if err := <-n.served; err != nil {
				ns.t.Errorf("%s: Serve: %v", n.name, err)
			}
		})
	}
	wg.Wait()
}

func describeView(v cluster.View) string {
	s := ""
	for _, m := range v.Members {
		st := ""
		switch {
		case m.Stale:
			st = " stale"
		case m.Load.Draining:
			st = " draining"
		}
		if s != "" {
			s += ", "
		}
		s += fmt.Sprintf("%s%s %d/%d d=%.1f seen %v ago", m.Name, st, m.Load.Conns, m.Load.Limit, m.Load.Demand, v.At.Sub(m.Seen).Round(time.Millisecond))
	}
	return s
}

// refusal is one refused upgrade as the refusing node logged it.
type refusal struct {
	at     time.Time
	node   string
	reason string // shed's reason label: cluster_full, node_full, rate, draining, …
	mode   string // close or http
	hint   time.Duration
	view   string // the refusing node's view of the cluster, for cluster_full and node_full
}

// refusalLog collects the nodes' refusals from their shed loggers.
type refusalLog struct {
	mu   sync.Mutex
	recs []refusal
	view func(node string) string // describes a node's view; nil: not recorded
}

func (l *refusalLog) snapshot() []refusal {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]refusal(nil), l.recs...)
}

// handler returns node's shed logger: it records "shed: refused upgrade"
// and passes every record at or above Info on to next.
func (l *refusalLog) handler(node string, next slog.Handler) slog.Handler {
	return &refusalHandler{log: l, node: node, next: next}
}

type refusalHandler struct {
	log  *refusalLog
	node string
	next slog.Handler
}

func (h *refusalHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv == slog.LevelDebug || h.next.Enabled(ctx, lv)
}

func (h *refusalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message != "shed: refused upgrade" {
		if r.Level >= slog.LevelInfo && h.next.Enabled(ctx, r.Level) {
			return h.next.Handle(ctx, r)
		}
		return nil
	}
	rec := refusal{at: r.Time, node: h.node}
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "reason":
			rec.reason = a.Value.String()
		case "mode":
			rec.mode = a.Value.String()
		case "hint":
			rec.hint = a.Value.Duration()
		}
		return true
	})
	if (rec.reason == "cluster_full" || rec.reason == "node_full") && h.log.view != nil {
		rec.view = h.log.view(h.node)
	}
	h.log.mu.Lock()
	h.log.recs = append(h.log.recs, rec)
	h.log.mu.Unlock()
	return nil
}

func (h *refusalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &refusalHandler{log: h.log, node: h.node, next: h.next.WithAttrs(as)}
}

func (h *refusalHandler) WithGroup(name string) slog.Handler {
	return &refusalHandler{log: h.log, node: h.node, next: h.next.WithGroup(name)}
}
