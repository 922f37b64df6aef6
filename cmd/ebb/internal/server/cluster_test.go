package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// clusterConfig is node i's configuration in a cluster named name whose
// embedded NATS servers route to seed ("" for the first node): fast
// reports, short leases, a store under dir.
func clusterConfig(name string, i int, seed, dir string) Config {
	o := cluster.Options{
		Cluster:        name,
		Name:           fmt.Sprintf("n%d", i),
		ReportInterval: 50 * time.Millisecond,
		LeaseTTL:       time.Second,
		Embedded:       cluster.Embedded{StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i)), ClusterAddr: "127.0.0.1:0"},
	}
	if seed != "" {
		o.Embedded.Routes = []string{seed}
	}
	if os.Getenv("EBB_CLUSTER_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", o.Name)
	}
	return Config{Cluster: &ClusterConfig{Options: o}}
}

// startCluster starts k servers, each a node embedding a NATS server
// routed to the first one's (or all on the NATS at natsURL, if set), and
// waits until every node sees all k. mutate adjusts each node's
// configuration.
func startCluster(t *testing.T, name string, k int, natsURL string, mutate func(i int, cfg *Config)) []*Server {
	t.Helper()
	dir := t.TempDir()
	servers := make([]*Server, k)
	seed := ""
	for i := range k {
		cfg := clusterConfig(name, i, seed, dir)
		if natsURL != "" {
			cfg.Cluster.Options.NATSURL = natsURL
			cfg.Cluster.Options.Embedded = cluster.Embedded{}
		}
		if mutate != nil {
			mutate(i, &cfg)
		}
		servers[i] = start(t, cfg)
		if i == 0 && natsURL == "" {
			seed = servers[0].Node().RouteURL()
		}
	}
	for _, s := range servers {
		waitView(t, s, 10*time.Second, fmt.Sprintf("%d live members", k), func(v cluster.View) bool { return len(v.Live()) == k })
	}
	return servers
}

// waitView waits until s's cluster view satisfies cond.
func waitView(t *testing.T, s *Server, d time.Duration, what string, cond func(cluster.View) bool) cluster.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	v, err := s.Node().WaitView(ctx, cond)
	if err != nil {
		t.Fatalf("node %s: waiting for %s: %v (view: %s)", s.Node().Name(), what, err, describe(v))
	}
	return v
}

func describe(v cluster.View) string {
	var parts []string
	for _, m := range v.Members {
		st := ""
		switch {
		case m.Stale:
			st = " stale"
		case m.Load.Draining:
			st = " draining"
		}
		parts = append(parts, fmt.Sprintf("%s%s %d/%d d=%.1f", m.Name, st, m.Load.Conns, m.Load.Limit, m.Load.Demand))
	}
	return strings.Join(parts, ", ")
}

// waitReady waits until the servers' history is usable.
func waitReady(t *testing.T, d time.Duration, servers ...*Server) {
	t.Helper()
	deadline := time.After(d)
	for _, s := range servers {
		select {
		case <-s.Node().Ready():
		case <-deadline:
			t.Fatalf("node %s: history not ready after %v", s.Node().Name(), d)
		}
	}
}

// refusal dials /echo on addr, expecting a refusal, and returns its close
// code and reason.
func refusal(t *testing.T, ctx context.Context, addr string) (closecode.Code, string) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", nil)
	if err == nil {
		// The Close frame may follow the 101 a moment later.
		_, _, err = c.Read(ctx)
		c.CloseNow()
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("dial %s: %v, want a refusal with a close code", addr, err)
	}
	return ce.Code, ce.Reason
}

