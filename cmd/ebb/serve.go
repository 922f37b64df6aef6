package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// serveOptions holds the flags of "ebb serve".
type serveOptions struct {
	addr           string
	limits         shed.Limits
	trustedProxies []string
	retryBase      time.Duration
	retryMax       time.Duration
	jitter         float64
	shedding       bool
	shedFraction   float64
	shedInterval   time.Duration
	drainWindow    time.Duration
	drainCode      int
	drainHint      time.Duration
	drain503       bool
	maxPending     int
	noPacing       bool
	compress       bool
	compressLevel  int
	noTakeover     bool
	windowBits     int
	readLimit      int64
	origins        []string
	logLevel       string
	logJSON        bool
	metricsAddr    string
	broadcastQueue int
}

func newServeCmd(e *env) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a WebSocket server with admission control (1013), drain (1012) and a dashboard",
		Long: `Serve runs an ebb WebSocket server:

  ws://ADDR/echo       sends every message back to its sender
  ws://ADDR/broadcast  sends every message to every client of /broadcast
  http://ADDR/         live dashboard: connections, admissions vs refusals, close codes
  http://ADDR/metrics  Prometheus metrics (see the shed package and the README for the names)
  http://ADDR/healthz  200 "ok", or 503 "draining" once the drain has started
  http://ADDR/ebb.js   ebb's reconnecting browser client

With --metrics-addr, /metrics, /healthz and the dashboard are also served on
a listener of their own that admission control and the accept loop's bound
never touch, so a connect storm cannot hide the server from monitoring.

Every WebSocket upgrade goes through admission control. When a limit is
reached the client is upgraded and closed at once with 1013 Try Again Later
and a reason ending in "retry-after=<seconds>"; above --hard-demand (or
--hard-pressure) it gets HTTP 503 with Retry-After instead, without an
upgrade. Hints grow with the overload and are jittered per client.

A connect storm is kept from hurting established connections in the accept
loop (shed.Listener): at most --max-pending connections are being handled
at a time, and during a burst new ones are taken only when established
connections have had the CPU. Past --hard-demand the accept loop answers
503 itself, so the dashboard and /metrics get it too.

Hostile clients are bounded: request headers must arrive within 5 s (less
as pending places fill up), a keep-alive connection idle for 30 s is closed,
a message is limited by --read-limit and by the process-wide message memory
budget, and a /broadcast member more than --broadcast-queue bytes behind is
closed with 1013 (it may reconnect at once).

On SIGINT or SIGTERM the server stops admitting, closes every connection
with 1012 Service Restart (or --drain-code 1001) spread over --drain-window,
each with its own retry hint, and exits when they are gone. While it drains
it keeps its listener open: new clients are refused (1013 with a hint, or
503 with --drain-503), /healthz answers 503 and /metrics keeps answering.

Admission limits are off unless set; the accept loop's bound and pacing are
on (--max-pending 0 and --no-pacing turn them off).`,
		Example: `  ebb serve
  ebb serve --addr :9000 --max-conns 1000 --max-conns-per-ip 20 --rate 200 --burst 50
  ebb serve --max-conns 50 --compress --drain-window 10s --log-level debug
  ebb serve --addr :8080 --metrics-addr 127.0.0.1:9090 --max-conns 10000 --hard-demand 20000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := o.config(e)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), e, cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.addr, "addr", "127.0.0.1:8080", "address to listen on")
	f.IntVar(&o.limits.MaxConns, "max-conns", 0, "most connections at once (0: no limit)")
	f.IntVar(&o.limits.MaxConnsPerIP, "max-conns-per-ip", 0, "most connections from one client address (0: no limit)")
	f.Float64Var(&o.limits.Rate, "rate", 0, "handshakes admitted per second, on average (0: no limit)")
	f.IntVar(&o.limits.Burst, "burst", 0, "handshakes admitted at once after a quiet period (0: max(1, rate))")
	f.IntVar(&o.limits.MaxInFlight, "max-in-flight", 0, "most handshakes in progress at once (0: no limit)")
	f.Float64Var(&o.limits.HeapFraction, "heap-fraction", 0, "refuse while the live heap is at this fraction of GOMEMLIMIT, e.g. 0.8 (0: off)")
	f.DurationVar(&o.limits.SchedLatency, "sched-latency", 0, "refuse while the p99 scheduling latency is at least this, e.g. 10ms (0: off)")
	f.IntVar(&o.limits.HardDemand, "hard-demand", 0, "above this many connections plus recent refusals, answer HTTP 503 instead of 1013 (0: never)")
	f.Float64Var(&o.limits.HardPressure, "hard-pressure", 0, "above this pressure ratio (>= 1), answer HTTP 503 instead of 1013 (0: never)")
	f.IntVar(&o.maxPending, "max-pending", server.DefaultMaxPending, "most connections between accept and admission; more wait in the listen queue (0: no bound)")
	f.BoolVar(&o.noPacing, "no-pacing", false, "accept as fast as connections come, even while established connections wait for the CPU")
	f.StringArrayVar(&o.trustedProxies, "trusted-proxy", nil, "network of a reverse proxy whose X-Forwarded-For is believed, e.g. 10.0.0.0/8 (repeatable)")
	f.DurationVar(&o.retryBase, "retry-base", shed.DefaultRetryBase, "retry hint when just at capacity; hints grow with the overload")
	f.DurationVar(&o.retryMax, "retry-max", shed.DefaultRetryMax, "largest retry hint before jitter")
	f.Float64Var(&o.jitter, "jitter", shed.DefaultJitter, "spread each hint up by a random fraction in [0, jitter)")
	f.BoolVar(&o.shedding, "shed", false, "close a fraction of connections with 1013 while pressure stays high")
	f.Float64Var(&o.shedFraction, "shed-fraction", 0.05, "largest share of connections shed per interval, in (0, 1]")
	f.DurationVar(&o.shedInterval, "shed-interval", time.Second, "how long pressure must stay high, and the time between shedding rounds")
	f.DurationVar(&o.drainWindow, "drain-window", shed.DefaultDrainWindow, "on SIGINT/SIGTERM, spread the closing of connections over this long")
	f.IntVar(&o.drainCode, "drain-code", int(closecode.ServiceRestart), "close code for draining: 1012 (restart, come back soon) or 1001 (going away)")
	f.DurationVar(&o.drainHint, "drain-hint", shed.DefaultDrainHint, "retry hint sent while draining, before jitter")
	f.BoolVar(&o.drain503, "drain-503", false, "while draining, refuse new upgrades with HTTP 503 instead of upgrade-then-close")
	f.BoolVar(&o.compress, "compress", false, "accept permessage-deflate (RFC 7692) when clients offer it")
	f.IntVar(&o.compressLevel, "compress-level", 0, "deflate level 1–9 (0: the library default)")
	f.BoolVar(&o.noTakeover, "no-context-takeover", false, "compress each message on its own: less memory per connection, worse ratio")
	f.IntVar(&o.windowBits, "window-bits", 0, "largest LZ77 window for the server's compressor, 8–15 (0: 15)")
	f.Int64Var(&o.readLimit, "read-limit", websocket.DefaultReadLimit, "largest message accepted, in bytes (decompressed size); larger ones close with 1009")
	f.StringArrayVar(&o.origins, "origin", nil, `allowed browser origin pattern besides the server's own host, e.g. "*.example.com" (repeatable)`)
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&o.logJSON, "log-json", false, "log as JSON lines instead of text")
	f.StringVar(&o.metricsAddr, "metrics-addr", "", "also serve /metrics, /healthz and the dashboard on this address, outside admission control")
	f.IntVar(&o.broadcastQueue, "broadcast-queue", server.DefaultBroadcastQueueBytes, "bytes a /broadcast member may fall behind before it is closed with 1013")
	return cmd
}

