package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Schema names the version of the JSON that Report.WriteJSON writes. It
// changes when a field changes meaning or goes away; new fields may appear
// without a change. Since the first version these appeared:
// handshakes.errors, handshakes.cut_off (dials the run's end interrupted,
// no longer counted as failed), run.compression, run.stopped_early, and
// memory's bytes_per_connection_noise, samples and withheld;
// bytes_per_connection is null when withheld. Every float is rounded:
// milliseconds and seconds to 3 decimals, rates to 1, bytes to whole bytes.
const Schema = "ebb-bench/1"

// Report is what a run measured. Durations are in seconds and latencies in
// milliseconds; the field names say which.
type Report struct {
	Schema string `json:"schema"`
	// Mode is "echo", "connect", "storm" or "idle".
	Mode string `json:"mode"`
	URL  string `json:"url"`
	// Started is when the run started, in UTC; Seconds how long it took.
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	// Interrupted is true when the caller's context ended before the
	// run's Duration: the figures cover what was measured until then.
	Interrupted bool   `json:"interrupted"`
	Client      Client `json:"client"`
	// Runs holds one run, or one per policy for a storm.
	Runs []Run `json:"runs"`
}

// Client describes the machine the run ran on, and whether it, not the
// server, limited the result.
type Client struct {
	CPUs       int `json:"cpus"`
	GOMAXPROCS int `json:"gomaxprocs"`
	// CPUCores is the CPU time this process used divided by the wall time:
	// 1.0 is one core busy all the time.
	CPUCores float64 `json:"cpu_cores_used"`
	// FileLimit and FileLimitHard are RLIMIT_NOFILE's soft and hard limits
	// (0 where unknown).
	FileLimit     uint64 `json:"file_limit"`
	FileLimitHard uint64 `json:"file_limit_hard"`
	// InProcessServer is true when the server ran inside this process
	// (RestartOptions.InProcess): client and server then share the cores.
	InProcessServer bool `json:"in_process_server"`
	// Bottleneck is true when the client probably limited the result;
	// Notes say why, and anything else worth knowing about the figures.
	Bottleneck bool     `json:"client_bottleneck"`
	Notes      []string `json:"notes,omitempty"`
}

// Run is one run: the whole of Echo, Connect and Idle, one per policy for
// Storm.
type Run struct {
	// Name is the mode, or the policy for a storm.
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// StoppedEarly says why the run ended before its Duration when it did
	// so by itself: the first attempts all failed with errors and none
	// completed, so nothing could be measured.
	StoppedEarly string      `json:"stopped_early,omitempty"`
	Connections  Connections `json:"connections"`
	Handshakes   Handshakes  `json:"handshakes"`
	// Compression is what the connections negotiated, when Options.Dial
	// offered permessage-deflate.
	Compression *Compression `json:"compression,omitempty"`
	Messages    *Messages    `json:"messages,omitempty"`
	// Latency is echo latency: from the send (or, at a fixed rate, from
	// when the message was due) to the echo's arrival.
	Latency *Latency `json:"latency_ms,omitempty"`
	// CloseCodes counts how connections ended; HTTPStatuses the answers
	// to the upgrade requests (101 included); Errors the failed dials
	// without an HTTP answer, by kind.
	CloseCodes   []CloseCount  `json:"close_codes"`
	HTTPStatuses []StatusCount `json:"http_statuses"`
	Errors       []ErrorCount  `json:"errors"`
	Reconnect    *Reconnect    `json:"reconnect,omitempty"`
	Restart      *Restart      `json:"restart,omitempty"`
	Memory       *Memory       `json:"memory,omitempty"`
	// Timeline has one point per 100 ms of the run.
	Timeline []Point `json:"timeline"`
}

// Connections counts the connections a run held.
type Connections struct {
	// Target is how many connections the run tried to hold at once.
	Target int `json:"target"`
	// Peak is the most that were open at once.
	Peak int `json:"peak"`
	// OpenAtEnd is how many were open when the run ended (before it
	// closed them).
	OpenAtEnd int `json:"open_at_end"`
}

