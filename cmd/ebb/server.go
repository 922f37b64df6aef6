package main

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

// serverConfig is everything `ebb serve` (and `ebb demo`, which runs the
// same server in-process) can set.
type serverConfig struct {
	Addr        string
	Shed        shed.Options
	Listener    shed.ListenerOptions          // the accept loop's bound and pacing
	Compression *websocket.CompressionOptions // nil: compression off
	ReadLimit   int64
	Origins     []string
	Logger      *slog.Logger
}

// defaultMaxPending bounds the connections `ebb serve` handles between
// accept and admission: 16 per core, the bound with which bench/'s storm
// (10,000 connects on one core) left the admitted connections' p99 at a
// few milliseconds.
var defaultMaxPending = 16 * runtime.GOMAXPROCS(0)

// ebbServer is the server behind `ebb serve`: /echo and /broadcast behind
// shed's admission control, /metrics, a dashboard at /, and the browser
// client at /ebb.js.
type ebbServer struct {
	cfg     serverConfig
	shedder *shed.Shedder
	http    *http.Server
	ln      net.Listener
	hub     *hub
	history *history
	stop    context.CancelFunc
	done    chan struct{}
}

// newServer listens on cfg.Addr and prepares the handlers; Serve runs them.
func newServer(cfg serverConfig) (*ebbServer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Addr, err)
	}
	sh, err := shed.New(&cfg.Shed)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &ebbServer{cfg: cfg, shedder: sh, ln: sh.Listener(ln, &cfg.Listener), hub: newHub(), history: newHistory(600), done: make(chan struct{})}
	mux := http.NewServeMux()
	// Connections run off the HTTP handler (shed.Handler), so that an idle
	// one costs a few KiB instead of net/http's per-request buffers.
	mux.Handle("/echo", sh.Handler(s.acceptOptions(), s.serveEcho))
	mux.Handle("/broadcast", sh.Handler(s.acceptOptions(), s.serveBroadcast))
	mux.HandleFunc("/metrics", s.serveMetrics)
	mux.HandleFunc("/api/stats", s.serveStats)
	mux.Handle("/ebb.js", web.Handler())
	mux.Handle("/closecodes.gen.js", web.Handler())
	mux.Handle("/", web.Dashboard())
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.sample(ctx)
	return s, nil
}

// Addr returns the address the server listens on.
func (s *ebbServer) Addr() string { return s.ln.Addr().String() }

// Serve runs the HTTP server until Shutdown.
func (s *ebbServer) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, drains WebSocket connections with the drain
// code spread over the drain window, and force-closes what remains when ctx
// ends.
func (s *ebbServer) Shutdown(ctx context.Context) error {
	defer s.stop()
	drained := make(chan error, 1)
	s.http.RegisterOnShutdown(func() { drained <- s.shedder.Shutdown(ctx) })
	herr := s.http.Shutdown(ctx)
	derr := <-drained
	return errors.Join(herr, derr)
}

func (s *ebbServer) acceptOptions() *websocket.AcceptOptions {
	return &websocket.AcceptOptions{
		Compression:    s.cfg.Compression,
		ReadLimit:      s.cfg.ReadLimit,
		OriginPatterns: s.cfg.Origins,
		Logger:         s.cfg.Logger,
	}
}

// serveEcho sends every message back to its sender.
func (s *ebbServer) serveEcho(ctx context.Context, c *websocket.Conn) {
	var buf []byte
	for {
		typ, msg, err := c.ReadInto(ctx, buf)
		buf = msg
		if err != nil {
			s.logEnd("echo", c, err)
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// serveBroadcast sends every message to every client of /broadcast.
func (s *ebbServer) serveBroadcast(ctx context.Context, c *websocket.Conn) {
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

func (s *ebbServer) logEnd(endpoint string, c *websocket.Conn, err error) {
	code := websocket.CloseStatus(err)
	if code < 0 {
		s.cfg.Logger.Debug(endpoint+": connection ended", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	s.cfg.Logger.Debug(endpoint+": connection closed", "remote", c.RemoteAddr().String(), "code", int(code), "name", code.Name(), "err", err)
}

func (s *ebbServer) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.shedder.WritePrometheus(w)
	writeRuntimeMetrics(w)
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

func (s *ebbServer) serveStats(w http.ResponseWriter, r *http.Request) {
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

func (s *ebbServer) sample(ctx context.Context) {
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
