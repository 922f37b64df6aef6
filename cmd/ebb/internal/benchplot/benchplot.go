// Package benchplot draws a load test's report (package loadgen) over time
// as a PNG: one column per run, and rows for open connections, handshakes
// per second, connection endings per second by close code, and echo latency
// when there was any. It is what `ebb bench --plot` writes; it lives apart
// from loadgen so that importers of loadgen do not get gonum/plot.
package benchplot

import (
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/loadgen"
)

// Size of one panel's plot, and the gap between a plot and its legend.
const (
	panelWidth  = 420
	panelHeight = 210
	legendGap   = 6
)

// panel is one plot and its legend, which is drawn beside the plot area,
// never over the lines.
type panel struct {
	p      *plot.Plot
	legend plot.Legend
}

// WriteFile draws rep into a PNG file at path.
func WriteFile(path string, rep *loadgen.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Write(f, rep); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Write draws rep as a PNG to w. The image is 420×210 points per panel
// plus the legends' column; drawing costs a few tens of milliseconds per
// panel.
func Write(w io.Writer, rep *loadgen.Report) error {
	if len(rep.Runs) == 0 {
		return errors.New("the report has no run to draw")
	}
	withLatency := false
	for _, rr := range rep.Runs {
		withLatency = withLatency || rr.Latency != nil
	}
	kinds := []func(rr *loadgen.Run) (*panel, error){connectionsPanel, handshakesPanel, closesPanel}
	if withLatency {
		kinds = append(kinds, latencyPanel)
	}
	rows, cols := len(kinds), len(rep.Runs)
	grid := make([][]*plot.Plot, rows)
	panels := make([][]*panel, rows)
	legendW := vg.Length(0)
	for i, kind := range kinds {
		grid[i] = make([]*plot.Plot, cols)
		panels[i] = make([]*panel, cols)
		for j := range rep.Runs {
			pn, err := kind(&rep.Runs[j])
			if err != nil {
				return err
			}
			markRestart(pn, &rep.Runs[j])
			grid[i][j], panels[i][j] = pn.p, pn
			legendW = max(legendW, pn.legend.Rectangle(draw.Canvas{}).Size().X)
		}
	}
	if legendW > 0 {
		legendW += legendGap
	}
	img := vgimg.New(vg.Points(float64(cols)*panelWidth)+vg.Length(cols)*legendW, vg.Points(float64(rows)*panelHeight))
	dc := draw.New(img)
	tiles := draw.Tiles{
		Rows: rows, Cols: cols,
		PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4,
	}
	canvases := plot.Align(grid, tiles, dc)
	for i := range grid {
		for j := range grid[i] {
			plotC, legendC := split(canvases[i][j], legendW, panels[i][j].p)
			panels[i][j].p.Draw(plotC)
			panels[i][j].legend.Draw(legendC)
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// split divides a tile into the plot, on the left, and a column of width
// legendW on the right for the legend, whose top lines up with the top of
// the plot area (below the title). Every tile loses the same width, so
// the plot areas Align lined up stay lined up.
func split(c draw.Canvas, legendW vg.Length, p *plot.Plot) (plotC, legendC draw.Canvas) {
	plotC = draw.Crop(c, 0, -legendW, 0, 0)
	title := p.Title.TextStyle.Rectangle(p.Title.Text).Size().Y + p.Title.Padding
	legendC = draw.Crop(c, c.Size().X-legendW+legendGap, 0, 0, -title)
	return plotC, legendC
}

func newPanel(rr *loadgen.Run, title, ylabel string) *panel {
	p := plot.New()
	p.Title.Text = rr.Name + ": " + title
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.X.Tick.Marker = numberTicks{}
	p.Y.Tick.Marker = numberTicks{}
	p.Add(plotter.NewGrid())
	l := plot.NewLegend()
	l.Top, l.Left = true, true
	l.TextStyle.Font.Size = font.Length(10)
	l.ThumbnailWidth = vg.Points(16)
	return &panel{p: p, legend: l}
}

func series(rr *loadgen.Run, y func(tp loadgen.Point) float64) plotter.XYs {
	xys := make(plotter.XYs, len(rr.Timeline))
	for i, tp := range rr.Timeline {
		xys[i] = plotter.XY{X: tp.T, Y: y(tp)}
	}
	return xys
}

func (pn *panel) addLine(name string, xys plotter.XYs, c color.Color) error {
	if len(xys) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.2)
	pn.p.Add(l)
	if name != "" {
		pn.legend.Add(name, l)
	}
	return nil
}

func connectionsPanel(rr *loadgen.Run) (*panel, error) {
	pn := newPanel(rr, "connections open", "connections")
	err := pn.addLine("open", series(rr, func(tp loadgen.Point) float64 { return float64(tp.Open) }), plotutil.Color(0))
	return pn, err
}

// slotsPerSecond turns a count per 100 ms slot into a rate.
const slotsPerSecond = 10

func handshakesPanel(rr *loadgen.Run) (*panel, error) {
	pn := newPanel(rr, "handshakes per second (100 ms slots)", "handshakes/s")
	if err := pn.addLine("completed", series(rr, func(tp loadgen.Point) float64 { return tp.HandshakesPerSec }), plotutil.Color(1)); err != nil {
		return nil, err
	}
	err := pn.addLine("failed dials", series(rr, func(tp loadgen.Point) float64 { return float64(tp.Failures * slotsPerSecond) }), plotutil.Color(3))
	return pn, err
}

func closesPanel(rr *loadgen.Run) (*panel, error) {
	pn := newPanel(rr, "connection endings per second, by close code", "closes/s")
	seen := map[string]bool{}
	for _, tp := range rr.Timeline {
		for c := range tp.Closes {
			seen[c] = true
		}
	}
	codes := make([]string, 0, len(seen))
	for c := range seen {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for i, c := range codes {
		n, _ := strconv.Atoi(c)
		xys := series(rr, func(tp loadgen.Point) float64 { return float64(tp.Closes[c] * slotsPerSecond) })
		if err := pn.addLine(closecode.Code(n).String(), xys, plotutil.Color(i+4)); err != nil {
			return nil, err
		}
	}
	return pn, nil
}

func latencyPanel(rr *loadgen.Run) (*panel, error) {
	pn := newPanel(rr, "echo latency per 100 ms", "latency (ms)")
	if rr.Latency == nil {
		return pn, nil
	}
	if err := pn.addLine("mean", series(rr, func(tp loadgen.Point) float64 { return tp.LatencyMeanMs }), plotutil.Color(2)); err != nil {
		return nil, err
	}
	err := pn.addLine("max", series(rr, func(tp loadgen.Point) float64 { return tp.LatencyMaxMs }), plotutil.Color(5))
	return pn, err
}

// markRestart draws a restart storm's drain and restart as vertical lines.
func markRestart(pn *panel, rr *loadgen.Run) {
	rs := rr.Restart
	if rs == nil {
		return
	}
	ymax := pn.p.Y.Max
	if ymax <= 0 {
		ymax = 1
	}
	for _, m := range []struct {
		x    float64
		name string
		c    color.Color
	}{{rs.DrainAt, fmt.Sprintf("drain (%d)", rs.DrainCode), color.RGBA{R: 200, A: 255}}, {rs.BackAt, "server back", color.RGBA{G: 150, A: 255}}} {
		if m.x <= 0 {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: m.x, Y: 0}, {X: m.x, Y: ymax}})
		if err != nil {
			continue
		}
		l.Color = m.c
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		pn.p.Add(l)
		pn.legend.Add(m.name, l)
	}
}

// numberTicks places ticks where plot.DefaultTicks does and labels them
// for people: 75000 reads "75k", 1500000 "1.5M", 0.25 "0.25", never
// "75000.00".
type numberTicks struct{}

// Ticks implements plot.Ticker.
func (numberTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = humanNumber(ts[i].Value)
		}
	}
	return ts
}

// humanNumber writes v with an SI suffix (k, M, G) and at most three
// significant digits.
func humanNumber(v float64) string {
	a := math.Abs(v)
	suffix := ""
	switch {
	case a >= 1e9:
		v, suffix = v/1e9, "G"
	case a >= 1e6:
		v, suffix = v/1e6, "M"
	case a >= 1e3:
		v, suffix = v/1e3, "k"
	}
	if v == 0 {
		return "0"
	}
	digits := 3 - int(math.Floor(math.Log10(math.Abs(v)))) - 1
	p := math.Pow10(max(digits, 0))
	return strconv.FormatFloat(math.Round(v*p)/p, 'f', -1, 64) + suffix
}
