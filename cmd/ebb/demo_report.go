package main

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// demoRecorder collects what the demo's clients and servers saw.
type demoRecorder struct {
	mu         sync.Mutex
	samples    []connSample
	events     []codeEvent
	marks      map[string]time.Time
	phases     []phaseTime
	opens      []time.Time
	waits      []time.Duration
	hints1013  []time.Duration
	started    int
	done       int
	serverSent map[closecode.Code]uint64
	serverRecv map[closecode.Code]uint64

	backIn        time.Duration
	negotiated    string
	mandatory     *websocket.MandatoryExtensionError
	serverSaw1010 bool
	plotPath      string
}

type connSample struct {
	t     time.Time
	conns int // -1 while no server runs
}

type codeEvent struct {
	t    time.Time
	code closecode.Code
	by   string
}

type phaseTime struct {
	name string
	end  time.Duration
}

func newDemoRecorder() *demoRecorder {
	return &demoRecorder{marks: map[string]time.Time{}, serverSent: map[closecode.Code]uint64{}, serverRecv: map[closecode.Code]uint64{}}
}

func (r *demoRecorder) sample(t time.Time, n int) {
	r.mu.Lock()
	r.samples = append(r.samples, connSample{t, n})
	r.mu.Unlock()
}

func (r *demoRecorder) event(t time.Time, code closecode.Code, by string) {
	r.mu.Lock()
	r.events = append(r.events, codeEvent{t, code, by})
	r.mu.Unlock()
}

func (r *demoRecorder) mark(name string) {
	r.mu.Lock()
	r.marks[name] = time.Now()
	r.mu.Unlock()
}

func (r *demoRecorder) phaseEnd(name string, at time.Duration) {
	r.mu.Lock()
	r.phases = append(r.phases, phaseTime{name, at})
	r.mu.Unlock()
}

func (r *demoRecorder) sessionStarted() { r.mu.Lock(); r.started++; r.mu.Unlock() }
func (r *demoRecorder) sessionDone()    { r.mu.Lock(); r.done++; r.mu.Unlock() }

// clientEvent receives every reconnect.Client state change.
func (r *demoRecorder) clientEvent(e reconnect.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.State {
	case reconnect.StateOpen:
		r.opens = append(r.opens, e.Time)
	case reconnect.StateClosed:
		by := "client"
		if e.Remote {
			by = "server"
		}
		code := e.Code
		if code == 0 && e.Status != 0 {
			by = fmt.Sprintf("HTTP %d", e.Status)
		}
		r.events = append(r.events, codeEvent{e.Time, code, by})
		if code == closecode.TryAgainLater {
			if h, ok := closecode.ParseRetryHint(e.Reason); ok {
				r.hints1013 = append(r.hints1013, h)
			}
		}
	case reconnect.StateWaiting:
		r.waits = append(r.waits, e.Delay)
	}
}

// reopened counts connections opened since the server came back up.
func (r *demoRecorder) reopened() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	up, ok := r.marks["up"]
	if !ok {
		return 0
	}
	n := 0
	for _, t := range r.opens {
		if !t.Before(up) {
			n++
		}
	}
	return n
}

func (r *demoRecorder) count(code closecode.Code) int {
	n := 0
	for _, e := range r.events {
		if e.code == code {
			n++
		}
	}
	return n
}

// status is the live line.
func (r *demoRecorder) status(conns int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	server := "down"
	if conns >= 0 {
		server = fmt.Sprintf("%d connected", conns)
	}
	return fmt.Sprintf("server %s | 1013×%d 1012×%d 1006×%d | sessions %d done", server,
		r.count(closecode.TryAgainLater), r.count(closecode.ServiceRestart), r.count(closecode.AbnormalClosure), r.done)
}

// mergeServer adds a stopped server's close-code counters.
func (r *demoRecorder) mergeServer(st shed.Stats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c, n := range st.CloseSent {
		r.serverSent[c] += n
	}
	for c, n := range st.CloseReceived {
		r.serverRecv[c] += n
	}
}

// demoSummary is the report, as printed with --json.
type demoSummary struct {
	Seconds   float64        `json:"seconds"`
	Overload  overloadJSON   `json:"overload"`
	Restart   restartJSON    `json:"restart"`
	Mandatory mandatoryJSON  `json:"mandatory"`
	Codes     []codeSeenJSON `json:"codes"`
	Timeline  string         `json:"timeline,omitempty"`
}

type overloadJSON struct {
	Crowd          int     `json:"crowd"`
	Limit          int     `json:"limit"`
	Refused1013    int     `json:"refused_1013"`
	HintMinSeconds float64 `json:"hint_min_seconds"`
	HintMaxSeconds float64 `json:"hint_max_seconds"`
	DistinctHints  int     `json:"distinct_hints"`
	Sessions       int     `json:"sessions"`
	Seconds        float64 `json:"seconds"`
}

