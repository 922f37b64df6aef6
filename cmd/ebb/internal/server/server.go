// Package server is the WebSocket server that `ebb serve` runs and that
// `ebb demo` and the tests start in-process: /echo and /broadcast behind
// shed's admission control, /metrics, /healthz, a live dashboard at / and
// the browser client at /ebb.js.
//
// It is a library first (New, Serve, Shutdown), so that the command only
// parses flags and prints. Everything a hostile client could make it hold
// is bounded: request headers by the accept loop's adaptive timeout
// (shed.Listener) and ReadHeaderTimeout, idle keep-alive connections by
// IdleTimeout, message memory by the websocket package's read limit and
// memory budget, echo buffers by maxKeptEchoBuffer, and each broadcast
// member's queue by bytes and by time (see hub.go).
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/closecode"
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
	// Broadcast bounds each /broadcast member's queue.
	Broadcast BroadcastLimits
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
	cfg     Config
	shedder *shed.Shedder
	http    *http.Server
	ln      net.Listener
	metrics *http.Server // nil unless Config.MetricsAddr
	mln     net.Listener
	hub     *hub
	history *history
	stop    context.CancelFunc
	once    sync.Once
	down    chan struct{} // closed when Shutdown has finished
	err     error
}

// New listens on cfg.Addr (and cfg.MetricsAddr) and prepares the handlers;
// Serve runs them. An invalid shed configuration is returned as shed's
// error.
func New(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	sh, err := shed.New(&cfg.Shed)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Addr, err)
	}
	s := &Server{
		cfg:     cfg,
		shedder: sh,
		ln:      sh.Listener(ln, &cfg.Listener),
		hub:     newHub(cfg.Broadcast, cfg.Logger),
		history: newHistory(600),
		down:    make(chan struct{}),
	}
	if cfg.MetricsAddr != "" {
		s.mln, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("cannot listen on %s (metrics): %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		s.handleMonitoring(mux)
		s.metrics = s.newHTTPServer(mux)
	}
	mux := http.NewServeMux()
	// Connections run off the HTTP handler (shed.Handler), so that an idle
	// one costs a few KiB instead of net/http's per-request buffers.
	mux.Handle("/echo", sh.Handler(s.acceptOptions(), s.serveEcho))
	mux.Handle("/broadcast", sh.Handler(s.acceptOptions(), s.serveBroadcast))
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

// Shutdown drains the server. While the WebSocket connections are closed
// with the drain code over the drain window, the listener stays open: new
// upgrades are refused in the drain mode (1013 with a hint, or 503), and
// /metrics, /healthz (503 "draining") and the dashboard keep answering.
// Only when the last connection is gone (or ctx ends, when what remains is
// force-closed) does the HTTP server stop. It may be called more than once;
// every call waits for the first one to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		defer close(s.down)
		defer s.stop()
		derr := s.shedder.Shutdown(ctx)
		// Closes the listeners and idle keep-alive connections; the
		// drained WebSocket connections are no longer net/http's.
		herr := s.http.Shutdown(ctx)
		if s.metrics != nil {
			herr = errors.Join(herr, s.metrics.Shutdown(ctx))
		}
		s.hub.close()
		s.err = errors.Join(derr, herr)
	})
	select {
	case <-s.down:
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
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
			s.logEnd("echo", c, err)
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

// serveBroadcast sends every message to every client of /broadcast.
func (s *Server) serveBroadcast(ctx context.Context, c *websocket.Conn) {
	m := s.hub.join(c)
	defer s.hub.leave(m)
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			s.logEnd("broadcast", c, err)
			return
		}
		s.hub.send(typ, msg)
	}
}

func (s *Server) logEnd(endpoint string, c *websocket.Conn, err error) {
	code := websocket.CloseStatus(err)
	if code < 0 {
		s.cfg.Logger.Debug(endpoint+": connection ended", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	s.cfg.Logger.Debug(endpoint+": connection closed", "remote", c.RemoteAddr().String(), "code", int(code), "name", code.Name(), "err", err)
}

// serveHealth answers 200 "ok" while the server admits and 503 "draining"
// once it drains, so that a load balancer's health check moves traffic away
// before the connections are closed.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if s.shedder.Stats().Draining {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "draining")
		return
	}
	fmt.Fprintln(w, "ok")
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.shedder.WritePrometheus(w)
	s.hub.writePrometheus(w)
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
	Sent      uint64 `json:"sent"`
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
	for c := range seen {
		info := closecode.Lookup(c)
		out.Codes = append(out.Codes, codeCountJS{int(c), info.Name, st.CloseSent[c], st.CloseReceived[c], info.Retry.String(), info.OnWire})
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
