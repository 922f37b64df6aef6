package shed

import (
	"context"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// DefaultCannedWriteTimeout bounds the write of the listener's canned 503
// when ListenerOptions.WriteTimeout is zero. The response is a couple of
// hundred bytes written to a socket whose send buffer is empty, so it never
// waits in practice; the deadline only keeps a pathological peer from
// stalling the accept loop.
const DefaultCannedWriteTimeout = 5 * time.Millisecond

// ListenerOptions configure Shedder.Listener. The zero value (or nil) is
// usable: refuse at the listener only past the Shedder's hard ceiling.
type ListenerOptions struct {
	// MaxPending bounds the connections accepted through the listener that
	// have not become admitted WebSocket connections yet: HTTP requests
	// being read, handshakes in progress, refusals still lingering for the
	// client's Close frame, and idle keep-alive HTTP connections. Past it,
	// new connections get the canned 503 (reason in_flight) before net/http
	// sees them. A connection stops being pending when the handler behind
	// Middleware hijacks it (Accept and Handler do) or when it is closed.
	// It bounds the goroutines and handshake work a connect storm can
	// queue ahead of the established connections. 0 means no bound.
	MaxPending int
	// WriteTimeout bounds the write of the canned 503. Default
	// DefaultCannedWriteTimeout.
	WriteTimeout time.Duration
}

// Listener is a net.Listener that refuses connections in its Accept loop
// while the Shedder is past its hard ceiling or MaxPending connections are
// pending; create it with Shedder.Listener. Its methods are safe for
// concurrent use.
type Listener struct {
	net.Listener
	s            *Shedder
	maxPending   int64
	writeTimeout time.Duration

	pending atomic.Int64
	refused atomic.Uint64

	bufMu sync.Mutex
	buf   []byte // scratch for the canned response, reused under bufMu
}

// Listener wraps inner so that excess connections are answered before
// net/http spends anything on them. A connection is refused in Accept,
// with no goroutine and no HTTP parsing, when
//
//   - runtime pressure is at or above Limits.HardPressure,
//   - demand (connections plus recent refusals) is at or above
//     Limits.HardDemand,
//   - ListenerOptions.MaxPending connections are pending, or
//   - Shutdown has started and Options.DrainMode is ModeHTTP.
//
// The refused client gets a pre-rendered "HTTP/1.1 503 Service
// Unavailable" with Retry-After (the jittered hint, rounded up to whole
// seconds), "Connection: close" and the reason as the body, written once
// with a short deadline; then the connection is closed without reading the
// request. Refusals are counted in Stats and ebb_refused_total with mode
// http; those past the hard ceiling add to demand like any other refusal,
// MaxPending ones do not. Options.OnState is not
// called for them, since there is no request to report. Below the ceiling
// every connection goes to the server unchanged, and Middleware decides on
// it as before (1013 refusals included).
//
// Trade-offs:
//   - A browser's WebSocket API reports a 503 only as close code 1006, with
//     no reason and no Retry-After; the 1013 path below the ceiling is the
//     one that tells browsers when to come back. Set the ceiling well
//     above MaxConns (e.g. 2×) so that only a storm reaches it.
//   - The listener refuses every connection past the ceiling, not only
//     WebSocket upgrades: serve health checks and metrics on another
//     listener. Idle keep-alive HTTP connections count as pending.
//   - The 503 is plain HTTP/1.1. Put the listener under TLS
//     (tls.NewListener(sh.Listener(ln, nil), cfg)) and a TLS client sees
//     a failed handshake instead of the 503, which still costs the server
//     almost nothing.
//
// The listener takes the Shedder's lock once per accepted connection, as
// admission does per request.
func (s *Shedder) Listener(inner net.Listener, opts *ListenerOptions) *Listener {
	var o ListenerOptions
	if opts != nil {
		o = *opts
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultCannedWriteTimeout
	}
	return &Listener{
		Listener:     inner,
		s:            s,
		maxPending:   int64(max(0, o.MaxPending)),
		writeTimeout: o.WriteTimeout,
	}
}

// Accept returns the next connection the Shedder has room to consider,
// answering and closing the ones it has not. Errors come from the inner
// listener.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		d, refuse := l.s.admitConn(l.pending.Load(), l.maxPending)
		if !refuse {
			l.pending.Add(1)
			return wrapPending(c, l), nil
		}
		l.refuse(c, d)
	}
}

// Pending returns the connections accepted and not yet admitted or closed
// (see ListenerOptions.MaxPending).
func (l *Listener) Pending() int { return int(l.pending.Load()) }

