package demo

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// OverloadFinding is what the overload chapter found.
type OverloadFinding struct {
	Crowd, Limit int
	// FirstTry is the number of clients admitted on their first attempt.
	FirstTry int
	// Refusals is the number of 1013s the crowd received, RefusedClients
	// the number of clients that received at least one.
	Refusals, RefusedClients int
	// HintMin and HintMax bound the retry-after= hints of those 1013s;
	// DistinctHints counts their different values (at millisecond
	// precision).
	HintMin, HintMax time.Duration
	DistinctHints    int
	// BackoffBase and BackoffCap are the clients' backoff policy.
	BackoffBase, BackoffCap time.Duration
	// Retries describes the waits before each retry, by attempt number;
	// the last row gathers the attempts from its number on.
	Retries []RetryWaits
	// Waits is the number of waits, Hinted those the server's hint set.
	Waits, Hinted int
	// PeakConnections is the most connections the server held.
	PeakConnections int
	// Sessions is the number of clients that got in, held their session
	// and left with 1000.
	Sessions int
	// Duration is how long until the last session was over.
	Duration time.Duration
	// Other counts close events other than the 1013s and the sessions'
	// 1000s (1006 from a lost connection, HTTP refusals), by code.
	Other map[closecode.Code]int
}

// RetryWaits summarises the waits before one retry attempt.
type RetryWaits struct {
	Attempt     int  // 1, 2, …
	AndLater    bool // the row also counts later attempts
	Count       int
	Median, Max time.Duration
	Hinted      int // waits set by the server's hint rather than the backoff
}

// retryRows is the number of rows of OverloadFinding.Retries; the last
// gathers every later attempt (by then the backoff is at its cap).
const retryRows = 3

func (st *stage) overloadFinding(chapter string, start time.Duration) *OverloadFinding {
	st.mu.Lock()
	defer st.mu.Unlock()
	f := &OverloadFinding{
		Crowd: st.opts.Crowd, Limit: st.opts.Limit,
		BackoffBase: st.dur(time.Second), BackoffCap: st.dur(4 * time.Second),
		Duration: st.since() - start,
		Other:    map[closecode.Code]int{},
	}
	for _, o := range st.opens {
		if o.chapter == chapter && o.attempt == 0 {
			f.FirstTry++
		}
	}
	refused := map[int]bool{}
	hints := map[time.Duration]bool{}
	sessions := map[int]bool{}
	for _, e := range st.events {
		if e.Chapter != chapter || e.Client < 0 {
			continue
		}
		switch {
		case e.Code == closecode.TryAgainLater && e.Sender == SentByServer:
			f.Refusals++
			refused[e.Client] = true
			if e.Hint > 0 {
				if len(hints) == 0 || e.Hint < f.HintMin {
					f.HintMin = e.Hint
				}
				f.HintMax = max(f.HintMax, e.Hint)
				hints[e.Hint.Round(time.Millisecond)] = true
			}
		case e.Code == closecode.NormalClosure && e.Sender == SentByClient:
			sessions[e.Client] = true
		default:
			f.Other[e.Code]++
		}
	}
	f.RefusedClients, f.DistinctHints, f.Sessions = len(refused), len(hints), len(sessions)
	var waits []Wait
	for _, w := range st.waits {
		if w.Chapter == chapter {
			waits = append(waits, w)
		}
	}
	f.Waits = len(waits)
	for _, w := range waits {
		if w.Hinted {
			f.Hinted++
		}
	}
	f.Retries = retryWaits(waits, retryRows)
	end := st.since()
	for _, s := range st.samples {
		if s.At >= start && s.At <= end {
			f.PeakConnections = max(f.PeakConnections, s.Connections)
		}
	}
	return f
}

