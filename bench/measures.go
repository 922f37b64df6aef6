package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/bench/wsclient"
)

// Row holds one measure's figures for one library and one case, one value
// per repeated run for every metric.
type Row struct {
	Measure string               `json:"measure"`
	Lib     string               `json:"lib"`
	Case    string               `json:"case"`
	Metrics map[string][]float64 `json:"metrics"`
}

// Config bounds every measure.
type Config struct {
	Quick        bool
	Reps         int
	Libs         []string
	Sizes        []int
	Conns        []int
	Warm, Dur    time.Duration
	LatConns     int
	LatRate      float64
	LatDur       time.Duration
	IdleConns    int
	HSWorkers    int
	HSDur        time.Duration
	DeflateConns int // closed-loop connections for deflate throughput
	DeflateMem   int // idle connections for deflate memory
	StormConns   int
	StormLimit   int
	StormCalm    time.Duration // length of the calm phase before the storm
	// ebb's shed settings for the storm beyond MaxConns StormLimit: the
	// hard ceiling, the listener guard and its bound on pending accepts.
	StormHardDemand int
	StormGuard      bool
	StormMaxPending int
	// StormAddrs is how many loopback source addresses the storm's
	// clients connect from.
	StormAddrs int
	Settle     time.Duration // idle time before memory is read
	ProfileDir string
	// The cluster measure: systems, subscribers, publish rate and payload
	// padding, phase lengths, and where built binaries are cached.
	ClusterSystems   []string
	ClusterClients   int
	ClusterRate      float64
	ClusterPad       int
	ClusterSteady    time.Duration // steady phase (fan-out latency)
	ClusterBackWait  time.Duration // bound on waiting for every client after a node's restart
	ClusterSettle    time.Duration // pause between two nodes' restarts
	ClusterTail      time.Duration // publishing after the last node
	ClusterDrainWait time.Duration // after the publisher stops, before counting
	EbbClient        string        // "reconnect" (reconnect.Client with Resume) or "neutral"
	BinDir           string
}

type results struct {
	mu       sync.Mutex
	rows     []*Row
	details  []*ClusterDetail
	versions map[string]string
	skips    map[string]string
}

// addDetail records a cluster run's details and its system's version.
func (r *results) addDetail(d *ClusterDetail, system, version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.details = append(r.details, d)
	if r.versions == nil {
		r.versions = map[string]string{}
	}
	r.versions[system] = version
}

// skip records why a system could not be measured.
func (r *results) skip(system, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.skips == nil {
		r.skips = map[string]string{}
	}
	r.skips[system] = why
}

func (r *results) skipped(system string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.skips[system]
	return ok
}

