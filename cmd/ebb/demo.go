package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/demo"
)

// defaultPlot is where the timeline goes unless --plot says otherwise: the
// current directory, where the user will look for it.
const defaultPlot = "ebb-demo-timeline.png"

// quickPace is the pace of --quick.
const quickPace = 0.45

// demoOptions holds the flags of "ebb demo".
type demoOptions struct {
	plot   string
	noPlot bool
	quick  bool
	pace   float64
	crowd  int
	limit  int
	asJSON bool
}

func newDemoCmd(e *env) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A 40-second tour: overload (1013), scale-out, restart (1012), a missing extension (1010)",
		Long: `Demo runs an ebb server and a crowd of ebb clients on loopback and shows,
in about 40 seconds (--quick: about 20), what ebb does at the two hard
edges of WebSocket:

  1. Overload → backoff. The server admits --limit connections; a crowd of
     --crowd clients arrives at once. The surplus is refused with 1013 Try
     Again Later and a jittered "retry-after" hint; clients back off (1 s,
     doubling, jittered, never sooner than the hint) and get in as admitted
     clients finish and free their slots.
  2. Full node → scale out. The crowd wants to stay, behind a small load
     balancer (least connections, /healthz checks), and node A of a cluster
     (embedded NATS) admits two thirds of it: the rest are refused with 1013
     "cluster at capacity" again and again. Node B joins; until the
     balancer's checks let it in, A refuses with "node at capacity, cluster
     has room" and a short hint; then the retries land on B, the refusals
     stop and everyone is served.
  3. Drain → restart. The whole crowd is connected; the server drains,
     closing every connection with 1012 Service Restart spread over a
     window, each with a hint that sends the client past the restart. While
     it drains, the server keeps its port open only to refuse newcomers
     (1012) and answers /healthz with 503; it restarts, and the clients
     return spread out, not in a stampede.
  4. Missing extension. A client that requires permessage-deflate meets a
     server with compression off: it closes with 1010 Mandatory Extension,
     says what was missing, and does not retry.

Everything runs on 127.0.0.1 and stops by itself. Progress goes to stderr;
the summary on stdout explains every close code seen and who sent it, and
a PNG timeline (connections per server, and every close event by type,
over time) is written to ./ebb-demo-timeline.png or --plot.`,
		Example: `  ebb demo
  ebb demo --quick --plot /tmp/timeline.png
  ebb demo --no-plot --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.crowd < 2 || o.limit < 1 || o.limit >= o.crowd {
				return usagef("want --limit ≥ 1 and --crowd > --limit (got --limit %d, --crowd %d)", o.limit, o.crowd)
			}
			if o.quick && cmd.Flags().Changed("pace") {
				return usagef("--quick is --pace %v: give one or the other", quickPace)
			}
			if !(o.pace > 0 && o.pace <= 10) {
				return usagef("--pace %v: want a factor above 0 and at most 10 (0.5 runs twice as fast)", o.pace)
			}
			if o.noPlot {
				o.plot = ""
			}
			if o.quick {
				o.pace = quickPace
			}
			return runDemo(cmd.Context(), e, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.plot, "plot", defaultPlot, "where to write the PNG timeline ('' for none)")
	f.BoolVar(&o.noPlot, "no-plot", false, "do not write the PNG timeline")
	f.BoolVar(&o.quick, "quick", false, "shorter sessions and windows: about 20 seconds (--pace 0.45)")
	f.Float64Var(&o.pace, "pace", 1, "scale every duration of the tour (0.5 runs twice as fast)")
	f.IntVar(&o.crowd, "crowd", demo.DefaultCrowd, "clients in the crowd (each cluster node of the scale-out chapter admits two thirds of it)")
	f.IntVar(&o.limit, "limit", demo.DefaultLimit, "connections the server admits at once in the overload chapter")
	f.BoolVar(&o.asJSON, "json", false, "print the summary as JSON")
	return cmd
}

func runDemo(ctx context.Context, e *env, o *demoOptions) error {
	live := false
	if f, ok := e.stderr.(*os.File); ok {
		live = term.IsTerminal(int(f.Fd()))
	}
	rep, err := demo.Run(ctx, demo.Options{Crowd: o.crowd, Limit: o.limit, Pace: o.pace, Live: live}, e.stderr)
	if rep == nil {
		return err
	}
	if o.plot != "" && len(rep.Samples) > 0 {
		path := o.plot
		if abs, aerr := filepath.Abs(path); aerr == nil {
			path = abs
		}
		if perr := demo.WriteTimeline(path, rep); perr != nil {
			fmt.Fprintf(e.stderr, "ebb demo: could not write the timeline: %v\n", perr)
		} else {
			rep.Timeline = path
		}
	}
	var werr error
	if o.asJSON {
		werr = rep.WriteJSON(e.stdout)
	} else {
		werr = rep.WriteText(e.stdout)
	}
	if err != nil {
		return err
	}
	return werr
}