type restartJSON struct {
	Drained1012         int     `json:"drained_1012"`
	BackInSeconds       float64 `json:"back_in_seconds"`
	PeakOpensPer250ms   int     `json:"peak_opens_per_250ms"`
	ReconnectedClients  int     `json:"reconnected_clients"`
	DrainWindowClients  int     `json:"drain_window_clients"`
	FirstToLastSeconds  float64 `json:"first_to_last_seconds"`
	ServerDownSeconds   float64 `json:"server_down_seconds"`
	ReconnectsOnTheDown int     `json:"failed_attempts_while_down"`
}

type mandatoryJSON struct {
	NegotiatedWithCompression string   `json:"negotiated_with_compression"`
	Missing                   []string `json:"missing"`
	Answered                  string   `json:"answered"`
	Error                     string   `json:"error"`
	ServerReceived1010        bool     `json:"server_received_1010"`
}

type codeSeenJSON struct {
	Code        int    `json:"code"`
	Name        string `json:"name"`
	Count       int    `json:"count"`
	SentBy      string `json:"sent_by"`
	Description string `json:"description"`
	Fix         string `json:"fix"`
	Retry       string `json:"retry"`
}

func (r *demoRecorder) summary(start time.Time, crowd, limit int) demoSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := demoSummary{Seconds: time.Since(start).Seconds(), Timeline: r.plotPath}
	s.Overload = overloadJSON{Crowd: crowd, Limit: limit, Sessions: r.done}
	distinct := map[time.Duration]bool{}
	for i, h := range r.hints1013 {
		if i == 0 || h.Seconds() < s.Overload.HintMinSeconds {
			s.Overload.HintMinSeconds = h.Seconds()
		}
		s.Overload.HintMaxSeconds = max(s.Overload.HintMaxSeconds, h.Seconds())
		distinct[h] = true
	}
	s.Overload.DistinctHints = len(distinct)
	for _, p := range r.phases {
		if p.name == "overload" {
			s.Overload.Seconds = p.end.Seconds()
		}
	}
	drain, up := r.marks["drain"], r.marks["up"]
	byCode := map[closecode.Code][]codeEvent{}
	for _, e := range r.events {
		byCode[e.code] = append(byCode[e.code], e)
		if e.code == closecode.TryAgainLater && e.t.Before(drain) {
			s.Overload.Refused1013++
		}
	}
	if d := byCode[closecode.ServiceRestart]; len(d) > 0 {
		s.Restart.Drained1012 = len(d)
		s.Restart.FirstToLastSeconds = d[len(d)-1].t.Sub(d[0].t).Seconds()
	}
	if !up.IsZero() {
		s.Restart.ServerDownSeconds = up.Sub(r.marks["down"]).Seconds()
		s.Restart.BackInSeconds = r.backIn.Seconds()
		buckets := map[int64]int{}
		for _, t := range r.opens {
			if !t.Before(up) {
				s.Restart.ReconnectedClients++
				buckets[int64(t.Sub(up)/(250*time.Millisecond))]++
			}
		}
		for _, n := range buckets {
			s.Restart.PeakOpensPer250ms = max(s.Restart.PeakOpensPer250ms, n)
		}
		for _, e := range byCode[closecode.AbnormalClosure] {
			if e.t.After(drain) && e.t.Before(up) {
				s.Restart.ReconnectsOnTheDown++
			}
		}
	}
	s.Restart.DrainWindowClients = crowd
	if me := r.mandatory; me != nil {
		s.Mandatory = mandatoryJSON{
			NegotiatedWithCompression: r.negotiated,
			Missing:                   me.Missing,
			Answered:                  me.Answered,
			Error:                     me.Error(),
			ServerReceived1010:        r.serverSaw1010,
		}
	}
	codes := make([]closecode.Code, 0, len(byCode))
	for c := range byCode {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool { return codes[i] < codes[j] })
	for _, c := range codes {
		info := closecode.Lookup(c)
		by := map[string]bool{}
		for _, e := range byCode[c] {
			by[e.by] = true
		}
		var senders []string
		for b := range by {
			senders = append(senders, b)
		}
		sort.Strings(senders)
		name := info.Name
		if c == 0 {
			name = "refused over HTTP"
		}
		s.Codes = append(s.Codes, codeSeenJSON{int(c), name, len(byCode[c]), strings.Join(senders, ", "), info.Description, info.Fix, info.Retry.String()})
	}
	return s
}

