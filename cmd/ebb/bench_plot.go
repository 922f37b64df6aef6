package main

import (
	"fmt"
	"image/color"
	"os"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/ebb-ws/ebb/closecode"
)

// writePlot draws each run of rep over time into a PNG at path: one column
// per run, and rows for open connections, handshakes per second,
// connection endings per second by close code, and echo latency when there
// was any.
func writePlot(path string, rep *benchReport) error {
	if len(rep.Runs) == 0 {
		return fmt.Errorf("no run to draw")
	}
	withLatency := false
	for _, rr := range rep.Runs {
		withLatency = withLatency || rr.Latency != nil
	}
	panels := []func(rr *runReport) (*plot.Plot, error){connectionsPanel, handshakesPanel, closesPanel}
	if withLatency {
		panels = append(panels, latencyPanel)
	}
	rows, cols := len(panels), len(rep.Runs)
	grid := make([][]*plot.Plot, rows)
	for i, panel := range panels {
		grid[i] = make([]*plot.Plot, cols)
		for j := range rep.Runs {
			p, err := panel(&rep.Runs[j])
			if err != nil {
				return err
			}
			markRestart(p, &rep.Runs[j])
			grid[i][j] = p
		}
	}
	img := vgimg.New(vg.Points(float64(cols)*420), vg.Points(float64(rows)*210))
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
			grid[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newPanel(rr *runReport, title, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = rr.Name + ": " + title
	p.X.Label.Text = "seconds"
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	return p
}

func series(rr *runReport, y func(tp timelinePoint) float64) plotter.XYs {
	xys := make(plotter.XYs, len(rr.Timeline))
	for i, tp := range rr.Timeline {
		xys[i] = plotter.XY{X: tp.T, Y: y(tp)}
	}
	return xys
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1.2)
	p.Add(l)
	if name != "" {
		p.Legend.Add(name, l)
	}
	return nil
}

func connectionsPanel(rr *runReport) (*plot.Plot, error) {
	p := newPanel(rr, "connections open", "connections")
	err := addLine(p, "open", series(rr, func(tp timelinePoint) float64 { return float64(tp.Open) }), plotutil.Color(0))
	return p, err
}

func handshakesPanel(rr *runReport) (*plot.Plot, error) {
	p := newPanel(rr, "handshakes per second (100 ms buckets)", "per second")
	const perSec = 10 // 100 ms buckets
	if err := addLine(p, "completed", series(rr, func(tp timelinePoint) float64 { return tp.HandshakesPerSec }), plotutil.Color(1)); err != nil {
		return nil, err
	}
	err := addLine(p, "failed dials", series(rr, func(tp timelinePoint) float64 { return float64(tp.Failures * perSec) }), plotutil.Color(3))
	return p, err
}

func closesPanel(rr *runReport) (*plot.Plot, error) {
	p := newPanel(rr, "connection endings per second, by close code", "per second")
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
		name := closecode.Code(n).String()
		xys := series(rr, func(tp timelinePoint) float64 { return float64(tp.Closes[c]) * 10 })
		if err := addLine(p, name, xys, plotutil.Color(i+4)); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func latencyPanel(rr *runReport) (*plot.Plot, error) {
	p := newPanel(rr, "echo latency per 100 ms", "ms")
	if rr.Latency == nil {
		return p, nil
	}
	if err := addLine(p, "mean", series(rr, func(tp timelinePoint) float64 { return tp.LatencyMeanMs }), plotutil.Color(2)); err != nil {
		return nil, err
	}
	err := addLine(p, "max", series(rr, func(tp timelinePoint) float64 { return tp.LatencyMaxMs }), plotutil.Color(5))
	return p, err
}

// markRestart draws the drain and the restart as vertical lines.
func markRestart(p *plot.Plot, rr *runReport) {
	rs := rr.Restart
	if rs == nil {
		return
	}
	_, ymax := p.Y.Min, p.Y.Max
	if ymax <= 0 {
		ymax = 1
	}
	for _, m := range []struct {
		x    float64
		name string
		c    color.Color
	}{{rs.DrainAt, "drain (1012)", color.RGBA{R: 200, A: 255}}, {rs.BackAt, "server back", color.RGBA{G: 150, A: 255}}} {
		if m.x <= 0 {
			continue
		}
		l, err := plotter.NewLine(plotter.XYs{{X: m.x, Y: 0}, {X: m.x, Y: ymax}})
		if err != nil {
			continue
		}
		l.Color = m.c
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add(m.name, l)
	}
}
