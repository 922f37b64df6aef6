package main

import (
	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/loadgen"
)

func newBenchEchoCmd(e *env, o *benchOptions) *cobra.Command {
	var (
		eo       loadgen.EchoOptions
		compress bool
	)
	cmd := &cobra.Command{
		Use:   "echo URL",
		Short: "Measure echo throughput and latency over N connections",
		Long: `Echo opens --conns connections to an echo endpoint (any server that sends
every message back) and sends --size byte messages for --duration.

Without --rate each connection runs a closed loop: it sends the next
message when the echo of the last one arrived, which measures the most
the server (and client) can do. With --rate the connections together send
that many messages per second on a fixed schedule, and latency counts from
when each message was due, so a stalled server shows up in the
percentiles instead of being hidden by the client waiting for it.

The payload is text-like (it compresses) unless --binary; --compress
offers permessage-deflate, and the report says how many connections the
server accepted it on, with which parameters (a warning on standard error
when it declined).`,
		Example: `  ebb bench echo -c 100 -d 10s --size 1024 ws://localhost:8080/echo
  ebb bench echo -c 10 --rate 5000 --size 16384 --compress ws://localhost:8080/echo`,
		Args: benchURLArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(1); err != nil {
				return err
			}
			switch {
			case eo.Size < 1 || eo.Size > loadgen.MaxSize:
				return usagef("--size %d: want 1 to %d bytes", eo.Size, loadgen.MaxSize)
			case eo.Rate < 0:
				return usagef("--rate %v: want messages per second, or 0 for a closed loop", eo.Rate)
			case eo.Rate > 0 && eo.Size < loadgen.StampSize:
				return usagef("--size %d with --rate: want at least %d bytes to carry the send time", eo.Size, loadgen.StampSize)
			}
			var (
				live *benchLive
				err  error
			)
			if eo.Options, live, err = o.options(e, args[0], compress); err != nil {
				return err
			}
			rep, err := loadgen.Echo(cmd.Context(), eo)
			return o.output(e, cmd, rep, live, err)
		},
	}
	f := cmd.Flags()
	f.IntVar(&eo.Size, "size", loadgen.DefaultSize, "message size in bytes")
	f.Float64Var(&eo.Rate, "rate", 0, "messages per second over all connections (0: closed loop, as fast as echoes return)")
	f.BoolVar(&compress, "compress", false, "offer permessage-deflate compression")
	f.BoolVar(&eo.Binary, "binary", false, "send binary messages of random-looking bytes instead of text")
	return cmd
}
