package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// benchSchema names the version of the JSON that `ebb bench --json`
// writes. It changes when a field changes meaning or goes away; new fields
// may appear without a change.
const benchSchema = "ebb-bench/1"

// benchReport is what `ebb bench` measured, printed as a table or, with
// --json, as this structure. Durations are in seconds and latencies in
// milliseconds; the field names say which.
type benchReport struct {
	Schema      string       `json:"schema"`
	Mode        string       `json:"mode"`
	URL         string       `json:"url"`
	Started     time.Time    `json:"started"`
	Seconds     float64      `json:"seconds"`
	Interrupted bool         `json:"interrupted"`
	Client      clientReport `json:"client"`
	Runs        []runReport  `json:"runs"`
}

// clientReport describes the machine the bench ran on, and whether it, not
// the server, limited the result.
type clientReport struct {
	CPUs       int `json:"cpus"`
	GOMAXPROCS int `json:"gomaxprocs"`
	// CPUCores is the CPU time the bench process used divided by the wall
	// time: 1.0 is one core busy all the time.
	CPUCores float64 `json:"cpu_cores_used"`
	// FileLimit and FileLimitHard are RLIMIT_NOFILE's soft and hard limits
	// after the bench raised the soft one as far as it could.
	FileLimit     uint64 `json:"file_limit"`
	FileLimitHard uint64 `json:"file_limit_hard"`
	// InProcessServer is true when the server ran inside the bench process
	// (storm --restart): client and server then share the same cores.
	InProcessServer bool `json:"in_process_server"`
	// Bottleneck is true when the client probably limited the result; Notes
	// say why.
	Bottleneck bool     `json:"client_bottleneck"`
	Notes      []string `json:"notes,omitempty"`
}

// runReport is one run: the whole bench for echo, connect and idle, one
// per reconnect policy for storm.
type runReport struct {
	Name         string           `json:"name"`
	Seconds      float64          `json:"seconds"`
	Connections  connReport       `json:"connections"`
	Handshakes   handshakeReport  `json:"handshakes"`
	Messages     *messageReport   `json:"messages,omitempty"`
	Latency      *latencyReport   `json:"latency_ms,omitempty"`
	CloseCodes   []codeCount      `json:"close_codes"`
	HTTPStatuses []statusCount    `json:"http_statuses"`
	Errors       []errorCount     `json:"errors"`
	Reconnect    *reconnectReport `json:"reconnect,omitempty"`
	Restart      *restartReport   `json:"restart,omitempty"`
	Memory       *memoryReport    `json:"memory,omitempty"`
	Timeline     []timelinePoint  `json:"timeline"`
}

type connReport struct {
	// Target is how many connections the run tried to hold at once.
	Target int `json:"target"`
	// Peak is the most that were open at once.
	Peak int `json:"peak"`
	// OpenAtEnd is how many were open when the run ended (before the
	// bench closed them).
	OpenAtEnd int `json:"open_at_end"`
}

type handshakeReport struct {
	Attempts  uint64 `json:"attempts"`
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
	// PerSecond is completed handshakes over the run's duration.
	PerSecond float64 `json:"per_second"`
	// PeakPerSecond is the busiest 100 ms of the run (a sliding window),
	// scaled to a second.
	PeakPerSecond float64        `json:"peak_per_second"`
	PeakAtSeconds float64        `json:"peak_at_seconds"`
	Latency       *latencyReport `json:"latency_ms,omitempty"`
}

