package demo

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Size of the timeline image: 11 × 6.8 inches at 120 dpi, 1320 × 816
// pixels.
const (
	timelineWidth  = 11 * vg.Inch
	timelineHeight = 6.8 * vg.Inch
	timelineDPI    = 120
)

// WriteTimeline draws the report's timeline (BuildChart) as a PNG at path,
// replacing any file there: the connections the server held (node A's and
// node B's in the scale-out chapter) and the clients waiting to retry on
// top, every close event by type below, on a shared time axis, with the
// chapters shaded and their moments (node B joins, drain starts, …)
// marked. It takes a few tens of milliseconds and a few MB.
func WriteTimeline(path string, r *Report) error {
	if len(r.Samples) == 0 {
		return fmt.Errorf("demo: nothing to draw: the report has no samples (did the run start?)")
	}
	img := vgimg.NewWith(vgimg.UseWH(timelineWidth, timelineHeight), vgimg.UseDPI(timelineDPI), vgimg.UseBackgroundColor(color.White))
	if err := DrawChart(BuildChart(r), draw.New(img)); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("demo: cannot write the timeline: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("demo: writing %s: %w", filepath.Base(path), err)
	}
	return f.Close()
}

var (
	sans = font.Font{Typeface: "Liberation", Variant: "Sans"}
	// Weight 3 is golang.org/x/image/font.WeightBold (CSS 700), written as
	// a number so that this module needs no direct requirement on x/image.
	sansBold = font.Font{Typeface: "Liberation", Variant: "Sans", Weight: 3}
)

func textStyle(f font.Font, size float64, c color.Color) text.Style {
	return text.Style{Color: c, Font: font.From(f, vg.Length(size)), Handler: plot.DefaultTextHandler}
}

// hexColor parses "#rrggbb" or "#rrggbbaa"; anything else is black.
func hexColor(s string) color.Color {
	s = strings.TrimPrefix(s, "#")
	v, err := strconv.ParseUint(s, 16, 32)
	if err != nil || (len(s) != 6 && len(s) != 8) {
		return color.Black
	}
	if len(s) == 6 {
		v = v<<8 | 0xff
	}
	c := color.NRGBA{uint8(v >> 24), uint8(v >> 16), uint8(v >> 8), uint8(v)}
	return c
}

// plotterFunc adapts a function to plot.Plotter.
type plotterFunc func(c draw.Canvas, p *plot.Plot)

func (f plotterFunc) Plot(c draw.Canvas, p *plot.Plot) { f(c, p) }

// DrawChart draws ch on c: the title and legend on top, then the panels
// stacked by their Height shares, their data areas aligned so that the
// time axis is shared.
func DrawChart(ch *Chart, c draw.Canvas) error {
	if len(ch.Panels) == 0 {
		return fmt.Errorf("demo: the chart has no panel")
	}
	const margin = 12
	c = draw.Crop(c, margin, -margin, margin, -margin)
	dark := color.Gray{0x22}
	title := textStyle(sansBold, 14, dark)
	title.YAlign = draw.YTop
	c.FillText(title, vg.Point{X: c.Min.X, Y: c.Max.Y}, ch.Title)
	top := c.Max.Y - title.Height(ch.Title) - 6
	drawLegend(c, ch.Legend, top)
	top -= 18

	plots := make([]*plot.Plot, len(ch.Panels))
	canvases := make([]draw.Canvas, len(ch.Panels))
	total := 0.0
	for _, p := range ch.Panels {
		total += p.Height
	}
	const gap = 8
	avail := float64(top-c.Min.Y) - gap*float64(len(ch.Panels)-1)
	y := top
	for i := range ch.Panels {
		last := i == len(ch.Panels)-1
		plots[i] = panelPlot(ch, i, last)
		h := vg.Length(avail * ch.Panels[i].Height / total)
		canvases[i] = draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{Min: vg.Point{X: c.Min.X, Y: y - h}, Max: vg.Point{X: c.Max.X, Y: y}}}
		y -= h + gap
	}
	// Align the data areas: crop every canvas so that each plot's data
	// area starts and ends where the widest axis needs it to.
	var left, right vg.Length
	for i, p := range plots {
		d := p.DataCanvas(canvases[i])
		left = max(left, d.Min.X-canvases[i].Min.X)
		right = max(right, canvases[i].Max.X-d.Max.X)
	}
	for i, p := range plots {
		d := p.DataCanvas(canvases[i])
		cv := draw.Crop(canvases[i], left-(d.Min.X-canvases[i].Min.X), -(right - (canvases[i].Max.X - d.Max.X)), 0, 0)
		p.Draw(cv)
	}
	return nil
}

