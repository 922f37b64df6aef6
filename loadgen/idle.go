package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Gauges Idle reads from a server's metrics endpoint (unlabelled samples in
// Prometheus text format), as `ebb serve` exposes them. Any server can
// expose them to get its memory per connection measured.
const (
	// MetricHeapBytes is runtime/metrics' /memory/classes/heap/objects:bytes:
	// live heap objects and dead ones not yet collected.
	MetricHeapBytes = "ebb_process_heap_objects_bytes"
	// MetricStacksBytes is /memory/classes/heap/stacks:bytes: goroutine
	// stacks.
	MetricStacksBytes = "ebb_process_stacks_bytes"
	// MetricGoroutines is the number of goroutines alive.
	MetricGoroutines = "ebb_process_goroutines"
	// MetricConnections is the server's count of open WebSocket
	// connections.
	MetricConnections = "ebb_connections"
)

// How Idle samples memory, before the first connection and once all are
// open.
const (
	// memSamples readings, memSampleGap apart; the lowest heap plus stacks
	// is used, and the spread between them counts as noise.
	memSamples   = 3
	memSampleGap = 100 * time.Millisecond
	// serverGarbage is added to the noise of a server's figures: its heap
	// gauge counts objects not yet collected, and the Go runtime (at the
	// default GOGC) does not collect before the heap reaches 4 MiB, so a
	// server that has not allocated much since its last collection may
	// count up to that much garbage on either side of the subtraction.
	serverGarbage = 4 << 20
	// clientNoise is added to the noise of this process's figures, read
	// right after a collection: what background goroutines (the runtime's,
	// timers, the progress callback) may allocate between two readings.
	clientNoise = 64 << 10
)

// Idle opens o.Conns connections, sends nothing, and holds them until
// o.Duration ends. Once all are open and o.Settle has passed, it measures
// the memory they cost per connection: the growth of heap plus goroutine
// stacks from before the first connection to after the last, divided by
// the connections held.
//
// With o.MetricsURL serving MetricHeapBytes and MetricStacksBytes the
// figures are the server's; otherwise they are this process's, read after
// a garbage collection. Each side is the lowest of three readings. The
// report gives the figure with its noise (Memory.PerConnectionNoise) and
// withholds it, saying why, when the growth is less than twice the noise:
// a server's heap gauge may count up to 4 MiB of garbage not yet collected,
// so from the server's side a per-connection figure needs a growth well
// above that (about a thousand connections for ebb's few KiB each), while
// this process's figures after a collection are right from about a
// hundred connections.
//
// It returns an error only for invalid options.
func Idle(ctx context.Context, o IdleOptions) (*Report, error) {
	if err := o.normalize(true); err != nil {
		return nil, err
	}
	if o.Settle == 0 {
		o.Settle = DefaultSettle
	}
	cpu := startCPU()
	b := newBench(ctx, "idle", "idle", o.Options, o.URL, o.Conns)
	defer b.cancel()
	b.phase.Store("connecting")
	stopProgress := b.startProgress()
	src := memSource{metricsURL: o.MetricsURL}
	before, berr := src.read(b.ctx)
	var note string
	if berr != nil {
		if o.MetricsURL != "" {
			note = fmt.Sprintf("no %s from %s (%v): memory figures are the client's own", MetricHeapBytes, o.MetricsURL, berr)
		}
		src.metricsURL = ""
		before, _ = src.read(b.ctx)
	}
	sem := make(chan struct{}, dialConcurrency)
	dialed := make(chan struct{}, o.Conns)
	for range o.Conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			up := sync.OnceFunc(func() { dialed <- struct{}{} })
			defer up()
			c := b.dialBounded(sem)
			if c == nil {
				return
			}
			up()
			b.session(b.ctx, c, readAll)
		}()
	}
	// Wait until every connection is up (or failed), then settle.
	for n := 0; n < o.Conns; n++ {
		select {
		case <-dialed:
		case <-b.ctx.Done():
		}
	}
	b.phase.Store("settling")
	sleepCtx(b.ctx, o.Settle)
	held := int(b.rec.liveOpen.Load())
	var after memSet
	var aerr error
	if b.ctx.Err() != nil {
		// The connections are closing already: a reading now would
		// measure them half gone.
		aerr = fmt.Errorf("the run ended after %.1fs, before every connection was open and had settled (%d of %d open): give it a longer duration",
			time.Since(b.started).Seconds(), held, o.Conns)
	} else {
		b.phase.Store("measuring")
		if after, aerr = src.read(b.ctx); aerr != nil {
			aerr = fmt.Errorf("the reading once the connections were open failed: %w", aerr)
		}
	}
	b.phase.Store("holding")
	<-b.ctx.Done()
	b.wg.Wait()
	stopProgress()
	run := b.rec.report("idle", b.elapsed())
	run.Memory = src.memory(before, after, aerr, held)
	rep := b.finish(ctx, cpu, run)
	if note != "" {
		rep.Client.Notes = append(rep.Client.Notes, note)
	}
	return rep, nil
}