// config validates the flags and builds the server configuration.
func (o *serveOptions) config(e *env) (server.Config, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return server.Config{}, usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var logger *slog.Logger
	if o.logJSON {
		logger = slog.New(slog.NewJSONHandler(e.stderr, hopts))
	} else {
		logger = slog.New(slog.NewTextHandler(e.stderr, hopts))
	}
	code := closecode.Code(o.drainCode)
	if code != closecode.ServiceRestart && code != closecode.GoingAway {
		return server.Config{}, usagef("--drain-code %d: want 1012 (Service Restart) or 1001 (Going Away)", o.drainCode)
	}
	if o.readLimit == 0 {
		return server.Config{}, usagef("--read-limit 0: want a positive size in bytes (or -1 for no limit, dangerous)")
	}
	var proxies []netip.Prefix
	for _, s := range o.trustedProxies {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(s))
			if aerr != nil {
				return server.Config{}, usagef("--trusted-proxy %q: want a network such as 10.0.0.0/8 or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		proxies = append(proxies, p)
	}
	if o.maxPending < 0 {
		return server.Config{}, usagef("--max-pending %d: want 0 (no bound) or more", o.maxPending)
	}
	if o.broadcastQueue <= 0 {
		return server.Config{}, usagef("--broadcast-queue %d: want a positive number of bytes", o.broadcastQueue)
	}
	if o.shedFraction <= 0 || o.shedFraction > 1 {
		return server.Config{}, usagef("--shed-fraction %v: want a value in (0, 1]", o.shedFraction)
	}
	cfg := server.Config{
		Addr: o.addr,
		Shed: shed.Options{
			Limits:         o.limits,
			TrustedProxies: proxies,
			RetryBase:      o.retryBase,
			RetryMax:       o.retryMax,
			Jitter:         o.jitter,
			DrainWindow:    o.drainWindow,
			DrainCode:      code,
			DrainHint:      o.drainHint,
			Logger:         logger,
		},
		Listener:    shed.ListenerOptions{MaxPending: o.maxPending, NoPacing: o.noPacing},
		ReadLimit:   o.readLimit,
		Origins:     o.origins,
		Logger:      logger,
		MetricsAddr: o.metricsAddr,
		Broadcast:   server.BroadcastLimits{MaxQueueBytes: o.broadcastQueue},
	}
	if o.jitter == 0 {
		cfg.Shed.Jitter = -1 // shed's zero means "default"; the flag's 0 means off
	}
	if o.drain503 {
		cfg.Shed.DrainMode = shed.ModeHTTP
	}
	if o.shedding {
		cfg.Shed.Shed = &shed.ShedPolicy{Fraction: o.shedFraction, Interval: o.shedInterval}
	}
	if o.compress {
		c, err := compressionOptions(o.compressLevel, o.noTakeover, o.windowBits)
		if err != nil {
			return server.Config{}, err
		}
		cfg.Compression = c
	} else if o.compressLevel != 0 || o.noTakeover || o.windowBits != 0 {
		return server.Config{}, usagef("--compress-level, --no-context-takeover and --window-bits need --compress")
	}
	return cfg, nil
}

// serve runs the server until ctx ends (SIGINT/SIGTERM), then drains.
func serve(ctx context.Context, e *env, cfg server.Config) error {
	s, err := server.New(cfg)
	if err != nil {
		// The flags passed their own checks; what shed still refuses (a
		// limit below zero, say) is a usage mistake too.
		if strings.HasPrefix(err.Error(), "shed: ") {
			return usagef("%s", strings.TrimPrefix(err.Error(), "shed: "))
		}
		return err
	}
	addr, maddr := s.Addr(), s.MetricsAddr()
	if maddr == "" {
		maddr = addr
	}
	fmt.Fprintf(e.stderr, "ebb serve: listening on %s\n  dashboard  http://%s/\n  echo       ws://%s/echo\n  broadcast  ws://%s/broadcast\n  metrics    http://%s/metrics\n  health     http://%s/healthz\n",
		addr, maddr, addr, addr, maddr, maddr)
	fmt.Fprintf(e.stderr, "  %s\n", describeLimits(cfg))
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	window := cfg.Shed.DrainWindow
	if window == 0 {
		window = shed.DefaultDrainWindow
	}
	fmt.Fprintf(e.stderr, "ebb serve: draining: closing %s with %s over %s; new clients are refused meanwhile\n",
		plural(s.Shedder().Stats().Connections, "connection"), cfg.Shed.DrainCode, window)
	sctx, cancel := context.WithTimeout(context.Background(), window+5*time.Second)
	defer cancel()
	serr := s.Shutdown(sctx)
	<-served
	st := s.Shedder().Stats()
	fmt.Fprintf(e.stderr, "ebb serve: stopped: %d admitted, %d refused, %d drained, %d force-closed\n",
		st.Admitted, st.RefusedTotal, st.Drained, st.ForceClosed)
	if serr != nil {
		return fmt.Errorf("drain did not finish: %w", serr)
	}
	return nil
}

// plural formats n with noun, adding an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func describeLimits(cfg server.Config) string {
	l := cfg.Shed.Limits
	var parts []string
	add := func(on bool, format string, args ...any) {
		if on {
			parts = append(parts, fmt.Sprintf(format, args...))
		}
	}
	add(l.MaxConns > 0, "max %d connections", l.MaxConns)
	add(l.MaxConnsPerIP > 0, "max %d per IP", l.MaxConnsPerIP)
	add(l.Rate > 0, "%.4g handshakes/s (burst %d)", l.Rate, l.Burst)
	add(l.MaxInFlight > 0, "max %d handshakes in flight", l.MaxInFlight)
	add(l.HardDemand > 0, "HTTP 503 above demand %d", l.HardDemand)
	add(cfg.Listener.MaxPending > 0, "max %d pending", cfg.Listener.MaxPending)
	add(cfg.Compression != nil, "permessage-deflate on")
	if len(parts) == 0 {
		return "limits: none (every upgrade admitted and counted)"
	}
	return "limits: " + strings.Join(parts, ", ")
}
