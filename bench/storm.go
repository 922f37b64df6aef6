package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/bench/wsclient"
)

// measureStorm: many simultaneous connects against a server limited to
// StormLimit (ebb through shed; the peers have no admission control and
// take everything), while calm clients already connected keep echoing at a
// fixed rate.
//
// The storm runs in a process of its own (`bench storm`). In the driver's
// process its thousands of dialing goroutines would share one Go scheduler
// with the calm clients, and their echo latency would measure the
// client's run queue rather than the server. As a separate process on the
// same core, niced to 19, the storm competes with the calm clients only
// through the kernel's scheduler, which runs the waking, mostly idle calm
// clients first: on a real network the storm's clients are other machines.
// (The kernel's own network work for the storm still shares that core.)
//
// Each repetition ends with a control run (see stormOnce) that shows how
// much of the storm's effect is the machine's.
//
// With EBB_STORM_TRACE=file set, the server's execution trace over the
// storm is saved there (go tool trace) — how the scheduler's delays of
// admitted connections were found.
func measureStorm(cfg Config, res *results) error {
	for rep := range cfg.Reps {
		for _, lib := range cfg.Libs {
			if err := stormOnce(cfg, res, rep, lib, false); err != nil {
				return fmt.Errorf("bench: storm, %s: %w", lib, err)
			}
		}
		if err := stormOnce(cfg, res, rep, "ebb", true); err != nil {
			return fmt.Errorf("bench: storm control: %w", err)
		}
	}
	return nil
}

// stormOnce runs one storm against lib's server and records it. With
// control, the storm goes to a second server process on the same core
// instead, and the measured server serves only the calm clients: what the
// calm clients' latency does then is the machine's share (the storm's
// clients and the kernel's network work sharing the cores), the floor no
// server can go below here.
func stormOnce(cfg Config, res *results, rep int, lib string, control bool) error {
	const size = 1 << 10
	frame := wsclient.Frame(wsclient.OpBinary, false, payload(size))
	const calmConns, rate = 100, 2000.0
	var args []string
	if lib == "ebb" {
		args = []string{"--limit", fmt.Sprint(cfg.StormLimit),
			"--hard-demand", fmt.Sprint(cfg.StormHardDemand), "--max-pending", fmt.Sprint(cfg.StormMaxPending)}
		if cfg.StormGuard {
			args = append(args, "--guard")
		}
	}
	return withServer(lib, func(p *serverProc) error {
		conns, err := dialMany(context.Background(), p.ws, calmConns, 64, 16<<10, "")
		if err != nil {
			return err
		}
		defer closeAll(conns)
		if err := echoOnce(conns, frame, size); err != nil {
			return err
		}
		target := p
		if control {
			if target, err = startServer(lib, args...); err != nil {
				return err
			}
			defer target.stop()
		}
		stop := make(chan struct{})
		time.AfterFunc(cfg.StormCalm, func() { close(stop) })
		calm, err := fixedRate(conns, frame, size, rate, stop)
		if err != nil {
			return fmt.Errorf("calm phase: %w", err)
		}

		stop = make(chan struct{})
		type latRes struct {
			p50, p99 float64
			err      error
		}
		latCh := make(chan latRes, 1)
		go func() {
			h, err := fixedRate(conns, frame, size, rate, stop)
			latCh <- latRes{float64(h.ValueAtQuantile(50)), float64(h.ValueAtQuantile(99)), err}
		}()
		// endLatency stops the calm clients and returns their figures; on
		// an early return the deferred call just stops them.
		endLatency := sync.OnceValue(func() latRes {
			close(stop)
			return <-latCh
		})
		defer endLatency()
		time.Sleep(200 * time.Millisecond)
		before, err := target.Stats(false)
		if err != nil {
			return err
		}
		if tr := os.Getenv("EBB_STORM_TRACE"); tr != "" && !control {
			go p.fetch("/debug/pprof/trace?seconds=3", tr)
			time.Sleep(100 * time.Millisecond)
		}
		sp, err := startStorm(target.ws, cfg.StormConns, cfg.StormAddrs)
		if err != nil {
			return err
		}
		defer sp.stop()
		sum, err := sp.wait()
		if err != nil {
			return err
		}
		after, err := target.Stats(false)
		if err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond)
		lr := endLatency()
		if lr.err != nil {
			return fmt.Errorf("admitted clients during the storm: %w", lr.err)
		}
		st, err := target.Stats(false)
		if err != nil {
			return err
		}
		counts := sum.Counts
		m := map[string]float64{
			"answered all s": time.Duration(sum.LastNs).Seconds(),
			"peak RSS MiB":   float64(st.HWMKiB) / 1024,
			"admitted":       float64(counts["admitted"]),
			"refused 1013":   float64(counts["1013"]),
			"refused 503":    float64(counts["503"]),
			"failed":         float64(counts["error"]),
			"calm p50 µs":    float64(calm.ValueAtQuantile(50)),
			"calm p99 µs":    float64(calm.ValueAtQuantile(99)),
			"storm p50 µs":   lr.p50,
			"storm p99 µs":   lr.p99,
			"p99 storm/calm": lr.p99 / float64(calm.ValueAtQuantile(99)),
			// CPU the storm's server spent from the storm's start until
			// every storm client had its answer.
			"server CPU ms": float64(after.CPUNanos-before.CPUNanos) / 1e6,
		}
		name, label := stormCase(cfg), lib
		if control {
			name, label = stormControlCase(cfg), "control"
		}
		res.add("storm", lib, name, m)
		progress("storm %d/%d %-7s all answered in %.2fs  peak RSS %.0f MiB  server CPU %.0f ms  admitted %d 1013 %d 503 %d failed %d  p50 calm %.0f µs → storm %.0f µs  p99 calm %.0f µs → storm %.0f µs %v",
			rep+1, cfg.Reps, label, m["answered all s"], m["peak RSS MiB"], m["server CPU ms"], counts["admitted"], counts["1013"], counts["503"], counts["error"],
			m["calm p50 µs"], lr.p50, m["calm p99 µs"], lr.p99, sum.Errors)
		return nil
	}, args...)
}

