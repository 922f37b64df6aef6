package benchplot

import (
	"bytes"
	"image/png"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/ebb-ws/ebb/loadgen"
)

// report is a restart storm of two policies with echo latency, so that
// every panel and marker is drawn.
func report() *loadgen.Report {
	run := func(name string, peak int) loadgen.Run {
		rr := loadgen.Run{Name: name, Latency: &loadgen.Latency{Count: 1}, Restart: &loadgen.Restart{DrainAt: 1, BackAt: 1.5, DrainCode: 1012}}
		for i := range 30 {
			p := loadgen.Point{T: float64(i) / 10, Open: 75000, Messages: 10, LatencyMeanMs: 0.5, LatencyMaxMs: 2}
			if i == 16 {
				p.HandshakesPerSec = float64(peak)
				p.Closes = map[string]uint64{"1012": 7500, "1013": 30}
			}
			rr.Timeline = append(rr.Timeline, p)
		}
		return rr
	}
	return &loadgen.Report{Mode: "storm", Runs: []loadgen.Run{run("backoff", 32000), run("immediate", 134000)}}
}

func TestWrite(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	if err := Write(&buf, report()); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	// Two columns of panels plus their legends' columns, four rows.
	if b := img.Bounds(); b.Dx() <= 2*panelWidth || b.Dy() < 4*panelHeight {
		t.Errorf("image is %v, want more than %d wide (legends beside the plots) and %d high", b, 2*panelWidth, 4*panelHeight)
	}
	one := report()
	one.Runs = one.Runs[:1]
	one.Runs[0].Latency = nil
	if err := WriteFile(filepath.Join(t.TempDir(), "x.png"), one); err != nil {
		t.Fatal(err)
	}
	if err := Write(&buf, &loadgen.Report{}); err == nil {
		t.Error("a report without runs drew without an error")
	}
}

// TestLegendBesideThePlot: the legend's column starts right of the plot's
// canvas, below the title, so it cannot cover a line.
func TestLegendBesideThePlot(t *testing.T) {
	t.Parallel()
	c := draw.New(vgimg.New(vg.Points(600), vg.Points(200)))
	p := plot.New()
	p.Title.Text = "a title"
	plotC, legendC := split(c, vg.Points(100), p)
	if plotC.Max.X > legendC.Min.X || legendC.Max.X != c.Max.X || plotC.Min.X != c.Min.X {
		t.Errorf("plot canvas %v and legend canvas %v overlap or leave the tile %v", plotC.Rectangle, legendC.Rectangle, c.Rectangle)
	}
	if legendC.Max.Y >= c.Max.Y {
		t.Errorf("legend canvas %v reaches into the title of tile %v", legendC.Rectangle, c.Rectangle)
	}
}

func TestTickLabels(t *testing.T) {
	t.Parallel()
	tests := map[float64]string{
		0: "0", 0.25: "0.25", 1: "1", 2.5: "2.5", 10: "10", 120: "120", 999: "999",
		1000: "1k", 1500: "1.5k", 75000: "75k", 125000: "125k", 1e6: "1M", 2.25e6: "2.25M", 3e9: "3G",
		0.0012: "0.0012", -5000: "-5k",
	}
	for v, want := range tests {
		if got := humanNumber(v); got != want {
			t.Errorf("humanNumber(%v) = %q, want %q", v, got, want)
		}
	}
	for _, tk := range (numberTicks{}).Ticks(0, 80000) {
		if tk.Label != "" && (len(tk.Label) > 4 || bytes.ContainsRune([]byte(tk.Label), '.') && tk.Label[len(tk.Label)-1] == '0') {
			t.Errorf("tick label %q for %v is not short", tk.Label, tk.Value)
		}
	}
}