// echoClient dials /echo and proves it is in with one echo.
func echoClient(t *testing.T, ctx context.Context, addr string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		t.Fatalf("echo on %s: %v", addr, err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatalf("echo on %s: %v", addr, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// TestClusterAdmission: three nodes with two places each under a
// cluster-wide limit of four. With the cluster full, every node refuses
// with cluster_full and the hint of the cluster's overload — the same
// formula on each, growing as the cluster's demand does, whichever node
// is asked; with room elsewhere, a full node refuses with node_full and
// the short hint; a member that stops reporting stops counting.
func TestClusterAdmission(t *testing.T) {
	nodes := startCluster(t, "adm", 3, "", func(i int, cfg *Config) {
		cfg.Shed = shed.Options{Limits: shed.Limits{MaxConns: 2}, Jitter: -1}
		cfg.Cluster.Policy = cluster.Policy{MaxConns: 4}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := func(want int) func(cluster.View) bool {
		return func(v cluster.View) bool { return v.Totals().Conns == want }
	}
	for range 2 {
		echoClient(t, ctx, nodes[0].Addr())
	}
	n1 := []*websocket.Conn{echoClient(t, ctx, nodes[1].Addr()), echoClient(t, ctx, nodes[1].Addr())}
	for _, s := range nodes {
		waitView(t, s, 5*time.Second, "4 connections", conns(4))
	}

	// The cluster is full. The k-th refusal (on n2, which has room of its
	// own, then n0, then n1) comes with the cluster's demand at 4+k:
	// hint = RetryBase·(4+k+1)/4.
	for k, s := range []*Server{nodes[2], nodes[0], nodes[1]} {
		code, reason := refusal(t, ctx, s.Addr())
		want := fmt.Sprintf("cluster at capacity; retry-after=%s", hintText(shed.DefaultRetryBase*time.Duration(4+k+1)/4))
		if code != closecode.TryAgainLater || reason != want {
			t.Fatalf("refusal %d on %s: %v %q, want 1013 %q", k, s.Node().Name(), code, reason, want)
		}
		for _, o := range nodes {
			waitView(t, o, 5*time.Second, fmt.Sprintf("demand %d", 4+k+1), func(v cluster.View) bool { return v.Totals().Demand >= float64(4+k+1) })
		}
	}

	// A place frees up on n1: n0 is full but the cluster has room.
	n1[0].Close(closecode.NormalClosure, "")
	for _, s := range nodes {
		waitView(t, s, 5*time.Second, "3 connections", conns(3))
	}
	if code, reason := refusal(t, ctx, nodes[0].Addr()); code != closecode.TryAgainLater || reason != "node at capacity, cluster has room; retry-after=0.5" {
		t.Fatalf("full node with room elsewhere: %v %q, want 1013 with the short hint", code, reason)
	}
	extra := echoClient(t, ctx, nodes[2].Addr()) // admitted: the cluster's fourth
	extra.Close(closecode.NormalClosure, "")
	waitView(t, nodes[2], 5*time.Second, "3 connections", conns(3))

	// A member that reports 3 connections and then goes silent: counted
	// while it reports (the cluster is full again), not once stale.
	nc, err := nats.Connect(nodes[2].Node().ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	stop := make(chan struct{})
	ghostDone := make(chan struct{})
	go func() {
		defer close(ghostDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for seq := 1; ; seq++ {
			b, _ := json.Marshal(map[string]any{"v": 1, "node": "ghost", "inc": "g1", "seq": seq, "load": map[string]any{"conns": 3, "limit": 10}})
			_ = nc.Publish("ebb.adm.load.ghost", b)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	waitView(t, nodes[2], 5*time.Second, "the ghost's 3 connections", conns(6))
	if code, reason := refusal(t, ctx, nodes[2].Addr()); code != closecode.TryAgainLater || !strings.HasPrefix(reason, "cluster at capacity;") {
		t.Fatalf("with the ghost reporting: %v %q, want cluster_full", code, reason)
	}
	close(stop)
	<-ghostDone
	v := waitView(t, nodes[2], 5*time.Second, "the ghost stale", func(v cluster.View) bool { return v.Totals().Stale == 1 })
	if tt := v.Totals(); tt.Conns != 3 || tt.Live != 3 {
		t.Fatalf("with the ghost stale: %+v, want its connections not counted", tt)
	}
	echoClient(t, ctx, nodes[2].Addr()) // admitted again
	waitView(t, nodes[2], 5*time.Second, "4 connections", conns(4))

	_, body := get(t, nodes[0].Addr(), "/metrics")
	for _, want := range []string{
		`ebb_refused_total{reason="cluster_full",mode="close"} 1`,
		`ebb_refused_total{reason="node_full",mode="close"} 1`,
		`ebb_cluster_limit 4`,
		`ebb_cluster_drain_turn_held 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("n0 /metrics lacks %s:\n%s", want, grep(body, "ebb_cluster"))
		}
	}
	_, body = get(t, nodes[2].Addr(), "/metrics")
	for _, want := range []string{`ebb_cluster_members{state="serving"} 3`, `ebb_cluster_members{state="stale"} 1`, `ebb_cluster_connections 4`, `ebb_cluster_headroom 0`} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("n2 /metrics lacks %s:\n%s", want, grep(body, "ebb_cluster"))
		}
	}
}

// natsServer starts a standalone NATS server with JetStream: an existing
// NATS for nodes with ClusterConfig.Options.NATSURL.
func natsServer(t *testing.T) string {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

// getQuiet is get for goroutines: it reports failures as status 0.
func getQuiet(addr, path string) (int, string) {
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + path)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// hintText formats a hint as a close reason carries it.
func hintText(d time.Duration) string {
	r := closecode.FormatRetryHint("", d)
	return strings.TrimPrefix(r, "retry-after=")
}

// TestClusterBroadcastResume: a message sent on one node reaches the
// clients of every node, numbered; a client that disconnects and comes
// back on another node with from= gets exactly what it missed, then
// !live, then live messages; one that comes back after the history has
// dropped part of what it missed is told !gap and gets the rest.
func TestClusterBroadcastResume(t *testing.T) {
	nodes := startCluster(t, "bc", 3, "", func(i int, cfg *Config) {
		// The node's cache of the newest messages is smaller than the
		// history, so resumes read JetStream too; a cache larger than
		// the history would replay more than it holds (no loss).
		cfg.Cluster.Options.History = cluster.History{MaxMsgs: 20, CacheMsgs: 5}
	})
	waitReady(t, 30*time.Second, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sender, err := dial(t, ctx, nodes[0], "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	rb, err := dialResume(ctx, nodes[1].Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.CloseNow()
	rc, err := dialResume(ctx, nodes[2].Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.CloseNow()
	pc, err := dial(t, ctx, nodes[2], "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.CloseNow()
	liveB, liveC := liveAt(t, readN(t, ctx, rb, 1)[0]), liveAt(t, readN(t, ctx, rc, 1)[0])
	if liveB != liveC {
		t.Fatalf("nodes start the clients at %d and %d, want one order", liveB, liveC)
	}
	first := liveB

	// Five messages from a client of n0, with their hand-over latency.
	var lat []time.Duration
	for i := range 5 {
		sent := time.Now()
		send(t, ctx, sender, fmt.Sprintf("m%d", i))
		for _, c := range []*websocket.Conn{rb, rc} {
			m := readN(t, ctx, c, 1)[0]
			if m.seq != first+uint64(i) || m.data != fmt.Sprintf("m%d", i) {
				t.Fatalf("message %d: %v, want %d:\"m%d\"", i, m, first+uint64(i), i)
			}
		}
		lat = append(lat, time.Since(sent))
		if _, p, err := pc.Read(ctx); err != nil || string(p) != fmt.Sprintf("m%d", i) {
			t.Fatalf("plain client on n2: %q %v", p, err)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("publish on n0 → delivered on n1 and n2: median %v, max %v", lat[2].Round(10*time.Microsecond), lat[4].Round(10*time.Microsecond))

	// The client of n1 leaves; five more are sent; it comes back on n2.
	rb.Close(closecode.NormalClosure, "")
	for i := 5; i < 10; i++ {
		send(t, ctx, sender, fmt.Sprintf("m%d", i))
	}
	for range 5 {
		readN(t, ctx, rc, 1)
	}
	start := time.Now()
	rb2, err := dialResume(ctx, nodes[2].Addr(), first+5)
	if err != nil {
		t.Fatal(err)
	}
	defer rb2.CloseNow()
	got := readN(t, ctx, rb2, 6)
	t.Logf("resume on another node: 5 missed messages and !live in %v", time.Since(start).Round(10*time.Microsecond))
	for i, m := range got[:5] {
		if m.seq != first+5+uint64(i) || m.data != fmt.Sprintf("m%d", 5+i) {
			t.Fatalf("resumed on n2: %v, want m5…m9 from %d", got, first+5)
		}
	}
	if liveAt(t, got[5]) != first+10 {
		t.Fatalf("after the replay: %v, want !live %d", got[5], first+10)
	}
	send(t, ctx, sender, "m10")
	if m := readN(t, ctx, rb2, 1)[0]; m.seq != first+10 || m.data != "m10" {
		t.Fatalf("live after the resume: %v", m)
	}
	readN(t, ctx, rc, 1)

	// The client of n2 leaves after m10; 25 more go out, past the
	// history's 20; it comes back on n0.
	rc.Close(closecode.NormalClosure, "")
	for i := 11; i < 36; i++ {
		send(t, ctx, sender, fmt.Sprintf("m%d", i))
	}
	for range 25 {
		readN(t, ctx, rb2, 1) // everything is out before the resume
	}
	rc2, err := dialResume(ctx, nodes[0].Addr(), first+11)
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.CloseNow()
	got = readN(t, ctx, rc2, 22)
	if want := fmt.Sprintf("!gap %d %d", first+11, first+16); got[0].ctrl != want {
		t.Fatalf("resume past the history: first %v, want %s", got[0], want)
	}
	for i, m := range got[1:21] {
		if m.seq != first+16+uint64(i) || m.data != fmt.Sprintf("m%d", 16+i) {
			t.Fatalf("after the gap: %v", got)
		}
	}
	if liveAt(t, got[21]) != first+36 {
		t.Fatalf("after the gap's replay: %v, want !live %d", got[21], first+36)
	}
}

// closeRecord is when a client saw its connection end, and how.
type closeRecord struct {
	node string
	at   time.Time
	code closecode.Code
	hint time.Duration
}

// watchCloses reads every client until it is closed and records how.
func watchCloses(ctx context.Context, node string, cs []*websocket.Conn, out chan<- closeRecord) {
	for _, c := range cs {
		go func() {
			_, _, err := c.Read(ctx)
			rec := closeRecord{node: node, at: time.Now(), code: websocket.CloseStatus(err)}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				rec.hint, _ = closecode.ParseRetryHint(ce.Reason)
			}
			out <- rec
		}()
	}
}

// watchHealth polls /healthz on addr and returns a function reporting
// when it first answered 503.
func watchHealth(ctx context.Context, t *testing.T, addr string) func() time.Time {
	var mu sync.Mutex
	var first time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if code, _ := getQuiet(addr, "/healthz"); code == 503 {
				mu.Lock()
				first = time.Now()
				mu.Unlock()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { <-done })
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return first
	}
}

// TestClusterDrain: two nodes asked to drain at once take turns; each
// turns /healthz to 503 first, then spreads its 1012s over its plan's
// window, with the plan's hints, paced to what the other nodes admit.
// The nodes share an existing NATS (ebb serve --nats): with embedded
// servers, the second drain would rightly wait for the first node's
// history replica to come back.
func TestClusterDrain(t *testing.T) {
	const perNode = 12
	nodes := startCluster(t, "drain", 3, natsServer(t), func(i int, cfg *Config) {
		// 10 handshakes/s per node: a drain onto two others may send
		// 10 reconnects/s (half their rate), onto one 5/s.
		cfg.Shed = shed.Options{Limits: shed.Limits{MaxConns: 100, Rate: 10, Burst: 20}}
		cfg.DrainDelay = 300 * time.Millisecond
		cfg.Cluster.Plan = cluster.PlanOptions{Interval: 100 * time.Millisecond, Hint: 2 * time.Second}
	})
	waitReady(t, 30*time.Second, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	closes := make(chan closeRecord, 2*perNode)
	healthAt := map[string]func() time.Time{}
	for _, s := range nodes[:2] {
		var cs []*websocket.Conn
		for range perNode {
			cs = append(cs, echoClient(t, ctx, s.Addr()))
		}
		watchCloses(ctx, s.Node().Name(), cs, closes)
		healthAt[s.Node().Name()] = watchHealth(ctx, t, s.Addr())
	}
	for _, s := range nodes {
		waitView(t, s, 5*time.Second, "every connection reported", func(v cluster.View) bool { return v.Totals().Conns == 2*perNode })
	}
	var wg sync.WaitGroup
	began := time.Now()
	for _, s := range nodes[:2] {
		wg.Go(func() {
			sctx, scancel := context.WithTimeout(ctx, 40*time.Second)
			defer scancel()
			if err := s.Shutdown(sctx); err != nil {
				t.Errorf("%s: Shutdown: %v", s.Node().Name(), err)
			}
		})
	}
	byNode := map[string][]closeRecord{}
	for range 2 * perNode {
		r := <-closes
		byNode[r.node] = append(byNode[r.node], r)
	}
	wg.Wait()
	type span struct{ first, last time.Time }
	spans := map[string]span{}
	for name, rs := range byNode {
		s := nodes[0]
		if name == "n1" {
			s = nodes[1]
		}
		plan := s.LastDrainPlan()
		if plan == nil {
			t.Fatalf("%s drained without a plan", name)
		}
		sp := span{rs[0].at, rs[0].at}
		for _, r := range rs {
			if r.code != closecode.ServiceRestart || r.hint < plan.Hint || r.hint > plan.Hint+plan.Spread+100*time.Millisecond {
				t.Fatalf("%s: a client got %v with hint %v, want 1012 with a hint in [%v, %v] (the plan's)", name, r.code, r.hint, plan.Hint, plan.Hint+plan.Spread)
			}
			sp.first, sp.last = minTime(sp.first, r.at), maxTime(sp.last, r.at)
		}
		spans[name] = sp
		h := healthAt[name]()
		if h.IsZero() || sp.first.Sub(h) < 200*time.Millisecond {
			t.Errorf("%s: /healthz 503 at %v, first close at %v: want 503 at least the 300 ms delay (less polling slack) before", name, h.Sub(began), sp.first.Sub(began))
		}
		if got := sp.last.Sub(sp.first); got < plan.Window/2 || got > plan.Window+time.Second {
			t.Errorf("%s: closes spread over %v, want about the plan's window %v", name, got, plan.Window)
		}
		t.Logf("%s: plan %d conns onto %d nodes at %.1f/s (safe %.1f/s): window %v, batch %d every %v, hints %v+%v; /healthz 503 %v before the first close; closes from +%v to +%v",
			name, plan.Conns, plan.Targets, plan.Rate, plan.SafeRate, plan.Window, plan.Batch, plan.Interval, plan.Hint, plan.Spread,
			sp.first.Sub(h).Round(time.Millisecond), sp.first.Sub(began).Round(time.Millisecond), sp.last.Sub(began).Round(time.Millisecond))
	}
	// Turns: one node's closes all come before the other's first.
	a, b := spans["n0"], spans["n1"]
	if a.first.After(b.first) {
		a, b = b, a
	}
	if !a.last.Before(b.first) {
		t.Fatalf("drains overlapped: first from +%v to +%v, second from +%v", a.first.Sub(began), a.last.Sub(began), b.first.Sub(began))
	}
	// The first drained onto two nodes, the second onto one: its plan is
	// slower for as many connections.
	p0, p1 := nodes[0].LastDrainPlan(), nodes[1].LastDrainPlan()
	if p0.Targets+p1.Targets != 3 {
		t.Errorf("plans' targets %d and %d, want 2 then 1 (the drained node no longer counts)", p0.Targets, p1.Targets)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// lb stands for a load balancer in front of the cluster: it hands out the
// nodes in turn, skipping those whose /healthz says they drain (as a
// health check would, without its delay).
type lb struct {
	mu    sync.Mutex
	nodes []*Server
	next  int
}

func (b *lb) pick() *Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range len(b.nodes) {
		s := b.nodes[b.next%len(b.nodes)]
		b.next++
		if !s.healthDown.Load() {
			return s
		}
	}
	return nil
}

func (b *lb) set(i int, s *Server) {
	b.mu.Lock()
	b.nodes[i] = s
	b.mu.Unlock()
}

func (b *lb) get(i int) *Server {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nodes[i]
}

// tally counts what the clients of a rolling restart saw.
type tally struct {
	mu             sync.Mutex
	refused1013    int
	refusedDrain   int // refused by a draining node (1012 at once)
	drained        int // connections closed with 1012
	reconnects     int
	other          []string
	reconnectTimes []time.Duration // from the 1012 to the next connection
}

func (t *tally) add(f func(t *tally)) {
	t.mu.Lock()
	f(t)
	t.mu.Unlock()
}

// waitHint sleeps for the retry hint of err (at least 50 ms), or until
// ctx ends.
func waitHint(ctx context.Context, reason string) {
	d, _ := closecode.ParseRetryHint(reason)
	select {
	case <-ctx.Done():
	case <-time.After(max(d, 50*time.Millisecond)):
	}
}

// TestClusterRollingRestart restarts the three nodes of an embedded
// cluster one after another behind a stand-in load balancer, while 30
// echo clients and 3 resuming broadcast clients reconnect as a real
// client would (after the hint) and a publisher sends 20 messages a
// second. Every drain takes its turn once the node before it is back, the
// moved clients are admitted elsewhere — not one 1013 — and every
// broadcast client gets every message exactly once, in order.
func TestClusterRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("three restarts of a three-node cluster take about 20 s")
	}
	nodes := startCluster(t, "roll", 3, "", func(i int, cfg *Config) {
		cfg.Shed = shed.Options{Limits: shed.Limits{MaxConns: 40, Rate: 20, Burst: 20}}
		cfg.DrainDelay = 200 * time.Millisecond
		cfg.Cluster.MinServing = 3
		cfg.Cluster.Plan = cluster.PlanOptions{Interval: 100 * time.Millisecond}
	})
	waitReady(t, 30*time.Second, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cctx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	balancer := &lb{nodes: append([]*Server(nil), nodes...)}
	var tl tally
	var wg sync.WaitGroup

	// Echo clients: connect through the balancer, stay until closed, come
	// back after the hint.
	for range 30 {
		wg.Go(func() {
			var closedAt time.Time
			for cctx.Err() == nil {
				s := balancer.pick()
				if s == nil {
					waitHint(cctx, "")
					continue
				}
				c, _, err := websocket.Dial(cctx, "ws://"+s.Addr()+"/echo", nil)
				if err == nil {
					if !closedAt.IsZero() {
						tl.add(func(t *tally) { t.reconnects++; t.reconnectTimes = append(t.reconnectTimes, time.Since(closedAt)) })
					}
					_, _, err = c.Read(cctx)
					c.CloseNow()
					closedAt = time.Now()
				}
				var ce *websocket.CloseError
				switch {
				case cctx.Err() != nil:
					return
				case errors.As(err, &ce) && ce.Code == closecode.TryAgainLater:
					tl.add(func(t *tally) { t.refused1013++; t.other = append(t.other, ce.Reason) })
					waitHint(cctx, ce.Reason)
				case errors.As(err, &ce) && ce.Code == closecode.ServiceRestart:
					if strings.HasPrefix(ce.Reason, "server restarting") && closedAt.IsZero() {
						tl.add(func(t *tally) { t.refusedDrain++ })
					} else {
						tl.add(func(t *tally) { t.drained++ })
					}
					waitHint(cctx, ce.Reason)
				default:
					// The node went away between the pick and the dial.
					waitHint(cctx, "")
				}
			}
		})
	}

	// Broadcast clients: resume from the last sequence, wherever they land.
	type follower struct {
		seqs []uint64
		err  error
		next uint64
	}
	followers := make([]*follower, 3)
	started := make(chan struct{}, 3)
	var last sync.Map // follower index → last sequence (uint64)
	for i := range followers {
		f := &follower{}
		followers[i] = f
		wg.Go(func() {
			for cctx.Err() == nil && f.err == nil {
				s := balancer.pick()
				if s == nil {
					waitHint(cctx, "")
					continue
				}
				c, err := dialResume(cctx, s.Addr(), f.next)
				for err == nil {
					var m rmsg
					m, err = readResume(cctx, c)
					switch {
					case err != nil:
					case strings.HasPrefix(m.ctrl, "!live "):
						if f.next == 0 {
							f.next = liveAt(t, m)
							started <- struct{}{}
						}
					case m.ctrl != "":
						f.err = fmt.Errorf("unexpected %s", m.ctrl)
					case m.seq != f.next:
						f.err = fmt.Errorf("got %d after %v, want %d: lost or repeated", m.seq, f.seqs[max(0, len(f.seqs)-3):], f.next)
					default:
						f.seqs = append(f.seqs, m.seq)
						f.next = m.seq + 1
						last.Store(i, m.seq)
					}
				}
				if c != nil {
					c.CloseNow()
				}
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					if ce.Code == closecode.TryAgainLater {
						tl.add(func(t *tally) { t.refused1013++; t.other = append(t.other, "broadcast: "+ce.Reason) })
					}
					waitHint(cctx, ce.Reason)
				} else {
					waitHint(cctx, "")
				}
			}
		})
	}
	for range followers {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("broadcast clients did not start")
		}
	}
	waitTotal := func(want int) {
		for _, s := range nodes {
			waitView(t, s, 20*time.Second, fmt.Sprintf("%d connections", want), func(v cluster.View) bool { return v.Totals().Conns == want })
		}
	}
	waitTotal(33)

	// Publisher: 20 messages a second through whichever node is up.
	var lastPub atomic64
	pubDone := make(chan struct{})
	stopPub := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-tick.C:
			}
			for try := 0; try < 10; try++ {
				s := balancer.pick()
				if s == nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
				seq, err := s.Node().Publish(pctx, cluster.Text, fmt.Appendf(nil, "p%d", i))
				pcancel()
				if err == nil {
					lastPub.store(seq)
					break
				}
			}
		}
	}()

	time.Sleep(time.Second)
	for i := range 3 {
		old := balancer.get(i)
		began := time.Now()
		sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
		if err := old.Shutdown(sctx); err != nil {
			t.Fatalf("restart %d: Shutdown: %v", i, err)
		}
		scancel()
		drained := time.Since(began)
		plan := old.LastDrainPlan()
		fresh := start(t, old.RestartConfig())
		balancer.set(i, fresh)
		for _, s := range []*Server{balancer.get(0), balancer.get(1), balancer.get(2)} {
			waitView(t, s, 20*time.Second, "3 live members", func(v cluster.View) bool { return len(v.Live()) == 3 && v.Totals().Draining == 0 })
		}
		waitReady(t, 30*time.Second, fresh)
		t.Logf("restart %d: drained %d connections in %v (plan: window %v onto %d nodes at %.1f/s), back in %v",
			i, plan.Conns, drained.Round(time.Millisecond), plan.Window, plan.Targets, plan.Rate, time.Since(began).Round(time.Millisecond))
	}
	close(stopPub)
	<-pubDone
	final := lastPub.load()
	deadline := time.Now().Add(20 * time.Second)
	for i := range followers {
		for {
			v, _ := last.Load(i)
			if seq, _ := v.(uint64); seq >= final || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stopClients()
	wg.Wait()
	for i, f := range followers {
		if f.err != nil {
			t.Errorf("broadcast client %d: %v", i, f.err)
			continue
		}
		if n := len(f.seqs); n == 0 || f.seqs[n-1] < final {
			t.Errorf("broadcast client %d: %d messages, up to %v, want up to %d", i, n, f.seqs[max(0, n-1):], final)
		}
	}
	sort.Slice(tl.reconnectTimes, func(i, j int) bool { return tl.reconnectTimes[i] < tl.reconnectTimes[j] })
	p := func(q float64) time.Duration {
		if len(tl.reconnectTimes) == 0 {
			return 0
		}
		return tl.reconnectTimes[int(q*float64(len(tl.reconnectTimes)-1))].Round(time.Millisecond)
	}
	t.Logf("echo clients: %d drained with 1012, %d reconnects (1012 → connected again: p50 %v, max %v), %d refused with 1013, %d refused by a draining node; broadcast clients: %d messages each, none lost or repeated",
		tl.drained, tl.reconnects, p(0.5), p(1), tl.refused1013, tl.refusedDrain, len(followers[0].seqs))
	if tl.refused1013 != 0 {
		t.Errorf("%d clients were refused with 1013 during the rolling restart, want none: %v", tl.refused1013, tl.other)
	}
	if tl.drained < 30 {
		t.Errorf("%d echo connections drained with 1012, want every client moved at least once", tl.drained)
	}
}

// atomic64 is the last sequence published.
type atomic64 struct {
	mu sync.Mutex
	v  uint64
}

func (a *atomic64) store(v uint64) {
	a.mu.Lock()
	a.v = max(a.v, v)
	a.mu.Unlock()
}

func (a *atomic64) load() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.v
}

// TestClusterHealthStarting: a node joining a cluster (routes given)
// answers /healthz with 503 "starting" until its broadcast history is ready,
// so that a load balancer sends it no /broadcast client that would wait for
// the history; a seed alone answers 200 (its history comes only once a
// second node joins, and it serves meanwhile), and keeps answering 200
// while the newcomer's JetStream forms; a seed restarted after it had peers
// says "starting" again until its history is rebuilt.
func TestClusterHealthStarting(t *testing.T) {
	dir := t.TempDir()
	first := start(t, clusterConfig("health", 0, "", dir))
	if code, body := get(t, first.Addr(), "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz of a seed alone: %d %q, want 200 ok", code, body)
	}
	second := start(t, clusterConfig("health", 1, first.Node().RouteURL(), dir))
	if code, body := get(t, second.Addr(), "/healthz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "starting" {
		t.Fatalf("/healthz of a joining node without its history: %d %q, want 503 starting", code, body)
	}
	if code, body := get(t, first.Addr(), "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz of the seed while the second node joins: %d %q, want 200 ok (it was in rotation)", code, body)
	}
	waitReady(t, 30*time.Second, first, second)
	for _, s := range []*Server{first, second} {
		if code, body := get(t, s.Addr(), "/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
			t.Errorf("%s: /healthz with the history ready: %d %q, want 200 ok", s.Node().Name(), code, body)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatalf("seed: Shutdown: %v", err)
	}
	again := start(t, first.RestartConfig())
	if code, body := get(t, again.Addr(), "/healthz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "starting" {
		t.Fatalf("/healthz of the seed restarted into its cluster, history not ready: %d %q, want 503 starting", code, body)
	}
	waitReady(t, 30*time.Second, again)
	if code, body := get(t, again.Addr(), "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz of the restarted seed with its history ready: %d %q, want 200 ok", code, body)
	}
}
