// Package server is the WebSocket server that `ebb serve` runs and that
// `ebb demo` and the tests start in-process: /echo and /broadcast behind
// shed's admission control, /metrics, /healthz, a live dashboard at / and
// the browser client at /ebb.js. With Config.Cluster it is one node of an
// ebb cluster on NATS, where 1013 and 1012 are the cluster's decisions.
//
// It is a library first (New, Serve, Shutdown), so that the command only
// parses flags and prints. Everything a hostile client could make it hold
// is bounded: request headers by the accept loop's adaptive timeout
// (shed.Listener) and ReadHeaderTimeout, idle keep-alive connections by
// IdleTimeout, message memory by the websocket package's read limit and
// memory budget, echo buffers by maxKeptEchoBuffer, the broadcast's
// messages by its history and each member by its backlog in bytes and
// its write time (see broadcast.go).
//
// # Broadcast and resume
//
// /broadcast sends every message to every member, numbered in one order
// with a bounded history: on one server an in-memory one
// (BroadcastLimits), in a cluster the cluster's (every node, one order).
// A client that offers the subprotocol ebb.resume.v1 (ResumeProtocol)
// gets each message as "<seq>\n<payload>" and may reconnect with
// ?from=<last seq + 1> — to any node — to get exactly what it missed,
// then "!live <next>"; what the history no longer holds is announced
// with "!gap <from> <next>", never skipped silently. Other clients get
// plain messages. Sequences start at the history's creation time in
// microseconds, so a client of an earlier history (a server restarted)
// is told of a gap rather than handed old numbers. A member more than
// MaxQueueBytes behind is closed with 1013 and a short hint, and resumes
// from where it was.
//
// # Cluster
//
// With Config.Cluster the server joins a cluster (package cluster) with
// an embedded NATS server, routed to the others' (Embedded.Routes), or on
// an existing NATS (NATSURL), and reports its load a few times a second.
// Admission asks the cluster's view before refusing (shed.Advisor): a
// full node with room elsewhere refuses with a short hint and reason
// node_full, a full cluster (or one at Policy.MaxConns) with the hint of
// the cluster's overload and reason cluster_full, the same on every
// node; with ClusterConfig.PerIP the per-address limit holds across
// nodes. Shutdown takes the cluster's drain turn, turns /healthz to 503
// and waits Config.DrainDelay, then paces its 1012s to what the other
// nodes can admit (cluster.PlanDrain). Node returns the cluster node
// (its view, NATS URLs); RestartConfig brings a node back as itself.
//
// # Metrics
//
// /metrics serves shed's metrics (see package shed: admission, refusals,
// the Listener, the message memory budget, close codes), and:
//
//	ebb_process_heap_objects_bytes            gauge    bytes of live and not yet swept heap objects (runtime/metrics)
//	ebb_process_stacks_bytes                  gauge    bytes of goroutine stacks
//	ebb_process_memory_total_bytes            gauge    all memory mapped by the Go runtime
//	ebb_process_goroutines                    gauge    goroutines alive
//	ebb_broadcast_members                     gauge    clients connected to /broadcast
//	ebb_broadcast_messages_total              counter  messages published by this server's clients
//	ebb_broadcast_last_seq                    gauge    sequence of the newest broadcast delivered here
//	ebb_broadcast_max_member_backlog_bytes    gauge    live bytes the member furthest behind has yet to get
//	ebb_broadcast_dropped_total{reason}       counter  members closed with 1013: queue_bytes or write_timeout
//	ebb_broadcast_resumes_total               counter  members that asked to resume (from=N)
//	ebb_broadcast_gaps_total                  counter  gaps met: messages needed that the history no longer held
//
// and in a cluster:
//
//	ebb_cluster_members{state}                gauge    members by state: serving, draining, stale
//	ebb_cluster_connections                   gauge    connections of the live members (draining ones included)
//	ebb_cluster_limit                         gauge    capacity: serving members' limits, or Policy.MaxConns if lower; 0 = none
//	ebb_cluster_headroom                      gauge    connections the cluster can still take (+Inf without a limit)
//	ebb_cluster_overload_ratio                gauge    demand over capacity; refusal hints grow with it past 1
//	ebb_cluster_drain_turn_held               gauge    1 while this node holds the drain turn
//	ebb_cluster_drain_window_seconds          gauge    the window of this node's drain plan (0 before it drains)
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/web"
	"github.com/ebb-ws/ebb/websocket"
)