// Handshakes counts connection attempts and how they ended.
type Handshakes struct {
	// Attempts counts dials started: Completed + Failed + CutOff.
	Attempts uint64 `json:"attempts"`
	// Completed counts upgrades (101), refusals by upgrade-then-close
	// (1013) included.
	Completed uint64 `json:"completed"`
	// Failed counts dials that got no 101: the server's refusals (HTTP 429
	// or 503) and Errors.
	Failed uint64 `json:"failed"`
	// Errors counts failed dials that were not refusals: no answer
	// (connection refused, reset, timeout), a failed TLS handshake, or an
	// HTTP answer that is not a WebSocket endpoint's (200, 404, 426, …).
	// Failures during a restart storm's restart (from the drain until
	// every client is back: the server is down on purpose, then flooded by
	// the returning clients) are what the storm measures, not errors.
	Errors uint64 `json:"errors"`
	// CutOff counts dials the run's end interrupted; they are neither
	// completed nor failed.
	CutOff uint64 `json:"cut_off"`
	// PerSecond is completed handshakes over the run's duration.
	PerSecond float64 `json:"per_second"`
	// PeakPerSecond is the busiest 100 ms of completed handshakes (a
	// sliding window), scaled to a second, starting PeakAtSeconds into the
	// run.
	PeakPerSecond float64 `json:"peak_per_second"`
	PeakAtSeconds float64 `json:"peak_at_seconds"`
	// Latency is the time from the start of a dial to the 101 answer.
	Latency *Latency `json:"latency_ms,omitempty"`
}

// Compression is what the connections of a run that offered
// permessage-deflate negotiated.
type Compression struct {
	// Negotiated counts connections whose server accepted
	// permessage-deflate; Declined those it opened without.
	Negotiated uint64 `json:"negotiated"`
	Declined   uint64 `json:"declined"`
	// Parameters lists each Sec-WebSocket-Extensions answer the server
	// gave, with how many connections got it.
	Parameters []ExtensionCount `json:"parameters"`
}

// ExtensionCount is how many connections negotiated Extensions.
type ExtensionCount struct {
	Extensions string `json:"extensions"`
	Count      uint64 `json:"count"`
}

// Messages is the echo traffic of a run.
type Messages struct {
	// Size is the message size in bytes.
	Size int `json:"size"`
	// Compression is true when permessage-deflate was offered; whether
	// the server accepted it is in Run.Compression.
	Compression bool   `json:"compression"`
	Sent        uint64 `json:"sent"`
	Received    uint64 `json:"received"`
	// PerSecond and BytesPerSecond count echoes received (uncompressed
	// bytes) over the run's duration.
	PerSecond      float64 `json:"per_second"`
	BytesPerSecond float64 `json:"bytes_per_second"`
	// Rate is the target rate in messages per second; 0 means closed loop
	// (each connection sends its next message when the echo arrives).
	Rate float64 `json:"rate"`
}

// Latency holds percentiles from an HDR histogram, in milliseconds,
// accurate to 0.1%.
type Latency struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
}

// CloseCount is how many connections ended with a close code, and who chose
// the code: "server", "client" (the run itself, e.g. 1000 at the end) or
// "local" (no Close frame: 1006). Name and Retry come from the closecode
// registry.
type CloseCount struct {
	Code  int    `json:"code"`
	Name  string `json:"name"`
	By    string `json:"by"`
	Retry string `json:"retry"`
	Count uint64 `json:"count"`
}

// StatusCount is how many upgrade requests got an HTTP status.
type StatusCount struct {
	Status int    `json:"status"`
	Text   string `json:"text"`
	Count  uint64 `json:"count"`
}

// ErrorCount is how many dials failed without an HTTP answer, by kind
// ("connection refused", "timeout", "TLS handshake failed", "no local
// address (EADDRNOTAVAIL)", …), with one example message.
type ErrorCount struct {
	Kind    string `json:"kind"`
	Count   uint64 `json:"count"`
	Example string `json:"example"`
}

// Reconnect is what a storm's clients did between connections.
type Reconnect struct {
	Policy string `json:"policy"`
	// Attempts counts dials after a client's first one.
	Attempts uint64 `json:"attempts"`
	// GaveUp counts clients that stopped because their policy said so.
	GaveUp uint64 `json:"gave_up"`
	// Delays are the waits the clients chose before reconnecting.
	Delays *Latency `json:"delays_ms,omitempty"`
}

