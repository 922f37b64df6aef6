package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Report is everything one run measured.
type Report struct {
	Date     string            `json:"date"`
	Command  string            `json:"command"`
	Machine  Machine           `json:"machine"`
	Config   Config            `json:"config"`
	Elapsed  string            `json:"elapsed"`
	Versions map[string]string `json:"versions"`
	Load     [2]string         `json:"loadavg"` // at start and end of the run
	Rows     []*Row            `json:"rows"`
	// Cluster holds the cluster measure's details (close codes, the
	// reconnect wave, node restarts, loss account), one per run.
	Cluster []*ClusterDetail `json:"cluster_runs,omitempty"`
	// Skipped says why a system was not measured.
	Skipped map[string]string `json:"skipped,omitempty"`
	// Kept names, for each measure this run did not make, the earlier run
	// its rows were kept from ("date, command").
	Kept map[string]string `json:"kept,omitempty"`
}

// keepEarlier adds to r the rows of the measures this run did not make
// (not in ran) from an earlier results.json at path, so that running one
// measure does not erase the others; Kept says where they came from. A
// missing file keeps nothing.
func (r *Report) keepEarlier(path string, ran map[string]bool) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var old Report
	if err := json.Unmarshal(b, &old); err != nil {
		return fmt.Errorf("bench: reading %s to keep its other measures: %w", path, err)
	}
	r.Kept = map[string]string{}
	for _, row := range old.Rows {
		if ran[row.Measure] {
			continue
		}
		r.Rows = append(r.Rows, row)
		from := old.Date + ", `" + old.Command + "`"
		if k, ok := old.Kept[row.Measure]; ok {
			from = k
		}
		r.Kept[row.Measure] = from
		if v, ok := old.Versions[row.Lib]; ok {
			if _, have := r.Versions[row.Lib]; !have {
				r.Versions[row.Lib] = v
			}
		}
	}
	if !ran["cluster"] {
		r.Cluster = old.Cluster
		for k, v := range old.Skipped {
			if r.Skipped == nil {
				r.Skipped = map[string]string{}
			}
			r.Skipped[k] = v
		}
	}
	// Keep the report's measure order, not the order of arrival.
	order := map[string]int{}
	for i, mi := range measureInfo {
		order[mi.name] = i
	}
	slices.SortStableFunc(r.Rows, func(a, b *Row) int { return order[a.Measure] - order[b.Measure] })
	return nil
}

