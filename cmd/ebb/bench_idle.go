package main

import (
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/loadgen"
)

func newBenchIdleCmd(e *env, o *benchOptions) *cobra.Command {
	var (
		idle   loadgen.IdleOptions
		settle time.Duration
	)
	cmd := &cobra.Command{
		Use:   "idle URL",
		Short: "Hold N idle connections and report memory per connection",
		Long: `Idle opens --conns connections, sends nothing, and holds them until
--duration ends (or Ctrl-C). Once all are open and --settle has passed,
it reports the memory they cost per connection: the growth of heap plus
goroutine stacks from before the first connection to after the last
(each the lowest of three readings), divided by the connections.

When the server exposes ebb's gauges at /metrics (` + loadgen.MetricHeapBytes + `
and ` + loadgen.MetricStacksBytes + `, as "ebb serve" does), the figures are the
server's. Otherwise they are the client's own (this process, after a
garbage collection), which says what holding connections costs a client.

The figure comes with its noise (±) and is not reported, with the
reason, when the growth is less than twice the noise. A server's heap
gauge may count up to 4 MiB of garbage it has not collected yet, so the
server's figure needs about a thousand connections or more.`,
		Example: `  ebb bench idle -c 5000 -d 20s ws://localhost:8080/echo
  ebb bench idle -c 1000 --metrics http://localhost:9100/metrics ws://localhost:8080/ws`,
		Args: benchURLArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(1); err != nil {
				return err
			}
			switch {
			case settle < 0:
				return usagef("--settle %v: want a duration of zero or more", settle)
			case settle == 0:
				idle.Settle = -1 // measure at once
			default:
				idle.Settle = settle
			}
			if idle.MetricsURL == "" {
				idle.MetricsURL = defaultMetricsURL(args[0])
			} else if u, err := url.Parse(idle.MetricsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				return usagef("--metrics %q: want an http:// or https:// URL", idle.MetricsURL)
			}
			var (
				live *benchLive
				err  error
			)
			if idle.Options, live, err = o.options(e, args[0], false); err != nil {
				return err
			}
			rep, err := loadgen.Idle(cmd.Context(), idle)
			return o.output(e, cmd, rep, live, err)
		},
	}
	cmd.Flags().StringVar(&idle.MetricsURL, "metrics", "", "the server's Prometheus metrics (default: http(s)://HOST/metrics of the URL)")
	cmd.Flags().DurationVar(&settle, "settle", time.Second, "wait this long after the last connection opened before measuring")
	return cmd
}

// defaultMetricsURL is /metrics on the WebSocket URL's host.
func defaultMetricsURL(wsURL string) string {
	u, err := url.Parse(wsURL)
	if err != nil {
		return ""
	}
	scheme := "http"
	if u.Scheme == "wss" {
		scheme = "https"
	}
	return (&url.URL{Scheme: scheme, Host: u.Host, Path: "/metrics"}).String()
}
