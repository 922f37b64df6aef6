package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/websocket"
)

// Gauges of `ebb serve`'s /metrics that idle mode reads.
const (
	metricHeap       = "ebb_process_heap_objects_bytes"
	metricStacks     = "ebb_process_stacks_bytes"
	metricGoroutines = "ebb_process_goroutines"
	metricConns      = "ebb_connections"
)

func newBenchIdleCmd(e *env, o *benchOptions) *cobra.Command {
	var metricsURL string
	var settle time.Duration
	cmd := &cobra.Command{
		Use:   "idle URL",
		Short: "Hold N idle connections and report memory per connection",
		Long: `Idle opens --conns connections, sends nothing, and holds them until
--duration ends (or Ctrl-C). Once all are open and --settle has passed,
it reports the memory they cost per connection.

When the server exposes ebb's gauges at /metrics (` + metricHeap + `
and ` + metricStacks + `, as "ebb serve" does), the figures are the
server's: the growth of its heap and stacks from before the first
connection to after the last, divided by the connections. Otherwise they
are the client's own (this process, after a garbage collection), which
says what holding connections costs a client.`,
		Example: `  ebb bench idle -c 5000 -d 20s ws://localhost:8080/echo
  ebb bench idle -c 1000 --metrics http://localhost:9100/metrics ws://localhost:8080/ws`,
		Args: benchURLArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(1); err != nil {
				return err
			}
			if settle < 0 {
				return usagef("bench idle: --settle %v: want a duration of zero or more", settle)
			}
			mu := metricsURL
			if mu == "" {
				mu = defaultMetricsURL(args[0])
			} else if u, err := url.Parse(mu); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				return usagef("bench idle: --metrics %q: want an http:// or https:// URL", mu)
			}
			dopts, err := o.dialOptions(false)
			if err != nil {
				return err
			}
			return o.output(e, runIdle(cmd.Context(), e, o, args[0], mu, settle, dopts))
		},
	}
	cmd.Flags().StringVar(&metricsURL, "metrics", "", "the server's Prometheus metrics (default: http(s)://HOST/metrics of the URL)")
	cmd.Flags().DurationVar(&settle, "settle", time.Second, "wait this long after the last connection opened before measuring")
	return cmd
}

// defaultMetricsURL is /metrics on the WebSocket URL's host.
func defaultMetricsURL(wsURL string) string {
	u, err := url.Parse(wsURL)
	if err != nil {
		return ""
	}
	scheme := "http"
	if u.Scheme == "wss" {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: u.Host, Path: "/metrics"}).String()
}

// memSnapshot holds the gauges idle mode compares.
type memSnapshot struct {
	heap, stacks, goroutines float64
	conns                    *float64
}

// parseMetrics reads unlabelled samples from Prometheus text format.
func parseMetrics(r io.Reader) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || strings.Contains(fields[0], "{") {
			continue
		}
		v, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		out[fields[0]] = v
	}
	return out
}

// snapshotOf picks ebb's gauges out of parsed metrics, and reports whether
// the memory ones are there.
func snapshotOf(m map[string]float64) (memSnapshot, bool) {
	heap, ok1 := m[metricHeap]
	stacks, ok2 := m[metricStacks]
	s := memSnapshot{heap: heap, stacks: stacks, goroutines: m[metricGoroutines]}
	if c, ok := m[metricConns]; ok {
		s.conns = &c
	}
	return s, ok1 && ok2
}

// serverMemory fetches the server's gauges.
func serverMemory(ctx context.Context, metricsURL string) (memSnapshot, bool) {
	if metricsURL == "" {
		return memSnapshot{}, false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return memSnapshot{}, false
	}
	tr := &http.Transport{Proxy: noProxy, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return memSnapshot{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memSnapshot{}, false
	}
	return snapshotOf(parseMetrics(io.LimitReader(resp.Body, 4<<20)))
}

// clientMemory reads this process's gauges after a collection, in the
// same form the server exposes them.
func clientMemory() memSnapshot {
	runtime.GC()
	var buf bytes.Buffer
	server.WriteRuntimeMetrics(&buf)
	s, _ := snapshotOf(parseMetrics(&buf))
	return s
}

// runIdle runs the idle mode until --duration passes or ctx ends.
func runIdle(ctx context.Context, e *env, o *benchOptions, rawURL, metricsURL string, settle time.Duration, dopts *websocket.DialOptions) *benchReport {
	cpu := startCPU()
	b := newBench(e, o, rawURL, dopts, o.conns)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	before, fromServer := serverMemory(runCtx, metricsURL)
	if !fromServer {
		before = clientMemory()
	}
	prog := startProgress(e, func(el time.Duration) string { return b.rec.liveLine(el, o.duration) })
	sem := make(chan struct{}, dialConcurrency)
	dialed := make(chan struct{}, o.conns)
	for range o.conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			up := sync.OnceFunc(func() { dialed <- struct{}{} })
			defer up()
			c := b.dialBounded(runCtx, sem)
			if c == nil {
				return
			}
			up()
			b.session(runCtx, c, readAll)
		}()
	}
	// Wait until every connection is up (or failed), then settle.
	for n := 0; n < o.conns; n++ {
		select {
		case <-dialed:
		case <-runCtx.Done():
		}
	}
	sleepCtx(runCtx, settle)
	held := int(b.rec.liveOpen.Load())
	var after memSnapshot
	var ok bool
	mctx := runCtx
	if runCtx.Err() != nil {
		// The run is over; the connections are still open until their
		// sessions close them, so measure now, on a fresh context.
		var mcancel context.CancelFunc
		mctx, mcancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer mcancel()
	}
	if fromServer {
		after, ok = serverMemory(mctx, metricsURL)
		fromServer = ok
	}
	if !fromServer {
		after = clientMemory()
	}
	<-runCtx.Done()
	b.wg.Wait()
	elapsed := min(time.Since(b.started), o.duration)
	prog.end()
	run := b.rec.report("idle", elapsed)
	mem := &memoryReport{
		Source:            "client",
		Connections:       held,
		ServerConnections: after.conns,
		HeapBefore:        before.heap,
		HeapAfter:         after.heap,
		StacksBefore:      before.stacks,
		StacksAfter:       after.stacks,
		GoroutinesBefore:  before.goroutines,
		GoroutinesAfter:   after.goroutines,
	}
	if fromServer {
		mem.Source, mem.MetricsURL = "server", metricsURL
	}
	if held > 0 {
		mem.PerConnection = round3((after.heap + after.stacks - before.heap - before.stacks) / float64(held))
	}
	run.Memory = mem
	rep := b.finish(ctx, "idle", []runReport{run}, cpu.clientReport([]runReport{run}, false))
	if !fromServer {
		rep.Client.Notes = append(rep.Client.Notes, fmt.Sprintf("the server exposes no %s at %s: memory figures are the client's own", metricHeap, metricsOrNone(metricsURL)))
	}
	return rep
}

func metricsOrNone(s string) string {
	if s == "" {
		return "(no metrics URL)"
	}
	return s
}
