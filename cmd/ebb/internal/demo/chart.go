package demo

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ebb-ws/ebb/closecode"
)

// Chart is the timeline as data: every panel, series, shaded span, mark
// and label WriteTimeline draws, in data coordinates (seconds since the
// start on x). BuildChart makes it from a Report; tests compare it with a
// golden file, so the picture's structure is checked without comparing
// pixels.
type Chart struct {
	Title string `json:"title"`
	// Legend names the connections panel's series, drawn under the title
	// (outside the data).
	Legend []LegendEntry `json:"legend"`
	XLabel string        `json:"x_label"`
	XMax   float64       `json:"x_max"`
	XTicks []Tick        `json:"x_ticks"`
	// Spans are shaded in every panel: one per chapter (labelled in the
	// headroom of the first panel) and the time the server was down.
	Spans []Span `json:"spans"`
	// Marks are dashed vertical lines in every panel, labelled in the
	// headroom of the first.
	Marks  []VLine `json:"marks"`
	Panels []Panel `json:"panels"`
}

// LegendEntry is one line of the legend.
type LegendEntry struct {
	Label  string `json:"label"`
	Color  string `json:"color"`
	Dashed bool   `json:"dashed,omitempty"`
}

// Tick is a labelled tick of an axis.
type Tick struct {
	Value float64 `json:"value"`
	Label string  `json:"label"`
}

// Span is a shaded time range.
type Span struct {
	Kind  string  `json:"kind"` // "chapter" or "down"
	From  float64 `json:"from"`
	To    float64 `json:"to"`
	Label string  `json:"label"`
	// Caption says in a few words what happened in the span.
	Caption string `json:"caption,omitempty"`
	Color   string `json:"color"`
}

// VLine is a labelled moment.
type VLine struct {
	At    float64 `json:"at"`
	Label string  `json:"label"`
}

// Panel is one of the stacked panels sharing the time axis.
type Panel struct {
	Name   string  `json:"name"`
	YLabel string  `json:"y_label"`
	Height float64 `json:"height"` // share of the panels' height
	YMin   float64 `json:"y_min"`
	YMax   float64 `json:"y_max"`
	// DataTop is the highest value the data reaches; above it is
	// headroom for the labels.
	DataTop float64 `json:"data_top"`
	YTicks  []Tick  `json:"y_ticks"`
	Lines   []Line  `json:"lines,omitempty"`
	Refs    []Ref   `json:"refs,omitempty"`
	Lanes   []Lane  `json:"lanes,omitempty"`
	Notes   []Note  `json:"notes,omitempty"`
}

// Line is a series drawn as a line.
type Line struct {
	Name   string    `json:"name"`
	Color  string    `json:"color"`
	Width  float64   `json:"width"`
	Points []XY      `json:"points"`
	Dashes []float64 `json:"dashes,omitempty"`
}

// XY is a point in data coordinates.
type XY struct {
	X float64 `json:"x"`
	Y float64 `json:"y"`
}

// Ref is a labelled horizontal reference line over a time range.
type Ref struct {
	Y     float64 `json:"y"`
	From  float64 `json:"from"`
	To    float64 `json:"to"`
	Label string  `json:"label"`
	Color string  `json:"color"`
}

// Lane is one close event type in the events panel: a row of dots, one
// per event, labelled on the y axis.
type Lane struct {
	Y      float64 `json:"y"`
	Code   int     `json:"code"`
	Sender Sender  `json:"sender"`
	Label  string  `json:"label"`
	Color  string  `json:"color"`
	Radius float64 `json:"radius"`
	Dots   []XY    `json:"dots"`
}

// Note is a text callout: drawn from X rightwards, or ending at X when
// AlignRight; when it does not fit right of X, it ends at LeftX instead
// (where the thing it describes begins).
type Note struct {
	X          float64 `json:"x"`
	LeftX      float64 `json:"left_x"`
	Y          float64 `json:"y"`
	Text       string  `json:"text"`
	AlignRight bool    `json:"align_right,omitempty"`
}

// Colours of the chart.
const (
	colConnections = "#2f6fde"
	colNodeB       = "#0f9e8a"
	colWaiting     = "#e08a00"
	colLimit       = "#555555"
	colDown        = "#30303024"
)

// laneStyle is how a close event type is drawn: colour, order in the
// panel (story order), and its dot size.
type laneStyle struct {
	order  int
	color  string
	radius float64
}

func styleOf(code closecode.Code, s Sender) laneStyle {
	switch {
	case code == closecode.TryAgainLater:
		return laneStyle{0, "#d64545", 1.8}
	case code == closecode.ServiceRestart:
		return laneStyle{1, "#8a4fd6", 1.8}
	case code == closecode.MandatoryExtension:
		return laneStyle{2, "#111111", 3.5}
	case code == closecode.NormalClosure:
		return laneStyle{3, "#1f9d55", 1.6}
	case s == SentLocally:
		return laneStyle{4, "#8a8a8a", 1.8}
	case s == SentOverHTTP:
		return laneStyle{5, "#d98a00", 1.8}
	}
	return laneStyle{6, "#555555", 1.8}
}

