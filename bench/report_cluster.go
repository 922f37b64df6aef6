package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/ebb-ws/ebb/bench/fanout"
)

// clusterMarkdown renders the cluster measure: one table per case with the
// systems side by side and ebb's ratio to each, then what the numbers do
// not hold (configuration, close codes, node restarts, the reconnect wave
// second by second).
func (r *Report) clusterMarkdown(b *strings.Builder, charts []string) {
	systems := r.libsOf("cluster")
	others := slices.DeleteFunc(slices.Clone(systems), func(s string) bool { return s == "ebb" })
	for sys, why := range r.Skipped {
		fmt.Fprintf(b, "- **%s was not measured**: %s\n", sys, why)
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(b, "\n")
	}
	for _, cs := range r.cases("cluster") {
		fmt.Fprintf(b, "**%s**\n\n| metric |", cs)
		for _, s := range systems {
			fmt.Fprintf(b, " %s |", s)
		}
		hasEbb := slices.Contains(systems, "ebb")
		if hasEbb {
			for _, o := range others {
				fmt.Fprintf(b, " ebb ÷ %s |", o)
			}
		}
		fmt.Fprintf(b, "\n|---|")
		for range systems {
			fmt.Fprintf(b, "---:|")
		}
		if hasEbb {
			for range others {
				fmt.Fprintf(b, "---:|")
			}
		}
		fmt.Fprintf(b, "\n")
		for _, metric := range clusterMetrics {
			if !r.hasMetric("cluster", metric) {
				continue
			}
			fmt.Fprintf(b, "| %s |", metric)
			for _, s := range systems {
				row := r.row("cluster", s, cs)
				if row == nil || len(row.Metrics[metric]) == 0 {
					fmt.Fprintf(b, " — |")
					continue
				}
				v := row.Metrics[metric]
				cell := "**" + fmtNum(median(v)) + "**"
				if len(v) > 1 {
					cell += fmt.Sprintf(" (%s–%s)", fmtNum(slices.Min(v)), fmtNum(slices.Max(v)))
				}
				fmt.Fprintf(b, " %s |", cell)
			}
			if hasEbb {
				e, eok := r.value("cluster", "ebb", cs, metric)
				for _, o := range others {
					v, ok := r.value("cluster", o, cs, metric)
					switch {
					case !eok || !ok:
						fmt.Fprintf(b, " — |")
					case v == 0 && e == 0:
						fmt.Fprintf(b, " = |")
					case v == 0:
						fmt.Fprintf(b, " (÷0) |")
					default:
						fmt.Fprintf(b, " ×%.2f |", e/v)
					}
				}
			}
			fmt.Fprintf(b, "\n")
		}
		fmt.Fprintf(b, "\n")
	}
	for _, c := range charts {
		fmt.Fprintf(b, "![%s](charts/%s)\n\n", c, c)
	}
	if len(r.Cluster) == 0 {
		return
	}
	fmt.Fprintf(b, "**How each system was set up, and what its clients saw** (close codes and failed attempts over all repetitions; node times from the first repetition, in seconds from that node's SIGTERM)\n\n")
	for _, sys := range systems {
		ds := r.details(sys)
		if len(ds) == 0 {
			continue
		}
		ended, refused := map[string]int{}, map[string]int{}
		steady := map[string]int{}
		for _, d := range ds {
			add(ended, d.Ended)
			add(refused, d.Refused)
			add(steady, d.Steady)
		}
		fmt.Fprintf(b, "- **%s** (%s). %s\n", sys, r.Versions[sys], ds[0].About)
		fmt.Fprintf(b, "  - subscriptions ended during the rolling restart: %s\n", fanout.FormatCodes(ended))
		fmt.Fprintf(b, "  - failed reconnect attempts: %s\n", fanout.FormatCodes(refused))
		if len(steady) > 0 {
			fmt.Fprintf(b, "  - subscriptions ended during the steady phase: %s\n", fanout.FormatCodes(steady))
		}
		var nodes []string
		for _, n := range ds[0].Nodes {
			back := "not all back within the bound"
			if n.Back >= 0 {
				back = fmt.Sprintf("all clients back at %.2f", n.Back)
			}
			nodes = append(nodes, fmt.Sprintf("node %d exited at %.2f, ready at %.2f, %s", n.Node, n.Exit, n.Ready, back))
		}
		fmt.Fprintf(b, "  - %s\n", strings.Join(nodes, "; "))
	}
	fmt.Fprintf(b, "\n**The reconnect wave** (first repetition; per second from the first SIGTERM: connection attempts / subscriptions that ended)\n\n| s |")
	var waves [][]fanout.Second
	for _, sys := range systems {
		if ds := r.details(sys); len(ds) > 0 {
			waves = append(waves, ds[0].Timeline)
			fmt.Fprintf(b, " %s |", sys)
		}
	}
	fmt.Fprintf(b, "\n|---:|")
	for range waves {
		fmt.Fprintf(b, "---:|")
	}
	fmt.Fprintf(b, "\n")
	n := 0
	for _, w := range waves {
		n = max(n, len(w))
	}
	for i := range n {
		fmt.Fprintf(b, "| %d |", i)
		for _, w := range waves {
			if i < len(w) && (w[i].Attempts > 0 || w[i].Lost > 0) {
				fmt.Fprintf(b, " %d / %d |", w[i].Attempts, w[i].Lost)
			} else if i < len(w) {
				fmt.Fprintf(b, " · |")
			} else {
				fmt.Fprintf(b, " |")
			}
		}
		fmt.Fprintf(b, "\n")
	}
	fmt.Fprintf(b, "\n")
}

func add(dst, src map[string]int) {
	for k, v := range src {
		dst[k] += v
	}
}

// details returns the cluster runs of system, in run order.
func (r *Report) details(system string) []*ClusterDetail {
	var out []*ClusterDetail
	for _, d := range r.Cluster {
		if d.System == system {
			out = append(out, d)
		}
	}
	return out
}

// waveChart draws each system's connection attempts per second over the
// rolling restart (first repetition).
func (r *Report) waveChart(dir string) (string, error) {
	p := plot.New()
	p.Title.Text = "Reconnect wave during the rolling restart (first repetition)"
	p.X.Label.Text = "seconds since the first SIGTERM"
	p.Y.Label.Text = "connection attempts per second"
	for _, sys := range r.libsOf("cluster") {
		ds := r.details(sys)
		if len(ds) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(ds[0].Timeline))
		for i, s := range ds[0].Timeline {
			pts[i].X, pts[i].Y = float64(s.At), float64(s.Attempts)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return "", err
		}
		l.Color = libColors[sys]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(sys, l)
	}
	p.Legend.Top = true
	const file = "cluster_wave.png"
	if err := p.Save(8*vg.Inch, 4*vg.Inch, filepath.Join(dir, file)); err != nil {
		return "", err
	}
	return file, nil
}
