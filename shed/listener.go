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

// DefaultPendingWait is how long Accept holds a connection waiting for a
// pending place when ListenerOptions.PendingWait is zero.
const DefaultPendingWait = 250 * time.Millisecond

// ListenerOptions configure Shedder.Listener. The zero value (or nil) is
// usable: pace the accept loop during bursts and refuse there only past
// the Shedder's hard ceiling; set MaxPending too.
type ListenerOptions struct {
	// MaxPending bounds the connections accepted through the listener that
	// are not admitted WebSocket connections yet: HTTP requests being read,
	// handshakes in progress, and idle keep-alive HTTP connections. A
	// connection stops being pending when the handler behind Middleware
	// hijacks it (Accept and Handler do), when a 1013 refusal has been
	// written to it, or when it is closed.
	//
	// At the bound, Accept waits (up to PendingWait) for a place before it
	// hands the server the next connection; the clients behind it wait in
	// the kernel's listen queue, where they cost the process nothing. This
	// bounds a connect storm's work: the server's scheduler never has more
	// than MaxPending handshakes queued ahead of the established
	// connections' reads, so their latency holds, while every client still
	// gets its answer (admitted, 1013, or 503 past the hard ceiling) in
	// turn.
	// 16 × GOMAXPROCS kept the cores busy and the admitted connections'
	// latency low in bench/'s storm (ebb serve's default); 0 means no
	// bound, with which pacing cannot protect anything (see Listener).
	MaxPending int
	// PendingWait bounds how long Accept waits for a pending place. When
	// it runs out (the pending connections are slow, e.g. clients that
	// never finish their request), the connection in hand gets the canned
	// 503 (reason in_flight) and Accept moves on, so a handful of stalled
	// clients cannot stop the listener. Default DefaultPendingWait; a
	// negative value refuses at once when MaxPending connections are
	// pending.
	PendingWait time.Duration
	// NoPacing turns off pacing (see Listener): Accept then takes
	// connections as fast as they come, however busy the process is. For
	// servers whose work is handshakes rather than established
	// connections.
	NoPacing bool
	// WriteTimeout bounds the write of the canned 503. Default
	// DefaultCannedWriteTimeout.
	WriteTimeout time.Duration
}

// Listener is a net.Listener that protects established connections from
// a connect storm: it paces and bounds the connections it hands to the
// server and refuses the excess in its Accept loop. Create it with
// Shedder.Listener. Its methods are safe for concurrent use.
type Listener struct {
	net.Listener
	s            *Shedder
	maxPending   int64
	pendingWait  time.Duration
	writeTimeout time.Duration

	pending atomic.Int64
	refused atomic.Uint64
	// places holds one token per pending connection when MaxPending > 0:
	// Accept waits on it, and a connection leaving pending frees its token.
	places    chan struct{}
	closed    chan struct{} // closed by Close, ends a wait for a place
	closeOnce sync.Once
	pacer     *pacer // nil with NoPacing

	bufMu sync.Mutex
	buf   []byte // scratch for the canned response, reused under bufMu
}

// Listener wraps inner so that a connect storm costs the established
// connections as little as possible. It does three things in Accept:
//
// Pacing (unless ListenerOptions.NoPacing). During a burst (more than
// 4 × GOMAXPROCS connections within a millisecond) the accept loop steps
// aside after each batch: it sleeps 100 µs, which lets the Go scheduler
// poll the network and run the established connections, and then waits
// until no goroutine is runnable (at most 2 ms) before it takes more. New
// connections are handled in the time the established ones leave free;
// pace.go says why Go's scheduler needs this.
//
// Bounding (ListenerOptions.MaxPending). At most MaxPending connections
// are between accept and admission at a time; the next waits in the
// kernel's listen queue. Without a bound, pacing cannot help: net/http
// starts a goroutine per accepted connection, and they all queue ahead.
//
// Refusing, with no goroutine and no HTTP parsing, when
//
//   - runtime pressure is at or above Limits.HardPressure,
//   - demand (connections plus recent refusals) is at or above
//     Limits.HardDemand,
//   - MaxPending connections are pending and none left within
//     ListenerOptions.PendingWait, or
//   - Shutdown has started and Options.DrainMode is ModeHTTP.
//
// The refused client gets a pre-rendered "HTTP/1.1 503 Service
// Unavailable" with Retry-After (the jittered hint, rounded up to whole
// seconds), "Connection: close" and the reason as the body, written once
// with a short deadline; then the connection is closed without reading the
// request. Refusals are counted in Stats and ebb_refused_total with mode
// http; those past the hard ceiling add to demand like any other refusal,
// MaxPending ones do not. Options.OnState is not called for them, since
// there is no request to report. Every other connection goes to the server
// unchanged, and Middleware decides on it as before (1013 refusals
// included).
//
// In bench/ (10,000 simultaneous connects, MaxConns 1,000, one core), the
// admitted clients' echo p99 went from 1.5 ms calm to 0.7 s during the
// storm with Middleware alone, and to 3.5–3.7 ms with this Listener
// (MaxPending 16, HardDemand 2,000), no more than a storm aimed at another
// process on the same machine costs them; the storm took longer to answer
// (about 5 s instead of 3), its clients waiting in the listen queue.
//
// Trade-offs:
//   - A browser's WebSocket API reports a 503 only as close code 1006, with
//     no reason and no Retry-After; the 1013 path below the ceiling is the
//     one that tells browsers when to come back. Set the ceiling well
//     above MaxConns (e.g. 2×) so that only a storm reaches it.
//   - The listener paces and refuses every connection, not only WebSocket
//     upgrades: serve health checks and metrics on another listener. Idle
//     keep-alive HTTP connections count as pending.
//   - Pacing caps the accept rate while the process is busy (a batch per
//     few ms per core); a server whose work is handshakes should set
//     NoPacing.
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
	if o.PendingWait == 0 {
		o.PendingWait = DefaultPendingWait
	}
	l := &Listener{
		Listener:     inner,
		s:            s,
		maxPending:   int64(max(0, o.MaxPending)),
		pendingWait:  max(0, o.PendingWait),
		writeTimeout: o.WriteTimeout,
		closed:       make(chan struct{}),
	}
	if l.maxPending > 0 {
		l.places = make(chan struct{}, l.maxPending)
	}
	if !o.NoPacing {
		l.pacer = newPacer()
	}
	return l
}

