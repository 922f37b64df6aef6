package clustertest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
)

// Health checking as the test's HAProxy does it: a check every
// checkInter, checkFall failures to take a node out, checkRise passes to
// bring it back. A node's DrainDelay covers the worst case of the
// checks: up to one interval before the first failing check, then fall
// of them, plus one interval of margin.
const (
	checkInter = 250 * time.Millisecond
	checkFall  = 2
	checkRise  = 2
	drainDelay = checkInter * (checkFall + 2)
)

// restartRecord is one node's restart as the test saw it.
type restartRecord struct {
	slot    int
	name    string
	began   time.Time // Shutdown called (SIGTERM)
	drained time.Time // Shutdown returned: every connection closed
	started time.Time // the new incarnation joined and listens
	lbUp    time.Time // HAProxy has it UP again
	plan    *cluster.DrainPlan
}

// TestRollingRestart is the cluster test: three nodes behind
// HAProxy, a crowd of resuming clients on /broadcast and a publisher at a
// steady rate; the nodes restart one after another, each as ebb serve
// does on SIGTERM (drain turn, /healthz 503 for DrainDelay, 1012s paced to
// what the other nodes admit), the next once HAProxy has the previous one
// back (a deploy tool's readiness gate). It asserts every client back, no
// 1013 while the cluster had headroom, no broadcast lost or repeated for
// any client, and each node's handshakes within its admission rate; it
// reports those and the time to full recovery.
//
// Scale (environment): EBB_CLUSTER_CLIENTS (default 150),
// EBB_CLUSTER_RATE broadcasts a second (default 20), EBB_CLUSTER_ADMIT_RATE
// handshakes a second per node (default max(40, clients/15)),
// EBB_CLUSTER_BALANCE (HAProxy's leastconn, the default, with the nodes'
// --balancer least-conn; or roundrobin with --balancer even), EBB_CLUSTER_SETTLE
// (steady broadcast before the first restart, default 2s),
// EBB_CLUSTER_TIMEOUT (the whole test's bound, default 3m).
func TestRollingRestart(t *testing.T) {
	heavy(t)
	peerPath(t, "haproxy")
	clients := envInt(t, "EBB_CLUSTER_CLIENTS", 150)
	rate := envFloat(t, "EBB_CLUSTER_RATE", 20)
	admit := envFloat(t, "EBB_CLUSTER_ADMIT_RATE", max(40, float64(clients)/15))
	balance := envChoice(t, "EBB_CLUSTER_BALANCE", "leastconn", "roundrobin")
	plan := cluster.PlanOptions{Balance: cluster.BalanceEven} // ebb serve --balancer even
	if balance == "leastconn" {
		plan.Balance = cluster.BalanceLeast // ebb serve --balancer least-conn
	}
	settle := envDuration(t, "EBB_CLUSTER_SETTLE", 2*time.Second)
	timeout := envDuration(t, "EBB_CLUSTER_TIMEOUT", 3*time.Minute)
	const slots = 3

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rep := newSection(t, fmt.Sprintf("%d clients on /broadcast through HAProxy (balance %s, checks every %v, fall %d, rise %d), a publisher at %g messages/s; 3 nodes, each --max-conns %d --rate %g --burst %d --drain-delay %v --cluster-size 3 --balancer %s",
		clients, balance, checkInter, checkFall, checkRise, rate, clients, admit, int(admit), drainDelay, map[string]string{"leastconn": "least-conn", "roundrobin": "even"}[balance]))

	// The cluster: every node could hold every client, so the cluster
	// has headroom throughout and a 1013 is never the truth.
	ns := newNodeSet(t, "roll", slots, nodeParams{
		MaxConns: clients, Rate: admit, Burst: int(admit),
		DrainDelay: drainDelay, MinServing: slots, Plan: plan,
	})
	ns.startAll(ctx, slots)
	var servers []backendServer
	for i := range slots {
		n := ns.node(i)
		servers = append(servers, backendServer{n.name, n.srv.Addr()})
	}
	lb := startHAProxy(t, lbConfig{Servers: servers, Balance: balance, Inter: checkInter, Fall: checkFall, Rise: checkRise, MaxConn: lbMaxConn(clients)})
	if err := lb.waitServers(ctx, "every node UP", allUp(servers)); err != nil {
		t.Fatal(err)
	}

	// The crowd arrives at half the cluster's admission rate.
	cr := newCrowd(lb.url("/broadcast"), true)
	defer cr.close()
	rampStart := time.Now()
	if err := cr.add(ctx, clients, float64(slots)*admit/2); err != nil {
		t.Fatal(err)
	}
	waitCrowd(ctx, t, cr, clients, "every client connected and live")
	rep.note(t, "ramp: %d clients connected and live %v after the first dial", clients, time.Since(rampStart).Round(time.Millisecond))

	pub, err := startPublisher(ctx, lb.url("/broadcast"), rate)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.close()
	waitUntil(ctx, t, "every client has a broadcast", func() bool {
		for _, cl := range cr.list() {
			if cl.view().received == 0 {
				return false
			}
		}
		return true
	})

	// Measured from here.
	cr.record(true)
	smp := startSampler(ns, lb, cr)
	steadyFrom, recvFrom, seqFrom := readCPU(lb.cmd.Process.Pid), cr.received(), ns.node(0).srv.Node().LastSeq()
	time.Sleep(settle)
	steadyTo, recvTo, seqTo := readCPU(lb.cmd.Process.Pid), cr.received(), ns.node(0).srv.Node().LastSeq()

	var restarts []restartRecord
	for i := range slots {
		old := ns.node(i)
		rec := restartRecord{slot: i, name: old.name, began: time.Now()}
		sctx, scancel := context.WithTimeout(ctx, old.srv.DrainBudget()+15*time.Second)
		_, fresh, drained, err := ns.restart(sctx, i)
		scancel()
		if err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		rec.drained, rec.started, rec.plan = drained, fresh.started, old.srv.LastDrainPlan()
		if err := lb.waitServers(ctx, old.name+" UP again", func(st map[string]serverStat) bool { return st[old.name].up() }); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		rec.lbUp = time.Now()
		restarts = append(restarts, rec)
		t.Logf("restart %d (%s): drained in %v, joined again %v later, UP in HAProxy after %v more",
			i, rec.name, rec.drained.Sub(rec.began).Round(time.Millisecond), rec.started.Sub(rec.drained).Round(time.Millisecond), rec.lbUp.Sub(rec.started).Round(time.Millisecond))
	}
	restartsCPU := readCPU(lb.cmd.Process.Pid)
	waitCrowd(ctx, t, cr, clients, "every client back and live after the rolling restart")
	allBack := time.Now()
	var spread []string
	for i := range slots {
		spread = append(spread, fmt.Sprintf("n%d %d", i, ns.node(i).srv.Shedder().Stats().Connections))
	}

	// The last broadcasts: every client must get up to the publisher's
	// last message.
	last := pub.stop(ctx, t)
	waitUntil(ctx, t, fmt.Sprintf("every client has the last broadcast, p%d", last), func() bool {
		for _, cl := range cr.list() {
			if cl.view().lastIndex < last {
				return false
			}
		}
		return true
	})
	samples := smp.finish()
	events := cr.eventsSnapshot()
	refusals := ns.refused.snapshot()
	first := restarts[0].began

	// Every client back, and what each read.
	var lost, dups, gaps, pubDups, bad, stopped, behind int
	var finalSeq uint64
	views := make([]clientView, clients)
	for i, cl := range cr.list() {
		views[i] = cl.view()
		finalSeq = max(finalSeq, views[i].readSeq)
	}
	for _, v := range views {
		lost += int(v.lost)
		dups += v.dups
		gaps += v.gaps
		pubDups += v.pubDups
		if len(v.badData) > 0 {
			bad++
			if bad <= 3 {
				t.Errorf("client %d: data without the publisher's payload: %v", v.id, v.badData)
			}
		}
		if v.stopped {
			stopped++
			t.Errorf("client %d stopped: %v", v.id, v.stopErr)
		}
		if v.readSeq != finalSeq {
			behind++
		}
		if v.lost > 0 || v.dups > 0 || v.gaps > 0 {
			t.Errorf("client %d: %d lost, %d repeated, %d gap events (sequences %d…%d)", v.id, v.lost, v.dups, v.gaps, v.firstSeq, v.readSeq)
		}
	}
	rep.add(t, "clients back and live at the end", fmt.Sprintf("%d of %d", int(cr.connected.Load())-stopped, clients), "all")
	if stopped > 0 || behind > 0 {
		t.Errorf("%d clients stopped, %d did not read up to sequence %d", stopped, behind, finalSeq)
	}
	rep.add(t, "broadcasts lost / repeated per resuming client", fmt.Sprintf("%d lost, %d repeated, %d gap events over %d clients (each read %d…%d)", lost, dups, gaps, clients, views[0].firstSeq, finalSeq), "0 / 0")
	rep.add(t, "publisher's messages stored twice (seen as a payload repeated under a new sequence)", fmt.Sprintf("%d", pubDups/max(1, clients)), "0")
	if pubDups > 0 {
		t.Errorf("clients read %d payloads again under a new sequence: the publisher's message was stored twice", pubDups)
	}
	v0 := views[0]
	stored := int(finalSeq-v0.firstSeq) + 1
	rep.add(t, "broadcasts stored and delivered", fmt.Sprintf("publisher wrote p%d…p%d; %d stored (%d never stored: written into a connection that a drain then closed, or not read by its node before); %d refused by its queue; its connections ended with %v", v0.firstIdx, last, stored, v0.skipped, pub.refused.Load(), pub.closed()), "")
	wall := steadyTo.at.Sub(steadyFrom.at).Seconds()
	storedRate := float64(seqTo-seqFrom) / wall
	status := "the machine keeps up"
	if storedRate < 0.95*rate {
		status = "SATURATED: the publisher's node stores fewer than it is sent, the rest waits in socket buffers"
	}
	rep.add(t, "steady state before the first restart", fmt.Sprintf("%.0f broadcasts/s stored, %.0f deliveries/s (offered: %g/s × %d clients = %.0f/s): %s",
		storedRate, float64(recvTo-recvFrom)/wall, rate, clients, rate*float64(clients), status), "")

	// Close codes the clients saw from the first restart on.
	var c1013, c1013room, c1012, c1012refused, c1006, httpRefused, otherCodes int
	why1013 := map[string]int{}
	var firstBad []string
	for _, e := range events {
		if e.at.Before(first) {
			continue
		}
		switch {
		case e.kind == eventWait || e.kind == eventOpen:
		case e.status != 0:
			httpRefused++
		case e.code == closecode.TryAgainLater:
			c1013++
			why, _, _ := strings.Cut(e.reason, "; retry-after=")
			why1013[why]++
			if headroomAt(samples, e.at) != 0 {
				c1013room++
				if len(firstBad) < 3 {
					firstBad = append(firstBad, fmt.Sprintf("client %d at +%v: %q", e.client, e.at.Sub(first).Round(time.Millisecond), e.reason))
				}
			}
		case e.code == closecode.ServiceRestart && e.kind == eventClosed:
			c1012++
		case e.code == closecode.ServiceRestart:
			c1012refused++
		case e.code == closecode.AbnormalClosure:
			c1006++
			if len(firstBad) < 6 {
				firstBad = append(firstBad, fmt.Sprintf("client %d at +%v (%v): 1006 %s", e.client, e.at.Sub(first).Round(time.Millisecond), e.kind, e.err))
			}
		default:
			otherCodes++
		}
	}
	rep.add(t, "1013 while the cluster had headroom", fmt.Sprintf("%d (of %d 1013s: %v)", c1013room, c1013, why1013), "0")
	if c1013room > 0 {
		t.Errorf("%d clients got 1013 while the cluster had headroom: %s", c1013room, strings.Join(firstBad, "; "))
	}
	rep.add(t, "other closes seen by clients", fmt.Sprintf("1012 (drained) %d; 1012 at the handshake (routed to a draining node) %d; 1006 %d; HTTP refusals %d; other %d", c1012, c1012refused, c1006, httpRefused, otherCodes), "1012 only")
	if c1012refused+c1006+httpRefused+otherCodes > 0 {
		t.Errorf("clients saw closes other than the drain's 1012: %d 1012 at the handshake, %d 1006, %d HTTP refusals, %d other: %s", c1012refused, c1006, httpRefused, otherCodes, strings.Join(firstBad, "; "))
	}
	byReason := map[string]int{}
	for _, r := range refusals {
		if !r.at.Before(first) {
			byReason[r.reason]++
		}
	}
	rep.add(t, "refusals the nodes logged", fmt.Sprintf("%v", byReason), "none")
	shown := 0
	for _, r := range refusals {
		if !r.at.Before(first) && r.view != "" && shown < 3 {
			shown++
			t.Logf("%s refused (%s, hint %v) at +%v with the view: %s", r.node, r.reason, r.hint, r.at.Sub(first).Round(time.Millisecond), r.view)
		}
	}

	// Per restart: the plan, HAProxy's view, the clients moved and when
	// they were back.
	moved := 0
	var delays []time.Duration
	for k, r := range restarts {
		end := time.Now()
		if k+1 < len(restarts) {
			end = restarts[k+1].began
		}
		var closes []crowdEvent
		for _, e := range events {
			if e.kind == eventClosed && e.code == closecode.ServiceRestart && !e.at.Before(r.began) && !e.at.After(r.drained) {
				closes = append(closes, e)
			}
		}
		if len(closes) == 0 {
			t.Errorf("restart %d (%s): no client was drained with 1012", k, r.name)
			continue
		}
		moved += len(closes)
		var back time.Time
		var ds []time.Duration
		for _, c := range closes {
			if at, ok := nextOpen(events, c.client, c.at); ok {
				ds = append(ds, at.Sub(c.at))
				back = maxTime(back, at)
			} else {
				t.Errorf("restart %d: client %d, drained at +%v, did not come back", k, c.client, c.at.Sub(first))
			}
		}
		delays = append(delays, ds...)
		down := time.Time{}
		for _, ch := range lbChanges(samples, r.name) {
			if ch.state == "DOWN" && !ch.at.Before(r.began) && down.IsZero() {
				down = ch.at
			}
		}
		lbNote := "HAProxy never had it DOWN (sampled every 100 ms)"
		if !down.IsZero() {
			lbNote = fmt.Sprintf("HAProxy had it DOWN %v before its first 1012", closes[0].at.Sub(down).Round(10*time.Millisecond))
		}
		p := r.plan
		planNote := "no plan"
		if p != nil {
			planNote = fmt.Sprintf("plan: %d conns onto %d nodes at %.0f/s (safe %.0f/s), window %v", p.Conns, p.Targets, p.Rate, p.SafeRate, p.Window.Round(10*time.Millisecond))
		}
		_ = end
		rep.add(t, fmt.Sprintf("restart %d (%s)", k+1, r.name), fmt.Sprintf("%s; %d drained with 1012 from +%v to +%v; %s; all back %v after SIGTERM (1012 → open again: p50 %v, max %v); node down %v, joined again, UP in HAProxy %v after it joined",
			planNote, len(closes), closes[0].at.Sub(r.began).Round(10*time.Millisecond), closes[len(closes)-1].at.Sub(r.began).Round(10*time.Millisecond),
			lbNote, back.Sub(r.began).Round(10*time.Millisecond), quantile(ds, 0.5), quantile(ds, 1),
			r.started.Sub(r.drained).Round(10*time.Millisecond), r.lbUp.Sub(r.started).Round(10*time.Millisecond)), "")
	}
	rep.add(t, "time to full recovery", fmt.Sprintf("%v from the first SIGTERM to every client back and live (%d reconnects; 1012 → open again p50 %v, p99 %v, max %v)",
		allBack.Sub(first).Round(10*time.Millisecond), moved, quantile(delays, 0.5), quantile(delays, 0.99), quantile(delays, 1)), "")

	// Handshakes per node against its admission rate.
	var peaks []string
	for i := range slots {
		peak, at := peakPerSecond(samples, i)
		peaks = append(peaks, fmt.Sprintf("n%d %d at +%v", i, peak, at.Sub(first).Round(100*time.Millisecond)))
		if float64(peak) > admit+float64(int(admit)) {
			t.Errorf("n%d admitted %d handshakes in one second: more than its rate %g plus its burst %d", i, peak, admit, int(admit))
		}
	}
	rep.add(t, "connections per node after the rolling restart", strings.Join(spread, ", ")+" (the publisher included)", "")
	rep.add(t, "peak handshakes/s per node (admission rate)", fmt.Sprintf("%s (rate %g/s, burst %d)", strings.Join(peaks, ", "), admit, int(admit)), "≤ rate + burst")
	rep.add(t, "reconnect wave per second (all nodes)", wave(events, first, allBack), "")

	self, other := cores(steadyFrom, steadyTo)
	rself, rother := cores(steadyTo, restartsCPU)
	rep.add(t, "CPU (2 cores)", fmt.Sprintf("steady: test process (3 nodes, NATS, clients, publisher) %.2f cores, HAProxy %.2f; during the restarts %.2f and %.2f", self, other, rself, rother), "")
}

