// Command bench measures ebb side by side with gorilla/websocket,
// coder/websocket, lxzan/gws and gobwas/ws: echo throughput and latency,
// idle memory per connection, permessage-deflate, handshakes per second
// and a connection storm. Each server runs in its own process pinned to
// one core; one neutral hand-framed client (package wsclient) drives all
// of them from the other core.
//
//	go run . --quick        # smoke run, under a minute, JSON on stdout
//	go run . --all          # full run, writes RESULTS.md and charts/
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/bench/servers"
)

func main() {
	if len(os.Args) > 1 {
		// The driver re-executes itself for the servers and the storm.
		sub := map[string]func([]string) error{"serve": serveMain, "storm": stormMain, "nats": natsMain}[os.Args[1]]
		if sub != nil {
			if err := sub(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			return
		}
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: bench (--quick | --all) [flags]

Examples:
  go run . --quick                       # < 1 min smoke run, JSON on stdout
  go run . --all                         # full run (< 15 min), writes RESULTS.md and charts/
  go run . --all --only throughput,idle  # some measures only
  go run . --all --only cluster          # the cluster rows (ebb, Centrifugo), kept next to the others
  go run . --profile ebb --profile-case 16384x100   # CPU profile of one server under load

Flags:
`)
		fs.PrintDefaults()
	}
	quick := fs.Bool("quick", false, "smoke run: small counts, one repetition, JSON on stdout")
	all := fs.Bool("all", false, "full run: every measure, repeated, RESULTS.md and charts")
	reps := fs.Int("reps", 0, "repetitions per measure (default 1 quick, 3 all)")
	only := fs.String("only", "", "comma-separated measures: throughput,latency,idle,deflate,handshakes,storm,cluster (with --all, the other measures' rows are kept from --out's results.json)")
	libs := fs.String("libs", strings.Join(servers.Names, ","), "libraries to run")
	out := fs.String("out", ".", "directory for RESULTS.md, results.json and charts/")
	profLib := fs.String("profile", "", "profile this library's server under echo load instead of benchmarking")
	profCase := fs.String("profile-case", "16384x100", "size x conns for --profile")
	profKind := fs.String("profile-kind", "cpu", "cpu or heap (heap: idle connections)")
	profComp := fs.String("profile-compression", "", "for --profile: notakeover or takeover (JSON messages; size in --profile-case is ignored)")
	render := fs.String("render", "", "only rewrite RESULTS.md and charts/ from this results.json (no measuring)")
	latRate := fs.Float64("lat-rate", 0, "total messages per second for the latency measure (default 5000)")
	noPin := fs.Bool("no-pin", false, "do not pin the server and the client to separate cores")
	stormHard := fs.Int("storm-hard-demand", -1, "storm: shed's HardDemand for ebb (0: off; default 2 × the limit)")
	stormGuard := fs.Bool("storm-guard", true, "storm: put shed's Listener in front of ebb (pacing, MaxPending, 503 in the accept loop past the hard ceiling)")
	stormAddrs := fs.Int("storm-addrs", 250, "storm: loopback source addresses the storm's clients connect from (127.1.x.y), as a real crowd comes from many; 1 sends the whole storm from one address")
	stormPending := fs.Int("storm-max-pending", 16, "storm, with --storm-guard: shed Listener's MaxPending (0: no bound); ebb serve's default on the server's one core")
	clusterSys := fs.String("cluster-systems", strings.Join(clusterSystems, ","), "cluster: systems to run (centrifugo-redis needs redis-server on PATH)")
	clusterClients := fs.Int("cluster-clients", 0, "cluster: subscribers spread over the 3 nodes (default 300; quick 60)")
	clusterRate := fs.Float64("cluster-rate", 0, "cluster: messages published per second (default 100; quick 50)")
	clusterSteady := fs.Duration("cluster-steady", 0, "cluster: length of the steady phase (default 10s; quick 3s)")
	ebbClient := fs.String("ebb-client", "reconnect", "cluster: ebb's clients: reconnect (ebb's own Go client, reconnect.Client with Resume) or neutral (bench's hand-framed client with ebb's reconnect policy)")
	binDir := fs.String("bin", ".bin", "cluster: directory for the built ebb and Centrifugo binaries (Centrifugo is built once and kept)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *render != "" {
		return renderOnly(*render, *out)
	}
	if *noPin {
		pinDisabled = true
	}
	pinSelf()
	raiseNoFile()
	if *profLib != "" {
		return profileMain(*profLib, *profCase, *profKind, *profComp, *out)
	}
	if *quick == *all {
		fs.Usage()
		return errors.New("bench: give exactly one of --quick or --all")
	}
	cfg := Config{
		Quick:        *quick,
		Reps:         3,
		Libs:         strings.Split(*libs, ","),
		Sizes:        []int{16, 1 << 10, 16 << 10, 1 << 20},
		Conns:        []int{1, 100, 1000},
		Warm:         200 * time.Millisecond,
		Dur:          700 * time.Millisecond,
		LatConns:     100,
		LatRate:      5000,
		LatDur:       3 * time.Second,
		IdleConns:    10000,
		HSWorkers:    32,
		HSDur:        2 * time.Second,
		DeflateConns: 50,
		DeflateMem:   300,
		StormConns:   10000,
		StormLimit:   1000,
		StormCalm:    3 * time.Second,
		Settle:       500 * time.Millisecond,

		ClusterClients:   300,
		ClusterRate:      100,
		ClusterPad:       64,
		ClusterSteady:    10 * time.Second,
		ClusterBackWait:  30 * time.Second,
		ClusterSettle:    time.Second,
		ClusterTail:      2 * time.Second,
		ClusterDrainWait: 2 * time.Second,
	}
	if *quick {
		cfg.Reps = 1
		cfg.Sizes = []int{16, 1 << 10, 16 << 10}
		cfg.Conns = []int{1, 100}
		cfg.Warm, cfg.Dur = 50*time.Millisecond, 100*time.Millisecond
		cfg.LatConns, cfg.LatRate, cfg.LatDur = 50, 2500, 300*time.Millisecond
		cfg.IdleConns = 300
		cfg.HSDur = 200 * time.Millisecond
		cfg.DeflateConns, cfg.DeflateMem = 10, 50
		cfg.StormConns, cfg.StormLimit = 500, 200
		cfg.StormCalm = 300 * time.Millisecond
		cfg.Settle = 200 * time.Millisecond
		cfg.ClusterClients, cfg.ClusterRate, cfg.ClusterSteady = 60, 50, 3*time.Second
		cfg.ClusterSettle, cfg.ClusterTail, cfg.ClusterDrainWait = 500*time.Millisecond, time.Second, time.Second
	}
	cfg.ClusterSystems, cfg.BinDir, cfg.EbbClient = strings.Split(*clusterSys, ","), *binDir, *ebbClient
	if cfg.EbbClient != "reconnect" && cfg.EbbClient != "neutral" {
		return fmt.Errorf("bench: --ebb-client %q: want reconnect or neutral", cfg.EbbClient)
	}
	if err := validSystems(cfg.ClusterSystems); err != nil {
		return err
	}
	if *clusterClients > 0 {
		cfg.ClusterClients = *clusterClients
	}
	if *clusterRate > 0 {
		cfg.ClusterRate = *clusterRate
	}
	if *clusterSteady > 0 {
		cfg.ClusterSteady = *clusterSteady
	}
	cfg.StormHardDemand, cfg.StormGuard, cfg.StormMaxPending = *stormHard, *stormGuard, *stormPending
	if *stormAddrs < 1 || *stormAddrs > 250*250 {
		return fmt.Errorf("bench: --storm-addrs %d: want 1 to %d", *stormAddrs, 250*250)
	}
	cfg.StormAddrs = *stormAddrs
	if cfg.StormHardDemand < 0 {
		cfg.StormHardDemand = 2 * cfg.StormLimit
	}
	if *latRate > 0 {
		cfg.LatRate = *latRate
	}
	if *reps > 0 {
		cfg.Reps = *reps
	}
	measures := []struct {
		name string
		f    func(Config, *results) error
	}{
		{"throughput", measureThroughput},
		{"latency", measureLatency},
		{"idle", measureIdle},
		{"deflate", measureDeflate},
		{"handshakes", measureHandshakes},
		{"storm", measureStorm},
		{"cluster", measureCluster},
	}
	known := make([]string, len(measures))
	for i, m := range measures {
		known[i] = m.name
	}
	want := map[string]bool{}
	for _, m := range strings.Split(*only, ",") {
		if m == "" {
			continue
		}
		if !slices.Contains(known, m) {
			return fmt.Errorf("bench: --only %q: no measure %q; want some of %s", *only, m, strings.Join(known, ","))
		}
		want[m] = true
	}
	res := &results{}
	start := time.Now()
	load0 := loadAvg()
	// A measure that fails does not throw away the others: they are
	// written, the failed one keeps its earlier rows, and the run exits 1
	// naming it.
	ran := map[string]bool{}
	var failed []error
	for _, m := range measures {
		if len(want) > 0 && !want[m.name] {
			continue
		}
		progress("== %s", m.name)
		if err := m.f(cfg, res); err != nil {
			progress("%s failed: %v", m.name, err)
			failed = append(failed, fmt.Errorf("measure %s: %w", m.name, err))
			continue
		}
		ran[m.name] = true
	}
	failedErr := errors.Join(failed...)
	if len(ran) == 0 {
		return failedErr
	}
	progress("done in %s", time.Since(start).Round(time.Second))
	rep := Report{
		Date:     time.Now().UTC().Format(time.RFC3339),
		Command:  "go run . " + strings.Join(args, " "),
		Machine:  machine(),
		Config:   cfg,
		Elapsed:  time.Since(start).Round(time.Second).String(),
		Rows:     res.rows,
		Versions: map[string]string{},
		Load:     [2]string{load0, loadAvg()},
		Cluster:  res.details,
		Skipped:  res.skips,
	}
	for k, v := range servers.Versions {
		rep.Versions[k] = v
	}
	for k, v := range res.versions {
		rep.Versions[k] = v
	}
	if *quick {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep.summary()); err != nil {
			return err
		}
		return failedErr
	}
	if len(want) > 0 || failedErr != nil {
		if err := rep.keepEarlier(filepath.Join(*out, "results.json"), ran); err != nil {
			return errors.Join(failedErr, err)
		}
	}
	if err := rep.write(*out); err != nil {
		return errors.Join(failedErr, err)
	}
	return failedErr
}

// Machine describes where the figures were measured.
type Machine struct {
	CPUs   int    `json:"cpus"`
	Model  string `json:"cpu_model"`
	Go     string `json:"go"`
	Kernel string `json:"kernel"`
	Pinned bool   `json:"pinned"`
}

// loadAvg returns /proc/loadavg's first three fields: the machine is shared,
// and other work running during a measure shows up in its spread.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Pinned: pinned()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// renderOnly rewrites RESULTS.md and the charts from a saved results.json.
func renderOnly(path, dir string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("bench: reading %s: %w", path, err)
	}
	return r.write(dir)
}
