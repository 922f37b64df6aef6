package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/bench/fanout"
)

// ClusterDetail is what one cluster run saw beyond its numbers: how
// connections ended (close codes), the reconnect wave second by second,
// each node's restart, the loss account.
type ClusterDetail struct {
	System   string          `json:"system"`
	Case     string          `json:"case"`
	Rep      int             `json:"rep"`
	About    string          `json:"about"`
	Steady   map[string]int  `json:"ended_steady"`    // how subscriptions ended in the steady phase (should be none)
	Ended    map[string]int  `json:"ended_restart"`   // how subscriptions ended during the rolling restart
	Refused  map[string]int  `json:"refused_restart"` // how reconnect attempts failed during it
	Timeline []fanout.Second `json:"timeline"`        // from the first SIGTERM, per second
	Nodes    []NodeRestart   `json:"nodes"`
	Loss     fanout.Loss     `json:"loss"`
}

// NodeRestart times one node's turn in the rolling restart, in seconds
// from its SIGTERM.
type NodeRestart struct {
	Node  int     `json:"node"`
	Exit  float64 `json:"exit_s"`  // the process exited (its drain or shutdown)
	Ready float64 `json:"ready_s"` // restarted and healthy
	Back  float64 `json:"back_s"`  // every client subscribed again (-1: not within the bound)
}

// measureCluster: the same three-node cluster shape for ebb and
// Centrifugo, one after the other in one run: subscribers spread over the
// nodes, a publisher at a fixed rate entering by one node; fan-out latency
// in a steady phase, then a rolling restart (each node in turn gets
// SIGTERM, its system's own graceful shutdown, and is started again)
// while publishing goes on.
func measureCluster(cfg Config, res *results) error {
	ctx := context.Background()
	if err := os.MkdirAll(cfg.BinDir, 0o755); err != nil {
		return err
	}
	var systems []clusterSys
	for _, name := range cfg.ClusterSystems {
		switch name {
		case "ebb":
			bin, err := buildEbb(ctx, cfg.BinDir)
			if err != nil {
				return err
			}
			systems = append(systems, &ebbSys{bin: bin, lib: cfg.EbbClient == "reconnect"})
		case "centrifugo", "centrifugo-redis":
			bin, err := buildCentrifugo(ctx, cfg.BinDir)
			if err != nil {
				return err
			}
			redis := name == "centrifugo-redis"
			if _, err := exec.LookPath("redis-server"); redis && err != nil {
				res.skip(name, "redis-server is not installed (apt-get install redis-server)")
				progress("cluster: skipping %s: redis-server is not installed (apt-get install redis-server)", name)
				continue
			}
			systems = append(systems, &centrifugoSys{bin: bin, redis: redis})
		default:
			return fmt.Errorf("bench: --cluster-systems: unknown system %q (want ebb, centrifugo or centrifugo-redis)", name)
		}
	}
	for rep := range cfg.Reps {
		for i := range systems {
			sys := systems[(i+rep)%len(systems)]
			if res.skipped(sys.Name()) {
				continue
			}
			err := clusterOnce(cfg, res, rep, sys)
			var skip errSkip
			if errors.As(err, &skip) {
				res.skip(sys.Name(), skip.Error())
				progress("cluster: skipping %s: %v", sys.Name(), skip.error)
				continue
			}
			if err != nil {
				return fmt.Errorf("bench: cluster, %s: %w", sys.Name(), err)
			}
		}
	}
	return nil
}

func clusterCase(cfg Config) string {
	return fmt.Sprintf("3 nodes, %d clients, %g msgs/s", cfg.ClusterClients, cfg.ClusterRate)
}

