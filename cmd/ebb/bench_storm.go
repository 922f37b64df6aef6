package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// Reconnect policies a storm can use.
const (
	// policyNone: connect once, never reconnect.
	policyNone = "none"
	// policyImmediate: reconnect at once after anything, as naive clients do.
	policyImmediate = "immediate"
	// policyNoJitter: exponential backoff (base·2^n, capped) that honours
	// the server's hint but has no jitter, as many hand-written clients do.
	policyNoJitter = "nojitter"
	// policyBackoff: ebb's reconnect policy (package reconnect): close-code
	// aware, jittered on every attempt, hint as a floor.
	policyBackoff = "backoff"
)

var stormPolicies = []string{policyNone, policyImmediate, policyNoJitter, policyBackoff}

// stormConfig is one storm run.
type stormConfig struct {
	// URL is the server to storm; with Restart it is set by the run.
	URL string
	// Clients is how many clients connect at once.
	Clients int
	// Policy is one of stormPolicies.
	Policy string
	// Backoff is the delay rule of the backoff and nojitter policies.
	Backoff reconnect.Backoff
	// Restart, when set, runs the storm against in-process ebb servers: one
	// that drains with 1012 once every client is connected, and a second
	// on the same address after a gap.
	Restart *restartConfig
}

// restartConfig describes the drain and restart of a restart storm.
type restartConfig struct {
	// Addr is where the in-process servers listen; "127.0.0.1:0" picks a
	// free port, and the second server reuses the first one's.
	Addr string
	// Settle is how long every client stays connected before the drain.
	Settle time.Duration
	// DrainWindow spreads the 1012 closes; DrainHint is the retry hint they
	// carry (jittered by the server).
	DrainWindow time.Duration
	DrainHint   time.Duration
	// Gap is how long no server listens between the end of the drain and
	// the second server.
	Gap time.Duration
}

// stormOptions holds the flags of "ebb bench storm".
type stormOptions struct {
	policies []string
	base     time.Duration
	cap      time.Duration
	restart  bool
	rc       restartConfig
}

func newBenchStormCmd(e *env, o *benchOptions) *cobra.Command {
	so := &stormOptions{}
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
server spreading the drain as "ebb serve" does. The report gives, for each policy, the peak handshake rate (the
busiest 100 ms after the drain) and the time until every client was
connected again. Client and server then share this machine's cores.`,
		Example: `  ebb bench storm -c 500 --policy immediate,backoff ws://localhost:8080/echo
  ebb bench storm --restart -c 1000 --policy backoff,immediate,nojitter --plot storm.png`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case so.restart && len(args) > 0:
				return usagef("bench storm --restart runs its own server: give no URL (got %q)", args[0])
			case !so.restart && len(args) != 1:
				return usagef("want exactly one URL (or --restart and none), got %d arguments", len(args))
			case !so.restart:
				return checkBenchURL(args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			fds := 1
			if so.restart {
				fds = 2
			}
			if err := o.check(fds); err != nil {
				return err
			}
			policies, err := parsePolicies(so.policies)
			if err != nil {
				return err
			}
			if so.base <= 0 || so.cap <= 0 {
				return usagef("bench storm: --base %v and --cap %v: want positive durations", so.base, so.cap)
			}
			if so.restart {
				for name, d := range map[string]time.Duration{"--settle": so.rc.Settle, "--gap": so.rc.Gap, "--drain-window": so.rc.DrainWindow, "--drain-hint": so.rc.DrainHint} {
					if d < 0 {
						return usagef("bench storm: %s %v: want a duration of zero or more", name, d)
					}
				}
			}
			dopts, err := o.dialOptions(false)
			if err != nil {
				return err
			}
			url := ""
			if len(args) == 1 {
				url = args[0]
			}
			sc := stormConfig{URL: url, Clients: o.conns, Backoff: reconnect.Backoff{Base: so.base, Cap: so.cap}}
			if so.restart {
				rc := so.rc
				sc.Restart = &rc
			}
			rep, err := runStorms(cmd.Context(), e, o, sc, policies, dopts)
			if err != nil {
				return err
			}
			return o.output(e, rep)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&so.policies, "policy", []string{policyBackoff}, "reconnect policy: none, immediate, nojitter or backoff; a comma-separated list runs each in turn")
	f.DurationVar(&so.base, "base", reconnect.DefaultBase, "first nominal reconnect delay of backoff and nojitter")
	f.DurationVar(&so.cap, "cap", reconnect.DefaultCap, "largest nominal reconnect delay of backoff and nojitter")
	f.BoolVar(&so.restart, "restart", false, "run an in-process ebb server that drains with 1012 and comes back, instead of using URL")
	f.StringVar(&so.rc.Addr, "addr", "127.0.0.1:0", "with --restart: address of the in-process server")
	f.DurationVar(&so.rc.Settle, "settle", 500*time.Millisecond, "with --restart: how long all clients stay connected before the drain")
	f.DurationVar(&so.rc.DrainWindow, "drain-window", 0, "with --restart: the server spreads its 1012 closes over this long (0: all at once, like a crash or a server without a spread drain)")
	f.DurationVar(&so.rc.DrainHint, "drain-hint", 0, "with --restart: retry hint in the 1012 closes, before the server's jitter (0: the smallest hint, 0.1s)")
	f.DurationVar(&so.rc.Gap, "gap", 500*time.Millisecond, "with --restart: time without a server between the drain and the restart")
	return cmd
}

