package demo

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
)

// The scale-out chapter's servers, as named in Sample.Servers, and their
// names in the cluster.
const (
	nodeA, clusterNameA = "node A", "A"
	nodeB, clusterNameB = "node B", "B"
)

// The scale-out chapter's timings at pace 1.
const (
	// aloneFor is how long node A serves alone, from the crowd's arrival
	// to node B's start: long enough for the refused to come back and be
	// refused again, twice or so.
	aloneFor = 3 * time.Second
	// checkEvery and checkRise are the balancer's health checks: a new
	// node enters the rotation after checkRise good checks in a row,
	// 1.5 s after it is added (HAProxy's "inter" and "rise"; with its
	// defaults, 2 s and 2, it takes 4 s). Meanwhile the retries still
	// reach node A, which knows of B from the cluster at once.
	checkEvery = 500 * time.Millisecond
	checkRise  = 3
	// shortHint is the cluster's hint when a node is full and another
	// has room (cluster.Policy.ShortHint).
	shortHint = 500 * time.Millisecond
	// servedHold is how long everyone stays served before the chapter
	// ends, so that the two nodes' split shows on the timeline.
	servedHold = time.Second
	// reportEvery is how often the nodes publish their load on NATS. It
	// is not paced: the cluster knows of a new node well before the
	// balancer's checks do, at any pace.
	reportEvery = 100 * time.Millisecond
)

// scaleOutLimit is what each node of the scale-out chapter admits: two
// thirds of the crowd, so that one node cannot hold it and two can.
func scaleOutLimit(crowd int) int { return max(1, 2*crowd/3) }

// ScaleOut is the chapter of "scale horizontally": the whole crowd wants
// to stay (persistent links) and reaches the servers through a load
// balancer (see balancer: least connections, health checks on /healthz).
// Behind it, node A of a cluster (embedded NATS) admits two thirds of
// the crowd. Alone, A is the whole cluster: the rest are refused with
// 1013 "cluster at capacity" and the cluster's hint, come back and are
// refused again — nobody leaves, so waiting alone never gets them in.
// Then node B joins, its embedded NATS routed to A's. A learns of B from
// B's load reports within a fraction of a second and, while the balancer
// still sends everyone to A, refuses with "node at capacity, cluster has
// room" and a short hint; once B passes its health checks, the balancer
// sends the retries there. The refusals stop and everyone is served: A at
// its limit, B holding the overflow.
//
// A balancer in the demo, rather than clients choosing a node from a
// list, because that is how a cluster is deployed: a client knows one
// address. Least connections, rather than round robin, because
// WebSockets live long: round robin would keep sending half the retries
// to the full node.
type ScaleOut struct{}

// scaleOutName is ScaleOut's Name.
const scaleOutName = "scale-out"

// Name implements Chapter.
func (ScaleOut) Name() string { return scaleOutName }

// Title implements Chapter.
func (ScaleOut) Title() string { return "full node → scale out" }

// nodeConfig is a node of the scale-out chapter: admission at limit with
// the script's hints, a cluster on an embedded NATS server accepting
// routes on loopback, routed to seed unless it is "".
func (st *stage) nodeConfig(name string, limit int, seed string) server.Config {
	o := cluster.Options{
		Cluster:        "ebb-demo",
		Name:           name,
		ReportInterval: reportEvery,
		Embedded:       cluster.Embedded{ClusterAddr: "127.0.0.1:0"},
	}
	if seed != "" {
		o.Embedded.Routes = []string{seed}
	}
	return server.Config{
		Addr: "127.0.0.1:0",
		Shed: shed.Options{
			Limits:    shed.Limits{MaxConns: limit},
			RetryBase: st.dur(retryBase),
			RetryMax:  st.dur(retryMax),
		},
		Listener: shed.ListenerOptions{MaxPending: server.DefaultMaxPending},
		Cluster: &server.ClusterConfig{
			Options: o,
			Policy:  cluster.Policy{ShortHint: st.dur(shortHint)},
		},
	}
}