// measureInfo says how each measure is tabulated: its metrics in order and,
// for each, whether a higher value is better (for the reader's sake only:
// ratios are always lib ÷ ebb).
var measureInfo = []struct {
	name, title, about string
	metrics            []string
}{
	{"throughput", "1. Echo throughput (closed loop per connection)",
		"Each connection sends one binary message and waits for its echo, again and again. msgs/s counts echoes received per second over the measured window (after a warm-up). server/client CPU % is CPU time over wall time of the server process and of the load client (100 % = one core); CPU µs/msg is that CPU time per echoed message, the cost of one echo independent of how busy the machine was (on a loaded VM neither side saturates its core, so msgs/s is bounded by scheduling latency as much as by the library).",
		[]string{"msgs/s", "MB/s", "server CPU µs/msg", "server CPU %", "client CPU %", "client CPU µs/msg"}},
	{"latency", "2. Echo latency at a fixed rate",
		"100 connections together send 5 000 messages of 1 KiB per second on a fixed schedule; each round trip is timed from the moment the message was due (no coordinated omission), into an HDR histogram (µs).",
		[]string{"p50 µs", "p99 µs", "p99.9 µs"}},
	{"idle", "3. Memory per idle connection",
		"Server memory growth per connection after opening the connections, echoing one short text message on each and letting them idle for 0.5 s (heap figures after two forced GCs, which also empty sync.Pools; RSS as the kernel reports it).",
		[]string{"RSS KiB/conn", "heap+stack KiB/conn", "heap KiB/conn", "stack KiB/conn", "goroutines/conn"}},
	{"deflate", "4. permessage-deflate on ~1.5 KiB JSON",
		"Closed-loop echo of realistic JSON events (64 distinct ~1.5 KiB messages, compressed by the client with klauspost/compress at BestSpeed), then memory per connection after each idle connection has exchanged 64 compressed messages. Only libraries that support a mode appear in it.",
		[]string{"msgs/s", "server CPU µs/msg", "RSS KiB/conn", "heap KiB/conn", "heap+stack KiB/conn", "server CPU %", "client CPU %"}},
	{"handshakes", "5. Handshakes per second",
		"Parallel clients each open a TCP connection, upgrade, read the 101 and drop the connection (RST), in a loop.",
		[]string{"handshakes/s"}},
	{"storm", "6. Connection storm",
		"100 connections echo 1 KiB at 2 000 msgs/s in total (calm), then 10 000 clients connect at once from another process while they keep going (storm), spread over many loopback source addresses as a real crowd is (the case name says how many; --storm-addrs 1 sends them all from one). ebb runs as ebb serve would (the case name gives the settings): behind shed with MaxConns 1 000, refusing with upgrade-then-close 1013 up to HardDemand and with the accept loop's 503 past it, shed.Listener bounding pending handshakes and pacing the accept loop; gorilla, coder, gws and gobwas have no admission control and take every connection (no limit). 'answered all' is the time until the last storm client had its answer (101 kept open, close 1013, or 503); 'server CPU' is the CPU time the server process used over that span. The control row sends the same storm to a second ebb process on the same core while the measured server handles only the calm clients: what their latency does there is the machine's share (the storm's clients and the kernel's network work share the two cores), a floor under every library's figure.",
		[]string{"answered all s", "peak RSS MiB", "server CPU ms", "admitted", "refused 1013", "refused 503", "failed", "calm p50 µs", "calm p99 µs", "storm p50 µs", "storm p99 µs", "p99 storm/calm"}},
	{"cluster", "7. Cluster: broadcast fan-out and a rolling restart",
		clusterAbout, clusterMetrics},
}

// clusterMetrics are the cluster measure's figures, in the order of its table.
var clusterMetrics = []string{
	"fan-out p50 ms", "fan-out p99 ms", "fan-out p99.9 ms", "fan-out samples", "publish msgs/s", "nodes CPU %", "client CPU %",
	"disconnects", "reconnect attempts", "failed attempts", "peak attempts/s", "slowest node back s", "all back s",
	"published", "publish failures", "sent, never published", "lost msgs", "lost %", "clients losing", "max lost per client",
	"lost by seq", "dup by id", "dup by seq", "gap notices", "gave up", "restart delivery p50 ms", "restart delivery p99 ms",
}