// Refused returns how many connections this listener answered with its
// canned 503. They are also in the Shedder's Stats.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// admitConn decides at accept time whether a connection must be refused
// before any HTTP is read: only the hard limits apply here (the soft ones
// need the request and are Middleware's job).
func (s *Shedder) admitConn(pending, maxPending int64) (decision, bool) {
	var d decision
	now := s.now()
	var rd *reading
	if s.pressureOn.Load() {
		rd = s.sampler.read(now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.limits
	switch {
	case s.draining && s.opts.DrainMode == ModeHTTP:
		d.reason, d.mode, d.code = ReasonDraining, ModeHTTP, s.opts.DrainCode
		d.hint = s.jitterLocked(s.opts.DrainHint)
		return d, true
	case l.HardPressure > 0:
		if ratio, why := rd.ratio(l); ratio >= l.HardPressure {
			s.refuseLocked(&d, why, ModeHTTP, ratio, now)
			return d, true
		}
	}
	demand := float64(s.conns) + s.demand.value(now, s.opts.DemandHalfLife)
	switch {
	case l.HardDemand > 0 && demand >= float64(l.HardDemand):
		s.refuseLocked(&d, ReasonConns, ModeHTTP, overload(demand+1, l.MaxConns, l.HardDemand), now)
	case maxPending > 0 && pending >= maxPending:
		// Not added to demand: MaxPending paces handshakes, it says nothing
		// about room for connections. Counting these refusals would trip
		// HardDemand within one storm and turn away the pending clients
		// too, with slots still free.
		d.reason, d.mode, d.code = ReasonInFlight, ModeHTTP, closecode.TryAgainLater
		d.hint = s.hintLocked(float64(pending+1) / float64(maxPending))
	default:
		return d, false
	}
	return d, true
}

// refuse writes the canned 503 to c and closes it. The refusal is counted
// before the write, as Middleware's are.
func (l *Listener) refuse(c net.Conn, d decision) {
	s := l.s
	s.stats.refused[d.reason][ModeHTTP].Add(1)
	l.refused.Add(1)
	if lg := s.log(); lg != nil && lg.Enabled(context.Background(), slog.LevelDebug) {
		lg.LogAttrs(context.Background(), slog.LevelDebug, "shed: refused connection at the listener",
			slog.String("reason", d.reason.String()), slog.String("mode", ModeHTTP.String()),
			slog.String("client", c.RemoteAddr().String()), slog.Duration("hint", d.hint))
	}
	l.bufMu.Lock()
	l.buf = appendCanned503(l.buf[:0], d.reason, d.hint)
	if c.SetWriteDeadline(time.Now().Add(l.writeTimeout)) == nil {
		_, _ = c.Write(l.buf)
	}
	l.bufMu.Unlock()
	_ = c.Close()
}

// The fixed parts of the canned 503. Only Retry-After, Content-Length and
// the body vary, and they are appended into a reused buffer, so a refusal
// allocates nothing.
const (
	canned503Head = "HTTP/1.1 503 Service Unavailable\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		"Cache-Control: no-store\r\n" +
		"Connection: close\r\n" +
		"Retry-After: "
	canned503Length = "\r\nContent-Length: "
	canned503End    = "\r\n\r\n"
)

// appendCanned503 appends the listener's 503 for reason and hint. The body
// is the reason with the hint in the form of closecode.FormatRetryHint
// ("server at capacity; retry-after=4.5"), the same text a 1013 refusal
// carries, and Retry-After is the hint in whole seconds, rounded up.
func appendCanned503(dst []byte, reason Reason, hint time.Duration) []byte {
	hint = max(hint, 0)
	tenths := int64(math.Ceil(hint.Seconds() * 10))
	text := reason.Text()
	bodyLen := len(text) + len("; retry-after=") + digits(tenths/10) + 1 // trailing newline
	if tenths%10 != 0 {
		bodyLen += 2
	}
	dst = append(dst, canned503Head...)
	dst = strconv.AppendInt(dst, max(1, (tenths+9)/10), 10)
	dst = append(dst, canned503Length...)
	dst = strconv.AppendInt(dst, int64(bodyLen), 10)
	dst = append(dst, canned503End...)
	dst = append(dst, text...)
	dst = append(dst, "; retry-after="...)
	dst = strconv.AppendInt(dst, tenths/10, 10)
	if tenths%10 != 0 {
		dst = append(dst, '.', byte('0'+tenths%10))
	}
	return append(dst, '\n')
}

// digits returns the number of decimal digits of n ≥ 0.
func digits(n int64) int {
	d := 1
	for n >= 10 {
		n /= 10
		d++
	}
	return d
}

// pendingConn is a connection accepted by a Listener; it counts as pending
// until it is admitted (hijacked through Middleware) or closed.
type pendingConn struct {
	net.Conn
	l     *Listener
	state atomic.Uint32 // connPending, connAdmitted or connClosed
}

const (
	connPending uint32 = iota
	connAdmitted
	connClosed
)

// sysPendingConn also forwards syscall.Conn, which ebb's websocket uses to
// wait for data on idle connections without holding a read buffer.
type sysPendingConn struct {
	*pendingConn
}

// SyscallConn returns the raw connection of the inner net.Conn.
func (c sysPendingConn) SyscallConn() (syscall.RawConn, error) {
	return c.pendingConn.Conn.(syscall.Conn).SyscallConn()
}

func wrapPending(c net.Conn, l *Listener) net.Conn {
	pc := &pendingConn{Conn: c, l: l}
	if _, ok := c.(syscall.Conn); ok {
		return sysPendingConn{pc}
	}
	return pc
}

// Close closes the connection and, if it was still pending, frees its
// place.
func (c *pendingConn) Close() error {
	if c.state.Swap(connClosed) == connPending {
		c.l.pending.Add(-1)
	}
	return c.Conn.Close()
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *pendingConn) NetConn() net.Conn { return c.Conn }

// admitted marks the connection as no longer pending.
func (c *pendingConn) admitted() {
	if c.state.CompareAndSwap(connPending, connAdmitted) {
		c.l.pending.Add(-1)
	}
}

// markAdmitted tells the Listener that accepted nc, if any, that nc is an
// admitted WebSocket connection now. It looks through wrappers that expose
// NetConn (tls.Conn).
func markAdmitted(nc net.Conn) {
	for range 4 { // wrappers rarely nest deeper
		switch c := nc.(type) {
		case *pendingConn:
			c.admitted()
			return
		case sysPendingConn:
			c.admitted()
			return
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return
		}
	}
}