// chapterColor shades a chapter's span.
func chapterColor(name string) string {
	switch name {
	case "overload":
		return "#d645451a"
	case "restart":
		return "#8a4fd61a"
	case "extension":
		return "#1111110f"
	case "scale-out":
		return "#0f9e8a1c"
	}
	return "#2f6fde12"
}

// BuildChart turns a report into the timeline's model.
func BuildChart(r *Report) *Chart {
	xmax := r.Duration.Seconds()
	for _, c := range r.Chapters {
		xmax = max(xmax, c.End.Seconds())
	}
	xmax = math.Max(xmax, 1)
	ch := &Chart{
		Title:  fmt.Sprintf("ebb demo: %d reconnecting clients vs a server that admits %d", r.Crowd, r.Limit),
		XLabel: "seconds since the demo started",
		XMax:   round3(xmax),
		XTicks: niceTicks(0, xmax, 10, false, false),
		Legend: []LegendEntry{
			{Label: "connections the server holds", Color: colConnections},
			{Label: "clients waiting to retry (backing off)", Color: colWaiting},
			{Label: "server limit", Color: colLimit, Dashed: true},
		},
	}
	if n, ok := chapterNumber(r, scaleOutName); ok {
		ch.Title += fmt.Sprintf(", then cluster nodes that admit %d each", scaleOutLimit(r.Crowd))
		ch.Legend[0].Label = fmt.Sprintf("connections the server holds (node A's in chapter %d)", n)
		ch.Legend = slices.Insert(ch.Legend, 1, LegendEntry{Label: "node B's connections", Color: colNodeB})
		ch.Legend[len(ch.Legend)-1].Label = "server and node limits"
	}
	for i, c := range r.Chapters {
		ch.Spans = append(ch.Spans, Span{Kind: "chapter", From: round3(c.Start.Seconds()), To: round3(c.End.Seconds()),
			Label: fmt.Sprintf("%d  %s", i+1, c.Title), Caption: caption(c.Finding), Color: chapterColor(c.Name)})
	}
	var down *Span
	for _, m := range r.Marks {
		ch.Marks = append(ch.Marks, VLine{At: round3(m.At.Seconds()), Label: m.Label})
		switch m.Name {
		case "down":
			down = &Span{Kind: "down", From: round3(m.At.Seconds()), Label: "server down", Color: colDown}
		case "up":
			if down != nil {
				down.To = round3(m.At.Seconds())
				ch.Spans = append(ch.Spans, *down)
				down = nil
			}
		}
	}
	ch.Panels = []Panel{connectionsPanel(r), eventsPanel(r)}
	return ch
}

// chapterNumber is the number (1, 2, …) of the named chapter in r.
func chapterNumber(r *Report, name string) (int, bool) {
	for i, c := range r.Chapters {
		if c.Name == name {
			return i + 1, true
		}
	}
	return 0, false
}

// caption sums up a chapter's finding in a line or two.
func caption(f Finding) string {
	switch f := f.(type) {
	case *ScaleOutFinding:
		return fmt.Sprintf("%d refused again and again until B joins; then all %d served", f.Crowd-f.NodeLimit, f.Crowd)
	case *OverloadFinding:
		return fmt.Sprintf("%d admitted at once; %d refused with 1013 and a retry hint, they back off and get in later", f.FirstTry, f.Crowd-f.FirstTry)
	case *RestartFinding:
		return fmt.Sprintf("%d closed with 1012 and a hint past the restart; all back %.1f s after it", f.Drained, f.BackAfter.Seconds())
	case *MissingExtensionFinding:
		if f.Error == "" {
			return ""
		}
		if f.Retried {
			return "1010 from the client, then a retry"
		}
		return "1010 from the client, no retry"
	}
	return ""
}