// Config is everything `ebb serve` can set. The zero value (but for Addr)
// is a server without admission limits, with compression off, the
// websocket package's read limit and the default timeouts below.
type Config struct {
	// Addr is the TCP address to listen on, e.g. "127.0.0.1:8080";
	// port 0 picks a free one (see Server.Addr).
	Addr string
	// Shed configures admission, refusal, shedding and drain.
	Shed shed.Options
	// Listener bounds and paces the accept loop.
	Listener shed.ListenerOptions
	// Compression, when not nil, accepts permessage-deflate.
	Compression *websocket.CompressionOptions
	// ReadLimit is the largest message accepted (0: the websocket
	// default; negative: no limit, the memory budget still applies).
	ReadLimit int64
	// Origins are browser origin patterns allowed besides the server's
	// own host.
	Origins []string
	// MetricsAddr, when set, serves /metrics, /healthz, /api/stats and the
	// dashboard on a second listener of their own, outside admission
	// control and the accept loop's bound: a connect storm (which gets 503
	// on Addr past HardDemand) cannot hide the server from its monitoring.
	MetricsAddr string
	// ReadHeaderTimeout bounds how long a client may take to send its
	// request headers (default DefaultReadHeaderTimeout); shed.Listener
	// shortens it further as pending places fill up.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive HTTP connection that sends no new
	// request for this long (default DefaultIdleTimeout).
	IdleTimeout time.Duration
	// Broadcast bounds /broadcast: each member's backlog and write time,
	// and (without a cluster) the history resuming clients replay from.
	Broadcast BroadcastLimits
	// Cluster, when set, makes the server a node of an ebb cluster:
	// cluster-aware admission, a cluster-wide broadcast, coordinated
	// drains. See ClusterConfig.
	Cluster *ClusterConfig
	// DrainDelay is how long Shutdown keeps serving with /healthz
	// answering 503 before it starts closing connections, so that a load
	// balancer's health check takes the server out of rotation first: set
	// it to the check's interval times the failures it needs. 0 closes at
	// once.
	DrainDelay time.Duration
	// Progress, when set, receives one line per step of Shutdown
	// ("draining: …"), for a command to show. Nil is silent.
	Progress io.Writer
	// Logger receives the server's logs; nil means silent.
	Logger *slog.Logger
}

// Defaults for Config's timeouts.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
)

// DefaultMaxPending bounds the connections `ebb serve` handles between
// accept and admission: 16 per core, the bound with which bench/'s storm
// (10,000 connects on one core) left the admitted connections' p99 at a
// few milliseconds.
var DefaultMaxPending = 16 * runtime.GOMAXPROCS(0)

// maxKeptEchoBuffer is the largest read buffer an echo connection keeps
// between messages. A larger message gets a buffer of its own that is
// dropped once echoed, so an idle connection never holds a big one.
const maxKeptEchoBuffer = 64 << 10

// Server is the server behind `ebb serve`.
type Server struct {
	cfg      Config
	shedder  *shed.Shedder
	http     *http.Server
	ln       net.Listener
	metrics  *http.Server // nil unless Config.MetricsAddr
	mln      net.Listener
	hub      *hub
	local    *localBus     // nil in a cluster
	node     *cluster.Node // nil without a cluster
	routeURL string        // the node's route URL, as it joined
	advisor  *clusterAdvisor
	history  *history
	stop     context.CancelFunc
	once     sync.Once
	down     chan struct{} // closed when Shutdown has finished
	err      error

	healthDown atomic.Bool // /healthz answers 503: the drain has begun
	healthOK   atomic.Bool // /healthz has answered "ok": never "starting" again
	hadPeers   atomic.Bool // other members were live when Shutdown began
	turnHeld   atomic.Bool
	planMu     sync.Mutex
	plan       *cluster.DrainPlan
}

