package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText writes the report for people: one table per run, connection
// endings by close code, refused handshakes and dial errors, a side by side
// comparison for a restart storm, and the client's notes.
func (r *Report) WriteText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "ebb bench %s %s — %.1fs", r.Mode, r.URL, r.Seconds)
	if r.Interrupted {
		fmt.Fprint(bw, " (interrupted: partial results)")
	}
	fmt.Fprintln(bw)
	for i := range r.Runs {
		fmt.Fprintln(bw)
		r.Runs[i].writeText(bw, len(r.Runs) > 1)
	}
	if len(r.Runs) > 1 && r.Runs[0].Restart != nil {
		fmt.Fprintln(bw)
		writeStormComparison(bw, r.Runs)
	}
	fmt.Fprintln(bw)
	c := r.Client
	fmt.Fprintf(bw, "client: %.2f of %s busy (GOMAXPROCS %d), open-file limit %d (hard %d)",
		c.CPUCores, plural(c.CPUs, "core"), c.GOMAXPROCS, c.FileLimit, c.FileLimitHard)
	if c.InProcessServer {
		fmt.Fprint(bw, "; the server ran in the same process, on the same cores")
	}
	fmt.Fprintln(bw)
	for _, n := range c.Notes {
		fmt.Fprintf(bw, "note: %s\n", n)
	}
	return bw.Flush()
}

func (rr *Run) writeText(w io.Writer, titled bool) {
	if titled {
		fmt.Fprintf(w, "== %s ==\n", rr.Name)
	}
	if rr.StoppedEarly != "" {
		fmt.Fprintf(w, "stopped early: %s\n", rr.StoppedEarly)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(format, args...)) }
	c := rr.Connections
	row("connections", "target %d, peak %d open, %d open at end", c.Target, c.Peak, c.OpenAtEnd)
	h := rr.Handshakes
	hs := fmt.Sprintf("%d attempted, %d completed, %d failed", h.Attempts, h.Completed, h.Failed)
	if h.Failed > 0 && h.Errors != h.Failed {
		hs += fmt.Sprintf(" (%d of them errors)", h.Errors)
	}
	if h.CutOff > 0 {
		hs += fmt.Sprintf(", %d cut off by the end of the run", h.CutOff)
	}
	row("handshakes", "%s; %.1f/s, peak %.0f/s at %.1fs (per 100 ms)", hs, h.PerSecond, h.PeakPerSecond, h.PeakAtSeconds)
	if h.Latency != nil {
		row("handshake latency", "%s", h.Latency)
	}
	if cp := rr.Compression; cp != nil {
		row("compression", "%s", cp)
	}
	if m := rr.Messages; m != nil {
		mode := "closed loop"
		if m.Rate > 0 {
			mode = fmt.Sprintf("target %.0f msg/s", m.Rate)
		}
		comp := "off"
		if m.Compression {
			comp = "offered"
			if cp := rr.Compression; cp != nil && cp.Negotiated > 0 && cp.Declined == 0 {
				comp = "on"
			} else if cp != nil && cp.Negotiated == 0 {
				comp = "offered, declined"
			} else if cp != nil {
				comp = fmt.Sprintf("on for %d of %d", cp.Negotiated, cp.Negotiated+cp.Declined)
			}
		}
		row("messages", "%d sent, %d echoed; %.0f msg/s, %s/s (%d B each, %s, compression %s)",
			m.Sent, m.Received, m.PerSecond, humanBytes(m.BytesPerSecond), m.Size, mode, comp)
	}
	if rr.Latency != nil {
		row("echo latency", "%s", rr.Latency)
	}
	if rc := rr.Reconnect; rc != nil {
		row("reconnect", "policy %s: %s, %s gave up", rc.Policy, plural(int(rc.Attempts), "reconnect attempt"), plural(int(rc.GaveUp), "client"))
		if rc.Delays != nil {
			row("reconnect delays", "%s", rc.Delays)
		}
	}
	if rs := rr.Restart; rs != nil {
		row("restart", "drain with %d at %.2fs over %.2fs, server back at %.2fs (gap %.2fs)",
			rs.DrainCode, rs.DrainAt, rs.DrainWindow, rs.BackAt, rs.Gap)
		row("after the drain", "peak %.0f handshakes/s at %.1fs, %.0f attempts/s; all reconnected %s after the drain (%s after the server was back)",
			rs.PeakPerSecond, rs.PeakAt, rs.PeakAttemptsPerSecond, optSeconds(rs.FullReconnect), optSeconds(rs.FullAfterBack))
	}
	if m := rr.Memory; m != nil {
		per := "not reported"
		if m.PerConnection != nil {
			per = fmt.Sprintf("%s ± %s per connection", humanBytes(*m.PerConnection), humanBytes(m.PerConnectionNoise))
		}
		row("idle memory", "%s (%s side: heap %s → %s, stacks %s → %s, %s)",
			per, m.Source, humanBytes(m.HeapBefore), humanBytes(m.HeapAfter),
			humanBytes(m.StacksBefore), humanBytes(m.StacksAfter), plural(m.Connections, "connection"))
		if m.Withheld != "" {
			row("", "not reported: %s", m.Withheld)
		}
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

// String says how many connections negotiated permessage-deflate, and
// with which parameters.
func (c *Compression) String() string {
	total := c.Negotiated + c.Declined
	switch {
	case total == 0:
		return "offered; no connection opened"
	case c.Negotiated == 0:
		return fmt.Sprintf("offered, declined by the server on all %s", plural(int(total), "connection"))
	}
	var params []string
	for _, p := range c.Parameters {
		params = append(params, fmt.Sprintf("%q ×%d", p.Extensions, p.Count))
	}
	return fmt.Sprintf("negotiated on %d of %s (%s)", c.Negotiated, plural(int(total), "connection"), strings.Join(params, ", "))
}

// writeStormComparison puts the runs of a restart storm side by side, with
// ratios to the first run.
func writeStormComparison(w io.Writer, runs []Run) {
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

// String gives the percentiles in one line.
func (l *Latency) String() string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (%s)",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), plural(int(l.Count), "sample"))
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

// humanBytes writes b in binary units: "512 B", "6.8 KiB", "1.2 MiB".
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

// plural writes n and noun, with an s unless n is 1: "1 connection",
// "2 connections".
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
