package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

func newBenchConnectCmd(e *env, o *benchOptions) *cobra.Command {
	var rate float64
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

--rate caps the attempts per second over all workers, to find the rate
at which a server starts refusing.`,
		Example: `  ebb bench connect -c 50 -d 5s ws://localhost:8080/echo
  ebb bench connect -c 20 --rate 500 ws://localhost:8080/echo`,
		Args: benchURLArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(1); err != nil {
				return err
			}
			if rate < 0 {
				return usagef("bench connect: --rate %v: want handshakes per second, or 0 for no cap", rate)
			}
			dopts, err := o.dialOptions(false)
			if err != nil {
				return err
			}
			return o.output(e, runConnect(cmd.Context(), e, o, rate, args[0], dopts))
		},
	}
	cmd.Flags().Float64Var(&rate, "rate", 0, "most connection attempts per second over all workers (0: no cap)")
	return cmd
}

// runConnect runs the connect mode until --duration passes or ctx ends.
func runConnect(ctx context.Context, e *env, o *benchOptions, rate float64, rawURL string, dopts *websocket.DialOptions) *benchReport {
	cpu := startCPU()
	b := newBench(e, o, rawURL, dopts, o.conns)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	prog := startProgress(e, func(el time.Duration) string { return b.rec.liveLine(el, o.duration) })
	var tokens <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / rate))
		defer t.Stop()
		tokens = t.C
	}
	for range o.conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			again := false
			for runCtx.Err() == nil {
				if tokens != nil {
					select {
					case <-tokens:
					case <-runCtx.Done():
						return
					}
				}
				c, _, err := b.dial(runCtx, again)
				again = true
				if err != nil {
					continue
				}
				b.session(runCtx, c, closeAtOnce)
			}
		}()
	}
	b.wg.Wait()
	elapsed := min(time.Since(b.started), o.duration)
	prog.end()
	run := b.rec.report("connect", elapsed)
	return b.finish(ctx, "connect", []runReport{run}, cpu.clientReport([]runReport{run}, false))
}

// closeAtOnce ends a connection with 1000 right after the handshake. A
// server that closed first (a refusal with 1013) is read and reported as
// such.
func closeAtOnce(_ context.Context, bc *benchConn) error {
	err := bc.Close(closecode.NormalClosure, "")
	if ce := bc.CloseReceived(); ce != nil && ce.Code != closecode.NormalClosure {
		return ce
	}
	if err != nil {
		return err
	}
	return &websocket.CloseError{Code: closecode.NormalClosure}
}