// connectionsPanel draws the server's connections and the clients waiting
// to retry, with headroom above the crowd for the story's labels. In the
// scale-out chapter the server's line is node A's, and node B has a line
// of its own while it runs.
func connectionsPanel(r *Report) Panel {
	top := float64(r.Crowd)
	conns := Line{Name: "connections the server holds", Color: colConnections, Width: 2}
	waiting := Line{Name: "clients waiting to retry", Color: colWaiting, Width: 1.4}
	b := Line{Name: "node B's connections", Color: colNodeB, Width: 2}
	for _, s := range r.Samples {
		x := round3(s.At.Seconds())
		onB, running := s.Servers[nodeB]
		conns.Points = append(conns.Points, XY{x, float64(s.Connections - onB)})
		waiting.Points = append(waiting.Points, XY{x, float64(s.Waiting)})
		if running {
			b.Points = append(b.Points, XY{x, float64(onB)})
		}
		top = max(top, float64(s.Connections-onB), float64(onB), float64(s.Waiting))
	}
	p := Panel{
		Name: "connections", YLabel: "clients", Height: 0.6,
		YMin: 0, YMax: math.Ceil(top * 1.6), DataTop: top,
		YTicks: niceTicks(0, top, 5, true, true),
		Lines:  []Line{conns, waiting},
	}
	if len(b.Points) > 0 {
		p.Lines = append(p.Lines, b)
	}
	for _, c := range r.Chapters {
		from, to := round3(c.Start.Seconds()), round3(c.End.Seconds())
		switch c.Name {
		case "overload":
			p.Refs = append(p.Refs, Ref{Y: float64(r.Limit), From: from, To: to,
				Label: "server limit " + strconv.Itoa(r.Limit), Color: colLimit})
		case scaleOutName:
			p.Refs = append(p.Refs, Ref{Y: float64(scaleOutLimit(r.Crowd)), From: from, To: to,
				Label: "node limit " + strconv.Itoa(scaleOutLimit(r.Crowd)), Color: colLimit})
		}
	}
	return p
}

// eventsPanel draws one lane per close event type seen (code and sender),
// one dot per event; events close in time are spread vertically within
// the lane so that a burst shows as a column, not one dot.
func eventsPanel(r *Report) Panel {
	counts := r.Codes()
	sort.SliceStable(counts, func(i, j int) bool {
		return styleOf(counts[i].Code, counts[i].Sender).order < styleOf(counts[j].Code, counts[j].Sender).order
	})
	n := len(counts)
	p := Panel{Name: "close events", YLabel: "close events", Height: 0.4, YMin: 0.4, YMax: float64(n) + 0.6, DataTop: float64(n) + 0.6}
	xmax := math.Max(r.Duration.Seconds(), 1)
	bin := xmax / 150
	for i, c := range counts {
		st := styleOf(c.Code, c.Sender)
		lane := Lane{Y: float64(n - i), Code: int(c.Code), Sender: c.Sender, Color: st.color, Radius: st.radius, Label: laneLabel(c)}
		var xs []float64
		for _, e := range r.Events {
			if e.Code == c.Code && e.Sender == c.Sender {
				xs = append(xs, e.At.Seconds())
			}
		}
		lane.Dots = swarm(xs, lane.Y, bin)
		p.Lanes = append(p.Lanes, lane)
		p.YTicks = append(p.YTicks, Tick{Value: lane.Y, Label: lane.Label})
		for _, note := range laneNotes(r, c, xs, bin) {
			note.Y += lane.Y
			p.Notes = append(p.Notes, note)
		}
	}
	// Ticks in ascending order, as axes want them.
	sort.Slice(p.YTicks, func(i, j int) bool { return p.YTicks[i].Value < p.YTicks[j].Value })
	return p
}

// laneNotes are the callouts that tell a lane's story, if it has one: the
// 1013 burst when the crowd arrives and the 1013s of the scale-out
// chapter, the drain's 1012s, the 1010. Their Y is relative to the
// lane's.
func laneNotes(r *Report, c CodeCount, xs []float64, bin float64) []Note {
	var notes []Note
	if note, ok := laneNote(r, c, xs, bin); ok {
		notes = append(notes, note)
	}
	if c.Code == closecode.TryAgainLater && c.Sender == SentByServer {
		if note, ok := scaleOutNote(r, bin); ok {
			notes = append(notes, note)
		}
	}
	return notes
}

// scaleOutNote tells the 1013s of the scale-out chapter: what node A said
// alone, what it said once node B had joined, and that they stopped.
func scaleOutNote(r *Report, bin float64) (Note, bool) {
	f, ok := Find[*ScaleOutFinding](r)
	if !ok || f.Before.Count == 0 {
		return Note{}, false
	}
	var first, last float64
	n := 0
	for _, e := range r.Events {
		if e.Chapter == scaleOutName && e.Code == closecode.TryAgainLater && e.Sender == SentByServer {
			if n == 0 {
				first = e.At.Seconds()
			}
			last = e.At.Seconds()
			n++
		}
	}
	if n == 0 {
		return Note{}, false
	}
	text := fmt.Sprintf("node A alone: %d × %s", f.Before.Count, reasonList(f.Before.Reasons))
	if f.After.Count > 0 {
		text += fmt.Sprintf(";\nB joined: %d × %s", f.After.Count, reasonList(f.After.Reasons))
	}
	if f.Late == 0 {
		text += ", then none"
	}
	return Note{X: round3(last + bin), LeftX: round3(first - bin), Text: text}, true
}