func (ch ScaleOut) play(ctx context.Context, st *stage) (Finding, error) {
	ctx, cancel := context.WithTimeout(ctx, st.dur(30*time.Second)+20*time.Second)
	defer cancel()
	crowd, limit := st.opts.Crowd, scaleOutLimit(st.opts.Crowd)
	f := &ScaleOutFinding{
		Crowd: crowd, NodeLimit: limit, ShortHint: st.dur(shortHint),
		CheckEvery: st.dur(checkEvery), CheckRise: checkRise,
	}

	// Tear down in order: the clients leave (1000), then the balancer,
	// then the nodes, which by then hold nobody (Close: a node's Shutdown
	// would wait for the cluster's drain turn first).
	var (
		lb      *balancer
		clients []*reconnect.Client
		readers sync.WaitGroup
	)
	defer func() {
		for _, c := range clients {
			c.Close(closecode.NormalClosure, "demo over")
		}
		readers.Wait()
		st.waitIdle(5*time.Second, nodeA, nodeB)
		if lb != nil {
			_ = lb.close()
		}
		_ = st.closeServer(nodeB)
		_ = st.closeServer(nodeA)
	}()

	a, err := st.startServer(nodeA, st.nodeConfig(clusterNameA, limit, ""))
	if err != nil {
		return nil, err
	}
	var routed sync.Once
	lb, err = newBalancer(st.dur(checkEvery), checkRise, func(name string) {
		if name == nodeB {
			routed.Do(func() { st.mark("routed", "balancer → B") })
		}
	})
	if err != nil {
		return nil, err
	}
	lb.add(nodeA, a.Addr(), true)

	start := st.since()
	for i := range crowd {
		c, err := st.crowdClient(ctx, i, lb.Addr(), true)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
		readers.Go(func() { drainReads(ctx, c) })
	}
	if err := sleep(ctx, st.dur(aloneFor)); err != nil {
		return nil, err
	}

	joining := st.since()
	b, err := st.startServer(nodeB, st.nodeConfig(clusterNameB, limit, a.Node().RouteURL()))
	if err != nil {
		return nil, fmt.Errorf("node B joining node A: %w", err)
	}
	lb.add(nodeB, b.Addr(), false)
	if _, err := a.Node().WaitView(ctx, func(v cluster.View) bool {
		for _, m := range v.Live() {
			if m.Name == clusterNameB {
				return true
			}
		}
		return false
	}); err != nil {
		return nil, fmt.Errorf("node A never saw node B join: %w", err)
	}
	st.mark("join", "B joins")
	join, _ := st.markAt("join")
	f.Alone, f.JoinTook = join-start, join-joining

	// Everyone is served when the nodes hold the whole crowd (the
	// servers' count, not the clients': the truth about admission).
	for held := 0; held < crowd; held = st.held(nodeA, nodeB) {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, fmt.Errorf("%d of %d clients served after node B joined: %w", held, crowd, err)
		}
	}
	st.mark("served", "all served")
	if err := sleep(ctx, st.dur(servedHold)); err != nil {
		return nil, err
	}
	st.scaleOutFinding(ch.Name(), f)
	return f, nil
}

// held sums the connections the named servers hold now.
func (st *stage) held(names ...string) int {
	n := 0
	for _, name := range names {
		if s := st.server(name); s != nil {
			n += s.Shedder().Stats().Connections
		}
	}
	return n
}