const clusterAbout = "Three nodes of each system, one system after the other in the same run, on the same machine and in the same shape: the nodes (and the harness's nats-server, and redis-server for centrifugo-redis) share core 0, the clients and the publisher core 1. Subscribers are spread evenly over the nodes; a publisher sends small JSON messages (an id, its send time, 64 bytes of padding) at a fixed rate through node 1 — ebb: a message on a /broadcast connection; Centrifugo: its server HTTP API — and moves to the next node when that one fails. Each system's clients reconnect with that system's own policy. Centrifugo's are bench's hand-framed client (bench/fanout on bench/wsclient) speaking its JSON protocol with the policy of its Go SDK, centrifuge-go v0.12.1 (jpillora/backoff: 200 ms min, 20 s max, uniform between the minimum and 200 ms·2^n). ebb's are ebb's own Go client, reconnect.Client with Resume (1 s base doubling to 30 s, equal jitter, server hints as a floor, the attempt count reset only after 10 s up), or with --ebb-client neutral the hand-framed client with that same policy; the details below say which. After a loss, attempt k goes to the k-th next node, as through a load balancer that has taken the lost node out. " +
	"**Steady**: fan-out latency, publish → receive, of every message received by a client on a node other than the publisher's entry node, HDR histogram. 'publish msgs/s' is the rate the publisher achieved in the steady phase (Centrifugo's HTTP API is called with up to 16 publishes in flight, so slow answers do not hold the schedule back); 'nodes CPU %' is the three nodes' CPU time over the steady phase and 'client CPU %' the client process's (100 % = one core; the clients are not the bottleneck while theirs stays well under 100). " +
	"**Rolling restart**: node 1, then 2, then 3 get SIGTERM (each system's own graceful shutdown: ebb drains with 1012 over its drain window; Centrifugo disconnects its clients with 3001 'shutdown' and exits), are started again, and the next one follows once every client is subscribed again and 1 s has passed; publishing goes on throughout. 'disconnects' counts subscriptions that ended, 'reconnect attempts' every connection attempt during the restart phase, 'failed attempts' those that did not end subscribed; 'all back s' is the time from the first SIGTERM until every client was subscribed again after the last node. 'publish failures' are messages no node accepted (Centrifugo's API answered an error or nothing, and the publisher retried the same message on every other node, with Centrifugo's idempotency key so that the Redis engine publishes it once — the NATS broker does not support the key, so there a retry after a lost answer can publish twice, which shows as 'dup by id'), 'sent, never published' messages handed to a node that no client ever received and nothing acknowledged (a /broadcast write has no acknowledgement: a message in flight when the publisher's node drains can be lost before it is published). Loss is counted per client against every message the system accepted (acknowledged to the publisher or received by any client) since all clients were subscribed: 'lost msgs' is summed over clients (by payload id); 'lost by seq' counts the sequence numbers (ebb) or offsets (Centrifugo with history) a client never got, skipped or announced by a gap notice — the NATS broker gives no offsets, and ebb's own client reports gaps but drops duplicates itself (— where a count is not available); duplicates by payload id and by sequence/offset (ebb's sequence, Centrifugo's offset: messages not after the last one delivered, which the client drops); 'gap notices' are ebb's !gap and Centrifugo's failed recoveries. 'restart delivery' is publish → receive of the messages published during the restart, replayed ones included. Ratios in the table are ebb ÷ the other system."

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtNum(v float64) string {
	a := v
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func (r *Report) libs() []string {
	var out []string
	for _, row := range r.Rows {
		if !slices.Contains(out, row.Lib) {
			out = append(out, row.Lib)
		}
	}
	slices.SortStableFunc(out, func(a, b string) int { return idx(a) - idx(b) })
	return out
}

// libsOf lists the libraries (or systems) with rows in measure.
func (r *Report) libsOf(measure string) []string {
	var out []string
	for _, l := range r.libs() {
		for _, row := range r.Rows {
			if row.Measure == measure && row.Lib == l {
				out = append(out, l)
				break
			}
		}
	}
	return out
}

func idx(lib string) int {
	for i, n := range []string{"ebb", "gorilla", "coder", "gws", "gobwas", "centrifugo", "centrifugo-redis"} {
		if n == lib {
			return i
		}
	}
	return 99
}

func (r *Report) cases(measure string) []string {
	var out []string
	for _, row := range r.Rows {
		if row.Measure == measure && !slices.Contains(out, row.Case) {
			out = append(out, row.Case)
		}
	}
	return out
}

func (r *Report) row(measure, lib, cs string) *Row {
	for _, row := range r.Rows {
		if row.Measure == measure && row.Lib == lib && row.Case == cs {
			return row
		}
	}
	return nil
}

// value is the median of a metric, and whether it exists.
func (r *Report) value(measure, lib, cs, metric string) (float64, bool) {
	row := r.row(measure, lib, cs)
	if row == nil || len(row.Metrics[metric]) == 0 {
		return 0, false
	}
	return median(row.Metrics[metric]), true
}

// summary is the compact form printed by --quick: medians per metric.
func (r *Report) summary() map[string]any {
	out := map[string]any{"date": r.Date, "machine": r.Machine, "elapsed": r.Elapsed}
	var rows []map[string]any
	for _, row := range r.Rows {
		m := map[string]float64{}
		for k, v := range row.Metrics {
			m[k] = median(v)
		}
		rows = append(rows, map[string]any{"measure": row.Measure, "lib": row.Lib, "case": row.Case, "metrics": m})
	}
	out["results"] = rows
	return out
}

func (r *Report) write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "charts"), 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return err
	}
	charts, err := r.charts(filepath.Join(dir, "charts"))
	if err != nil {
		return err
	}
	var b strings.Builder
	r.markdown(&b, charts)
	return os.WriteFile(filepath.Join(dir, "RESULTS.md"), []byte(b.String()), 0o644)
}