// Accept returns the next connection the Shedder has room to consider,
// answering and closing the ones it has not. At MaxPending it waits for a
// place first (see ListenerOptions.MaxPending). Errors come from the inner
// listener.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.pacer != nil && l.pacer.take(time.Now()) {
			l.pacer.stepAside()
		}
		if d, refuse := l.s.admitConn(); refuse {
			l.refuse(c, d)
			continue
		}
		if !l.enterPending() {
			l.refuse(c, l.s.pendingRefusal(l.maxPending))
			continue
		}
		return wrapPending(c, l), nil
	}
}

// enterPending takes a pending place, waiting up to PendingWait for one
// at MaxPending. It reports false if none freed in time or the listener
// was closed.
func (l *Listener) enterPending() bool {
	if l.places != nil {
		select {
		case l.places <- struct{}{}:
		default:
			if l.pendingWait <= 0 {
				return false
			}
			t := time.NewTimer(l.pendingWait)
			defer t.Stop()
			select {
			case l.places <- struct{}{}:
			case <-t.C:
				return false
			case <-l.closed:
				return false
			}
		}
	}
	l.pending.Add(1)
	return true
}

// leavePending frees the place of a connection that was pending.
func (l *Listener) leavePending() {
	l.pending.Add(-1)
	if l.places != nil {
		<-l.places
	}
}

// Close closes the inner listener and ends a wait for a pending place.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Pending returns the connections accepted and not yet admitted, refused
// with 1013, or closed (see ListenerOptions.MaxPending).
func (l *Listener) Pending() int { return int(l.pending.Load()) }

// Refused returns how many connections this listener answered with its
// canned 503. They are also in the Shedder's Stats.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// admitConn decides at accept time whether a connection must be refused
// before any HTTP is read: only the hard limits apply here (the soft ones
// need the request and are Middleware's job).
func (s *Shedder) admitConn() (decision, bool) {
	var d decision
	now := s.now()
	var rd *reading
	if s.pressureOn.Load() {
		rd = s.sampler.read(now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining && s.opts.DrainMode == ModeHTTP {
		d.reason, d.mode, d.code = ReasonDraining, ModeHTTP, s.opts.DrainCode
		d.hint = s.jitterLocked(s.opts.DrainHint)
		return d, true
	}
	ratio, why := rd.ratio(&s.limits)
	demand := float64(s.conns) + s.demand.value(now, s.opts.DemandHalfLife)
	return d, s.hardLimitLocked(&d, ratio, why, demand, now)
}

// pendingRefusal is the 503 for a connection that found no pending place
// within PendingWait. It is not added to demand: MaxPending paces
// handshakes and says nothing about room for connections. Counting these
// refusals would trip HardDemand within one storm and turn away the
// pending clients too, with slots still free.
func (s *Shedder) pendingRefusal(maxPending int64) decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return decision{reason: ReasonInFlight, mode: ModeHTTP, code: closecode.TryAgainLater,
		hint: s.hintLocked(float64(maxPending+1) / float64(maxPending))}
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
// until it is admitted (hijacked through Middleware), refused with 1013,
// or closed.
type pendingConn struct {
	net.Conn
	l     *Listener
	state atomic.Uint32 // connPending, connAdmitted or connClosed
}

const (
	connPending uint32 = iota
	connSettled        // admitted, or refused and lingering for the Close
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
		c.l.leavePending()
	}
	return c.Conn.Close()
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *pendingConn) NetConn() net.Conn { return c.Conn }

// settled marks the connection as no longer pending.
func (c *pendingConn) settled() {
	if c.state.CompareAndSwap(connPending, connSettled) {
		c.l.leavePending()
	}
}

// leftPending tells the Listener that accepted nc, if any, that nc is not
// pending any more: it is an admitted WebSocket connection, or a refused
// one whose 1013 is written. It looks through wrappers that expose NetConn
// (tls.Conn).
func leftPending(nc net.Conn) {
	for range 4 { // wrappers rarely nest deeper
		switch c := nc.(type) {
		case *pendingConn:
			c.settled()
			return
		case sysPendingConn:
			c.settled()
			return
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return
		}
	}
}
