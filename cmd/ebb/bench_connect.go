package main

import (
	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/loadgen"
)

func newBenchConnectCmd(e *env, o *benchOptions) *cobra.Command {
	var co loadgen.ConnectOptions
	cmd := &cobra.Command{
		Use:   "connect URL",
		Short: "Measure how many WebSocket handshakes per second a server sustains",
		Long: `Connect runs --conns workers; each opens a connection, closes it at once
with 1000 (a full close handshake), and opens the next, for --duration.
The report gives completed handshakes per second, the busiest 100 ms,
handshake latency percentiles, and what refused handshakes answered
(HTTP status, or the close code of an upgrade-then-close refusal such as
1013 Try Again Later). A refused attempt is followed by the next one at
once: connect measures the server, not a polite client (see "storm").
Dials still in progress when --duration ends are reported as cut off,
not as failures.

--rate caps the attempts per second over all workers, to find the rate
at which a server starts refusing.`,
		Example: `  ebb bench connect -c 50 -d 5s ws://localhost:8080/echo
  ebb bench connect -c 20 --rate 500 ws://localhost:8080/echo`,
		Args: benchURLArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(1); err != nil {
				return err
			}
			if co.Rate < 0 {
				return usagef("--rate %v: want handshakes per second, or 0 for no cap", co.Rate)
			}
			var (
				live *benchLive
				err  error
			)
			if co.Options, live, err = o.options(e, args[0], false); err != nil {
				return err
			}
			rep, err := loadgen.Connect(cmd.Context(), co)
			return o.output(e, cmd, rep, live, err)
		},
	}
	cmd.Flags().Float64Var(&co.Rate, "rate", 0, "most connection attempts per second over all workers (0: no cap)")
	return cmd
}
