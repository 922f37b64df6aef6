package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// loadOf returns a Load source reporting conns for node i.
func loadOf(conns *atomic.Int64) func() Load {
	return func() Load { return Load{Conns: int(conns.Load()), Limit: 1000, Rate: 100} }
}

// converged reports whether v has every name, live, with the conns each
// reports.
func converged(v View, want map[string]int) bool {
	if len(v.Members) != len(want) {
		return false
	}
	for _, m := range v.Members {
		c, ok := want[m.Name]
		if !ok || m.Stale || m.Load.Conns != c {
			return false
		}
	}
	return true
}

func testConvergence(t *testing.T, nodes []*Node, conns []*atomic.Int64) time.Duration {
	t.Helper()
	want := map[string]int{}
	for i, n := range nodes {
		conns[i].Store(int64(100 * (i + 1)))
		want[n.Name()] = 100 * (i + 1)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range nodes {
		v, err := n.WaitView(ctx, func(v View) bool { return converged(v, want) })
		if err != nil {
			t.Fatalf("node %s: view %v did not converge to %v: %v", n.Name(), names(v), want, err)
		}
		if tot := v.Totals(); tot.Conns != 600 || tot.Limit != 3000 || tot.Headroom != 2400 || tot.Live != 3 {
			t.Fatalf("node %s: totals %+v, want 600 conns, 3000 limit", n.Name(), tot)
		}
	}
	return time.Since(start)
}

// TestViewConvergesMesh: three nodes, each embedding a NATS server, routed
// into one NATS cluster, see each other's load.
func TestViewConvergesMesh(t *testing.T) {
	t.Parallel()
	port, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	seed, dir := fmt.Sprintf("127.0.0.1:%d", port), t.TempDir()
	conns := []*atomic.Int64{{}, {}, {}}
	var nodes []*Node
	start := time.Now()
	for i := range 3 {
		o := meshOptions("conv", i, seed, dir)
		o.ReportInterval = 0 // the default, 250 ms: this test reports the real figure
		o.Load = loadOf(conns[i])
		nodes = append(nodes, join(t, o))
	}
	joined := time.Since(start)
	d := testConvergence(t, nodes, conns)
	t.Logf("3 embedded nodes (routes): joined in %v, views converged %v after a load change (report interval 250ms)", joined.Round(time.Millisecond), d.Round(time.Millisecond))
	if r := nodes[2].RouteURL(); r == "" {
		t.Fatal("RouteURL empty for a routed node")
	}
}

// TestViewConvergesExternal: three nodes on one existing NATS server.
func TestViewConvergesExternal(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	conns := []*atomic.Int64{{}, {}, {}}
	var nodes []*Node
	for i := range 3 {
		o := Options{Cluster: "ext", Name: fmt.Sprintf("n%d", i), NATSURL: url, Load: loadOf(conns[i])}
		nodes = append(nodes, join(t, o))
	}
	d := testConvergence(t, nodes, conns)
	t.Logf("3 nodes on external NATS: views converged %v after a load change (report interval 250ms)", d.Round(time.Millisecond))
	if nodes[0].RouteURL() != "" {
		t.Fatal("RouteURL must be empty with external NATS")
	}
}

// TestStaleAndLeave: a node that stops reporting turns stale after
// StaleAfter and stops counting, then is forgotten; a node that leaves
// cleanly disappears at once.
func TestStaleAndLeave(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	var nodes []*Node
	for i := range 3 {
		o := fast("stale", fmt.Sprintf("n%d", i))
		o.NATSURL = url
		o.StaleAfter = 300 * time.Millisecond
		o.ForgetAfter = 700 * time.Millisecond
		o.Load = func() Load { return Load{Conns: 10, Limit: 100} }
		nodes = append(nodes, join(t, o))
	}
	for _, n := range nodes {
		waitMembers(t, n, 3, 5*time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	crashed := time.Now()
	nodes[2].crash()
	v, err := nodes[0].WaitView(ctx, func(v View) bool { m, ok := v.Member("n2"); return ok && m.Stale })
	if err != nil {
		t.Fatalf("n2 never turned stale: %v", names(v))
	}
	staleAfter := time.Since(crashed)
	if tot := v.Totals(); tot.Live != 2 || tot.Stale != 1 || tot.Limit != 200 || tot.Conns != 20 {
		t.Fatalf("totals with n2 stale: %+v, want 2 live, limit 200", tot)
	}
	if staleAfter < 250*time.Millisecond {
		t.Fatalf("n2 stale after %v, before StaleAfter (300ms)", staleAfter)
	}
	if _, err := nodes[0].WaitView(ctx, func(v View) bool { _, ok := v.Member("n2"); return !ok }); err != nil {
		t.Fatal("n2 never forgotten")
	}

	left := time.Now()
	if err := nodes[1].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[0].WaitView(ctx, func(v View) bool { _, ok := v.Member("n1"); return !ok }); err != nil {
		t.Fatal("n1 never dropped after leaving")
	}
	if d := time.Since(left); d >= 300*time.Millisecond {
		t.Fatalf("n1 dropped %v after leaving: want at once, not after StaleAfter", d)
	}
	t.Logf("crashed node stale after %v (StaleAfter 300ms); clean leave seen after %v", staleAfter.Round(time.Millisecond), time.Since(left).Round(time.Millisecond))
	if _, err := nodes[1].Publish(ctx, Text, nil); err != ErrClosed {
		t.Fatalf("Publish after Leave: %v, want ErrClosed", err)
	}
}

// TestHostileReports: garbage on the load subjects changes nothing and
// panics nothing.
func TestHostileReports(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	o := fast("hostile", "n0")
	o.NATSURL = url
	n := join(t, o)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, p := range []struct{ subj, data string }{
		{"ebb.hostile.load.x", "not json"},
		{"ebb.hostile.load.x", `{"v":1,"node":"y","load":{}}`},
		{"ebb.hostile.load.x", `{"v":1,"node":"x","load":{"conns":-5}}`},
		{"ebb.hostile.load.x", `{"v":1,"node":"x","load":{"conns":1e99}}`},
		{"ebb.hostile.load.x", `{"v":9,"node":"x","load":{}}`},
		{"ebb.hostile.load.n0", `{"v":1,"node":"n0","inc":"impostor","load":{"conns":999}}`},
	} {
		if err := nc.Publish(p.subj, []byte(p.data)); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.Publish("ebb.hostile.load.ok", []byte(`{"v":1,"node":"ok","inc":"1","load":{"conns":3,"limit":10}}`))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := n.WaitView(ctx, func(v View) bool { _, ok := v.Member("ok"); return ok })
	if err != nil {
		t.Fatalf("the valid report never arrived: %v", names(v))
	}
	if len(v.Members) != 2 {
		t.Fatalf("members %v: want n0 and ok only", names(v))
	}
	if self, _ := v.Member("n0"); self.Load.Conns != 0 || !self.Self {
		t.Fatalf("an impostor changed this node's own entry: %+v", self)
	}
}