// drawLegend draws the legend as one row under the title.
func drawLegend(c draw.Canvas, entries []LegendEntry, top vg.Length) {
	sty := textStyle(sans, 10, color.Gray{0x33})
	sty.YAlign = draw.YCenter
	x := c.Min.X
	yc := top - 7
	for _, e := range entries {
		ls := draw.LineStyle{Color: hexColor(e.Color), Width: 2}
		if e.Dashed {
			ls.Width = 1.2
			ls.Dashes = []vg.Length{4, 3}
		}
		c.StrokeLine2(ls, x, yc, x+22, yc)
		c.FillText(sty, vg.Point{X: x + 27, Y: yc}, e.Label)
		x += 27 + sty.Width(e.Label) + 22
	}
}

// panelPlot builds the gonum plot of panel i.
func panelPlot(ch *Chart, i int, bottom bool) *plot.Plot {
	pn := ch.Panels[i]
	p := plot.New()
	p.BackgroundColor = color.Transparent
	p.X.Min, p.X.Max = 0, ch.XMax
	p.Y.Min, p.Y.Max = pn.YMin, pn.YMax
	p.X.Padding, p.Y.Padding = 0, 0
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Tick.Label.Font = font.From(sans, 10)
		a.Tick.Label.Color = color.Gray{0x33}
		a.Label.TextStyle.Font = font.From(sans, 11)
		a.Label.TextStyle.Color = color.Gray{0x22}
		a.LineStyle.Color = color.Gray{0xb0}
		a.Tick.LineStyle.Color = color.Gray{0xb0}
	}
	p.Y.Label.Text = pn.YLabel
	p.X.Tick.Marker = plot.ConstantTicks(toPlotTicks(ch.XTicks))
	p.Y.Tick.Marker = plot.ConstantTicks(toPlotTicks(pn.YTicks))
	if bottom {
		p.X.Label.Text = ch.XLabel
	} else {
		p.HideX()
	}
	grid := draw.LineStyle{Color: color.Gray{0xe4}, Width: 0.6}
	p.Add(plotterFunc(func(c draw.Canvas, p *plot.Plot) {
		trX, trY := p.Transforms(&c)
		for _, s := range ch.Spans {
			x0, x1 := trX(s.From), trX(s.To)
			c.FillPolygon(hexColor(s.Color), []vg.Point{{X: x0, Y: c.Min.Y}, {X: x1, Y: c.Min.Y}, {X: x1, Y: c.Max.Y}, {X: x0, Y: c.Max.Y}})
		}
		for _, t := range ch.XTicks {
			c.StrokeLine2(grid, trX(t.Value), c.Min.Y, trX(t.Value), c.Max.Y)
		}
		if len(pn.Lanes) == 0 {
			for _, t := range pn.YTicks {
				c.StrokeLine2(grid, c.Min.X, trY(t.Value), c.Max.X, trY(t.Value))
			}
		} else {
			for _, l := range pn.Lanes {
				c.StrokeLine2(grid, c.Min.X, trY(l.Y), c.Max.X, trY(l.Y))
			}
		}
		mark := draw.LineStyle{Color: color.Gray{0x66}, Width: 0.9, Dashes: []vg.Length{3, 3}}
		markTop := c.Max.Y
		if i == 0 {
			markTop = trY(pn.DataTop) + 4
		}
		for _, m := range ch.Marks {
			c.StrokeLine2(mark, trX(m.At), c.Min.Y, trX(m.At), markTop)
		}
		// Border.
		border := draw.LineStyle{Color: color.Gray{0xb0}, Width: 0.8}
		c.StrokeLines(border, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Min.Y}})
		for _, r := range pn.Refs {
			ls := draw.LineStyle{Color: hexColor(r.Color), Width: 1.2, Dashes: []vg.Length{5, 3}}
			c.StrokeLine2(ls, trX(r.From), trY(r.Y), trX(r.To), trY(r.Y))
			sty := textStyle(sans, 9.5, hexColor(r.Color))
			sty.YAlign = draw.YBottom
			labelBox(c, sty, vg.Point{X: trX(r.To) - 4 - sty.Width(r.Label), Y: trY(r.Y) + 3}, r.Label)
		}
		for _, l := range pn.Lines {
			if len(l.Points) < 2 {
				continue
			}
			pts := make([]vg.Point, 0, 2*len(l.Points))
			for k, pt := range l.Points {
				if k > 0 {
					// Steps: the value holds until the next sample.
					pts = append(pts, vg.Point{X: trX(pt.X), Y: trY(l.Points[k-1].Y)})
				}
				pts = append(pts, vg.Point{X: trX(pt.X), Y: trY(pt.Y)})
			}
			ls := draw.LineStyle{Color: hexColor(l.Color), Width: vg.Length(l.Width)}
			for _, d := range l.Dashes {
				ls.Dashes = append(ls.Dashes, vg.Length(d))
			}
			c.StrokeLines(ls, pts)
		}
		for _, l := range pn.Lanes {
			g := draw.GlyphStyle{Color: hexColor(l.Color), Radius: vg.Length(l.Radius), Shape: draw.CircleGlyph{}}
			for _, d := range l.Dots {
				c.DrawGlyph(g, vg.Point{X: trX(d.X), Y: trY(d.Y)})
			}
		}
		// Notes: right of their point, else left of where their subject
		// begins; a note that would cover another is left out (the lane
		// labels still tell the story).
		var placed []vg.Rectangle
		for _, n := range pn.Notes {
			sty := textStyle(sans, 9.5, color.Gray{0x11})
			sty.YAlign = draw.YCenter
			right := sty
			left := sty
			left.XAlign = draw.XRight
			options := []struct {
				sty text.Style
				x   vg.Length
			}{{right, trX(n.X) + 8}, {left, trX(n.LeftX) - 8}}
			if n.AlignRight {
				options = options[1:]
			}
			for _, o := range options {
				r := textRect(o.sty, vg.Point{X: o.x, Y: trY(n.Y)}, n.Text)
				if r.Min.X < c.Min.X || r.Max.X > c.Max.X || overlaps(r, placed) {
					continue
				}
				placed = append(placed, r)
				labelBox(c, o.sty, vg.Point{X: o.x, Y: trY(n.Y)}, n.Text)
				break
			}
		}
		if i == 0 {
			drawStoryLabels(c, ch, trX, trY(pn.DataTop))
		}
	}))
	return p
}