func (r *results) add(measure, lib, cs string, metrics map[string]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range metrics {
		if math.IsNaN(v) {
			delete(metrics, k)
		}
	}
	for _, row := range r.rows {
		if row.Measure == measure && row.Lib == lib && row.Case == cs {
			for k, v := range metrics {
				row.Metrics[k] = append(row.Metrics[k], v)
			}
			return
		}
	}
	row := &Row{Measure: measure, Lib: lib, Case: cs, Metrics: map[string][]float64{}}
	for k, v := range metrics {
		row.Metrics[k] = []float64{v}
	}
	r.rows = append(r.rows, row)
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// withServer starts lib's server, runs f, and stops it.
func withServer(lib string, f func(*serverProc) error, args ...string) error {
	p, err := startServer(lib, args...)
	if err != nil {
		return err
	}
	defer p.stop()
	return f(p)
}

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

// measureThroughput: closed-loop echo for every size × connection count.
// Every library's server is started at the start of a repetition and the
// libraries take turns case by case (in an order that rotates from one
// repetition to the next), so that drifting background load on a shared
// machine hits them alike. Idle servers cost nothing meanwhile.
func measureThroughput(cfg Config, res *results) error {
	for rep := range cfg.Reps {
		procs := map[string]*serverProc{}
		stopAll := func() {
			for _, p := range procs {
				p.stop()
			}
		}
		for _, lib := range cfg.Libs {
			p, err := startServer(lib)
			if err != nil {
				stopAll()
				return fmt.Errorf("bench: throughput, %s: %w", lib, err)
			}
			procs[lib] = p
		}
		err := func() error {
			for _, n := range cfg.Conns {
				for _, size := range cfg.Sizes {
					frame := wsclient.Frame(wsclient.OpBinary, false, payload(size))
					for i := range cfg.Libs {
						lib := cfg.Libs[(i+rep)%len(cfg.Libs)]
						if err := throughputCase(cfg, res, procs[lib], rep, frame, size, n); err != nil {
							return fmt.Errorf("bench: throughput, %s, %s × %d: %w", lib, sizeName(size), n, err)
						}
					}
				}
			}
			return nil
		}()
		stopAll()
		if err != nil {
			return err
		}
	}
	return nil
}

func throughputCase(cfg Config, res *results, p *serverProc, rep int, frame []byte, size, n int) error {
	conns, err := dialMany(context.Background(), p.ws, n, 64, 64<<10, "")
	if err != nil {
		return err
	}
	warm, dur := cfg.Warm, cfg.Dur
	if int64(size)*int64(n) >= 64<<20 {
		// With this much in flight the first echoes take a while: the
		// server reads every connection's message in interleaved pieces.
		warm, dur = 4*warm, 2*dur
	}
	msgs, scpu, ccpu, err := closedLoop(conns, frame, size, warm, dur, p)
	closeAll(conns)
	if err != nil {
		return err
	}
	perMsg := func(cpu float64) float64 {
		if msgs == 0 {
			return math.NaN()
		}
		return cpu / msgs * 1e6
	}
	res.add("throughput", p.lib, fmt.Sprintf("%s × %d", sizeName(size), n), map[string]float64{
		"msgs/s":            msgs,
		"MB/s":              msgs * float64(size) / 1e6,
		"server CPU %":      scpu * 100,
		"client CPU %":      ccpu * 100,
		"server CPU µs/msg": perMsg(scpu),
		"client CPU µs/msg": perMsg(ccpu),
	})
	progress("throughput %d/%d %-7s %7s × %4d conns: %9.0f msgs/s  server CPU %3.0f%% (%.1f µs/msg)  client CPU %3.0f%% (%.1f µs/msg)",
		rep+1, cfg.Reps, p.lib, sizeName(size), n, msgs, scpu*100, perMsg(scpu), ccpu*100, perMsg(ccpu))
	return nil
}

// measureLatency: round trips of 1 KiB at a fixed total rate.
func measureLatency(cfg Config, res *results) error {
	const size = 1 << 10
	frame := wsclient.Frame(wsclient.OpBinary, false, payload(size))
	for rep := range cfg.Reps {
		for _, lib := range cfg.Libs {
			err := withServer(lib, func(p *serverProc) error {
				conns, err := dialMany(context.Background(), p.ws, cfg.LatConns, 64, 16<<10, "")
				if err != nil {
					return err
				}
				defer closeAll(conns)
				if err := echoOnce(conns, frame, size); err != nil {
					return err
				}
				stop := make(chan struct{})
				time.AfterFunc(cfg.LatDur, func() { close(stop) })
				h, err := fixedRate(conns, frame, size, cfg.LatRate, stop)
				if err != nil {
					return err
				}
				res.add("latency", lib, fmt.Sprintf("1 KiB, %d conns, %.0f msgs/s", cfg.LatConns, cfg.LatRate), map[string]float64{
					"p50 µs":   float64(h.ValueAtQuantile(50)),
					"p99 µs":   float64(h.ValueAtQuantile(99)),
					"p99.9 µs": float64(h.ValueAtQuantile(99.9)),
				})
				progress("latency %d/%d %-7s p50 %d µs  p99 %d µs", rep+1, cfg.Reps, lib, h.ValueAtQuantile(50), h.ValueAtQuantile(99))
				return nil
			})
			if err != nil {
				return fmt.Errorf("bench: latency, %s: %w", lib, err)
			}
		}
	}
	return nil
}

// idleCost opens n connections (offering ext), echoes one message on each,
// lets them go idle and returns the server's memory growth per connection.
func idleCost(p *serverProc, n int, ext string, msgs [][]byte, settle time.Duration) (map[string]float64, error) {
	before, err := p.Stats(true)
	if err != nil {
		return nil, err
	}
	conns, err := dialMany(context.Background(), p.ws, n, 128, 4<<10, ext)
	if err != nil {
		return nil, err
	}
	defer closeAll(conns)
	if ext == "" {
		if err := echoOnce(conns, wsclient.Frame(wsclient.OpText, false, msgs[0]), len(msgs[0])); err != nil {
			return nil, err
		}
	} else if err := deflateEcho(conns, msgs, len(msgs)); err != nil {
		return nil, err
	}
	time.Sleep(settle)
	after, err := p.Stats(true)
	if err != nil {
		return nil, err
	}
	if after.Open < int64(n) {
		return nil, fmt.Errorf("bench: server holds %d connections, want %d", after.Open, n)
	}
	f := float64(n)
	return map[string]float64{
		"RSS KiB/conn":        float64(after.RSSKiB-before.RSSKiB) / f,
		"heap KiB/conn":       float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / 1024 / f,
		"stack KiB/conn":      float64(int64(after.StackInuse)-int64(before.StackInuse)) / 1024 / f,
		"heap+stack KiB/conn": float64(int64(after.HeapInuse+after.StackInuse)-int64(before.HeapInuse+before.StackInuse)) / 1024 / f,
		"goroutines/conn":     float64(after.Goroutines-before.Goroutines) / f,
	}, nil
}

// measureIdle: memory per idle connection.
func measureIdle(cfg Config, res *results) error {
	msg := [][]byte{[]byte("hello, idle world")}
	for rep := range cfg.Reps {
		for _, lib := range cfg.Libs {
			err := withServer(lib, func(p *serverProc) error {
				m, err := idleCost(p, cfg.IdleConns, "", msg, cfg.Settle)
				if err != nil {
					return err
				}
				res.add("idle", lib, fmt.Sprintf("%d conns", cfg.IdleConns), m)
				progress("idle %d/%d %-7s RSS %.1f KiB/conn  heap+stack %.1f KiB/conn  goroutines %.2f/conn",
					rep+1, cfg.Reps, lib, m["RSS KiB/conn"], m["heap+stack KiB/conn"], m["goroutines/conn"])
				return nil
			})
			if err != nil {
				return fmt.Errorf("bench: idle, %s: %w", lib, err)
			}
		}
	}
	return nil
}

// measureHandshakes: upgrades per second.
func measureHandshakes(cfg Config, res *results) error {
	for rep := range cfg.Reps {
		for _, lib := range cfg.Libs {
			err := withServer(lib, func(p *serverProc) error {
				hs, err := handshakeLoop(p.ws, cfg.HSWorkers, cfg.HSDur)
				if err != nil {
					return err
				}
				res.add("handshakes", lib, fmt.Sprintf("%d parallel clients", cfg.HSWorkers), map[string]float64{"handshakes/s": hs})
				progress("handshakes %d/%d %-7s %.0f/s", rep+1, cfg.Reps, lib, hs)
				return nil
			})
			if err != nil {
				return fmt.Errorf("bench: handshakes, %s: %w", lib, err)
			}
		}
	}
	return nil
}