func (r *Report) markdown(b *strings.Builder, charts map[string][]string) {
	libs := r.libs()
	fmt.Fprintf(b, "# ebb side by side: results\n\n")
	fmt.Fprintf(b, "Generated by `bench` (see README.md); do not edit by hand.\n\n")
	fmt.Fprintf(b, "- date: %s (whole run took %s)\n", r.Date, r.Elapsed)
	fmt.Fprintf(b, "- command: `cd bench && %s`\n", r.Command)
	fmt.Fprintf(b, "- load average (1, 5, 15 min) at start: %s, at end: %s — the machine is shared, so other work adds to the spread\n", r.Load[0], r.Load[1])
	fmt.Fprintf(b, "- machine: %d cores (%s), %s, Linux %s\n", r.Machine.CPUs, r.Machine.Model, r.Machine.Go, r.Machine.Kernel)
	if r.Machine.Pinned {
		fmt.Fprintf(b, "- each server in its own process pinned to core 0 (taskset, so GOMAXPROCS=1); the load client pinned to core 1 (GOMAXPROCS=1); loopback only\n")
	} else {
		fmt.Fprintf(b, "- not pinned (fewer than 2 cores); loopback only\n")
	}
	fmt.Fprintf(b, "- repetitions: %d per measure, each with a fresh server process; cells show **median** (min–max) and the ratio to ebb (lib ÷ ebb) of the median\n", r.Config.Reps)
	fmt.Fprintf(b, "- libraries:")
	for _, l := range libs {
		fmt.Fprintf(b, " %s (%s);", l, r.Versions[l])
	}
	fmt.Fprintf(b, "\n\n")
	for _, mi := range measureInfo {
		cases := r.cases(mi.name)
		if len(cases) == 0 && (mi.name != "cluster" || len(r.Skipped) == 0) {
			continue
		}
		fmt.Fprintf(b, "## %s\n\n%s\n\n", mi.title, mi.about)
		if k, ok := r.Kept[mi.name]; ok {
			fmt.Fprintf(b, "_Kept from an earlier run: %s._\n\n", k)
		}
		if mi.name == "cluster" {
			r.clusterMarkdown(b, charts[mi.name])
			continue
		}
		libs := r.libsOf(mi.name)
		for _, metric := range mi.metrics {
			if !r.hasMetric(mi.name, metric) {
				continue
			}
			fmt.Fprintf(b, "**%s**\n\n| case |", metric)
			for _, l := range libs {
				fmt.Fprintf(b, " %s |", l)
			}
			fmt.Fprintf(b, "\n|---|")
			for range libs {
				fmt.Fprintf(b, "---:|")
			}
			fmt.Fprintf(b, "\n")
			for _, cs := range cases {
				fmt.Fprintf(b, "| %s |", cs)
				ebb, haveEbb := r.value(mi.name, "ebb", cs, metric)
				for _, l := range libs {
					row := r.row(mi.name, l, cs)
					if row == nil || len(row.Metrics[metric]) == 0 {
						fmt.Fprintf(b, " — |")
						continue
					}
					v := row.Metrics[metric]
					med := median(v)
					cell := "**" + fmtNum(med) + "**"
					if len(v) > 1 {
						cell += fmt.Sprintf(" (%s–%s)", fmtNum(slices.Min(v)), fmtNum(slices.Max(v)))
					}
					if l != "ebb" && haveEbb && ebb != 0 {
						cell += fmt.Sprintf(" ×%.2f", med/ebb)
					}
					fmt.Fprintf(b, " %s |", cell)
				}
				fmt.Fprintf(b, "\n")
			}
			fmt.Fprintf(b, "\n")
		}
		for _, c := range charts[mi.name] {
			fmt.Fprintf(b, "![%s](charts/%s)\n\n", c, c)
		}
	}
}

func (r *Report) hasMetric(measure, metric string) bool {
	for _, row := range r.Rows {
		if row.Measure == measure && len(row.Metrics[metric]) > 0 {
			return true
		}
	}
	return false
}

