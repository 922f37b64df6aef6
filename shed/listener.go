package shed

import (
	"context"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Defaults for the zero values of ListenerOptions fields.
const (
	// DefaultCannedWriteTimeout bounds the write of the listener's canned
	// 503 (and 408). The response is a couple of hundred bytes written to
	// a socket whose send buffer is empty, so it never waits in practice;
	// the deadline only keeps a pathological peer from stalling the
	// accept loop.
	DefaultCannedWriteTimeout = 5 * time.Millisecond
	// DefaultPendingWait is how long Accept holds a connection waiting
	// for a pending place.
	DefaultPendingWait = 250 * time.Millisecond
	// DefaultHeaderTimeout is the time a connection has to send its
	// request headers while at most half the pending places are used.
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultMinHeaderTimeout is the time a connection has to send its
	// request headers when every pending place is used.
	DefaultMinHeaderTimeout = time.Second
	// DefaultIdleTimeout is how long an idle keep-alive connection is
	// kept while at most half the pending places are used.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultMaxIdle is the least number of idle keep-alive connections
	// kept by default (MaxPending if that is larger).
	DefaultMaxIdle = 64
)

// ListenerOptions configure Shedder.Listener. The zero value (or nil) is
// usable: pace the accept loop during bursts, refuse there only past the
// Shedder's hard ceiling, time out slow request headers after 10 s, keep at
// most 64 idle keep-alive connections for 30 s each. Set MaxPending too:
// most protections scale with it.
type ListenerOptions struct {
	// MaxPending bounds the pending connections: those accepted through
	// the listener that are receiving a request's headers or are being
	// handled (admission, handshake) before the response begins. A
	// connection stops being pending when the response begins: a 101
	// (the WebSocket is open, or refused with a 1013 Close frame), any
	// other response (it becomes an HTTP connection), a hijack through
	// Middleware, or when it is closed. Idle keep-alive connections are
	// not pending (see MaxIdle); a keep-alive connection whose next
	// request arrives needs a place again.
	//
	// At the bound, Accept waits (up to PendingWait) for a place before
	// it hands the server the next connection; the clients behind it wait
	// in the kernel's listen queue, where they cost the process nothing.
	// This bounds a connect storm's work: the server's scheduler never has
	// more than MaxPending handshakes queued ahead of the established
	// connections' reads, so their latency holds, while every client still
	// gets its answer (admitted, 1013, or 503 past the hard ceiling) in
	// turn. 16 × GOMAXPROCS kept the cores busy and the admitted
	// connections' latency low in bench/'s storm (ebb serve's default); 0
	// means no bound, with which pacing cannot protect anything and the
	// header and idle timeouts do not adapt (see Listener).
	MaxPending int
	// PendingWait bounds how long Accept waits for a pending place. When
	// it runs out, the connection in hand gets the canned 503 (reason
	// in_flight) and Accept moves on, so a handful of stalled clients
	// cannot stop the listener. Default DefaultPendingWait (250 ms); a
	// negative value refuses at once when no place is free.
	PendingWait time.Duration
	// MaxPendingPerIP is an address's share of the pending places when
	// they are contended: while every place is taken, a new connection
	// from an address that already has MaxPendingPerIP connections still
	// sending their request, the oldest for at least the grace time
	// (MinHeaderTimeout/4), is refused at once with the canned 503
	// (reason pending_per_ip) instead of waiting. A connection from
	// another address can also take the place of a slow one (see
	// Listener), never one from its own. Default max(2, MaxPending/4);
	// negative turns the rule off. Addresses are grouped as for
	// Limits.MaxConnsPerIP (Options.IPv6PrefixBits); the addresses in
	// Options.TrustedProxies are exempt, since many clients stand behind
	// them (the Listener sees the proxy, not X-Forwarded-For).
	MaxPendingPerIP int
	// HeaderTimeout is how long a connection may take to send its
	// request headers (from accept, or from the first byte of a
	// keep-alive connection's next request) while at most half the
	// pending places are used. Past half, the time shrinks linearly to
	// MinHeaderTimeout when every place is used; a connection past its
	// time is answered 408 (503 with a retry hint past half) and closed.
	// net/http's own ReadHeaderTimeout and ReadTimeout apply as well.
	// Default DefaultHeaderTimeout (10 s); negative turns the Listener's
	// header timeout off.
	HeaderTimeout time.Duration
	// MinHeaderTimeout is the header time when every pending place is
	// used, and the floor of the idle timeout. A quarter of it is the
	// grace time after which a connection still sending its headers may
	// lose its place to a new connection from another address when every
	// place is taken (see Listener). Default DefaultMinHeaderTimeout
	// (1 s); it is capped at HeaderTimeout.
	MinHeaderTimeout time.Duration
	// MaxIdle bounds the idle keep-alive HTTP connections: those whose
	// response is written and that wait for their next request. Past it
	// the connection idle longest is closed. Default
	// max(DefaultMaxIdle, MaxPending); negative keeps none (a connection
	// is closed when its response is done).
	MaxIdle int
	// IdleTimeout is how long an idle keep-alive connection is kept while
	// at most half the pending places are used; past half it shrinks
	// like the header time, to MinHeaderTimeout when every place is used.
	// net/http's own IdleTimeout applies as well. Default
	// DefaultIdleTimeout (30 s); negative keeps idle connections until
	// MaxIdle pushes them out.
	IdleTimeout time.Duration
	// NoPacing turns off pacing (see Listener): Accept then takes
	// connections as fast as they come, however busy the process is. For
	// servers whose work is handshakes rather than established
	// connections.
	NoPacing bool
	// WriteTimeout bounds the write of the canned 503 and 408. Default
	// DefaultCannedWriteTimeout.
	WriteTimeout time.Duration
}

// Listener is a net.Listener that protects established connections from
// a connect storm and the server from clients that hold connections
// without finishing requests: it paces and bounds the connections it
// hands to the server, times out slow requests, keeps idle keep-alive
// connections apart, and refuses the excess in its Accept loop. Create it
// with Shedder.Listener. Its methods are safe for concurrent use.
type Listener struct {
	net.Listener
	s            *Shedder
	maxPending   int
	pendingWait  time.Duration
	share        int           // MaxPendingPerIP; 0: off
	headerTime   time.Duration // < 0: off
	minTime      time.Duration
	grace        time.Duration
	maxIdle      int           // < 0: keep none
	idleTime     time.Duration // < 0: off
	writeTimeout time.Duration
	pacer        *pacer // nil with NoPacing

	refused   atomic.Uint64
	closed    chan struct{} // closed by Close, ends waits for a place
	closeOnce sync.Once

	mu      sync.Mutex
	pending int                      // connections in stHead or stHandle
	heads   connList                 // connections in stHead, oldest first
	idle    connList                 // connections in stIdle, idle longest first
	probe   connList                 // connections in stProbe, oldest first
	addrs   map[netip.Addr]*connList // connections in stHead by address, oldest first
	waiters int
	freed   chan struct{} // closed when a place frees while waiters > 0
	reaping bool          // the reaper goroutine runs
	poke    chan struct{} // wakes the reaper
	wakeAt  time.Time     // when the reaper wakes next

	bufMu sync.Mutex
	buf   []byte // scratch for the canned responses, reused under bufMu
}

// Listener wraps inner so that neither a connect storm nor clients that
// hold connections open without finishing requests cost the established
// connections or the other clients their service. Its Accept does this:
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
// are pending (receiving their request, or being handled before the
// response begins) at a time; the next waits in the kernel's listen queue.
// Without a bound, pacing cannot help: net/http starts a goroutine per
// accepted connection, and they all queue ahead.
//
// Refusing, with no goroutine and no HTTP parsing, when
//
//   - runtime pressure is at or above Limits.HardPressure,
//   - demand is past Limits.HardDemand (see Stats.Demand),
//   - no pending place is free within ListenerOptions.PendingWait,
//   - the client's address holds its share of contended places with
//     slow requests (MaxPendingPerIP, below), or
//   - Shutdown has started and Options.DrainMode is ModeHTTP.
//
// The refused client gets a pre-rendered "HTTP/1.1 503 Service
// Unavailable" with Retry-After (the jittered hint, rounded up to whole
// seconds), "Connection: close" and the reason as the body, written once
// with a short deadline; then the connection is closed without reading the
// request. Refusals are counted in Stats and ebb_refused_total with mode
// http. Past a hard ceiling, a client whose address is over
// Limits.MaxConnsPerIP is refused for per_ip; only the other hard-ceiling
// refusals count toward demand (see Stats.Demand). Options.OnState is not
// called for them, since there is no request to report. Every other
// connection goes to the server, and Middleware decides on it as before
// (1013 refusals included).
//
// # Hostile clients
//
// The Listener watches the bytes each connection carries (request headers
// in, the status line out), without copying them, to know where it is:
// sending its request, being handled, answered, idle between keep-alive
// requests, or upgraded. A connection counts as slow only while the
// server is blocked reading from it: a request not read yet because the
// server is busy (a connect storm) is the server's delay, and none of the
// rules below cut it. With P = MaxPending, S = MaxPendingPerIP (default
// max(2, P/4)), T = HeaderTimeout (10 s), F = MinHeaderTimeout (1 s), and
// grace G = F/4:
//
//   - Slow request headers (slowloris). A connection has T to send its
//     request headers while at most P/2 places are used; past that the
//     time shrinks linearly to F with all P used (with P = 32: 10 s up to
//     16 used, 5.5 s at 24, 1 s at 32). The time is judged against the
//     current use, so a filling listener cuts the connections that are
//     already slow. A connection past its time is closed
//     (ebb_listener_closed_total{reason="header_timeout"}) after a 408,
//     or, when its time was cut short because places are contended, a
//     503 with Retry-After ("request too slow while the server is busy;
//     retry-after=…"): it may be an honest client the server could not
//     wait for, such as one starved of CPU in a connect storm.
//   - One address. While every place is taken, a new connection from an
//     address that already has S connections still sending their
//     requests, the oldest for G or more, is refused at once with the
//     canned 503 (reason pending_per_ip) instead of holding up the accept
//     loop.
//   - Probation. While every place is taken and at least half are held by
//     connections that have been sending their request for more than
//     100 ms, a new connection is handed to the server on probation,
//     without a place (at most P at a time): if its whole request head is
//     in within 100 ms, as an honest client's is (it sends it right behind
//     the TCP handshake), it takes the place of the connection from
//     another address that has been sending its request the longest
//     (reason="evicted" for that one, answered with the same 503); if
//     not, it gets the 503 (reason="probation"). So slow connections from many addresses are
//     worked through at P per 100 ms instead of holding up the honest
//     clients queued behind them in the listen queue. Otherwise, a new
//     connection takes the place of a connection from another address
//     that has been sending its request for G or more, or waits up to
//     PendingWait.
//   - Connections being handled (their request complete) are never cut:
//     that is the server's own work, and it ends by itself.
//   - Idle keep-alive connections hold no pending place; at most MaxIdle
//     (default max(64, P)) are kept, each for IdleTimeout (30 s) while at
//     most P/2 places are used, shrinking like the header time to F when
//     all are used; past the bound the one idle longest is closed. A
//     keep-alive connection whose next request arrives needs a place
//     like a new connection: if none frees within PendingWait it is
//     closed (reason="no_place"), and a browser or Go client then retries
//     on a new connection.
//
// So, with N connections an attacker holds: from one address, at most P
// places while nobody else needs them, each for at most F once they are
// all taken; its further connections are answered 503 at once, and each
// honest newcomer from elsewhere takes one of its places within 100 ms.
// From many addresses, each connection holds a place for at most F, and
// honest newcomers get through at about P per 100 ms, ahead of the slow
// ones. The server runs at most P goroutines for pending connections, P
// for those on probation, and MaxIdle for idle ones; the rest wait in the
// listen queue or are refused. In the package's tests (hostile_test.go),
// on a loaded 2-core machine, an honest client behind 300 slowloris
// connections from one address (P = 8) completed each upgrade and echo
// within 0.35 s (median 1–35 ms), and behind 200 from 100 addresses
// (P = 16) within 0.25 s, the time to work through the slow connections
// queued ahead of it; see the README's Security section.
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
//     upgrades; health checks and metrics are better served on another
//     listener, although idle keep-alives and slow requests no longer
//     block them.
//   - Request bodies are the handler's time: a connection whose request
//     is complete is not timed out by the Listener while the handler reads
//     its body (use http.Server.ReadTimeout or http.MaxBytesReader).
//   - An idle keep-alive connection is recognized by net/http's own steps
//     after a response (the write deadline cleared, then a read). A
//     handler that hijacks outside Middleware, answers other than 101,
//     and then clears the write deadline before it reads would be taken
//     for one; 101 responses, CONNECT tunnels and hijacks through
//     Middleware are recognized as such.
//   - Pacing caps the accept rate while the process is busy (a batch per
//     few ms per core); a server whose work is handshakes should set
//     NoPacing.
//   - The 503 is plain HTTP/1.1. Put the listener under TLS
//     (tls.NewListener(sh.Listener(ln, nil), cfg)) and a TLS client sees
//     a failed handshake instead of the 503, which still costs the server
//     almost nothing. Under TLS the Listener cannot read the requests: a
//     connection has the header time to start its handshake's answer, and
//     stays pending until it is hijacked through Middleware, refused, or
//     closed, as net/http's own timeouts allow; idle keep-alives are not
//     told apart.
//
// The listener takes the Shedder's lock once per accepted connection, as
// admission does per request, and its own lock a few times per request.
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
	o.MaxPending = max(0, o.MaxPending)
	switch {
	case o.MaxPendingPerIP == 0:
		o.MaxPendingPerIP = max(2, o.MaxPending/4)
	case o.MaxPendingPerIP < 0:
		o.MaxPendingPerIP = 0
	}
	if o.HeaderTimeout == 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.MinHeaderTimeout <= 0 {
		o.MinHeaderTimeout = DefaultMinHeaderTimeout
	}
	if o.HeaderTimeout > 0 {
		o.MinHeaderTimeout = min(o.MinHeaderTimeout, o.HeaderTimeout)
	}
	if o.MaxIdle == 0 {
		o.MaxIdle = max(DefaultMaxIdle, o.MaxPending)
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	l := &Listener{
		Listener:     inner,
		s:            s,
		maxPending:   o.MaxPending,
		pendingWait:  max(0, o.PendingWait),
		share:        o.MaxPendingPerIP,
		headerTime:   o.HeaderTimeout,
		minTime:      o.MinHeaderTimeout,
		grace:        o.MinHeaderTimeout / 4,
		maxIdle:      o.MaxIdle,
		idleTime:     o.IdleTimeout,
		writeTimeout: o.WriteTimeout,
		closed:       make(chan struct{}),
		addrs:        make(map[netip.Addr]*connList),
		poke:         make(chan struct{}, 1),
	}
	if o.PendingWait < 0 {
		l.pendingWait = -1
	}
	if !o.NoPacing {
		l.pacer = newPacer()
	}
	return l
}

// Accept returns the next connection the Shedder has room to consider,
// answering and closing the ones it has not. At MaxPending it takes a
// place from a slow connection or waits for one first (see Listener).
// Errors come from the inner listener.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.pacer != nil && l.pacer.take(time.Now()) {
			l.pacer.stepAside()
		}
		addr, exempt := l.peer(c)
		if d, refuse := l.s.admitConn(addr, exempt); refuse {
			l.refuse(c, d)
			continue
		}
		tc := newTracked(c, l, addr, exempt)
		if why := l.admitPending(tc); why != 0 {
			l.refuse(c, l.s.pendingRefusal(why, l.maxPending, l.share))
			continue
		}
		return tc.wrapped(), nil
	}
}