// parsePolicies checks --policy.
func parsePolicies(in []string) ([]string, error) {
	var out []string
	for _, p := range in {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		found := false
		for _, known := range stormPolicies {
			found = found || p == known
		}
		if !found {
			return nil, usagef("bench storm: --policy %q: want none, immediate, nojitter or backoff", p)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, usagef("bench storm: --policy is empty: want none, immediate, nojitter or backoff")
	}
	return out, nil
}

// runStorms runs one storm per policy, in turn, and reports them together.
func runStorms(ctx context.Context, e *env, o *benchOptions, sc stormConfig, policies []string, dopts *websocket.DialOptions) (*benchReport, error) {
	cpu := startCPU()
	started := time.Now()
	var runs []runReport
	url := sc.URL
	for _, p := range policies {
		if ctx.Err() != nil {
			break
		}
		sc.Policy = p
		rr, err := runStorm(ctx, e, o, sc, dopts)
		if err != nil {
			return nil, err
		}
		runs = append(runs, rr)
		if sc.Restart != nil && rr.Restart != nil {
			url = "(in-process ebb server, --restart)"
		}
	}
	rep := &benchReport{
		Schema:      benchSchema,
		Mode:        "storm",
		URL:         url,
		Started:     started.UTC().Round(time.Millisecond),
		Seconds:     round3(time.Since(started).Seconds()),
		Interrupted: ctx.Err() != nil,
		Client:      cpu.clientReport(runs, sc.Restart != nil),
		Runs:        runs,
	}
	return rep, nil
}

// stormServer is an in-process server of a restart storm.
type stormServer struct {
	s      *server.Server
	served chan error
}

func startStormServer(addr string, rc *restartConfig) (*stormServer, error) {
	cfg := server.Config{
		Addr: addr,
		Shed: shed.Options{
			DrainWindow: rc.DrainWindow,
			DrainHint:   rc.DrainHint,
			DrainCode:   closecode.ServiceRestart,
		},
		// The storm measures how hard each reconnect policy hits the
		// server; an accept loop that paces would flatten the very peaks
		// it compares.
		Listener: shed.ListenerOptions{NoPacing: true},
	}
	if cfg.Shed.DrainWindow == 0 {
		cfg.Shed.DrainWindow = time.Millisecond // shed's zero means its default
	}
	if cfg.Shed.DrainHint == 0 {
		cfg.Shed.DrainHint = time.Millisecond
	}
	var s *server.Server
	var err error
	// The old server's port may take a moment to be free again.
	for i := 0; i < 50; i++ {
		if s, err = server.New(cfg); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot start the in-process server: %w", err)
	}
	ss := &stormServer{s: s, served: make(chan error, 1)}
	go func() { ss.served <- s.Serve() }()
	return ss, nil
}

// stop drains the server and waits until it no longer serves.
func (ss *stormServer) stop(within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	err := ss.s.Shutdown(ctx)
	<-ss.served
	return err
}

// runStorm runs one storm with one policy.
func runStorm(ctx context.Context, e *env, o *benchOptions, sc stormConfig, dopts *websocket.DialOptions) (runReport, error) {
	var srv *stormServer
	if sc.Restart != nil {
		var err error
		if srv, err = startStormServer(sc.Restart.Addr, sc.Restart); err != nil {
			return runReport{}, err
		}
		sc.URL = "ws://" + srv.s.Addr() + "/echo"
	}
	b := newBench(e, o, sc.URL, dopts, sc.Clients)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	clientCtx, stopClients := context.WithCancel(runCtx)
	defer stopClients()
	var active atomic.Int64
	var phase atomic.Value
	phase.Store("connecting")
	prog := startProgress(e, func(el time.Duration) string {
		return fmt.Sprintf("%s [%s] %s", sc.Policy, phase.Load(), b.rec.liveLine(el, o.duration))
	})
	active.Add(int64(sc.Clients))
	for range sc.Clients {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer active.Add(-1)
			b.stormClient(clientCtx, sc)
		}()
	}
	var restart *restartReport
	var err error
	if sc.Restart != nil {
		restart, srv, err = b.restart(runCtx, srv, sc, &active, &phase)
	} else {
		<-runCtx.Done()
	}
	phase.Store("closing")
	stopClients()
	b.wg.Wait()
	elapsed := time.Since(b.started)
	prog.end()
	if srv != nil {
		_ = srv.stop(time.Second)
	}
	if err != nil {
		return runReport{}, err
	}
	rr := b.rec.report(sc.Policy, elapsed)
	b.rec.mu.Lock()
	rr.Reconnect = &reconnectReport{Policy: sc.Policy, Attempts: b.rec.reconnects, GaveUp: b.rec.gaveUp, Delays: summarize(b.rec.delays)}
	b.rec.mu.Unlock()
	if restart != nil {
		b.rec.mu.Lock()
		from := time.Duration(restart.DrainAt * float64(time.Second))
		rate, at := peakWindow(b.rec.hsPerMs, from)
		restart.PeakAttemptsPerSecond, _ = peakWindow(b.rec.atPerMs, from)
		b.rec.mu.Unlock()
		restart.PeakPerSecond, restart.PeakAt = rate, round3(at.Seconds())
		rr.Restart = restart
	}
	return rr, nil
}