// waitIdle waits, at most d, until the named servers hold no connection
// (their clients' close handshakes have finished).
func (st *stage) waitIdle(d time.Duration, names ...string) {
	deadline := time.Now().Add(d)
	for st.held(names...) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// ScaleOutFinding is what the scale-out chapter found.
type ScaleOutFinding struct {
	// Crowd is the number of clients, all wanting to stay; NodeLimit is
	// what each node admits.
	Crowd, NodeLimit int
	// FirstTry is the number of clients node A admitted on their first
	// attempt.
	FirstTry int
	// Alone is how long node A was the whole cluster: from the crowd's
	// arrival until it saw node B.
	Alone time.Duration
	// Before are the 1013s node A sent while alone; After those between
	// the join and the moment everyone was served; Late counts the 1013s
	// after that (there should be none).
	Before, After Refusals
	Late          int
	// JoinTook is from node B's start until node A saw it in the
	// cluster's view.
	JoinTook time.Duration
	// ShortHint is the cluster's hint for a full node with room
	// elsewhere.
	ShortHint time.Duration
	// CheckEvery and CheckRise are the balancer's health checks; Routed
	// is how long after the join it put node B in the rotation (0 if it
	// had not when everyone was served).
	CheckEvery time.Duration
	CheckRise  int
	Routed     time.Duration
	// ServedAfter is from the join until the nodes held the whole crowd.
	ServedAfter time.Duration
	// NodeA and NodeB are the connections each node held at the end.
	NodeA, NodeB int
	// Other counts close events other than 1013 in the chapter before
	// its end (e.g. 1006 from a dropped connection), by code.
	Other map[closecode.Code]int
}

// Refusals summarises a group of 1013s.
type Refusals struct {
	// Count is the number of 1013s, Clients the clients that got one.
	Count, Clients int
	// Reasons counts them by the human part of the close reason (the
	// retry-after= hint left out), e.g. "cluster at capacity".
	Reasons map[string]int
	// HintMin and HintMax bound their retry-after= hints.
	HintMin, HintMax time.Duration
}

func (g *Refusals) add(e Event, clients map[int]bool) {
	g.Count++
	clients[e.Client] = true
	g.Clients = len(clients)
	if g.Reasons == nil {
		g.Reasons = map[string]int{}
	}
	g.Reasons[reasonText(e.Reason)]++
	if e.Hint > 0 {
		if g.HintMin == 0 || e.Hint < g.HintMin {
			g.HintMin = e.Hint
		}
		g.HintMax = max(g.HintMax, e.Hint)
	}
}

// reasonText is a close reason without its retry hint.
func reasonText(reason string) string {
	text, _, _ := strings.Cut(reason, "; retry-after=")
	return strings.TrimSuffix(strings.TrimSpace(text), ";")
}

func (st *stage) scaleOutFinding(chapter string, f *ScaleOutFinding) {
	join, _ := st.markAt("join")
	served, _ := st.markAt("served")
	if routed, ok := st.markAt("routed"); ok && routed <= served {
		f.Routed = routed - join
	}
	f.ServedAfter = served - join
	if s := st.server(nodeA); s != nil {
		f.NodeA = s.Shedder().Stats().Connections
	}
	if s := st.server(nodeB); s != nil {
		f.NodeB = s.Shedder().Stats().Connections
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, o := range st.opens {
		if o.chapter == chapter && o.attempt == 0 && o.at < join {
			f.FirstTry++
		}
	}
	before, after := map[int]bool{}, map[int]bool{}
	f.Other = map[closecode.Code]int{}
	for _, e := range st.events {
		if e.Chapter != chapter || e.Client < 0 {
			continue
		}
		if e.Code != closecode.TryAgainLater || e.Sender != SentByServer {
			f.Other[e.Code]++
			continue
		}
		switch {
		case e.At < join:
			f.Before.add(e, before)
		case e.At <= served:
			f.After.add(e, after)
		default:
			f.Late++
		}
	}
}

// WriteText implements Finding.
func (f *ScaleOutFinding) WriteText(w io.Writer) error {
	p := &para{w: w}
	p.line("%d clients that want to stay (persistent links) reach a cluster through a load balancer.", f.Crowd)
	p.line("Node A (embedded NATS) admits %d: %d got in at once, and nobody leaves,", f.NodeLimit, f.FirstTry)
	p.line("so waiting alone would never get the other %d in.", f.Crowd-f.NodeLimit)
	if f.Before.Count > 0 {
		p.line("Alone for %s, node A was the whole cluster: %s to %d clients said %s,",
			secs(f.Alone), plural(f.Before.Count, "refusal"), f.Before.Clients, reasons(f.Before.Reasons))
		p.line("retry-after=%s, and the refused came back to be refused again.", secsRange(f.Before.HintMin, f.Before.HintMax))
	}
	p.line("Node B joined, its embedded NATS routed to A's; A counted it in the cluster %d ms after B started.", f.JoinTook.Milliseconds())
	if f.Routed > 0 {
		p.line("The balancer (least connections; /healthz every %s, %d good checks to enter) sent clients to B %s after the join.",
			secs(f.CheckEvery), f.CheckRise, secs(f.Routed))
	}
	if f.After.Count > 0 {
		p.line("In between, %s said %s, retry-after=%s:", plural(f.After.Count, "refusal"), reasons(f.After.Reasons), secsRange(f.After.HintMin, f.After.HintMax))
		p.line("the cluster's short hint (%s), for a retry that lands on another node.", secs(f.ShortHint))
	}
	late := "no refusal came after that"
	if f.Late > 0 {
		late = plural(f.Late, "refusal") + " came after that"
	}
	p.line("All %d were served %s after the join; %s.", f.Crowd, secs(f.ServedAfter), late)
	p.line("At the end node A held %d (its limit) and node B %d, the overflow.", f.NodeA, f.NodeB)
	if len(f.Other) > 0 {
		p.line("Also seen: %s.", codeCounts(f.Other))
	}
	return p.err
}

// reasons writes reasons and their counts: `"cluster at capacity"` for one,
// `"a" ×3 and "b" ×1` for more.
func reasons(m map[string]int) string {
	keys := byCount(m)
	if len(keys) == 1 {
		return strconv.Quote(keys[0])
	}
	parts := make([]string, len(keys))
	for i, r := range keys {
		parts[i] = fmt.Sprintf("%q ×%d", r, m[r])
	}
	return strings.Join(parts, " and ")
}

// byCount returns m's keys, the most counted first (then by name).
func byCount(m map[string]int) []string {
	return slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
}

// MarshalJSON implements json.Marshaler: durations in seconds.
func (f *ScaleOutFinding) MarshalJSON() ([]byte, error) {
	type refusals struct {
		Count   int            `json:"count"`
		Clients int            `json:"clients"`
		Reasons map[string]int `json:"reasons"`
		HintMin seconds        `json:"hint_min"`
		HintMax seconds        `json:"hint_max"`
	}
	group := func(g Refusals) refusals {
		r := refusals{g.Count, g.Clients, g.Reasons, seconds(g.HintMin), seconds(g.HintMax)}
		if r.Reasons == nil {
			r.Reasons = map[string]int{}
		}
		return r
	}
	return marshal(struct {
		Crowd       int            `json:"crowd"`
		NodeLimit   int            `json:"node_limit"`
		FirstTry    int            `json:"first_try"`
		Alone       seconds        `json:"alone"`
		Before      refusals       `json:"refusals_before_join"`
		After       refusals       `json:"refusals_after_join"`
		Late        int            `json:"refusals_after_all_served"`
		JoinTook    seconds        `json:"join_took"`
		ShortHint   seconds        `json:"short_hint"`
		CheckEvery  seconds        `json:"balancer_check_every"`
		CheckRise   int            `json:"balancer_check_rise"`
		Routed      seconds        `json:"balancer_routed_after"`
		ServedAfter seconds        `json:"all_served_after"`
		NodeA       int            `json:"node_a_connections"`
		NodeB       int            `json:"node_b_connections"`
		Other       map[string]int `json:"other_codes,omitempty"`
	}{f.Crowd, f.NodeLimit, f.FirstTry, seconds(f.Alone), group(f.Before), group(f.After), f.Late, seconds(f.JoinTook),
		seconds(f.ShortHint), seconds(f.CheckEvery), f.CheckRise, seconds(f.Routed), seconds(f.ServedAfter), f.NodeA, f.NodeB, codeIntMap(f.Other)})
}