type messageReport struct {
	Size           int     `json:"size"`
	Compression    bool    `json:"compression"`
	Sent           uint64  `json:"sent"`
	Received       uint64  `json:"received"`
	PerSecond      float64 `json:"per_second"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	// Rate is the target rate in messages per second; 0 means closed loop
	// (each connection sends its next message when the echo arrives).
	Rate float64 `json:"rate"`
}

// latencyReport holds percentiles from an HDR histogram, in milliseconds,
// accurate to 0.1%.
type latencyReport struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// codeCount is how many connections ended with a close code, and who chose
// the code: "server", "client" (the bench itself, e.g. 1000 at the end) or
// "local" (no Close frame: 1006).
type codeCount struct {
	Code  int    `json:"code"`
	Name  string `json:"name"`
	By    string `json:"by"`
	Retry string `json:"retry"`
	Count uint64 `json:"count"`
}

type statusCount struct {
	Status int    `json:"status"`
	Text   string `json:"text"`
	Count  uint64 `json:"count"`
}

// errorCount is how many dials failed without an HTTP answer, by kind,
// with one example message.
type errorCount struct {
	Kind    string `json:"kind"`
	Count   uint64 `json:"count"`
	Example string `json:"example"`
}

type reconnectReport struct {
	Policy string `json:"policy"`
	// Attempts counts dials after a client's first one.
	Attempts uint64 `json:"attempts"`
	// GaveUp counts clients that stopped because their policy said so.
	GaveUp uint64         `json:"gave_up"`
	Delays *latencyReport `json:"delays_ms,omitempty"`
}

// restartReport is what happened around a server restart (storm
// --restart). Times are seconds since the run started.
type restartReport struct {
	DrainAt     float64 `json:"drain_at"`
	BackAt      float64 `json:"back_at"`
	DrainCode   int     `json:"drain_code"`
	DrainWindow float64 `json:"drain_window_seconds"`
	Gap         float64 `json:"gap_seconds"`
	// PeakPerSecond is the busiest 100 ms of handshakes (a sliding window)
	// from the drain on, scaled to a second.
	PeakPerSecond float64 `json:"peak_per_second"`
	PeakAt        float64 `json:"peak_at"`
	// PeakAttemptsPerSecond is the busiest 100 ms of connection attempts
	// (dials started, refused ones included) from the drain on: the load
	// the clients' policy offers, whatever the server managed to accept.
	PeakAttemptsPerSecond float64 `json:"peak_attempts_per_second"`
	// FullReconnect is the time from the start of the drain until every
	// client was connected again; null when that never happened.
	FullReconnect *float64 `json:"full_reconnect_seconds"`
	// FullAfterBack is the same time counted from the moment the new
	// server listened.
	FullAfterBack *float64 `json:"full_after_back_seconds"`
}

// memoryReport is idle memory per connection.
type memoryReport struct {
	// Source is "server" when the figures come from the server's /metrics
	// (ebb_process_* gauges), "client" when they are the bench's own.
	Source      string `json:"source"`
	MetricsURL  string `json:"metrics_url,omitempty"`
	Connections int    `json:"connections"`
	// ServerConnections is the server's own count (ebb_connections), when
	// it exposes one.
	ServerConnections *float64 `json:"server_connections,omitempty"`
	HeapBefore        float64  `json:"heap_bytes_before"`
	HeapAfter         float64  `json:"heap_bytes_after"`
	StacksBefore      float64  `json:"stacks_bytes_before"`
	StacksAfter       float64  `json:"stacks_bytes_after"`
	GoroutinesBefore  float64  `json:"goroutines_before"`
	GoroutinesAfter   float64  `json:"goroutines_after"`
	// PerConnection is (heap + stacks) growth divided by Connections.
	PerConnection float64 `json:"bytes_per_connection"`
}

// timelinePoint is one 100 ms slot of the run. T is its start in seconds.
type timelinePoint struct {
	T                float64           `json:"t"`
	Open             int               `json:"open"`
	OpenMax          int               `json:"open_max"`
	Attempts         uint64            `json:"attempts"`
	Handshakes       uint64            `json:"handshakes"`
	HandshakesPerSec float64           `json:"handshakes_per_second"`
	Failures         uint64            `json:"failures"`
	Closes           map[string]uint64 `json:"closes,omitempty"`
	Messages         uint64            `json:"messages"`
	LatencyMeanMs    float64           `json:"latency_mean_ms,omitempty"`
	LatencyMaxMs     float64           `json:"latency_max_ms,omitempty"`
}

// runReport builds the report of the run the recorder watched, elapsed
// long.
func (r *recorder) report(name string, elapsed time.Duration) runReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := elapsed.Seconds()
	rr := runReport{
		Name:         name,
		Seconds:      round3(secs),
		Connections:  connReport{Target: r.target, Peak: r.peakOpen, OpenAtEnd: r.open},
		CloseCodes:   r.codesLocked(),
		HTTPStatuses: r.statusesLocked(),
		Errors:       r.errorsLocked(),
		Timeline:     r.timelineLocked(elapsed),
	}
	var completed, failed uint64
	for _, b := range r.buckets {
		completed += b.handshakes
		failed += b.failures
	}
	rr.Handshakes = handshakeReport{Attempts: r.attempts, Completed: completed, Failed: failed, Latency: summarize(r.handshake)}
	if secs > 0 {
		rr.Handshakes.PerSecond = round3(float64(completed) / secs)
	}
	rate, at := peakWindow(r.hsPerMs, 0)
	rr.Handshakes.PeakPerSecond, rr.Handshakes.PeakAtSeconds = rate, round3(at.Seconds())
	if r.sent > 0 || r.recv > 0 {
		rr.Messages = &messageReport{Sent: r.sent, Received: r.recv}
		if secs > 0 {
			rr.Messages.PerSecond = round3(float64(r.recv) / secs)
			rr.Messages.BytesPerSecond = round3(float64(r.recvB) / secs)
		}
		rr.Latency = summarize(r.lat)
	}
	return rr
}

func round3(f float64) float64 {
	return float64(int64(f*1000+0.5)) / 1000
}

// writeJSON writes the report as indented JSON.
func (rep *benchReport) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeTable writes the report for people.
func (rep *benchReport) writeTable(w io.Writer) {
	fmt.Fprintf(w, "ebb bench %s %s — %.1fs", rep.Mode, rep.URL, rep.Seconds)
	if rep.Interrupted {
		fmt.Fprint(w, " (interrupted: partial results)")
	}
	fmt.Fprintln(w)
	for i := range rep.Runs {
		fmt.Fprintln(w)
		rep.Runs[i].writeTable(w, len(rep.Runs) > 1)
	}
	if len(rep.Runs) > 1 && rep.Runs[0].Restart != nil {
		fmt.Fprintln(w)
		writeStormComparison(w, rep.Runs)
	}
	fmt.Fprintln(w)
	c := rep.Client
	fmt.Fprintf(w, "client: %.2f of %d cores busy (GOMAXPROCS %d), open-file limit %d (hard %d)",
		c.CPUCores, c.CPUs, c.GOMAXPROCS, c.FileLimit, c.FileLimitHard)
	if c.InProcessServer {
		fmt.Fprint(w, "; the server ran in the same process, on the same cores")
	}
	fmt.Fprintln(w)
	for _, n := range c.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func (rr *runReport) writeTable(w io.Writer, titled bool) {
	if titled {
		fmt.Fprintf(w, "== %s ==\n", rr.Name)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	c := rr.Connections
	row("connections", "target %d, peak %d open, %d open at end", c.Target, c.Peak, c.OpenAtEnd)
	h := rr.Handshakes
	row("handshakes", "%d attempted, %d completed, %d failed; %.1f/s, peak %.0f/s at %.1fs (per 100 ms)",
		h.Attempts, h.Completed, h.Failed, h.PerSecond, h.PeakPerSecond, h.PeakAtSeconds)
	if h.Latency != nil {
		row("handshake latency", "%s", h.Latency.String())
	}
	if m := rr.Messages; m != nil {
		mode := "closed loop"
		if m.Rate > 0 {
			mode = fmt.Sprintf("target %.0f msg/s", m.Rate)
		}
		comp := "off"
		if m.Compression {
			comp = "on"
		}
		row("messages", "%d sent, %d echoed; %.0f msg/s, %s/s (%d B each, %s, compression %s)",
			m.Sent, m.Received, m.PerSecond, humanBytes(m.BytesPerSecond), m.Size, mode, comp)
	}
	if rr.Latency != nil {
		row("echo latency", "%s", rr.Latency.String())
	}
	if rc := rr.Reconnect; rc != nil {
		row("reconnect", "policy %s: %d reconnect attempts, %d clients gave up", rc.Policy, rc.Attempts, rc.GaveUp)
		if rc.Delays != nil {
			row("reconnect delays", "%s", rc.Delays.String())
		}
	}
	if rs := rr.Restart; rs != nil {
		row("restart", "drain with %d at %.2fs over %.2fs, server back at %.2fs (gap %.2fs)",
			rs.DrainCode, rs.DrainAt, rs.DrainWindow, rs.BackAt, rs.Gap)
		row("after the drain", "peak %.0f handshakes/s at %.1fs, %.0f attempts/s; all reconnected %s after the drain (%s after the server was back)",
			rs.PeakPerSecond, rs.PeakAt, rs.PeakAttemptsPerSecond, optSeconds(rs.FullReconnect), optSeconds(rs.FullAfterBack))
	}
	if m := rr.Memory; m != nil {
		row("idle memory", "%s per connection (%s side: heap %s → %s, stacks %s → %s, %d connections)",
			humanBytes(m.PerConnection), m.Source, humanBytes(m.HeapBefore), humanBytes(m.HeapAfter),
			humanBytes(m.StacksBefore), humanBytes(m.StacksAfter), m.Connections)
	}
	tw.Flush()
	if len(rr.CloseCodes) > 0 {
		fmt.Fprintln(w, "connection endings:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, cc := range rr.CloseCodes {
			fmt.Fprintf(tw, "  %d\t%s\tby %s\t%d\t%s\n", cc.Code, cc.Name, cc.By, cc.Count, cc.Retry)
		}
		tw.Flush()
	}
	if len(rr.HTTPStatuses) > 0 {
		var parts []string
		for _, s := range rr.HTTPStatuses {
			parts = append(parts, fmt.Sprintf("%d %s ×%d", s.Status, s.Text, s.Count))
		}
		fmt.Fprintf(w, "handshake HTTP statuses: %s\n", strings.Join(parts, ", "))
	}
	for _, e := range rr.Errors {
		fmt.Fprintf(w, "dial errors: %d × %s (e.g. %s)\n", e.Count, e.Kind, e.Example)
	}
}

// writeStormComparison puts the runs of a restart storm side by side, with
// ratios to the first run.
func writeStormComparison(w io.Writer, runs []runReport) {
	fmt.Fprintln(w, "restart storm, side by side (ratios to the first policy):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  policy\tpeak handshakes/s\tratio\tpeak attempts/s\tratio\tall back after drain\tratio\treconnect attempts")
	base := runs[0].Restart
	for _, rr := range runs {
		rs := rr.Restart
		if rs == nil {
			continue
		}
		var attempts uint64
		if rr.Reconnect != nil {
			attempts = rr.Reconnect.Attempts
		}
		fmt.Fprintf(tw, "  %s\t%.0f\t%s\t%.0f\t%s\t%s\t%s\t%d\n", rr.Name, rs.PeakPerSecond, ratio(rs.PeakPerSecond, base.PeakPerSecond),
			rs.PeakAttemptsPerSecond, ratio(rs.PeakAttemptsPerSecond, base.PeakAttemptsPerSecond),
			optSeconds(rs.FullReconnect), optRatio(rs.FullReconnect, base.FullReconnect), attempts)
	}
	tw.Flush()
}

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func optRatio(a, b *float64) string {
	if a == nil || b == nil {
		return "-"
	}
	return ratio(*a, *b)
}

func optSeconds(f *float64) string {
	if f == nil {
		return "never"
	}
	return fmt.Sprintf("%.2fs", *f)
}

func (l *latencyReport) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%d samples)",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), l.Count)
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2fs", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1fms", v)
	default:
		return fmt.Sprintf("%.3fms", v)
	}
}

func humanBytes(b float64) string {
	neg := b < 0
	if neg {
		b = -b
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for b >= 1024 && i < len(units)-1 {
		b /= 1024
		i++
	}
	s := fmt.Sprintf("%.1f %s", b, units[i])
	if i == 0 {
		s = fmt.Sprintf("%.0f B", b)
	}
	if neg {
		s = "-" + s
	}
	return s
}