// allUp says every server is UP in HAProxy.
func allUp(servers []backendServer) func(map[string]serverStat) bool {
	return func(st map[string]serverStat) bool {
		for _, s := range servers {
			if !st[s.Name].up() {
				return false
			}
		}
		return true
	}
}

// waitCrowd waits until n clients are connected and live.
func waitCrowd(ctx context.Context, t *testing.T, cr *crowd, n int, what string) {
	t.Helper()
	waitUntil(ctx, t, what, func() bool { return int(cr.connected.Load()) == n && cr.liveCount() == n }, func() string {
		return fmt.Sprintf("%d connected, %d live", cr.connected.Load(), cr.liveCount())
	})
}

// waitUntil polls cond until it holds or ctx ends (a test failure, with
// what state says).
func waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool, state ...func() string) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			s := ""
			for _, f := range state {
				s += " (" + f() + ")"
			}
			t.Fatalf("waiting for %s: %v%s", what, ctx.Err(), s)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// nextOpen is when client opened a connection next after t.
func nextOpen(events []crowdEvent, client int, t time.Time) (time.Time, bool) {
	for _, e := range events {
		if e.client == client && e.kind == eventOpen && e.at.After(t) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// wave is the connections opened per second from first to end, as a
// compact series with its peak.
func wave(events []crowdEvent, first, end time.Time) string {
	secs := int(end.Sub(first)/time.Second) + 1
	per := make([]int, secs)
	for _, e := range events {
		if e.kind != eventOpen || e.at.Before(first) || !e.at.Before(end) {
			continue
		}
		per[int(e.at.Sub(first)/time.Second)]++
	}
	peak := slices.Max(per)
	parts := make([]string, len(per))
	for i, n := range per {
		parts[i] = fmt.Sprint(n)
	}
	return fmt.Sprintf("peak %d/s; per second from the first SIGTERM: %s", peak, strings.Join(parts, " "))
}

// quantile is the q-quantile of ds (0 when empty), rounded.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1))].Round(10 * time.Millisecond)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