var libColors = map[string]color.Color{
	"ebb":     color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"gorilla": color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"coder":   color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"gws":     color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"gobwas":  color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},

	"centrifugo":       color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	"centrifugo-redis": color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// barChart draws grouped bars: one group per case, one bar per library.
func (r *Report) barChart(dir, file, title, ylabel, measure, metric string, cases []string, ratio bool) (string, error) {
	libs := r.libs()
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	w := vg.Points(float64(min(14, 60/max(1, len(libs)))))
	for i, l := range libs {
		vals := make(plotter.Values, len(cases))
		for j, cs := range cases {
			v, ok := r.value(measure, l, cs, metric)
			if ok && ratio {
				e, eok := r.value(measure, "ebb", cs, metric)
				if !eok || e == 0 {
					v = 0
				} else {
					v /= e
				}
			}
			vals[j] = v
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return "", err
		}
		bars.LineStyle.Width = 0
		bars.Color = libColors[l]
		bars.Offset = w * vg.Length(float64(i)-float64(len(libs)-1)/2)
		p.Add(bars)
		p.Legend.Add(l, bars)
	}
	p.Legend.Top = true
	p.NominalX(cases...)
	width := vg.Length(max(5, 1.2*float64(len(cases)))) * vg.Inch
	if err := p.Save(width, 4*vg.Inch, filepath.Join(dir, file)); err != nil {
		return "", err
	}
	return file, nil
}

func (r *Report) charts(dir string) (map[string][]string, error) {
	out := map[string][]string{}
	add := func(measure, file, title, ylabel, metric string, cases []string, ratio bool) error {
		if len(cases) == 0 {
			return nil
		}
		f, err := r.barChart(dir, file, title, ylabel, measure, metric, cases, ratio)
		if err != nil {
			return fmt.Errorf("bench: chart %s: %w", file, err)
		}
		out[measure] = append(out[measure], f)
		return nil
	}
	tp := r.cases("throughput")
	for _, n := range []string{"1", "100", "1000"} {
		var cs []string
		for _, c := range tp {
			if strings.HasSuffix(c, "× "+n) {
				cs = append(cs, c)
			}
		}
		if err := add("throughput", "throughput_"+n+"conns.png", "Echo throughput, "+n+" conn(s), relative to ebb", "msgs/s ÷ ebb's", "msgs/s", cs, true); err != nil {
			return nil, err
		}
		if err := add("throughput", "cpu_per_msg_"+n+"conns.png", "Server CPU per echo, "+n+" conn(s), relative to ebb (lower is better)", "µs/msg ÷ ebb's", "server CPU µs/msg", cs, true); err != nil {
			return nil, err
		}
	}
	steps := []struct{ measure, file, title, ylabel, metric string }{
		{"latency", "latency.png", "Echo latency p99 (lower is better)", "µs", "p99 µs"},
		{"idle", "idle_memory.png", "Memory per idle connection, heap+stack (lower is better)", "KiB", "heap+stack KiB/conn"},
		{"idle", "idle_rss.png", "RSS per idle connection (lower is better)", "KiB", "RSS KiB/conn"},
		{"deflate", "deflate_memory.png", "permessage-deflate: heap+stack per connection (lower is better)", "KiB", "heap+stack KiB/conn"},
		{"deflate", "deflate_throughput.png", "permessage-deflate: echo throughput", "msgs/s", "msgs/s"},
		{"handshakes", "handshakes.png", "Handshakes per second", "handshakes/s", "handshakes/s"},
		{"storm", "storm_p99.png", "Admitted clients' p99 during the storm ÷ calm (lower is better)", "ratio", "p99 storm/calm"},
		{"storm", "storm_rss.png", "Peak RSS during the storm", "MiB", "peak RSS MiB"},
	}
	for _, s := range steps {
		if err := add(s.measure, s.file, s.title, s.ylabel, s.metric, r.cases(s.measure), false); err != nil {
			return nil, err
		}
	}
	if len(r.Cluster) > 0 {
		f, err := r.waveChart(dir)
		if err != nil {
			return nil, fmt.Errorf("bench: chart cluster_wave.png: %w", err)
		}
		out["cluster"] = append(out["cluster"], f)
	}
	return out, nil
}