// peer returns the address the per-address rules count c under, and
// whether it is exempt from them (a trusted proxy).
func (l *Listener) peer(c net.Conn) (netip.Addr, bool) {
	var a netip.Addr
	switch ra := c.RemoteAddr().(type) {
	case *net.TCPAddr:
		a = ra.AddrPort().Addr()
	case nil:
	default:
		a = parseHostPort(ra.String())
	}
	a = a.WithZone("")
	return l.s.group(a), l.s.trusted(a)
}

// Close closes the inner listener and ends the waits for a pending place.
// Connections already accepted are left to the server.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// Pending returns the connections receiving or being handled before their
// response begins (see ListenerOptions.MaxPending).
func (l *Listener) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending
}

// Idle returns the idle keep-alive HTTP connections (see
// ListenerOptions.MaxIdle).
func (l *Listener) Idle() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.idle.n
}

// Refused returns how many connections this listener answered with its
// canned 503. They are also in the Shedder's Stats.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// admitConn decides at accept time whether a connection from addr must be
// refused before any HTTP is read: only the hard limits apply here (the
// soft ones need the request and are Middleware's job). exempt says addr
// is a trusted proxy, which stands for many clients.
func (s *Shedder) admitConn(addr netip.Addr, exempt bool) (decision, bool) {
	d := decision{ip: addr}
	now := s.now()
	var rd *reading
	if s.pressureOn.Load() {
		rd = s.sampler.read(now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A drain is not refused here, even in ModeHTTP: Middleware refuses
	// the upgrades and lets plain requests through, so /metrics and a
	// health check keep answering until the last connection is gone.
	l := &s.limits
	ratio, why := rd.ratio(l)
	demand, _ := s.demandLocked(now)
	if !s.pastHardLocked(ratio, demand) {
		return d, false
	}
	if !exempt && l.MaxConnsPerIP > 0 && s.perIP[addr] >= l.MaxConnsPerIP {
		// Over its own share: refused as such, without counting toward
		// demand (one address must not keep hard mode on).
		s.refuseLocked(&d, ReasonPerIP, ModeHTTP, overload(float64(s.perIP[addr]+1), l.MaxConnsPerIP, 0))
		return d, true
	}
	return d, s.hardLimitLocked(&d, ratio, why, demand, now, !exempt)
}

// pendingRefusal is the 503 for a connection that found no pending place
// (why is ReasonInFlight) or whose address is over its share of them
// (ReasonPendingPerIP). Neither is added to demand: MaxPending paces
// handshakes and says nothing about room for connections. Counting these
// refusals would trip HardDemand within one storm and turn away the
// pending clients too, with slots still free.
func (s *Shedder) pendingRefusal(why Reason, maxPending, share int) decision {
	limit := max(1, maxPending)
	if why == ReasonPendingPerIP {
		limit = max(1, share)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return decision{reason: why, mode: ModeHTTP, code: closecode.TryAgainLater,
		hint: s.hintLocked(float64(limit+1) / float64(limit))}
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
	l.buf = appendCanned503(l.buf[:0], d.reason.Text(), d.hint)
	if c.SetWriteDeadline(time.Now().Add(l.writeTimeout)) == nil {
		_, _ = c.Write(l.buf)
	}
	l.bufMu.Unlock()
	_ = c.Close()
}

// canned408 answers a connection whose request headers did not arrive
// within the full header time, as HAProxy and nginx do.
const canned408 = "HTTP/1.1 408 Request Timeout\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Connection: close\r\n" +
	"Content-Length: 25\r\n\r\n" +
	"request headers too slow\n"

// slowText is the reason in the 503 for a connection whose request was
// cut short because the places were contended: it may be an honest client
// the server could not wait for, and it is told when to come back.
const slowText = "request too slow while the server is busy"

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

// appendCanned503 appends the listener's 503 for a reason's text and a
// hint. The body is the text with the hint in the form of
// closecode.FormatRetryHint ("server at capacity; retry-after=4.5"), the
// same text a 1013 refusal carries, and Retry-After is the hint in whole
// seconds, rounded up.
func appendCanned503(dst []byte, text string, hint time.Duration) []byte {
	hint = max(hint, 0)
	tenths := int64(math.Ceil(hint.Seconds() * 10))
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