// retryWaits groups waits by attempt number, the last of rows rows
// gathering the later attempts.
func retryWaits(waits []Wait, rows int) []RetryWaits {
	by := make([][]Wait, rows)
	for _, w := range waits {
		i := min(max(w.Attempt, 1), rows) - 1
		by[i] = append(by[i], w)
	}
	var out []RetryWaits
	for i, ws := range by {
		if len(ws) == 0 {
			continue
		}
		d := make([]time.Duration, len(ws))
		r := RetryWaits{Attempt: i + 1, Count: len(ws)}
		for j, w := range ws {
			d[j] = w.Delay
			if w.Hinted {
				r.Hinted++
			}
			if w.Attempt > i+1 {
				r.AndLater = true
			}
		}
		slices.Sort(d)
		r.Median, r.Max = d[len(d)/2], d[len(d)-1]
		out = append(out, r)
	}
	return out
}

// WriteText implements Finding.
func (f *OverloadFinding) WriteText(w io.Writer) error {
	p := &para{w: w}
	p.line("%d clients arrived at once at a server admitting %d: %d got in at the first try, %d were refused.",
		f.Crowd, f.Limit, f.FirstTry, f.Crowd-f.FirstTry)
	if f.Refusals > 0 {
		p.line("The server sent %s (1013 Try Again Later) to %d of the %d clients, each with a retry hint:",
			plural(f.Refusals, "refusal"), f.RefusedClients, f.Crowd)
		p.line("retry-after=%s, %d different values, so the refused did not come back in step.",
			secsRange(f.HintMin, f.HintMax), f.DistinctHints)
	}
	if len(f.Retries) > 0 {
		p.line("The clients backed off: %s doubling to a %s cap, jittered, and never sooner than the hint,", secs(f.BackoffBase), secs(f.BackoffCap))
		p.line("which was the longer of the two for %d of the %d waits:", f.Hinted, f.Waits)
		for _, r := range f.Retries {
			label := fmt.Sprintf("retry %d", r.Attempt)
			if r.AndLater {
				label = fmt.Sprintf("retry %d+", r.Attempt)
			}
			p.line("  %-9s %s, median %s, longest %s", label+":", plural(r.Count, "wait"), secs(r.Median), secs(r.Max))
		}
	}
	p.line("The server never held more than %s; %d of %d sessions were done after %s.",
		plural(f.PeakConnections, "connection"), f.Sessions, f.Crowd, secs(f.Duration))
	if len(f.Other) > 0 {
		p.line("Also seen: %s.", codeCounts(f.Other))
	}
	return p.err
}

// RestartFinding is what the restart chapter found.
type RestartFinding struct {
	// Clients is the size of the crowd that was connected when the drain
	// started.
	Clients int
	// DrainWindow and DrainHint are the server's drain settings: the 1012s
	// are spread over the window, each with a hint of DrainHint to
	// 1.5 × DrainHint (jittered).
	DrainWindow, DrainHint time.Duration
	// Drained is the number of clients the drain closed with 1012, over
	// DrainSpread (first to last), with hints from HintMin to HintMax.
	Drained          int
	DrainSpread      time.Duration
	HintMin, HintMax time.Duration
	// Newcomer is how the draining server answered a client that arrived
	// during the drain (the listener stays open to refuse it).
	Newcomer Event
	// Health is what /healthz answered during the drain, e.g.
	// "503 draining".
	Health string
	// Early counts the crowd's attempts that met the draining server
	// (refused again) or the closed port (1006) before the restart, by
	// code.
	Early map[closecode.Code]int
	// DownFor is how long the port was closed.
	DownFor time.Duration
	// Back is the number of clients that reconnected after the restart,
	// all of them BackAfter the server came up, with at most
	// PeakOpensPer250ms handshakes in any 250 ms.
	Back              int
	BackAfter         time.Duration
	PeakOpensPer250ms int
}