// New listens on cfg.Addr (and cfg.MetricsAddr), joins the cluster when
// cfg.Cluster is set (within its JoinTimeout), and prepares the handlers;
// Serve runs them. An invalid shed configuration is returned as shed's
// error, an invalid cluster one as the cluster package's.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.DrainDelay < 0 {
		return nil, fmt.Errorf("Config.DrainDelay is %v: want 0 (close at once) or a positive duration", cfg.DrainDelay)
	}
	s := &Server{history: newHistory(600), down: make(chan struct{})}
	if cfg.Cluster != nil {
		cc := *cfg.Cluster // the caller's stays untouched
		cfg.Cluster = &cc
		s.advisor = &clusterAdvisor{s: s}
		cfg.Shed.Advisor = s.advisor
	}
	sh, err := shed.New(&cfg.Shed)
	if err != nil {
		return nil, err
	}
	if cfg.Cluster != nil {
		o := cfg.Shed // with shed's defaults, for the cluster's
		setShedDefaults(&o)
		cfg.Cluster.setDefaults(&o)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Addr, err)
	}
	s.cfg, s.shedder, s.ln = cfg, sh, sh.Listener(ln, &cfg.Listener)
	if cfg.MetricsAddr != "" {
		s.mln, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("cannot listen on %s (metrics): %w", cfg.MetricsAddr, err)
		}
	}
	if cfg.Cluster != nil {
		if err := s.join(cfg.Cluster); err != nil {
			ln.Close()
			if s.mln != nil {
				s.mln.Close()
			}
			return nil, err
		}
		s.hub = newHub(cfg.Broadcast, clusterBus{s.node}, cfg.Logger)
	} else {
		s.local = newLocalBus(cfg.Broadcast.withDefaults())
		s.hub = newHub(cfg.Broadcast, s.local, cfg.Logger)
	}
	if s.mln != nil {
		mux := http.NewServeMux()
		s.handleMonitoring(mux)
		s.metrics = s.newHTTPServer(mux)
	}
	mux := http.NewServeMux()
	// Connections run off the HTTP handler (shed.Handler), so that an idle
	// one costs a few KiB instead of net/http's per-request buffers.
	mux.Handle("/echo", sh.Handler(s.acceptOptions(), s.serveEcho))
	bopts := s.acceptOptions()
	bopts.Subprotocols = []string{ResumeProtocol}
	mux.Handle("/broadcast", withFrom(sh.Handler(bopts, s.serveBroadcast)))
	mux.Handle("/ebb.js", web.Handler())
	mux.Handle("/closecodes.gen.js", web.Handler())
	s.handleMonitoring(mux)
	s.http = s.newHTTPServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.sample(ctx)
	return s, nil
}

// handleMonitoring adds the endpoints that watch the server.
func (s *Server) handleMonitoring(mux *http.ServeMux) {
	mux.HandleFunc("/metrics", s.serveMetrics)
	mux.HandleFunc("/healthz", s.serveHealth)
	mux.HandleFunc("/api/stats", s.serveStats)
	mux.Handle("/", web.Dashboard())
}

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// MetricsAddr returns the address of the monitoring listener, or "" when
// monitoring is served on Addr only.
func (s *Server) MetricsAddr() string {
	if s.mln == nil {
		return ""
	}
	return s.mln.Addr().String()
}

// Shedder returns the admission controller, for its Stats and Limits.
func (s *Server) Shedder() *shed.Shedder { return s.shedder }

// Serve runs the server until Shutdown has finished, and returns nil then.
func (s *Server) Serve() error {
	if s.metrics != nil {
		go s.metrics.Serve(s.mln)
	}
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-s.down
		return nil
	}
	return err
}