// stormCase names the storm case the same for every library, so the
// report can put them side by side: ebb is limited through shed, the
// peers (which have no admission control) are not.
func stormCase(cfg Config) string {
	shed := fmt.Sprintf("shed MaxConns %d", cfg.StormLimit)
	if cfg.StormHardDemand > 0 {
		shed += fmt.Sprintf(" HardDemand %d", cfg.StormHardDemand)
	}
	if cfg.StormGuard {
		shed += " + Listener"
		if cfg.StormMaxPending > 0 {
			shed += fmt.Sprintf(" MaxPending %d", cfg.StormMaxPending)
		}
	}
	return fmt.Sprintf("%d connects from %s (ebb: %s; peers: no limit)", cfg.StormConns, stormFrom(cfg), shed)
}

// stormFrom says where the storm comes from.
func stormFrom(cfg Config) string {
	if cfg.StormAddrs <= 1 {
		return "one address"
	}
	return fmt.Sprintf("%d addresses", cfg.StormAddrs)
}

// stormControlCase names the control run (see stormOnce).
func stormControlCase(cfg Config) string {
	return fmt.Sprintf("control: the same %d connects from %s at a second ebb process on the same core; the measured server sees none", cfg.StormConns, stormFrom(cfg))
}

// stormSummary is what `bench storm` reports on stdout, as one JSON line.
type stormSummary struct {
	LastNs int64          `json:"last_ns"` // when the last client had its answer
	Counts map[string]int `json:"counts"`  // "admitted", "1013", "503", "error"
	Errors []string       `json:"errors"`  // the first few failures
}

// stormProc is a running `bench storm` process.
type stormProc struct{ child }

// startStorm runs `bench storm` against addr. It inherits the driver's core.
func startStorm(addr string, n, addrs int) (*stormProc, error) {
	c, err := startSelf([]string{"nice", "-n", "19"}, true, "storm", "--addr", addr, "--n", fmt.Sprint(n), "--from", fmt.Sprint(addrs))
	if err != nil {
		return nil, err
	}
	return &stormProc{c}, nil
}