func (st *stage) restartFinding(chapter string, start time.Duration, f *RestartFinding) {
	drain, _ := st.markAt("drain")
	down, _ := st.markAt("down")
	up, _ := st.markAt("up")
	back, _ := st.markAt("back")
	st.mu.Lock()
	defer st.mu.Unlock()
	f.DownFor, f.BackAfter = up-down, back-up
	f.Early = map[closecode.Code]int{}
	drained := map[int]bool{}
	var first, last time.Duration
	for _, e := range st.events {
		if e.Chapter != chapter || e.Client < 0 || e.At < drain || e.At >= up {
			continue
		}
		if e.Code == closecode.ServiceRestart && e.Sender == SentByServer && !drained[e.Client] {
			drained[e.Client] = true
			if f.Drained == 0 {
				first, f.HintMin = e.At, e.Hint
			}
			f.Drained++
			last = e.At
			f.HintMin, f.HintMax = min(f.HintMin, e.Hint), max(f.HintMax, e.Hint)
			continue
		}
		f.Early[e.Code]++
	}
	f.DrainSpread = last - first
	buckets := map[time.Duration]int{}
	seen := map[int]bool{}
	for _, o := range st.opens {
		if o.chapter == chapter && o.at >= up {
			seen[o.client] = true
			b := (o.at - up) / (250 * time.Millisecond)
			buckets[b]++
			f.PeakOpensPer250ms = max(f.PeakOpensPer250ms, buckets[b])
		}
	}
	f.Back = len(seen)
}

// WriteText implements Finding.
func (f *RestartFinding) WriteText(w io.Writer) error {
	p := &para{w: w}
	p.line("The limit was lifted and all %d clients connected (persistent links).", f.Clients)
	closed := fmt.Sprintf("%d of them", f.Drained)
	if f.Drained == f.Clients {
		closed = fmt.Sprintf("all %d", f.Drained)
	}
	p.line("The server drained: it closed %s with 1012 Service Restart, spread over %s (drain window %s),",
		closed, secs(f.DrainSpread), secs(f.DrainWindow))
	p.line("each with retry-after=%s: long enough to cover the drain and the restart.", secsRange(f.HintMin, f.HintMax))
	if n := f.Newcomer; n.Who != "" {
		answer := n.Code.String()
		if n.Code == 0 {
			answer = n.Reason
		}
		if n.Hint > 0 {
			answer += fmt.Sprintf(" (retry-after=%s)", secs(n.Hint))
		}
		p.line("While draining it kept its port open, only to turn newcomers away: a newcomer got %s,", answer)
		p.line("and /healthz answered %q, so a load balancer would have moved traffic elsewhere.", f.Health)
	}
	p.line("The port closed when the last connection was gone; the server was down %s.", secs(f.DownFor))
	early := 0
	for _, n := range f.Early {
		early += n
	}
	if early == 0 {
		p.line("No client came back too early: no attempt met the draining or the stopped server.")
	} else {
		p.line("%s came back before the restart and backed off again: %s.", plural(early, "attempt"), codeCounts(f.Early))
	}
	p.line("%d of %d were back %s after the restart, at most %d handshakes in any 250 ms",
		f.Back, f.Clients, secs(f.BackAfter), f.PeakOpensPer250ms)
	p.line("(a crowd reconnecting at once would put all %d in the first).", f.Clients)
	return p.err
}

// MissingExtensionFinding is what the missing-extension chapter found.
type MissingExtensionFinding struct {
	// Required is the extension the client required.
	Required string
	// Negotiated is what a server with compression on accepted.
	Negotiated string
	// Missing, Offered and Answered are the client's
	// websocket.MandatoryExtensionError against the server without
	// compression; Error is its message.
	Missing  []string
	Offered  string
	Answered string
	Error    string
	// Retried is true if the client tried again (it must not).
	Retried bool
	// ServerReceived and ServerEchoed say whether the server counted the
	// client's 1010 (received) and its own echo of it in the close
	// handshake (counted as sent).
	ServerReceived, ServerEchoed bool
	// Fix is the registry's fix for 1010.
	Fix string
}