// reasonList names the reasons of a group of refusals, most frequent
// first: "cluster at capacity".
func reasonList(m map[string]int) string {
	keys := byCount(m)
	for i, k := range keys {
		keys[i] = strconv.Quote(k)
	}
	return strings.Join(keys, " or ")
}

// laneNote is the lane's first callout, if it has one: the 1013 burst
// when the crowd arrives, the drain's 1012s, the 1010. Its Y is relative
// to the lane's.
func laneNote(r *Report, c CodeCount, xs []float64, bin float64) (Note, bool) {
	if len(xs) == 0 {
		return Note{}, false
	}
	switch {
	case c.Code == closecode.TryAgainLater && c.Sender == SentByServer:
		// The biggest burst: the crowd arriving at once (the scale-out
		// chapter's 1013s have a note of their own).
		xs = nil
		for _, e := range r.Events {
			if e.Code == c.Code && e.Sender == c.Sender && e.Chapter != scaleOutName {
				xs = append(xs, e.At.Seconds())
			}
		}
		best, bestN := 0.0, 0
		for i := range xs {
			n := 0
			for j := i; j < len(xs) && xs[j] < xs[i]+bin; j++ {
				n++
			}
			if n > bestN {
				best, bestN = xs[i], n
			}
		}
		if bestN < 2 {
			return Note{}, false
		}
		// Below the lane: the lane itself holds the retries' refusals.
		return Note{X: round3(best + bin), LeftX: round3(best), Y: -0.5, Text: fmt.Sprintf("%d refused at once, each with its own retry hint", bestN)}, true
	case c.Code == closecode.ServiceRestart && c.Sender == SentByServer:
		f, ok := Find[*RestartFinding](r)
		if !ok || f.Drained == 0 {
			return Note{}, false
		}
		return Note{X: round3(xs[len(xs)-1] + bin), LeftX: round3(xs[0] - bin), Text: fmt.Sprintf("the drain closes all %d,\neach told to come back after the restart", f.Drained)}, true
	case c.Code == closecode.MandatoryExtension:
		return Note{X: round3(xs[0]), LeftX: round3(xs[0]), Text: "requires permessage-deflate, the server has it off:\nthe client closes with 1010 and does not retry", AlignRight: true}, true
	}
	return Note{}, false
}

// laneLabel is a lane's y-axis label: the code, its name and count, and
// who sent it.
func laneLabel(c CodeCount) string {
	head := fmt.Sprintf("%d %s ×%d", c.Code, c.Name, c.Count)
	if c.Code == 0 {
		head = fmt.Sprintf("HTTP refusal ×%d", c.Count)
	}
	var who string
	switch c.Sender {
	case SentByServer:
		who = "sent by the server"
	case SentByClient:
		who = "sent by the client"
	case SentLocally:
		who = "local: no close frame"
	case SentOverHTTP:
		who = "before the upgrade"
	}
	return head + "\n" + who
}

// swarm places events on a lane: each bin of width bin (seconds) stacks
// its events vertically around y, within ±0.38.
func swarm(xs []float64, y, bin float64) []XY {
	sort.Float64s(xs)
	byBin := map[int][]float64{}
	var order []int
	for _, x := range xs {
		b := int(x / bin)
		if _, ok := byBin[b]; !ok {
			order = append(order, b)
		}
		byBin[b] = append(byBin[b], x)
	}
	var out []XY
	for _, b := range order {
		group := byBin[b]
		n := len(group)
		for k, x := range group {
			off := 0.0
			if n > 1 {
				gap := math.Min(0.1, 0.76/float64(n-1))
				off = (float64(k) - float64(n-1)/2) * gap
			}
			out = append(out, XY{round3(x), round3(y + off)})
		}
	}
	return out
}

// niceTicks returns ticks from lo to hi at a round step (1, 2 or 5 ×
// 10^k) giving about n ticks, and one more past hi when cover is set (so
// that the highest value has a tick above it); labels have no trailing
// zeros ("2.5", "10"). Integer-only axes never get a fractional step.
func niceTicks(lo, hi float64, n int, integer, cover bool) []Tick {
	span := hi - lo
	if !(span > 0) || n < 1 {
		return []Tick{{lo, formatTick(lo)}}
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	if integer {
		step = math.Max(1, math.Round(step))
	}
	var ticks []Tick
	for i := 0; ; i++ {
		v := math.Ceil(lo/step)*step + float64(i)*step
		if v > hi+1e-9 {
			if cover {
				ticks = append(ticks, Tick{round3(v), formatTick(v)})
			}
			break
		}
		ticks = append(ticks, Tick{round3(v), formatTick(v)})
	}
	return ticks
}

func formatTick(v float64) string {
	return strconv.FormatFloat(round3(v), 'f', -1, 64)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