// Restart is what happened around a restart storm's server restart. Times
// are seconds since the run started.
type Restart struct {
	DrainAt     float64 `json:"drain_at"`
	BackAt      float64 `json:"back_at"`
	DrainCode   int     `json:"drain_code"`
	DrainWindow float64 `json:"drain_window_seconds"`
	Gap         float64 `json:"gap_seconds"`
	// PeakPerSecond is the busiest 100 ms of completed handshakes (a
	// sliding window) from the drain on, scaled to a second.
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

// Memory is what idle connections cost.
type Memory struct {
	// Source is "server" when the figures come from the server's /metrics
	// (MetricHeapBytes and MetricStacksBytes), "client" when they are this
	// process's own, read after a garbage collection.
	Source     string `json:"source"`
	MetricsURL string `json:"metrics_url,omitempty"`
	// Connections is how many connections were open when measured.
	Connections int `json:"connections"`
	// ServerConnections is the server's own count (MetricConnections),
	// when it exposes one.
	ServerConnections *float64 `json:"server_connections,omitempty"`
	// Samples is how many readings each of the before and after figures
	// took; the lowest heap plus stacks of each set is the one used.
	Samples          int     `json:"samples"`
	HeapBefore       float64 `json:"heap_bytes_before"`
	HeapAfter        float64 `json:"heap_bytes_after"`
	StacksBefore     float64 `json:"stacks_bytes_before"`
	StacksAfter      float64 `json:"stacks_bytes_after"`
	GoroutinesBefore float64 `json:"goroutines_before"`
	GoroutinesAfter  float64 `json:"goroutines_after"`
	// PerConnection is the growth of heap plus stacks divided by
	// Connections, in bytes; null when Withheld says why it is not
	// reported.
	PerConnection *float64 `json:"bytes_per_connection"`
	// PerConnectionNoise is the measurement's noise divided by
	// Connections: the figure is PerConnection ± PerConnectionNoise. The
	// noise is the spread between samples plus, for the server's figures,
	// the garbage a Go heap gauge may hold without a collection (see
	// Idle).
	PerConnectionNoise float64 `json:"bytes_per_connection_noise"`
	// Withheld says why PerConnection is null: a growth within twice the
	// noise, or readings that failed.
	Withheld string `json:"withheld,omitempty"`
}

// Point is one 100 ms slot of a run. T is its start in seconds.
type Point struct {
	T       float64 `json:"t"`
	Open    int     `json:"open"`
	OpenMax int     `json:"open_max"`
	// Attempts, Handshakes and Failures count dials started, completed and
	// failed in the slot; HandshakesPerSec is Handshakes scaled to a
	// second.
	Attempts         uint64  `json:"attempts"`
	Handshakes       uint64  `json:"handshakes"`
	HandshakesPerSec float64 `json:"handshakes_per_second"`
	Failures         uint64  `json:"failures"`
	// Closes counts connection endings by close code.
	Closes map[string]uint64 `json:"closes,omitempty"`
	// Messages counts echoes received; LatencyMeanMs and LatencyMaxMs
	// describe their latency.
	Messages      uint64  `json:"messages"`
	LatencyMeanMs float64 `json:"latency_mean_ms,omitempty"`
	LatencyMaxMs  float64 `json:"latency_max_ms,omitempty"`
}

// Rounding of every float in a report, so that JSON carries no binary
// noise (0.30000000000000004) and no false precision.
func roundTo(f float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(f*p) / p
}

func roundMs(f float64) float64      { return roundTo(f, 3) }
func roundSeconds(f float64) float64 { return roundTo(f, 3) }
func roundRate(f float64) float64    { return roundTo(f, 1) }
func roundBytes(f float64) float64   { return math.Round(f) }

// WriteJSON writes the report as indented JSON, without HTML escaping.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// CheckError is what Report.Check returns: a run measured nothing, or too
// many of its handshakes failed with errors.
type CheckError struct {
	// Run is the run's name; Mode the report's.
	Run, Mode string
	// Nothing is true when the run measured nothing at all.
	Nothing bool
	// Failed, Errors and Attempts are the run's Handshakes.Failed and
	// Handshakes.Errors and its attempts that finished (Attempts − CutOff);
	// MaxErrors is the share of errors allowed.
	Failed, Errors, Attempts uint64
	MaxErrors                float64
	// Causes names the failures, most frequent first.
	Causes string
	// Why says what was missing when nothing was measured.
	Why string
}

// Error says in one line which condition failed, with the counts and the
// causes.
func (e *CheckError) Error() string {
	var b strings.Builder
	if e.Mode == "storm" {
		fmt.Fprintf(&b, "policy %s: ", e.Run)
	}
	switch {
	case e.Nothing && e.Failed > 0:
		fmt.Fprintf(&b, "%d of %s failed", e.Failed, plural(int(e.Attempts), "handshake"))
		if e.Causes != "" {
			fmt.Fprintf(&b, " (%s)", e.Causes)
		}
		b.WriteString(": nothing measured")
	case e.Nothing:
		fmt.Fprintf(&b, "nothing measured: %s", e.Why)
	default:
		fmt.Fprintf(&b, "%d of %s failed (%s of the attempts, more than the %s allowed)",
			e.Errors, plural(int(e.Attempts), "handshake"), percent(float64(e.Errors)/float64(e.Attempts)), percent(e.MaxErrors))
		if e.Causes != "" {
			fmt.Fprintf(&b, ": %s", e.Causes)
		}
	}
	return b.String()
}

func percent(f float64) string {
	s := fmt.Sprintf("%.1f", 100*f)
	return strings.TrimSuffix(s, ".0") + "%"
}

// Check returns a *CheckError for the first run that measured nothing (no
// echo came back, no handshake completed, no idle connection held) or whose
// handshake errors (Handshakes.Errors) exceed maxErrors, a share of the
// attempts that finished between 0 and 1 (0.1: one in ten). Refusals (HTTP
// 429 or 503, or 1013 after the upgrade) are the server's answers, which a
// run measures, and never count as errors. It returns nil when the report
// holds figures worth reading. An interrupted report is checked like any
// other: the caller decides whether the interruption matters more.
func (r *Report) Check(maxErrors float64) error {
	for i := range r.Runs {
		rr := &r.Runs[i]
		h := rr.Handshakes
		finished := h.Attempts - min(h.CutOff, h.Attempts)
		e := &CheckError{Run: rr.Name, Mode: r.Mode, Failed: h.Failed, Errors: h.Errors, Attempts: finished, MaxErrors: maxErrors, Causes: rr.causes()}
		if why := rr.nothingMeasured(r.Mode); why != "" {
			e.Nothing, e.Why = true, why
			return e
		}
		if finished > 0 && float64(h.Errors)/float64(finished) > maxErrors {
			return e
		}
	}
	return nil
}

// nothingMeasured says what a run lacks to have measured anything, or "".
func (rr *Run) nothingMeasured(mode string) string {
	switch mode {
	case "echo":
		if rr.Messages != nil && rr.Messages.Received > 0 {
			return ""
		}
		if rr.Handshakes.Completed == 0 {
			return "no handshake completed"
		}
		return fmt.Sprintf("%s opened but no echo came back (is it an echo endpoint?)", plural(int(rr.Handshakes.Completed), "connection"))
	case "idle":
		if rr.Memory != nil && rr.Memory.Connections > 0 {
			return ""
		}
		return "no connection was open to measure"
	default:
		if rr.Handshakes.Completed > 0 {
			return ""
		}
		return "no handshake completed"
	}
}

// causes names the run's failures, most frequent first: error kinds with
// an example when the kind alone says little, and HTTP statuses.
func (rr *Run) causes() string {
	type cause struct {
		text string
		n    uint64
	}
	var cs []cause
	for _, e := range rr.Errors {
		text := e.Kind
		switch e.Kind {
		case "other", "bad handshake", "TLS handshake failed", "host not found":
			text += ": " + e.Example
		}
		cs = append(cs, cause{text, e.Count})
	}
	for _, s := range rr.HTTPStatuses {
		if s.Status == http.StatusSwitchingProtocols {
			continue
		}
		text := fmt.Sprintf("HTTP %d %s", s.Status, s.Text)
		if !isRefusal(s.Status) {
			text += ": not a WebSocket endpoint?"
		}
		cs = append(cs, cause{text, s.Count})
	}
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].n > cs[j].n })
	if len(cs) == 1 {
		return cs[0].text
	}
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s ×%d", c.text, c.n))
	}
	return strings.Join(parts, ", ")
}