func clusterOnce(cfg Config, res *results, rep int, sys clusterSys) (err error) {
	dir, err := os.MkdirTemp("", "bench-cluster-")
	if err != nil {
		return err
	}
	defer func() {
		var skip errSkip
		if err == nil || errors.As(err, &skip) {
			os.RemoveAll(dir)
		} else {
			err = fmt.Errorf("%w (logs kept in %s)", err, dir)
		}
	}()
	nats, err := startHelper("nats", "--store", filepath.Join(dir, "nats"))
	if err != nil {
		return err
	}
	defer nats.stop()
	env := &clusterEnv{dir: dir, nats: nats.addr, bin: cfg.BinDir}
	progress("cluster %d/%d %-16s starting 3 nodes", rep+1, cfg.Reps, sys.Name())
	defer sys.Stop()
	if err := sys.Start(env); err != nil {
		return err
	}

	st := fanout.NewStats()
	eps := sys.Endpoints()
	clients := make([]*fanout.Client, cfg.ClusterClients)
	cctx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	var wg sync.WaitGroup
	for i := range clients {
		c := &fanout.Client{ID: i, Home: i % len(eps), Nodes: eps, Proto: sys.Proto(), Channel: centChannel,
			Policy: sys.NewPolicy(time.Now()), Stats: st}
		clients[i] = c
		wg.Go(func() { c.Run(cctx) })
	}
	defer wg.Wait()
	defer stopClients()
	if err := waitConnected(st, clients, len(clients), 60*time.Second); err != nil {
		return fmt.Errorf("subscribing %d clients: %w", len(clients), err)
	}

	pub := sys.Publisher(st, cfg.ClusterPad)
	pctx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan error, 1)
	go func() { pubDone <- pub.Run(pctx, cfg.ClusterRate) }()
	defer func() { stopPub(); <-pubDone }()

	progress("cluster %d/%d %-16s %d clients subscribed; steady phase %v at %g msgs/s", rep+1, cfg.Reps, sys.Name(), len(clients), cfg.ClusterSteady, cfg.ClusterRate)
	sent0, _ := pub.Sent()
	cpu0, ccpu0, t0 := nodesCPU(sys), cpuNanos(), time.Now()
	time.Sleep(cfg.ClusterSteady)
	cpu1, ccpu1, t1 := nodesCPU(sys), cpuNanos(), time.Now()
	sent1, _ := pub.Sent()

	// Rolling restart.
	restartAt := time.Now()
	st.BeginRestart(pub.NextID())
	var nodes []NodeRestart
	lastBack := time.Duration(-1)
	for i, n := range sys.Nodes() {
		sig := time.Now()
		back := st.WatchBack(len(clients), 90*time.Second)
		exit, terr := n.terminate(60 * time.Second)
		if terr != nil {
			progress("cluster: %v", terr)
		}
		if err := n.start(); err != nil {
			return err
		}
		if err := n.waitReady(60 * time.Second); err != nil {
			return err
		}
		ready := time.Since(sig)
		nr := NodeRestart{Node: i + 1, Exit: exit.Seconds(), Ready: ready.Seconds(), Back: -1}
		if err := waitConnected(st, clients, len(clients), cfg.ClusterBackWait); err != nil {
			progress("cluster: after node %d: %v", i+1, err)
		} else {
			select {
			case d := <-back:
				if d >= 0 {
					nr.Back = d.Seconds()
					lastBack = sig.Add(d).Sub(restartAt)
				}
			case <-time.After(2 * time.Second):
				// Every client is subscribed and none was lost: the node had none.
				nr.Back = 0
			}
		}
		nodes = append(nodes, nr)
		progress("cluster %d/%d %-16s node %d: exited %.2fs after SIGTERM, ready at %.2fs, all clients back at %.2fs",
			rep+1, cfg.Reps, sys.Name(), i+1, nr.Exit, nr.Ready, nr.Back)
		time.Sleep(cfg.ClusterSettle)
	}
	time.Sleep(cfg.ClusterTail)
	stopPub()
	<-pubDone
	pubDone <- nil // for the deferred receive
	time.Sleep(cfg.ClusterDrainWait)
	stopClients()
	wg.Wait()
	for _, c := range clients {
		if err := c.Err(); err != nil {
			return err
		}
	}

	loss := st.Account(clients, 1)
	steadyEnded, _ := st.Codes(fanout.PhaseSteady)
	ended, refused := st.Codes(fanout.PhaseRestart)
	tl := st.Timeline(restartAt.Sub(st.Start), time.Since(st.Start))
	lat, rlat := st.Latency(fanout.PhaseSteady), st.Latency(fanout.PhaseRestart)
	sent, failed := pub.Sent()
	var attempts, lost, refusedN, peak int
	for _, s := range tl {
		attempts += s.Attempts
		lost += s.Lost
		refusedN += s.Refused
		peak = max(peak, s.Attempts)
	}
	slowest := 0.0
	for _, n := range nodes {
		slowest = max(slowest, n.Back)
		if n.Back < 0 {
			slowest = math.NaN()
			break
		}
	}
	allBack := math.NaN()
	if lastBack >= 0 && !math.IsNaN(slowest) {
		allBack = lastBack.Seconds()
	}
	m := map[string]float64{
		"fan-out p50 ms":          ms(lat.ValueAtQuantile(50)),
		"fan-out p99 ms":          ms(lat.ValueAtQuantile(99)),
		"fan-out p99.9 ms":        ms(lat.ValueAtQuantile(99.9)),
		"fan-out samples":         float64(lat.TotalCount()),
		"nodes CPU %":             float64(cpu1-cpu0) / float64(t1.Sub(t0)) * 100,
		"client CPU %":            float64(ccpu1-ccpu0) / float64(t1.Sub(t0)) * 100,
		"publish msgs/s":          float64(sent1-sent0) / t1.Sub(t0).Seconds(),
		"restart delivery p50 ms": ms(rlat.ValueAtQuantile(50)),
		"restart delivery p99 ms": ms(rlat.ValueAtQuantile(99)),
		"disconnects":             float64(lost),
		"reconnect attempts":      float64(attempts),
		"failed attempts":         float64(refusedN),
		"peak attempts/s":         float64(peak),
		"slowest node back s":     slowest,
		"all back s":              allBack,
		"published":               float64(loss.Published),
		"publish failures":        float64(failed),
		"sent, never published":   float64(max(0, sent-int64(loss.Published))),
		"lost msgs":               float64(loss.Lost),
		"lost %":                  100 * float64(loss.Lost) / math.Max(1, float64(loss.Expected)),
		"clients losing":          float64(loss.ClientsLosing),
		"max lost per client":     float64(loss.MaxLost),
		"dup by id":               float64(loss.DupByID),
		"dup by seq":              float64(loss.DupBySeq),
		"lost by seq":             float64(loss.SkippedBySeq + loss.GapMessages),
		"gap notices":             float64(loss.GapNotices),
		"gave up":                 float64(loss.GaveUp),
	}
	switch {
	case sys.Name() == "centrifugo":
		// Centrifugo's NATS broker gives publications no offsets.
		m["dup by seq"], m["lost by seq"] = math.NaN(), math.NaN()
	case sys.Proto() == fanout.EbbLib:
		// reconnect.Client drops duplicates itself and reports gaps.
		m["dup by seq"] = math.NaN()
	}
	cs := clusterCase(cfg)
	res.add("cluster", sys.Name(), cs, m)
	res.addDetail(&ClusterDetail{System: sys.Name(), Case: cs, Rep: rep, About: sys.About(), Steady: steadyEnded, Ended: ended,
		Refused: refused, Timeline: tl, Nodes: nodes, Loss: loss}, sys.Name(), sys.Version())
	progress("cluster %d/%d %-16s fan-out p50 %.2f ms p99 %.2f ms p99.9 %.2f ms (%d samples, %.0f msgs/s published, nodes CPU %.0f%%, client CPU %.0f%%); restart: %d disconnects (%s), %d attempts (%d failed: %s), peak %d/s, all back %.1fs; published %d (sent %d, %d failed), lost %d over %d clients (max %d), dup id %d seq %d, gap notices %d, gave up %d",
		rep+1, cfg.Reps, sys.Name(), m["fan-out p50 ms"], m["fan-out p99 ms"], m["fan-out p99.9 ms"], lat.TotalCount(), m["publish msgs/s"], m["nodes CPU %"], m["client CPU %"],
		lost, fanout.FormatCodes(ended), attempts, refusedN, fanout.FormatCodes(refused), peak, allBack,
		loss.Published, sent, failed, loss.Lost, loss.ClientsLosing, loss.MaxLost, loss.DupByID, loss.DupBySeq, loss.GapNotices, loss.GaveUp)
	if len(steadyEnded) > 0 {
		progress("cluster: %s: subscriptions ended during the steady phase: %s", sys.Name(), fanout.FormatCodes(steadyEnded))
	}
	return nil
}

func ms(us int64) float64 { return float64(us) / 1000 }

// nodesCPU sums the CPU time of the system's node processes.
func nodesCPU(sys clusterSys) int64 {
	var t int64
	for _, n := range sys.Nodes() {
		t += n.cpuNs()
	}
	return t
}

// waitConnected waits until want subscriptions are established, or a
// client failed for good, or timeout.
func waitConnected(st *fanout.Stats, clients []*fanout.Client, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for st.Connected() < want {
		for _, c := range clients {
			if err := c.Err(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d clients subscribed after %v", st.Connected(), want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// clusterSystems lists the systems of the cluster measure in report order.
var clusterSystems = []string{"ebb", "centrifugo", "centrifugo-redis"}

func validSystems(list []string) error {
	for _, s := range list {
		if !slices.Contains(clusterSystems, s) {
			return fmt.Errorf("bench: --cluster-systems: unknown system %q (want %v)", s, clusterSystems)
		}
	}
	return nil
}