// Shutdown drains the server, in steps:
//
//  1. in a cluster, it waits for the cluster's drain turn (at most
//     ClusterConfig.TurnWait), so that drains take turns;
//  2. /healthz answers 503 "draining", and the server keeps serving for
//     Config.DrainDelay while a load balancer moves new clients away;
//  3. it closes the WebSocket connections with the drain code, spread over
//     the drain window: in a cluster, the plan's (cluster.PlanDrain: as
//     fast as the other nodes can admit them, with hints to match),
//     otherwise shed's DrainWindow; the listener stays open meanwhile: new
//     upgrades are refused in the drain mode (1013 with a hint, or 503),
//     and /metrics, /healthz and the dashboard keep answering;
//  4. it releases the turn and leaves the cluster, and once the last
//     connection is gone (or ctx ends, when what remains is force-closed)
//     the HTTP server stops.
//
// Every step ends when ctx does; a canceled ctx closes everything at
// once (Close). It may be called more than once; every call waits for the
// first one to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		defer close(s.down)
		defer s.stop()
		progress := s.cfg.Progress
		if s.node != nil {
			s.hadPeers.Store(len(s.node.View().Live()) > 1) // for RestartConfig
		}
		var turn *cluster.DrainTurn
		if s.node != nil && ctx.Err() == nil {
			turn = s.drainTurn(ctx, progress)
		}
		s.healthDown.Store(true)
		if s.node != nil {
			s.node.SetDraining(true) // reported at once
		}
		if d := s.cfg.DrainDelay; d > 0 && ctx.Err() == nil {
			fmt.Fprintf(progress, "draining: /healthz answers 503; closing connections in %s\n", roundDur(d))
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
		var plan shed.DrainPlan
		if s.node != nil && ctx.Err() == nil {
			plan = s.clusterPlan(ctx, progress)
		}
		window := plan.Window
		if window == 0 {
			window = s.cfg.Shed.DrainWindow
			if window == 0 {
				window = shed.DefaultDrainWindow
			}
		}
		code := s.cfg.Shed.DrainCode
		if code == 0 {
			code = closecode.ServiceRestart
		}
		fmt.Fprintf(progress, "draining: closing %s with %s over %s; new clients are refused meanwhile\n",
			plural(s.shedder.Stats().Connections, "connection"), code, roundDur(window))
		derr := s.shedder.ShutdownWith(ctx, plan)
		var cerr error
		if s.node != nil {
			s.releaseTurn(ctx, turn)
			cerr = s.leaveCluster(ctx)
		} else {
			s.local.close()
		}
		// Closes the listeners and idle keep-alive connections; the
		// drained WebSocket connections are no longer net/http's.
		herr := s.http.Shutdown(ctx)
		if s.metrics != nil {
			herr = errors.Join(herr, s.metrics.Shutdown(ctx))
		}
		s.err = errors.Join(derr, cerr, herr)
	})
	select {
	case <-s.down:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DrainBudget is the longest Shutdown can take by the configuration: the
// wait for the drain turn and for room on the other nodes (in a cluster),
// DrainDelay, and the longest drain window. A context that ends sooner
// cuts the drain short (what is left is force-closed).
func (s *Server) DrainBudget() time.Duration {
	d := s.cfg.DrainDelay
	if cc := s.cfg.Cluster; cc != nil {
		return d + cc.TurnWait + cc.ShortfallWait + cc.Plan.MaxWindow
	}
	if s.cfg.Shed.DrainWindow > 0 {
		return d + s.cfg.Shed.DrainWindow
	}
	return d + shed.DefaultDrainWindow
}

// Close stops the server at once: every connection is dropped without a
// close handshake. Tests and error paths use it; Shutdown is the graceful
// way.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Shutdown(ctx)
	err := s.http.Close()
	if s.metrics != nil {
		err = errors.Join(err, s.metrics.Close())
	}
	return err
}

func (s *Server) acceptOptions() *websocket.AcceptOptions {
	return &websocket.AcceptOptions{
		Compression:    s.cfg.Compression,
		ReadLimit:      s.cfg.ReadLimit,
		OriginPatterns: s.cfg.Origins,
		Logger:         s.cfg.Logger,
	}
}

// serveEcho sends every message back to its sender. It reuses one read
// buffer of at most maxKeptEchoBuffer; a larger message is read into a
// buffer of its own, stays counted in the websocket memory budget until it
// has been written back (ReadHeld), and is let go then — so concurrent
// large echoes cannot hold more than the budget, and an idle connection
// never holds a big buffer.
func (s *Server) serveEcho(ctx context.Context, c *websocket.Conn) {
	var buf []byte
	for {
		typ, msg, release, err := c.ReadHeld(ctx, buf)
		if err != nil {
			release()
			logEnd(s.cfg.Logger, "echo", c, err)
			return
		}
		err = c.Write(ctx, typ, msg)
		release()
		if err != nil {
			return
		}
		if cap(msg) <= maxKeptEchoBuffer {
			buf = msg
		} else {
			buf = nil
		}
	}
}

// serveBroadcast sends every message to every client of /broadcast (of
// every node, in a cluster), resuming a client that speaks
// ResumeProtocol (see resume.go and broadcast.go).
func (s *Server) serveBroadcast(ctx context.Context, c *websocket.Conn) {
	s.hub.serve(ctx, c, s.cfg.ReadLimit)
}

func logEnd(log *slog.Logger, endpoint string, c *websocket.Conn, err error) {
	code := websocket.CloseStatus(err)
	if code < 0 {
		log.Debug(endpoint+": connection ended", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	log.Debug(endpoint+": connection closed", "remote", c.RemoteAddr().String(), "code", int(code), "name", code.Name(), "err", err)
}

// plural formats n with noun, adding an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// setShedDefaults fills in the shed options the cluster derives its own
// from, as shed.New does.
func setShedDefaults(o *shed.Options) {
	if o.RetryBase <= 0 {
		o.RetryBase = shed.DefaultRetryBase
	}
	if o.RetryMax <= 0 {
		o.RetryMax = max(shed.DefaultRetryMax, o.RetryBase)
	}
	if o.DrainHint <= 0 {
		o.DrainHint = shed.DefaultDrainHint
	}
}

// serveHealth answers 200 "ok" while the server admits and 503 "draining"
// from the start of Shutdown (before it takes its drain turn it still
// serves), so that a load balancer's health check moves traffic away
// before the connections are closed (Config.DrainDelay). A node joining or
// rejoining a cluster answers 503 "starting" until its broadcast history
// is ready (cluster.Node.Ready; see historyPending): a /broadcast client
// sent there sooner would wait for it, and be refused with 1013 if it took
// longer than the subscription's bound (a load balancer's check keeps
// clients away, and a deploy tool waiting for 200 restarts the next node
// only then).
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.healthDown.Load() || s.shedder.Stats().Draining {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "draining")
		return
	}
	if s.historyPending() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "starting")
		return
	}
	s.healthOK.Store(true)
	fmt.Fprintln(w, "ok")
}