// textRect is where txt written at pt with sty lands.
func textRect(sty text.Style, pt vg.Point, txt string) vg.Rectangle {
	r := sty.Rectangle(txt)
	r.Min, r.Max = r.Min.Add(pt), r.Max.Add(pt)
	return r
}

func overlaps(r vg.Rectangle, others []vg.Rectangle) bool {
	for _, o := range others {
		if r.Min.X < o.Max.X && o.Min.X < r.Max.X && r.Min.Y < o.Max.Y && o.Min.Y < r.Max.Y {
			return true
		}
	}
	return false
}

// labelBox writes txt at pt on a translucent white box, so that it stays
// readable over the shading and the data.
func labelBox(c draw.Canvas, sty text.Style, pt vg.Point, txt string) {
	r := textRect(sty, pt, txt)
	const pad = 2
	c.FillPolygon(color.NRGBA{255, 255, 255, 220}, []vg.Point{
		{X: r.Min.X - pad, Y: r.Min.Y - pad}, {X: r.Max.X + pad, Y: r.Min.Y - pad},
		{X: r.Max.X + pad, Y: r.Max.Y + pad}, {X: r.Min.X - pad, Y: r.Max.Y + pad},
	})
	c.FillText(sty, pt, txt)
}

// drawStoryLabels writes, in the headroom above the data (dataTop), the
// chapters' titles at the top of their spans and the marks' labels in
// rows below them, each row holding labels that do not overlap.
func drawStoryLabels(c draw.Canvas, ch *Chart, trX func(float64) vg.Length, dataTop vg.Length) {
	title := textStyle(sansBold, 11, color.Gray{0x22})
	title.YAlign = draw.YTop
	capt := textStyle(sans, 9.5, color.Gray{0x33})
	capt.YAlign = draw.YTop
	for _, s := range ch.Spans {
		if s.Kind != "chapter" {
			continue
		}
		x0, x1 := trX(s.From), trX(s.To)
		// Narrow spans get their title and caption wrapped to fit.
		width := max(x1-x0-10, 50)
		label := wrap(title, s.Label, width)
		y := c.Max.Y - 6
		c.FillText(title, vg.Point{X: spanTextX(c, x0, x1, title.Width(label)), Y: y}, label)
		if s.Caption != "" {
			y -= title.Height(label) + 3
			text := wrap(capt, s.Caption, width)
			c.FillText(capt, vg.Point{X: spanTextX(c, x0, x1, capt.Width(text)), Y: y}, text)
		}
	}
	sty := textStyle(sans, 9.5, color.Gray{0x33})
	sty.YAlign = draw.YBottom
	rowH := sty.Height("M") + 5
	var rowEnd []vg.Length
	for _, m := range ch.Marks {
		x := trX(m.At) + 3
		w := sty.Width(m.Label)
		row := 0
		for row < len(rowEnd) && rowEnd[row] > x-6 {
			row++
		}
		if row == len(rowEnd) {
			rowEnd = append(rowEnd, 0)
		}
		rowEnd[row] = x + w
		if x+w > c.Max.X-2 {
			x = trX(m.At) - 3 - w
		}
		y := dataTop + 6 + vg.Length(row)*rowH
		c.StrokeLine2(draw.LineStyle{Color: color.Gray{0x66}, Width: 0.9, Dashes: []vg.Length{3, 3}}, trX(m.At), dataTop, trX(m.At), y+rowH-4)
		labelBox(c, sty, vg.Point{X: x, Y: y}, m.Label)
	}
}

// wrap breaks txt into lines no wider than w (a single word may be).
func wrap(sty text.Style, txt string, w vg.Length) string {
	var out []string
	for _, para := range strings.Split(txt, "\n") {
		line := ""
		for _, word := range strings.Fields(para) {
			if line != "" && sty.Width(line+" "+word) > w {
				out = append(out, line)
				line = word
				continue
			}
			if line != "" {
				line += " "
			}
			line += word
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// spanTextX is where text of width w starts in the span [x0, x1]: at its
// left edge when it fits, else centred on it and kept inside the canvas.
func spanTextX(c draw.Canvas, x0, x1, w vg.Length) vg.Length {
	if w <= x1-x0-8 {
		return x0 + 5
	}
	return max(c.Min.X+4, min((x0+x1)/2-w/2, c.Max.X-4-w))
}

func toPlotTicks(ts []Tick) []plot.Tick {
	out := make([]plot.Tick, len(ts))
	for i, t := range ts {
		out[i] = plot.Tick{Value: t.Value, Label: t.Label}
	}
	return out
}
