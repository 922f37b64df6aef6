package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
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
	drainDelay     time.Duration
	drainWindowSet bool // --drain-window was given

	// cluster
	cluster         string
	join            []string
	natsURL         string
	node            string
	store           string
	clusterAddr     string
	clusterMaxConns int
	clusterSize     int
	clusterPerIP    bool
	balancer        string
}

func newServeCmd(e *env) *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a WebSocket server with admission control (1013), drain (1012) and a dashboard",
		Long: `Serve runs an ebb WebSocket server:

  ws://ADDR/echo       sends every message back to its sender
  ws://ADDR/broadcast  sends every message to every client of /broadcast
                       (resumable: subprotocol ebb.resume.v1 and ?from=N)
  http://ADDR/         live dashboard: connections, admissions vs refusals, close codes
  http://ADDR/metrics  Prometheus metrics (see the shed package and the README for the names)
  http://ADDR/healthz  200 "ok", or 503 "draining" once the drain has started
                       (a node joining a cluster: 503 "starting" until its broadcast history is ready)
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

On SIGINT or SIGTERM /healthz answers 503 at once (in a cluster, once the
node has its turn to drain), and after --drain-delay (give your load
balancer's health-check interval times its fall count) the server stops
admitting, closes every connection with 1012 Service Restart (or
--drain-code 1001) spread over --drain-window, each with its own retry
hint, and exits when they are gone. While it drains it keeps its listener
open: new clients are refused (1013 with a hint, or 503 with --drain-503)
and /metrics keeps answering.

/broadcast numbers its messages and keeps a bounded history: a client
that offers the subprotocol ebb.resume.v1 gets "<seq>\n<message>" and,
reconnecting with ?from=<last seq + 1>, exactly what it missed, then
"!live <next>"; what the history no longer holds is announced as
"!gap <from> <next>". Other clients get plain messages.

Cluster: with --cluster NAME the server is one node of a cluster on NATS.
NATS runs inside ebb by default; give the first node --cluster-addr (the
address its NATS accepts routes on) and every other node --join with the
route URL the first one prints. With --nats URL the nodes use an existing
NATS deployment (JetStream on) instead: the production choice, since it
outlives every ebb restart. In a cluster, a full node whose peers have
room refuses with a short hint ("node at capacity, cluster has room"), a
full cluster (or one at --cluster-max-conns) refuses with the hint of the
cluster's overload, the same on every node; /broadcast spans every node,
and a client resumes on any of them; drains take turns (with
--cluster-size, a node drains only once the cluster is whole again), and
a draining node paces its 1012s to what the other nodes can admit (with
--balancer least-conn, to what one of them admits: a least-connections
balancer sends every reconnect to the emptiest node), over a window of at
most --drain-window (5m unless set). /metrics adds the cluster's gauges
(ebb_cluster_*). ebb serve prints the node's name and NATS URLs at start.

Admission limits are off unless set; the accept loop's bound and pacing are
on (--max-pending 0 and --no-pacing turn them off).`,
		Example: `  ebb serve
  ebb serve --addr :9000 --max-conns 1000 --max-conns-per-ip 20 --rate 200 --burst 50
  ebb serve --max-conns 50 --compress --drain-window 10s --log-level debug
  ebb serve --addr :8080 --metrics-addr 127.0.0.1:9090 --max-conns 10000 --hard-demand 20000

  # Three nodes on one machine, NATS embedded (behind a load balancer on :8080):
  ebb serve --addr :8081 --cluster demo --node a --cluster-addr 127.0.0.1:6222 --max-conns 1000
  ebb serve --addr :8082 --cluster demo --node b --join nats-route://127.0.0.1:6222 --max-conns 1000
  ebb serve --addr :8083 --cluster demo --node c --join nats-route://127.0.0.1:6222 --max-conns 1000

  # On an existing NATS, a cluster-wide limit, 4 s for the load balancer to notice a drain:
  ebb serve --addr :8080 --cluster prod --nats nats://nats1:4222,nats://nats2:4222 \
      --max-conns 10000 --cluster-max-conns 25000 --cluster-size 3 --drain-delay 4s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.drainWindowSet = cmd.Flags().Changed("drain-window")
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
	f.DurationVar(&o.drainWindow, "drain-window", shed.DefaultDrainWindow, "on SIGINT/SIGTERM, spread the closing of connections over this long (with --cluster: at most this long, 5m unless set; the cluster's plan decides)")
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
	f.DurationVar(&o.drainDelay, "drain-delay", 0, "on SIGINT/SIGTERM, answer /healthz with 503 this long before closing connections, so a load balancer moves away first")
	f.StringVar(&o.cluster, "cluster", "", "join (or start) the cluster NAME: admission, broadcast and drains become the cluster's")
	f.StringArrayVar(&o.join, "join", nil, "route URL of a node already in the cluster (as it prints at start), e.g. nats-route://10.0.0.1:6222; embedded NATS only (repeatable)")
	f.StringVar(&o.natsURL, "nats", "", "use this existing NATS (JetStream on), e.g. nats://nats1:4222,nats://nats2:4222, instead of embedding one")
	f.StringVar(&o.node, "node", "", "this node's name, unique in the cluster; keep it across restarts (default: host name and a random suffix)")
	f.StringVar(&o.store, "store", "", "directory of the embedded NATS's store (history, drain lease); keep it across restarts (default: a temporary one)")
	f.StringVar(&o.clusterAddr, "cluster-addr", "", "address the embedded NATS accepts routes from other nodes on, e.g. 0.0.0.0:6222 (a fixed port on the first node)")
	f.IntVar(&o.clusterMaxConns, "cluster-max-conns", 0, "most connections across the cluster, on top of each node's --max-conns (0: the nodes' limits)")
	f.IntVar(&o.clusterSize, "cluster-size", 0, "nodes the cluster should have: a drain waits until that many serve (0: do not wait)")
	f.BoolVar(&o.clusterPerIP, "cluster-per-ip", false, "apply --max-conns-per-ip across the cluster, not per node")
	f.StringVar(&o.balancer, "balancer", "even", "how the load balancer spreads new connections, for the drain's pace: even (round robin, random, hash) or least-conn (HAProxy leastconn, nginx least_conn: one node may get every reconnect)")
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
	if o.drainDelay < 0 {
		return server.Config{}, usagef("--drain-delay %v: want 0 or a positive duration", o.drainDelay)
	}
	cc, err := o.clusterConfig()
	if err != nil {
		return server.Config{}, err
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
		DrainDelay:  o.drainDelay,
		Cluster:     cc,
		Progress:    prefixed{e.stderr, "ebb serve: "},
	}
	if cc != nil && o.drainWindowSet {
		cc.Plan.MaxWindow = o.drainWindow
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
	if n := s.Node(); n != nil {
		describeCluster(e.stderr, cfg, n)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// The drain reports its steps through cfg.Progress; 5 s on top of its
	// own bound for the last closing handshakes.
	sctx, cancel := context.WithTimeout(context.Background(), s.DrainBudget()+5*time.Second)
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
	add(cfg.Cluster != nil && cfg.Cluster.Policy.MaxConns > 0, "max %d across the cluster", clusterMax(cfg))
	add(cfg.Cluster != nil && cfg.Cluster.PerIP, "per-IP limit across the cluster")
	add(cfg.DrainDelay > 0, "/healthz 503 for %s before a drain", cfg.DrainDelay)
	if len(parts) == 0 {
		return "limits: none (every upgrade admitted and counted)"
	}
	return "limits: " + strings.Join(parts, ", ")
}

// namePattern is what cluster and node names may look like (they name
// NATS subjects and streams).
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// clusterConfig validates the cluster flags; nil without --cluster.
func (o *serveOptions) clusterConfig() (*server.ClusterConfig, error) {
	if o.cluster == "" {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"--join", len(o.join) > 0}, {"--nats", o.natsURL != ""}, {"--node", o.node != ""},
			{"--store", o.store != ""}, {"--cluster-addr", o.clusterAddr != ""},
			{"--cluster-max-conns", o.clusterMaxConns != 0}, {"--cluster-size", o.clusterSize != 0},
			{"--cluster-per-ip", o.clusterPerIP}, {"--balancer", o.balancer != "" && o.balancer != "even"},
		} {
			if f.set {
				return nil, usagef("%s needs --cluster NAME", f.name)
			}
		}
		return nil, nil
	}
	if !namePattern.MatchString(o.cluster) {
		return nil, usagef("--cluster %q: want 1 to 64 letters, digits, '-' or '_'", o.cluster)
	}
	if o.node != "" && !namePattern.MatchString(o.node) {
		return nil, usagef("--node %q: want 1 to 64 letters, digits, '-' or '_'", o.node)
	}
	if o.natsURL != "" {
		for _, f := range []struct {
			name string
			set  bool
		}{{"--join", len(o.join) > 0}, {"--store", o.store != ""}, {"--cluster-addr", o.clusterAddr != ""}} {
			if f.set {
				return nil, usagef("%s configures the embedded NATS, and --nats uses an existing one: give one or the other", f.name)
			}
		}
	}
	if o.clusterMaxConns < 0 {
		return nil, usagef("--cluster-max-conns %d: want 0 (the nodes' limits) or more", o.clusterMaxConns)
	}
	if o.clusterSize < 0 {
		return nil, usagef("--cluster-size %d: want 0 (do not wait) or the number of nodes", o.clusterSize)
	}
	if o.clusterPerIP && o.limits.MaxConnsPerIP == 0 {
		return nil, usagef("--cluster-per-ip needs --max-conns-per-ip N")
	}
	balance := cluster.BalanceEven
	switch o.balancer {
	case "", "even":
	case "least-conn":
		balance = cluster.BalanceLeast
	default:
		return nil, usagef("--balancer %q: want even or least-conn", o.balancer)
	}
	if o.clusterAddr != "" {
		if _, _, err := net.SplitHostPort(o.clusterAddr); err != nil {
			return nil, usagef("--cluster-addr %q: want host:port, e.g. 0.0.0.0:6222", o.clusterAddr)
		}
	}
	remote := ""
	for _, j := range o.join {
		u := j
		if !strings.Contains(u, "://") {
			u = "nats-route://" + u
		}
		p, err := url.Parse(u)
		if err != nil || p.Hostname() == "" || p.Port() == "" {
			return nil, usagef("--join %q: want a route URL such as nats-route://10.0.0.1:6222, as the first node prints", j)
		}
		if ip := net.ParseIP(p.Hostname()); p.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			remote = j
		}
	}
	if remote != "" && o.clusterAddr == "" {
		return nil, usagef("--join %s is on another host: give --cluster-addr HOST:PORT, an address of this node the others can reach", remote)
	}
	cc := &server.ClusterConfig{
		Options: cluster.Options{
			Cluster: o.cluster,
			Name:    o.node,
			NATSURL: o.natsURL,
			Embedded: cluster.Embedded{
				ClusterAddr: o.clusterAddr,
				Routes:      o.join,
				StoreDir:    o.store,
			},
		},
		Policy:     cluster.Policy{MaxConns: o.clusterMaxConns},
		PerIP:      o.clusterPerIP,
		MinServing: o.clusterSize,
		Plan:       cluster.PlanOptions{Balance: balance},
	}
	return cc, nil
}

// describeCluster prints the node's place in the cluster, and what to
// give the next node.
func describeCluster(w io.Writer, cfg server.Config, n *cluster.Node) {
	nats := "NATS " + n.ClientURL()
	if cfg.Cluster.Options.NATSURL == "" {
		nats = "embedded NATS " + n.ClientURL()
	}
	fmt.Fprintf(w, "  cluster    %s, node %s, %s\n", n.Cluster(), n.Name(), nats)
	switch route := n.RouteURL(); {
	case route != "":
		fmt.Fprintf(w, "  join       further nodes: --cluster %s --join %s\n", n.Cluster(), route)
		if len(cfg.Cluster.Options.Embedded.Routes) == 0 {
			fmt.Fprintf(w, "             (the cluster's history and drain turns start once a second node has joined)\n")
		}
	case cfg.Cluster.Options.NATSURL == "":
		fmt.Fprintf(w, "  join       standalone: start with --cluster-addr HOST:PORT to let other nodes --join\n")
	default:
		fmt.Fprintf(w, "  join       further nodes: --cluster %s --nats %s\n", n.Cluster(), cfg.Cluster.Options.NATSURL)
	}
}

// prefixed writes each line (one Write) with a prefix.
type prefixed struct {
	w      io.Writer
	prefix string
}

func (p prefixed) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func clusterMax(cfg server.Config) int {
	if cfg.Cluster == nil {
		return 0
	}
	return cfg.Cluster.Policy.MaxConns
}