// restart runs the drain and restart of a restart storm once the clients
// are started. It returns when every client is back on the new server, or
// the run ended, with the server that is running then (nil if none), which
// the caller stops after the clients.
func (b *bench) restart(ctx context.Context, srv *stormServer, sc stormConfig, active *atomic.Int64, phase *atomic.Value) (*restartReport, *stormServer, error) {
	rc := sc.Restart
	addr := srv.s.Addr()
	// Every client connected, then settle.
	b.rec.watchFull(time.Now())
	pollUntil(ctx, func() bool { _, ok := b.rec.full(); return ok || active.Load() == 0 })
	if _, ok := b.rec.full(); !ok {
		return nil, srv, nil
	}
	phase.Store("connected")
	if !sleepCtx(ctx, rc.Settle) {
		return nil, srv, nil
	}
	rep := &restartReport{DrainCode: int(closecode.ServiceRestart), DrainWindow: rc.DrainWindow.Seconds(), Gap: rc.Gap.Seconds()}
	drainAt := time.Now()
	rep.DrainAt = round3(drainAt.Sub(b.started).Seconds())
	phase.Store("draining")
	_ = srv.stop(rc.DrainWindow + 5*time.Second)
	phase.Store("down")
	if !sleepCtx(ctx, rc.Gap) {
		return rep, nil, nil
	}
	next, err := startStormServer(addr, rc)
	if err != nil {
		return nil, nil, err
	}
	backAt := time.Now()
	rep.BackAt = round3(backAt.Sub(b.started).Seconds())
	phase.Store("back")
	b.rec.watchFull(backAt)
	pollUntil(ctx, func() bool { _, ok := b.rec.full(); return ok || active.Load() == 0 })
	if at, ok := b.rec.full(); ok {
		full := round3((at - drainAt.Sub(b.started)).Seconds())
		afterBack := round3((at - backAt.Sub(b.started)).Seconds())
		rep.FullReconnect, rep.FullAfterBack = &full, &afterBack
	}
	return rep, next, nil
}

// pollUntil polls cond until it holds or ctx ends, and reports whether it
// held.
func pollUntil(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
	return true
}

// stormClient is one client of a storm: it connects, reads until the
// connection ends, and reconnects as its policy says, until ctx ends.
func (b *bench) stormClient(ctx context.Context, sc stormConfig) {
	pol := reconnect.Policy{Backoff: sc.Backoff, Persistent: true}
	sched := reconnect.NewSchedule(pol, nil, time.Now())
	again := false
	for ctx.Err() == nil {
		c, resp, err := b.dial(ctx, again)
		again = true
		var d reconnect.Decision
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			d = decideDialError(pol, err, resp, time.Now())
		} else {
			sched.Opened(time.Now())
			end := b.session(ctx, c, readAll)
			if ctx.Err() != nil {
				return
			}
			d = pol.Decide(end.code, end.reason)
		}
		var delay time.Duration
		switch sc.Policy {
		case policyNone:
			return
		case policyImmediate:
			delay = 0
		case policyBackoff, policyNoJitter:
			w, err := sched.Next(time.Now(), d)
			if err != nil {
				b.rec.gaveUpOne()
				return
			}
			delay = w.Delay
			if sc.Policy == policyNoJitter {
				delay = max(w.Nominal, d.Hint)
			}
		}
		b.rec.waited(delay)
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// decideDialError turns a failed dial into the policy's verdict: an HTTP
// refusal by its status and Retry-After, a server that closed right after
// the upgrade by its close code and hint, a missing mandatory extension by
// 1010, anything else (refused, reset, timeout) as a lost connection
// (1006), which retries with backoff.
func decideDialError(pol reconnect.Policy, err error, resp *http.Response, now time.Time) reconnect.Decision {
	var he *websocket.HandshakeError
	if errors.As(err, &he) && he.StatusCode != 0 {
		h := http.Header{}
		if resp != nil {
			h = resp.Header
		} else if he.RetryAfter > 0 {
			h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(he.RetryAfter.Seconds())), 10))
		}
		d := pol.DecideHTTP(he.StatusCode, h, now)
		d.Err = err
		return d
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Remote {
		// Upgraded, then refused at once (1013 with its hint).
		d := pol.Decide(ce.Code, ce.Reason)
		d.Err = err
		return d
	}
	code := closecode.AbnormalClosure
	var me *websocket.MandatoryExtensionError
	if errors.As(err, &me) {
		code = closecode.MandatoryExtension
	}
	d := pol.Decide(code, "")
	d.Err = err
	return d
}
