package main

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/loadgen"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
)

// stormFlags holds the flags of "ebb bench storm".
type stormFlags struct {
	policies []string
	base     time.Duration
	cap      time.Duration
	restart  bool
	addr     string
	settle   time.Duration
	window   time.Duration
	hint     time.Duration
	gap      time.Duration
}

func newBenchStormCmd(e *env, o *benchOptions) *cobra.Command {
	sf := &stormFlags{}
	cmd := &cobra.Command{
		Use:   "storm [URL]",
		Short: "Connect N clients at once and watch them reconnect by a policy; with --restart, across a server restart",
		Long: `Storm starts --conns clients at the same moment. Each keeps its connection
up for --duration and, when the server ends it or refuses it, reconnects
according to --policy:

  none       connect once, never reconnect
  immediate  reconnect at once after anything (naive clients)
  nojitter   exponential backoff from --base, doubling up to --cap, honouring
             the server's retry hint, without jitter
  backoff    ebb's reconnect policy (package reconnect): decided by the close
             code's retry class, jittered on every attempt, hint as a floor

Several policies (--policy backoff,immediate,nojitter) run one after the
other and are compared side by side.

With --restart (and no URL), storm runs its own ebb server in this process:
once every client is connected and --settle has passed, the server drains
with 1012 Service Restart over --drain-window (hints of --drain-hint,
jittered), stops, and after --gap a new server listens on the same
address. By default every connection is closed at once with the smallest
hint, so that the clients' own policy, not the server's spreading,
decides how they return; --drain-window 5s --drain-hint 1s shows ebb's
server spreading the drain as "ebb serve" does. The report gives, for each
policy, the peak handshake rate (the busiest 100 ms after the drain) and
the time until every client was connected again. Client and server then
share this machine's cores. Failures from the drain until every client is
back are what the storm measures and do not count against --max-errors.`,
		Example: `  ebb bench storm -c 500 --policy immediate,backoff ws://localhost:8080/echo
  ebb bench storm --restart -c 1000 --policy backoff,immediate,nojitter --plot storm.png`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case sf.restart && len(args) > 0:
				return usagef("--restart runs its own server: give no URL (got %q)", args[0])
			case !sf.restart && len(args) != 1:
				return usagef("want exactly one URL (or --restart and none), got %d arguments", len(args))
			case !sf.restart:
				return checkBenchURL(args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			so, err := sf.options(o)
			if err != nil {
				return err
			}
			url := ""
			if len(args) == 1 {
				url = args[0]
			}
			var live *benchLive
			if so.Options, live, err = o.options(e, url, false); err != nil {
				return err
			}
			rep, err := loadgen.Storm(cmd.Context(), so)
			return o.output(e, cmd, rep, live, err)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&sf.policies, "policy", []string{string(loadgen.PolicyBackoff)}, "reconnect policy: none, immediate, nojitter or backoff; a comma-separated list runs each in turn")
	f.DurationVar(&sf.base, "base", reconnect.DefaultBase, "first nominal reconnect delay of backoff and nojitter")
	f.DurationVar(&sf.cap, "cap", reconnect.DefaultCap, "largest nominal reconnect delay of backoff and nojitter")
	f.BoolVar(&sf.restart, "restart", false, "run an in-process ebb server that drains with 1012 and comes back, instead of using URL")
	f.StringVar(&sf.addr, "addr", "127.0.0.1:0", "with --restart: address of the in-process server")
	f.DurationVar(&sf.settle, "settle", 500*time.Millisecond, "with --restart: how long all clients stay connected before the drain")
	f.DurationVar(&sf.window, "drain-window", 0, "with --restart: the server spreads its 1012 closes over this long (0: all at once, like a crash or a server without a spread drain)")
	f.DurationVar(&sf.hint, "drain-hint", 0, "with --restart: retry hint in the 1012 closes, before the server's jitter (0: the smallest hint, 0.1s)")
	f.DurationVar(&sf.gap, "gap", 500*time.Millisecond, "with --restart: time without a server between the drain and the restart")
	return cmd
}

// options checks the storm's flags and turns them into loadgen's (all
// but the shared Options).
func (sf *stormFlags) options(o *benchOptions) (loadgen.StormOptions, error) {
	fds := 1
	if sf.restart {
		fds = 2 // both ends of every connection are in this process
	}
	if err := o.check(fds); err != nil {
		return loadgen.StormOptions{}, err
	}
	so := loadgen.StormOptions{Backoff: reconnect.Backoff{Base: sf.base, Cap: sf.cap}}
	for _, p := range sf.policies {
		if p == "" {
			continue
		}
		pol, err := loadgen.ParsePolicy(p)
		if err != nil {
			return so, usagef("--policy %q: want none, immediate, nojitter or backoff", p)
		}
		so.Policies = append(so.Policies, pol)
	}
	switch {
	case len(so.Policies) == 0:
		return so, usagef("--policy is empty: want none, immediate, nojitter or backoff")
	case sf.base <= 0 || sf.cap <= 0:
		return so, usagef("--base %v and --cap %v: want positive durations", sf.base, sf.cap)
	case !sf.restart:
		return so, nil
	}
	for name, d := range map[string]time.Duration{"--settle": sf.settle, "--gap": sf.gap, "--drain-window": sf.window, "--drain-hint": sf.hint} {
		if d < 0 {
			return so, usagef("%s %v: want a duration of zero or more", name, d)
		}
	}
	so.Restart = &loadgen.RestartOptions{
		Server:      newServerRestarter(sf.addr, sf.window, sf.hint),
		Settle:      sf.settle,
		Gap:         sf.gap,
		DrainWindow: sf.window,
		DrainCode:   int(closecode.ServiceRestart),
		InProcess:   true,
	}
	return so, nil
}

// newServerRestarter is loadgen's Restarter on the server `ebb serve`
// runs, without pacing: the storm measures how hard each reconnect policy
// hits the server, and an accept loop that paces would flatten the very
// peaks it compares.
func newServerRestarter(addr string, window, hint time.Duration) *server.Restarter {
	// shed's zero means its default; the flags' zero means at once.
	return &server.Restarter{Config: server.Config{
		Addr: addr,
		Shed: shed.Options{
			DrainWindow: max(window, time.Millisecond),
			DrainHint:   max(hint, time.Millisecond),
			DrainCode:   closecode.ServiceRestart,
		},
		Listener: shed.ListenerOptions{NoPacing: true},
	}}
}
