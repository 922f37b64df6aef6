package clustertest

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/shed"
)

// TestClusterOverload is the cluster-wide overload: three nodes of
// capacity N behind HAProxy (which lists a fourth, down), 4 × N clients.
// Exactly 3 × N are admitted across the nodes; the rest are refused with
// 1013, "cluster at capacity" and a hint from the cluster's overload —
// the same formula on every node, RetryBase·max(1, (demand+1)/capacity).
// Then the fourth node joins; HAProxy sends it new connections once its
// /healthz answers, and the refused clients get in at their next retry:
// the test times that from the join and holds it against the waits the
// clients had been given.
//
// N is EBB_CLUSTER_OVERLOAD_PER_NODE (default 20).
func TestClusterOverload(t *testing.T) {
	heavy(t)
	peerPath(t, "haproxy")
	perNode := envInt(t, "EBB_CLUSTER_OVERLOAD_PER_NODE", 20)
	const slots, joined = 3, 4
	capacity := slots * perNode
	clients := joined * perNode
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep := newSection(t, fmt.Sprintf("3 nodes, each --max-conns %d (capacity %d), %d clients on /broadcast through HAProxy (balance leastconn; a fourth node listed, down), shed's jitter off so that the hints show the formula; then the fourth node joins",
		perNode, capacity, clients))

	ns := newNodeSet(t, "over", joined, nodeParams{MaxConns: perNode, Jitter: -1, MinServing: slots})
	ns.startAll(ctx, slots)
	n3Addr := freeAddr(t)
	var servers []backendServer
	for i := range slots {
		n := ns.node(i)
		servers = append(servers, backendServer{n.name, n.srv.Addr()})
	}
	servers = append(servers, backendServer{"n3", n3Addr})
	// leastconn: a node that joins has the fewest connections, so it gets
	// the refused clients' retries.
	lb := startHAProxy(t, lbConfig{Servers: servers, Balance: envChoice(t, "EBB_CLUSTER_OVERLOAD_BALANCE", "leastconn", "roundrobin"), Inter: checkInter, Fall: checkFall, Rise: checkRise, MaxConn: lbMaxConn(clients)})
	if err := lb.waitServers(ctx, "n0–n2 UP, n3 DOWN", func(st map[string]serverStat) bool {
		return allUp(servers[:slots])(st) && !st["n3"].up()
	}); err != nil {
		t.Fatal(err)
	}

	cr := newCrowd(lb.url("/broadcast"), true)
	defer cr.close()
	cr.record(true)
	smp := startSampler(ns, lb, cr)
	began := time.Now()
	if err := cr.add(ctx, clients, 0); err != nil {
		t.Fatal(err)
	}

	// The cluster fills. Until every node's view shows it full (reports
	// come every 250 ms), a full node may still see room elsewhere and
	// refuse with the short node_full hint, as it should; from then on
	// every client left out must be refused with the cluster's answer.
	waitUntil(ctx, t, fmt.Sprintf("%d clients in", capacity), func() bool { return int(cr.connected.Load()) >= capacity },
		func() string { return fmt.Sprintf("%d connected", cr.connected.Load()) })
	for i := range slots {
		ns.waitView(ctx, i, "the cluster full", func(v cluster.View) bool { return v.Totals().Conns >= capacity })
	}
	full := time.Now()
	waitUntil(ctx, t, "every client left out refused with \"cluster at capacity\"", func() bool {
		out := 0
		events := cr.eventsSnapshot()
		for _, cl := range cr.list() {
			if v := cl.view(); !v.open && refusedAfter(events, v.id, full) {
				out++
			}
		}
		return out == clients-capacity
	}, func() string { return fmt.Sprintf("%d connected", cr.connected.Load()) })
	time.Sleep(2 * checkInter) // a retry in flight lands
	settled := time.Now()
	conns := 0
	var per []string
	for i := range slots {
		c := ns.node(i).srv.Shedder().Stats().Connections
		conns += c
		per = append(per, fmt.Sprintf("n%d %d", i, c))
	}
	rep.add(t, "admitted across the nodes", fmt.Sprintf("%d (%s); %d clients connected", conns, strings.Join(per, ", "), cr.connected.Load()), fmt.Sprint(capacity))
	if conns != capacity || int(cr.connected.Load()) != capacity {
		t.Errorf("%d connections on the nodes, %d clients connected: want exactly the capacity, %d", conns, cr.connected.Load(), capacity)
	}

	// What the nodes told the clients left out once the cluster was full.
	policy := cluster.Policy{RetryBase: shed.DefaultRetryBase, RetryMax: shed.DefaultRetryMax}
	refs := ns.refused.snapshot()
	type hints struct {
		n, fullN int
		lo, hi   time.Duration
		dlo, dhi float64
	}
	byNode := map[string]*hints{}
	bad := 0
	for _, r := range refs {
		if r.at.Before(full) || r.at.After(settled) {
			continue
		}
		h := byNode[r.node]
		if h == nil {
			h = &hints{lo: math.MaxInt64, dlo: math.Inf(1)}
			byNode[r.node] = h
		}
		h.n++
		if r.reason != shed.ReasonClusterFull.String() {
			bad++
			t.Errorf("%s refused a client at +%v with %s (%s mode, hint %v): want cluster_full once the cluster is full", r.node, r.at.Sub(began).Round(time.Millisecond), r.reason, r.mode, r.hint)
			continue
		}
		h.fullN++
		h.lo, h.hi = min(h.lo, r.hint), max(h.hi, r.hint)
		// The formula, backwards: the cluster's demand the hint came from.
		d := r.hint.Seconds()/policy.RetryBase.Seconds()*float64(capacity) - 1
		h.dlo, h.dhi = min(h.dlo, d), max(h.dhi, d)
		if r.hint < policy.RetryBase || d < float64(capacity)-0.01 || d > float64(clients)+float64(len(refs)) {
			t.Errorf("%s: hint %v implies a cluster demand of %.1f: want RetryBase·(demand+1)/capacity with demand between the capacity %d and the clients plus refusals", r.node, r.hint, d, capacity)
		}
	}
	var hintRows []string
	for i := range slots {
		name := fmt.Sprintf("n%d", i)
		h := byNode[name]
		if h == nil || h.fullN == 0 {
			t.Errorf("%s refused no client with cluster_full: want every node to give the cluster's answer", name)
			continue
		}
		hintRows = append(hintRows, fmt.Sprintf("%s: %d refusals, hints %v–%v (demand %.0f–%.0f)", name, h.fullN, h.lo.Round(10*time.Millisecond), h.hi.Round(10*time.Millisecond), h.dlo, h.dhi))
	}
	early := map[string]int{}
	for _, r := range refs {
		if r.at.Before(full) {
			early[r.reason]++
		}
	}
	rep.add(t, "refusals while the crowd arrived, before every node's view had the cluster full", fmt.Sprintf("%v (node_full: this node full, others with room by its view: the short hint)", early), "")
	rep.add(t, "refusals once the cluster was full, by node (hint = 2 s × (demand+1)/capacity)", strings.Join(hintRows, "; "), "cluster_full on every node")
	var reasons []string
	seen := map[string]bool{}
	for _, e := range cr.eventsSnapshot() {
		if e.kind == eventRefused && !e.at.Before(full) && !e.at.After(settled) {
			why, _, _ := strings.Cut(e.reason, "; retry-after=")
			if e.code != closecode.TryAgainLater || why != cluster.ReasonClusterFull {
				t.Errorf("client %d was refused with %v %q once the cluster was full: want 1013 %q", e.client, e.code, e.reason, cluster.ReasonClusterFull)
			}
			if !seen[e.reason] && len(reasons) < 4 {
				seen[e.reason] = true
				reasons = append(reasons, fmt.Sprintf("%q", e.reason))
			}
		}
	}
	rep.add(t, "close reasons the refused clients read", strings.Join(reasons, ", ")+" …", "1013 \"cluster at capacity; retry-after=…\"")

	// A fourth node joins.
	waitingFor := map[int]time.Time{} // client → when its next attempt was due
	for _, cl := range cr.list() {
		if v := cl.view(); !v.open {
			waitingFor[v.id] = v.lastWait.Add(v.lastDelay)
		}
	}
	cfg := ns.config(3)
	cfg.Addr = n3Addr
	joinAt := time.Now()
	n3 := ns.start(3, cfg)
	if err := lb.waitServers(ctx, "n3 UP", func(st map[string]serverStat) bool { return st["n3"].up() }); err != nil {
		t.Fatal(err)
	}
	upAt := time.Now()
	waitUntil(ctx, t, fmt.Sprintf("all %d clients in", clients), func() bool { return int(cr.connected.Load()) == clients },
		func() string { return fmt.Sprintf("%d connected", cr.connected.Load()) })
	allIn := time.Now()
	samples := smp.finish()
	_ = samples
	rep.add(t, "the fourth node", fmt.Sprintf("joined (New returned) %v after the call, UP in HAProxy %v after that; %d connections on it", n3.started.Sub(joinAt).Round(10*time.Millisecond), upAt.Sub(n3.started).Round(10*time.Millisecond), n3.srv.Shedder().Stats().Connections), "")

	// Each refused client against the wait it had been given.
	events := cr.eventsSnapshot()
	var late []string
	var worst, spent time.Duration
	after := 0
	for id, due := range waitingFor {
		in, ok := nextOpen(events, id, joinAt)
		if !ok {
			t.Errorf("client %d never got in", id)
			continue
		}
		spent = max(spent, in.Sub(joinAt))
		// Due before the node was UP: its retry could only find the
		// cluster as it was. Its next wait is then the one to hold.
		for _, e := range events {
			if e.client == id && e.kind == eventRefused && e.at.After(joinAt) {
				after++
			}
		}
		limit := maxTime(due, upAt).Sub(joinAt) + time.Second
		if over := in.Sub(joinAt) - limit; over > 0 {
			worst = max(worst, over)
			if len(late) < 3 {
				late = append(late, fmt.Sprintf("client %d in %v after the join, its retry was due %v after it", id, in.Sub(joinAt).Round(10*time.Millisecond), due.Sub(joinAt).Round(10*time.Millisecond)))
			}
		}
	}
	rep.add(t, "refused clients in after the join", fmt.Sprintf("all %d within %v of the join (last client at +%v; %d refusals after the join)", len(waitingFor), spent.Round(10*time.Millisecond), allIn.Sub(joinAt).Round(10*time.Millisecond), after), "each at its next retry once the node is UP")
	if len(late) > 0 {
		t.Errorf("%d refused clients got in later than their next retry after the node was UP (worst by %v): %s", len(late), worst, strings.Join(late, "; "))
	}
	var dues []time.Duration
	for _, due := range waitingFor {
		dues = append(dues, due.Sub(joinAt))
	}
	rep.add(t, "their waits, as given before the join (from the join)", fmt.Sprintf("next retry due p50 %v, max %v after the join", quantile(dues, 0.5), quantile(dues, 1)), "")
	if c := n3.srv.Shedder().Stats().Connections; c != clients-capacity {
		t.Errorf("the fourth node holds %d connections: want the %d refused clients", c, clients-capacity)
	}
}

// refusedAfter reports whether client was refused at or after t.
func refusedAfter(events []crowdEvent, client int, t time.Time) bool {
	for _, e := range events {
		if e.client == client && e.kind == eventRefused && !e.at.Before(t) {
			return true
		}
	}
	return false
}