// WriteText implements Finding.
func (f *MissingExtensionFinding) WriteText(w io.Writer) error {
	p := &para{w: w}
	p.line("A client requiring %s", f.Required)
	p.line("- against a server with compression on negotiated %q;", f.Negotiated)
	if f.Error == "" {
		p.line("- against the crowd's server (compression off) did not finish.")
		return p.err
	}
	answered := "no extensions"
	if f.Answered != "" {
		answered = fmt.Sprintf("%q", f.Answered)
	}
	p.line("- against the crowd's server, compression off (it answered %s to the offer %q),", answered, f.Offered)
	p.line("  closed the connection itself with 1010 Mandatory Extension, naming what was missing:")
	p.line("  %s", strings.Join(f.Missing, "; "))
	if f.Retried {
		p.line("  and then retried, which it must not do.")
	} else {
		p.line("  and did not retry: 1010 is permanent until the configuration changes.")
	}
	switch {
	case f.ServerReceived && f.ServerEchoed:
		p.line("The server received the 1010 and echoed it back, as the close handshake requires;")
		p.line("it counts the echo among the codes it sent, but a server never chooses 1010 itself.")
	case f.ServerReceived:
		p.line("The server received the 1010.")
	}
	p.line("Fix: %s", f.Fix)
	return p.err
}

// CodeCount is how often one close code came from one sender.
type CodeCount struct {
	Code   closecode.Code
	Name   string
	Sender Sender
	Count  int
	// Clients is the number of crowd clients that saw it; Others names
	// the chapters' one-off clients that did.
	Clients int
	Others  []string
	// Retry, Description and Fix are the registry's.
	Retry, Description, Fix string
}

// Codes counts the close events by code and sender, in code order.
func (r *Report) Codes() []CodeCount {
	type key struct {
		code   closecode.Code
		sender Sender
	}
	counts := map[key]*CodeCount{}
	clients := map[key]map[int]bool{}
	for _, e := range r.Events {
		k := key{e.Code, e.Sender}
		c := counts[k]
		if c == nil {
			info := closecode.Lookup(e.Code)
			c = &CodeCount{Code: e.Code, Name: info.Name, Sender: e.Sender, Retry: info.Retry.String(), Description: info.Description, Fix: info.Fix}
			if e.Code == 0 {
				c.Name, c.Retry, c.Description, c.Fix = "refused over HTTP", "retry with backoff (429, 5xx)", "The handshake was answered with an HTTP error instead of 101.", "See the HTTP status and Retry-After."
			}
			counts[k] = c
			clients[k] = map[int]bool{}
		}
		c.Count++
		if e.Client >= 0 {
			clients[k][e.Client] = true
		} else if !slices.Contains(c.Others, e.Who) {
			c.Others = append(c.Others, e.Who)
		}
	}
	out := make([]CodeCount, 0, len(counts))
	for k, c := range counts {
		c.Clients = len(clients[k])
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Code != out[j].Code {
			return out[i].Code < out[j].Code
		}
		return out[i].Sender < out[j].Sender
	})
	return out
}

// para writes the lines of a paragraph, indented under its heading, and
// keeps the first error.
type para struct {
	w   io.Writer
	err error
}

func (p *para) line(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, "   "+format+"\n", args...)
	}
}

// secs formats a duration as seconds with one decimal: "2.5 s".
func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

// secsRange formats a range of durations: "1.2–2.5 s", or "0.6 s" when
// both ends read the same.
func secsRange(lo, hi time.Duration) string {
	a, b := fmt.Sprintf("%.1f", lo.Seconds()), fmt.Sprintf("%.1f", hi.Seconds())
	if a == b {
		return a + " s"
	}
	return a + "–" + b + " s"
}

// codeCounts writes "3 × 1012 Service Restart, 2 × 1006 Abnormal Closure".
func codeCounts(m map[closecode.Code]int) string {
	codes := make([]closecode.Code, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		name := c.String()
		if c == 0 {
			name = "HTTP refusals"
		}
		parts[i] = fmt.Sprintf("%d × %s", m[c], name)
	}
	return strings.Join(parts, ", ")
}