// wait returns the storm's summary once every client has its answer. The
// admitted connections stay open until stop.
func (s *stormProc) wait() (stormSummary, error) {
	var sum stormSummary
	line, err := s.out.ReadBytes('\n')
	if err != nil {
		return sum, fmt.Errorf("bench: storm process ended without a summary: %w", err)
	}
	if err := json.Unmarshal(line, &sum); err != nil {
		return sum, fmt.Errorf("bench: storm process printed %q: %w", line, err)
	}
	return sum, nil
}

// stop tells the storm process to close its connections and waits for it.
func (s *stormProc) stop() { s.finish(30 * time.Second) }

// stormMain is `bench storm --addr A --n N`: it connects N clients to A at
// once, prints a stormSummary line when every one has its answer, keeps the
// admitted connections open until stdin closes, then closes them.
func stormMain(args []string) error {
	fs := flag.NewFlagSet("storm", flag.ContinueOnError)
	addr := fs.String("addr", "", "WebSocket server host:port")
	n := fs.Int("n", 1000, "simultaneous connects")
	from := fs.Int("from", 1, "loopback source addresses to spread the connects over (127.1.x.y)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" {
		return errors.New("bench storm: --addr is required")
	}
	raiseNoFile()
	outs, conns := storm(*addr, *n, *from)
	sum := stormSummary{Counts: map[string]int{}}
	for _, o := range outs {
		sum.LastNs = max(sum.LastNs, int64(o.after))
		sum.Counts[o.kind]++
		if o.failed != nil && len(sum.Errors) < 3 {
			sum.Errors = append(sum.Errors, o.failed.Error())
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(sum); err != nil {
		return err
	}
	io.Copy(io.Discard, os.Stdin)
	closeAll(conns)
	return nil
}

// stormOutcome is one storm client's answer.
type stormOutcome struct {
	after  time.Duration
	kind   string // "admitted", "1013", "503", "error"
	failed error
}

// storm starts n connects at once, spread over addrs loopback source
// addresses (Linux routes all of 127/8 to the loopback interface), and
// returns how and when each was answered, plus the connections left open
// (to close after measuring).
func storm(addr string, n, addrs int) ([]stormOutcome, []*wsclient.Conn) {
	req := wsclient.Request(addr, "")
	outs := make([]stormOutcome, n)
	conns := make([]*wsclient.Conn, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var local net.Addr
			if addrs > 1 {
				k := i % addrs
				local = &net.TCPAddr{IP: net.IPv4(127, 1, byte(k/250), byte(1+k%250))}
			}
			c, err := wsclient.DialFrom(ctx, local, addr, req, 1024)
			at := time.Since(start)
			var he *wsclient.HandshakeError
			switch {
			case errors.As(err, &he) && he.Status == 503:
				outs[i] = stormOutcome{after: at, kind: "503"}
				return
			case err != nil:
				outs[i] = stormOutcome{after: at, kind: "error", failed: err}
				return
			}
			conns[i] = c
			// An upgrade-then-close refusal follows the 101 at once; a
			// connection that stays silent was admitted.
			c.NC.SetReadDeadline(time.Now().Add(time.Duration(500+rand.IntN(100)) * time.Millisecond))
			_, _, _, _, err = c.ReadMessage(false, nil)
			var ce *wsclient.CloseFrameError
			if errors.As(err, &ce) {
				outs[i] = stormOutcome{after: time.Since(start), kind: fmt.Sprint(ce.Code)}
				// Answer the close and hang up, as a browser would.
				c.Close()
				conns[i] = nil
				if ce.Code != 1013 {
					outs[i].kind, outs[i].failed = "error", err
				}
				return
			}
			c.NC.SetReadDeadline(time.Time{})
			outs[i] = stormOutcome{after: at, kind: "admitted"}
		}()
	}
	close(gate)
	wg.Wait()
	return outs, conns
}