// report prints the summary to stdout.
func (d *demo) report() error {
	s := d.rec.summary(d.start, d.o.crowd, d.o.limit)
	if d.o.asJSON {
		return writeJSON(d.e.stdout, s)
	}
	w := d.e.stdout
	fmt.Fprintf(w, "\nebb demo: what happened (%.1f s)\n\n", s.Seconds)
	o := s.Overload
	fmt.Fprintf(w, "1. Overload: %d clients arrived at once at a server admitting %d.\n", o.Crowd, o.Limit)
	fmt.Fprintf(w, "   The server refused %d attempts with 1013 Try Again Later; hints %.1f–%.1f s, %d distinct values,\n", o.Refused1013, o.HintMinSeconds, o.HintMaxSeconds, o.DistinctHints)
	fmt.Fprintf(w, "   so the refused did not come back in step. Clients backed off and got in as slots freed:\n")
	fmt.Fprintf(w, "   %d of %d sessions done after %.1f s.\n\n", o.Sessions, o.Crowd, o.Seconds)
	r := s.Restart
	if r.Drained1012 > 0 {
		fmt.Fprintf(w, "2. Restart: %d connections were closed with 1012 Service Restart over %.1f s (the drain window);\n", r.Drained1012, r.FirstToLastSeconds)
		fmt.Fprintf(w, "   the server was down %.1f s (%d attempts failed with 1006 meanwhile and backed off).\n", r.ServerDownSeconds, r.ReconnectsOnTheDown)
		fmt.Fprintf(w, "   All %d clients were back %.1f s after the restart, at most %d handshakes in any 250 ms\n", r.ReconnectedClients, r.BackInSeconds, r.PeakOpensPer250ms)
		fmt.Fprintf(w, "   (a crowd reconnecting at once would put all %d in the first one).\n\n", r.DrainWindowClients)
	}
	if m := s.Mandatory; m.Error != "" {
		fmt.Fprintf(w, "3. Missing extension: a client requiring permessage-deflate\n")
		fmt.Fprintf(w, "   - against a server with compression on negotiated %q;\n", m.NegotiatedWithCompression)
		fmt.Fprintf(w, "   - against a server with compression off closed with 1010 Mandatory Extension (server saw it: %v):\n", m.ServerReceived1010)
		for _, line := range strings.Split(m.Error, "\n") {
			fmt.Fprintf(w, "     %s\n", line)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Close codes seen by the clients, from ebb's registry:")
	for _, c := range s.Codes {
		fmt.Fprintf(w, "  %d %s ×%d (sent by %s; client should: %s)\n", c.Code, c.Name, c.Count, c.SentBy, c.Retry)
		fmt.Fprintf(w, "      %s\n", c.Description)
		if c.Code == int(closecode.TryAgainLater) || c.Code == int(closecode.ServiceRestart) || c.Code == int(closecode.MandatoryExtension) {
			fmt.Fprintf(w, "      Fix: %s\n", c.Fix)
		}
	}
	if s.Timeline != "" {
		fmt.Fprintf(w, "\nTimeline (connections and close codes over time): %s\n", s.Timeline)
	}
	return nil
}

// writeTimeline draws connections and close codes over time.
func writeTimeline(path string, r *demoRecorder, start time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := plot.New()
	p.Title.Text = "ebb demo: connections and close codes over time"
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = "connections / closes per 0.5 s"
	conns := make(plotter.XYs, 0, len(r.samples))
	for _, s := range r.samples {
		// While the server is down (restart phase) it holds nothing.
		conns = append(conns, plotter.XY{X: s.t.Sub(start).Seconds(), Y: float64(max(s.conns, 0))})
	}
	if len(conns) == 0 {
		return errors.New("no samples")
	}
	l, err := plotter.NewLine(conns)
	if err != nil {
		return err
	}
	l.Color = color.RGBA{47, 111, 222, 255}
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add("server connections", l)
	series := []struct {
		code closecode.Code
		col  color.RGBA
	}{
		{closecode.TryAgainLater, color.RGBA{214, 69, 69, 255}},
		{closecode.ServiceRestart, color.RGBA{138, 79, 214, 255}},
		{closecode.AbnormalClosure, color.RGBA{150, 150, 150, 255}},
		{closecode.MandatoryExtension, color.RGBA{0, 0, 0, 255}},
	}
	end := time.Since(start).Seconds()
	for _, sr := range series {
		buckets := make([]float64, int(end*2)+2)
		any := false
		for _, e := range r.events {
			if e.code == sr.code {
				buckets[int(e.t.Sub(start).Seconds()*2)]++
				any = true
			}
		}
		if !any {
			continue
		}
		pts := make(plotter.XYs, len(buckets))
		for i, n := range buckets {
			pts[i] = plotter.XY{X: float64(i) / 2, Y: n}
		}
		bl, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		bl.StepStyle = plotter.PostStep
		bl.Color = sr.col
		p.Add(bl)
		p.Legend.Add(sr.code.String(), bl)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	return p.Save(11*vg.Inch, 4.5*vg.Inch, path)
}

// liveLine shows one status line on a terminal, rewritten in place; on
// anything else it prints only phase changes.
type liveLine struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	name    string
	last    time.Time
	stopped bool
}

func newLiveLine(w io.Writer) *liveLine {
	l := &liveLine{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			l.tty = true
		}
	}
	return l
}

func (l *liveLine) phase(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.tty {
		fmt.Fprint(l.w, "\r\033[K")
	}
	fmt.Fprintf(l.w, "== %s\n", name)
	l.name = name
}

func (l *liveLine) update(status string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	if l.tty {
		fmt.Fprintf(l.w, "\r\033[K   %s", status)
		return
	}
	if time.Since(l.last) >= 3*time.Second {
		fmt.Fprintf(l.w, "   %s\n", status)
		l.last = time.Now()
	}
}

func (l *liveLine) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.stopped && l.tty {
		fmt.Fprint(l.w, "\r\033[K")
	}
	l.stopped = true
}