// memReading is one reading of the gauges.
type memReading struct {
	heap, stacks, goroutines float64
	conns                    *float64
}

// memSet is the best of several readings and their spread.
type memSet struct {
	best   memReading
	spread float64
}

func (s memSet) total() float64 { return s.best.heap + s.best.stacks }

// memSource reads memory from a server's metrics, or from this process
// when metricsURL is empty.
type memSource struct {
	metricsURL string
}

// read takes memSamples readings and keeps the lowest.
func (s memSource) read(ctx context.Context) (memSet, error) {
	var set memSet
	lo, hi := math.Inf(1), math.Inf(-1)
	for i := range memSamples {
		if i > 0 && !sleepCtx(ctx, memSampleGap) {
			break
		}
		var r memReading
		if s.metricsURL == "" {
			r = processMemory()
		} else {
			var err error
			if r, err = serverMemory(ctx, s.metricsURL); err != nil {
				return memSet{}, err
			}
		}
		t := r.heap + r.stacks
		if t < lo {
			lo, set.best = t, r
		}
		hi = max(hi, t)
	}
	if math.IsInf(lo, 1) {
		return memSet{}, ctx.Err()
	}
	set.spread = hi - lo
	return set, nil
}

// memory computes the report's figures.
func (s memSource) memory(before, after memSet, afterErr error, held int) *Memory {
	m := &Memory{
		Source:            "client",
		Connections:       held,
		Samples:           memSamples,
		ServerConnections: after.best.conns,
		HeapBefore:        roundBytes(before.best.heap),
		HeapAfter:         roundBytes(after.best.heap),
		StacksBefore:      roundBytes(before.best.stacks),
		StacksAfter:       roundBytes(after.best.stacks),
		GoroutinesBefore:  before.best.goroutines,
		GoroutinesAfter:   after.best.goroutines,
	}
	floor, why := float64(clientNoise), "the spread between readings taken after a garbage collection, plus 64 KiB"
	if s.metricsURL != "" {
		m.Source, m.MetricsURL = "server", s.metricsURL
		floor, why = serverGarbage, "the spread between readings, plus the 4 MiB of garbage a Go server's heap gauge may count before it collects"
	}
	switch {
	case afterErr != nil:
		m.Withheld = afterErr.Error()
		return m
	case held == 0:
		m.Withheld = "no connection was open"
		return m
	}
	growth := after.total() - before.total()
	noise := before.spread + after.spread + floor
	m.PerConnectionNoise = roundBytes(noise / float64(held))
	if growth < 2*noise {
		m.Withheld = fmt.Sprintf("heap and stacks grew by %s for %s, less than twice the measurement's noise of %s (%s)",
			humanBytes(growth), plural(held, "connection"), humanBytes(noise), why)
		if growth > 0 {
			need := int(math.Ceil(float64(held) * 2 * noise / growth))
			m.Withheld += fmt.Sprintf("; hold about %d connections or more for a figure", need)
		}
		return m
	}
	per := roundBytes(growth / float64(held))
	m.PerConnection = &per
	return m
}

// processMemory reads this process's gauges after a garbage collection.
func processMemory() memReading {
	runtime.GC()
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
		{Name: "/sched/goroutines:goroutines"},
	}
	metrics.Read(samples)
	value := func(i int) float64 {
		if samples[i].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return float64(samples[i].Value.Uint64())
	}
	g := value(2)
	if g == 0 {
		g = float64(runtime.NumGoroutine())
	}
	return memReading{heap: value(0), stacks: value(1), goroutines: g}
}

// serverMemory fetches a server's gauges.
func serverMemory(ctx context.Context, metricsURL string) (memReading, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return memReading{}, err
	}
	tr := &http.Transport{Proxy: noProxy, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return memReading{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memReading{}, fmt.Errorf("HTTP %s", resp.Status)
	}
	m := parseMetrics(io.LimitReader(resp.Body, 4<<20))
	heap, ok1 := m[MetricHeapBytes]
	stacks, ok2 := m[MetricStacksBytes]
	if !ok1 || !ok2 {
		return memReading{}, fmt.Errorf("no %s and %s among its metrics", MetricHeapBytes, MetricStacksBytes)
	}
	r := memReading{heap: heap, stacks: stacks, goroutines: m[MetricGoroutines]}
	if c, ok := m[MetricConnections]; ok {
		r.conns = &c
	}
	return r, nil
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