// historyPending reports whether /healthz should answer "starting": the
// node is in a cluster whose members it joins or rejoins (NATS external,
// routes given, or other members already in its view), its broadcast
// history is not ready yet, and it has not answered "ok" before. A seed
// alone is not held back (it serves /echo, and its history comes only once
// a second node joins), nor is a node that was already in rotation: taking
// it out while a newcomer's JetStream forms would send every client to a
// cluster with no node up.
func (s *Server) historyPending() bool {
	if s.node == nil || s.healthOK.Load() {
		return false
	}
	select {
	case <-s.node.Ready():
		return false
	default:
	}
	o := s.cfg.Cluster.Options
	return o.NATSURL != "" || len(o.Embedded.Routes) > 0 || len(s.node.View().Live()) > 1
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.shedder.WritePrometheus(w)
	s.hub.writePrometheus(w)
	s.writeClusterMetrics(w)
	WriteRuntimeMetrics(w)
}

// statsJSON is the dashboard's view of the server, served at /api/stats.
type statsJSON struct {
	Now     time.Time     `json:"now"`
	Limits  limitsJSON    `json:"limits"`
	Current sample        `json:"current"`
	History []sample      `json:"history"`
	Codes   []codeCountJS `json:"codes"`
}

type limitsJSON struct {
	MaxConns      int     `json:"max_conns"`
	MaxConnsPerIP int     `json:"max_conns_per_ip"`
	Rate          float64 `json:"rate"`
	Burst         int     `json:"burst"`
	HardDemand    int     `json:"hard_demand"`
}

type codeCountJS struct {
	Code      int    `json:"code"`
	Name      string `json:"name"`
	Sent      uint64 `json:"sent"`   // chosen by the server
	Echoed    uint64 `json:"echoed"` // sent back in answer to the client's close
	Received  uint64 `json:"received"`
	Retry     string `json:"retry"`
	OnTheWire bool   `json:"on_wire"`
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	st := s.shedder.Stats()
	l := s.shedder.Limits()
	out := statsJSON{
		Now:     time.Now(),
		Limits:  limitsJSON{l.MaxConns, l.MaxConnsPerIP, l.Rate, l.Burst, l.HardDemand},
		Current: sampleOf(time.Now(), st),
		History: s.history.snapshot(),
	}
	seen := map[closecode.Code]bool{}
	for c := range st.CloseSent {
		seen[c] = true
	}
	for c := range st.CloseReceived {
		seen[c] = true
	}
	for c := range st.CloseEchoed {
		seen[c] = true
	}
	for c := range seen {
		info := closecode.Lookup(c)
		out.Codes = append(out.Codes, codeCountJS{int(c), info.Name, st.CloseSent[c], st.CloseEchoed[c], st.CloseReceived[c], info.Retry.String(), info.OnWire})
	}
	sortCodes(out.Codes)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// sample is one point of the dashboard's timeline.
type sample struct {
	Time        time.Time `json:"t"`
	Connections int       `json:"connections"`
	Admitted    uint64    `json:"admitted"`
	Refused     uint64    `json:"refused"`
	Shed        uint64    `json:"shed"`
	Drained     uint64    `json:"drained"`
	Draining    bool      `json:"draining"`
}

func sampleOf(t time.Time, st shed.Stats) sample {
	return sample{t, st.Connections, st.Admitted, st.RefusedTotal, st.Shed, st.Drained, st.Draining}
}

// history keeps the last n samples, one per second.
type history struct {
	mu   sync.Mutex
	buf  []sample
	next int
	full bool
}

func newHistory(n int) *history { return &history{buf: make([]sample, n)} }

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf[h.next] = s
	h.next = (h.next + 1) % len(h.buf)
	if h.next == 0 {
		h.full = true
	}
}

func (h *history) snapshot() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]sample(nil), h.buf[:h.next]...)
	}
	return append(append([]sample(nil), h.buf[h.next:]...), h.buf[:h.next]...)
}

func (s *Server) sample(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.history.add(sampleOf(now, s.shedder.Stats()))
		}
	}
}
