package shed

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// Where a Listener's connection is, as its bytes tell. Transitions happen
// under Listener.mu; state is also kept in an atomic so that Read and
// Write on a connection the Listener no longer tracks (an open WebSocket)
// cost one atomic load.
//
//	stProbe ──headers in──▶ stWaiting ──place──┐
//	                                           ▼
//	stHead ──headers in──▶ stHandle ──response begins──▶ stResp
//	  ▲                        │                            │ net/http waits
//	  │ place                  └──101, hijack, other ──▶ stDone  for the next
//	  │                            protocol, close           ▲     request
//	stWaiting ◀──bytes arrive── stIdle ◀────────────────────┘
//
// stHead and stHandle are pending (they hold a place); stIdle is counted
// apart; stProbe (accepted past a listener full of slow requests) holds
// no place until its request head is in; stDone is not tracked at all.
const (
	stHead    uint32 = iota // receiving request headers: the client's time
	stHandle                // request headers in, no response yet: the server's time
	stResp                  // response begun; not pending, not idle
	stIdle                  // response done, waiting for the next request
	stWaiting               // request arrived, waiting for a place
	stProbe                 // on probation: must send its request head at once
	stDone                  // upgraded, hijacked, another protocol, or closed
)

// probation is how long a connection accepted on probation has to send
// its whole request head. An honest client sends it right behind the TCP
// handshake, so it is in the socket before the server reads; a slow one
// loses nothing but a probation slot. 100 ms leaves room for a client
// process that is itself short of CPU (25 ms turned such clients away in
// the hostile suite on a loaded machine) and still works slow connections
// from many addresses off at MaxPending per 100 ms.
const probation = 100 * time.Millisecond

// Why a Listener closed a connection, the reason label of
// ebb_listener_closed_total.
type closeWhy uint8

const (
	whyHeaderTimeout closeWhy = iota // request headers past the header time
	whyEvicted                       // slow request headers, place given to a newcomer
	whyProbation                     // on probation, request head not in within probation
	whyIdleTimeout                   // idle past the idle time
	whyIdleLimit                     // idle past MaxIdle
	whyNoPlace                       // a request in (keep-alive or probation) found no place
	numCloseWhys
)

var closeWhyNames = [numCloseWhys]string{"header_timeout", "evicted", "probation", "idle_timeout", "idle_limit", "no_place"}

// errDropped is what Read returns on a connection the Listener closed
// while the read was in progress.
var errDropped = errors.New("shed: connection closed by the Listener (slow request or idle keep-alive)")

// trackedConn is a connection accepted by a Listener.
type trackedConn struct {
	net.Conn
	l      *Listener
	addr   netip.Addr
	state  atomic.Uint32
	inRead atomic.Bool // in stHead or stProbe, blocked reading: the client's time
	exempt bool        // a trusted proxy: no per-address rules

	// Guarded by l.mu.
	killed   bool      // closed by the Listener
	why      closeWhy  // why it was
	busy     bool      // cut short because the places were contended
	opaque   bool      // TLS (or anything not HTTP/1): bytes cannot be read
	connect  bool      // the request is CONNECT: any response ends tracking
	respDone bool      // stResp and net/http finished the response
	since    time.Time // when stHead, stIdle or stProbe began
	link               // its place in l.heads, l.idle or l.probe
	alink    link      // its place in its address's list of heads
	resp     statusScanner

	// Touched only by the reading goroutine.
	seen bool // a byte has been read
	read headScanner
}

// link is a connection's place in a connList.
type link struct{ prev, next *trackedConn }

// connList is an intrusive list of connections, oldest first. A
// connection is in at most one list by state (the zero connList, linked
// by trackedConn.link) and one by address (byAddr, linked by alink).
type connList struct {
	first, last *trackedConn
	n           int
	byAddr      bool
}

// linkOf returns c's place in q.
func (q *connList) linkOf(c *trackedConn) *link {
	if q.byAddr {
		return &c.alink
	}
	return &c.link
}

func (q *connList) push(c *trackedConn) {
	*q.linkOf(c) = link{prev: q.last}
	if q.last != nil {
		q.linkOf(q.last).next = c
	} else {
		q.first = c
	}
	q.last = c
	q.n++
}

func (q *connList) remove(c *trackedConn) {
	cl := q.linkOf(c)
	if cl.prev != nil {
		q.linkOf(cl.prev).next = cl.next
	} else {
		q.first = cl.next
	}
	if cl.next != nil {
		q.linkOf(cl.next).prev = cl.prev
	} else {
		q.last = cl.prev
	}
	*cl = link{}
	q.n--
}

func newTracked(c net.Conn, l *Listener, addr netip.Addr, exempt bool) *trackedConn {
	return &trackedConn{Conn: c, l: l, addr: addr, exempt: exempt}
}

// sysTrackedConn also forwards syscall.Conn, which ebb's websocket uses to
// wait for data on idle connections without holding a read buffer.
type sysTrackedConn struct {
	*trackedConn
}

// SyscallConn returns the raw connection of the inner net.Conn.
func (c sysTrackedConn) SyscallConn() (syscall.RawConn, error) {
	return c.trackedConn.Conn.(syscall.Conn).SyscallConn()
}

func (c *trackedConn) wrapped() net.Conn {
	if _, ok := c.Conn.(syscall.Conn); ok {
		return sysTrackedConn{c}
	}
	return c
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// Read reads from the connection and follows the request's progress.
func (c *trackedConn) Read(p []byte) (int, error) {
	st := c.state.Load()
	if st == stDone {
		return c.Conn.Read(p)
	}
	if st == stResp {
		if err := c.l.maybeIdle(c); err != nil {
			return 0, err
		}
		st = c.state.Load()
	}
	// A connection is judged slow only while the server waits for it:
	// a request the server has not read yet (its goroutine has not run,
	// as in a connect storm) is the server's delay, not the client's.
	watched := st == stHead || st == stProbe
	if watched {
		c.inRead.Store(true)
	}
	n, err := c.Conn.Read(p)
	if watched {
		c.inRead.Store(false)
	}
	if n > 0 && (st == stHead || st == stIdle || st == stProbe) {
		if e := c.l.readSeen(c, st, p[:n]); e != nil {
			return 0, e
		}
	}
	return n, err
}

// Write writes to the connection; the start of a response ends pending.
func (c *trackedConn) Write(p []byte) (int, error) {
	if st := c.state.Load(); st == stHead || st == stHandle || st == stProbe {
		c.l.writeSeen(c, p)
	}
	return c.Conn.Write(p)
}

// SetWriteDeadline is where net/http tells, after a response, that it is
// done with it (it clears the write deadline before it waits for the next
// request); a Read after that is the wait for the next request.
func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	if c.state.Load() == stResp {
		c.l.mu.Lock()
		c.respDone = true
		c.l.mu.Unlock()
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the connection and frees whatever it held at the Listener.
func (c *trackedConn) Close() error {
	if c.state.Load() != stDone {
		c.l.untrack(c)
	}
	return c.Conn.Close()
}

// settle marks the connection as no longer tracked (admitted and hijacked,
// or refused with a Close frame).
func (c *trackedConn) settle() {
	if c.state.Load() != stDone {
		c.l.untrack(c)
	}
}

// leftPending tells the Listener that accepted nc, if any, that nc is no
// longer pending: it is an admitted WebSocket connection, or a refused one
// whose 1013 is written. It looks through wrappers that expose NetConn
// (tls.Conn).
func leftPending(nc net.Conn) {
	for range 4 { // wrappers rarely nest deeper
		switch c := nc.(type) {
		case *trackedConn:
			c.settle()
			return
		case sysTrackedConn:
			c.settle()
			return
		case interface{ NetConn() net.Conn }:
			nc = c.NetConn()
		default:
			return
		}
	}
}

// admitPending gives tc a pending place (taking one from a slow
// connection, or waiting up to PendingWait, if none is free) and reports
// 0, or the reason it got none.
func (l *Listener) admitPending(tc *trackedConn) Reason {
	l.mu.Lock()
	victim, why := l.takePlaceLocked(tc, false, l.grace)
	switch why {
	case 0:
		l.enterHeadLocked(tc, time.Now())
	case reasonProbation:
		l.enterProbeLocked(tc, time.Now())
		why = 0
	}
	l.mu.Unlock()
	if victim != nil {
		l.finishKill(victim)
	}
	return why
}

// reasonProbation is takePlaceLocked's answer for a new connection that
// gets no place now but may try on probation.
const reasonProbation Reason = -1

// takePlaceLocked finds a place for c: a free one, the place of a
// connection from another address that has been sending its request for
// at least slow (returned, to be closed by the caller once l.mu is
// released), or one that frees within PendingWait. It reports the reason
// when there is none, or reasonProbation for a new connection (not
// waiting) that may go on probation. l.mu is released while it waits. On
// success the place is counted in l.pending.
func (l *Listener) takePlaceLocked(c *trackedConn, waiting bool, slow time.Duration) (victim *trackedConn, why Reason) {
	var deadline time.Time
	for {
		now := time.Now()
		switch {
		case waiting && c.state.Load() != stWaiting: // closed meanwhile
			return nil, ReasonInFlight
		case l.maxPending <= 0 || l.pending < l.maxPending:
			l.pending++
			l.s.stats.pending.Add(1)
			return nil, 0
		case l.isClosed(): // no waiting for a place any more
			return nil, ReasonInFlight
		case l.overShareLocked(c, now):
			return nil, ReasonPendingPerIP
		}
		// A new connection proves itself on probation before it takes a
		// slow one's place: handing the place to whoever comes next
		// would let slow clients keep it.
		if !waiting && l.probeOKLocked(c, now) {
			return nil, reasonProbation
		}
		if v := l.victimLocked(c, now, slow); v != nil {
			l.killLocked(v, whyEvicted) // frees its place
			l.pending++
			l.s.stats.pending.Add(1)
			return v, 0
		}
		if deadline.IsZero() {
			if l.pendingWait < 0 {
				return nil, ReasonInFlight
			}
			l.s.stats.pendingWaits.Add(1)
			deadline = now.Add(l.pendingWait)
		}
		if !now.Before(deadline) {
			return nil, ReasonInFlight
		}
		wake := deadline
		if at, ok := l.evictableAtLocked(c); ok && at.Before(wake) {
			wake = at
		}
		if at, ok := l.probeAtLocked(); ok && !waiting && at.Before(wake) {
			wake = at
		}
		if l.freed == nil {
			l.freed = make(chan struct{})
		}
		freed := l.freed
		l.waiters++
		l.mu.Unlock()
		t := time.NewTimer(max(wake.Sub(now), time.Millisecond)) // never a busy loop
		select {
		case <-freed:
		case <-t.C:
		case <-l.closed:
		}
		t.Stop()
		l.mu.Lock()
		l.waiters--
	}
}

func (l *Listener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// overShareLocked reports whether c's address has its share of places
// with slow requests: MaxPendingPerIP connections in stHead, the oldest
// for at least the grace time.
func (l *Listener) overShareLocked(c *trackedConn, now time.Time) bool {
	if l.share <= 0 || c.exempt {
		return false
	}
	a := l.addrs[c.addr]
	return a != nil && a.n >= l.share && now.Sub(a.first.since) >= l.grace && a.first.inRead.Load()
}

// victimLocked returns the connection that has been sending its request
// the longest, if that is at least slow, from an address other than c's;
// nil if there is none.
func (l *Listener) victimLocked(c *trackedConn, now time.Time, slow time.Duration) *trackedConn {
	if l.headerTime < 0 {
		return nil // no header timeout: nothing is slow
	}
	for v := l.heads.first; v != nil && now.Sub(v.since) >= slow; v = v.next {
		if v.addr != c.addr && v.inRead.Load() {
			return v
		}
	}
	return nil
}

// probeOKLocked reports whether a new connection c that finds every
// place taken may go on probation: at least half the places are held by
// connections from other addresses that have been sending their request
// for longer than the probation (the server is held by slow clients, not
// busy with work, and c could take one of their places), and fewer than
// MaxPending connections are on probation.
func (l *Listener) probeOKLocked(c *trackedConn, now time.Time) bool {
	if l.headerTime < 0 || l.probe.n >= l.maxPending {
		return false
	}
	slow := 0
	for v := l.heads.first; v != nil && now.Sub(v.since) >= probation; v = v.next {
		if v.addr != c.addr && v.inRead.Load() {
			slow++
		}
	}
	return 2*slow >= l.maxPending
}

// probeAtLocked returns when probeOKLocked will hold if nothing else
// changes: when half the places are held by connections that have been
// sending their request for longer than the probation.
func (l *Listener) probeAtLocked() (time.Time, bool) {
	if l.headerTime < 0 || l.probe.n >= l.maxPending {
		return time.Time{}, false
	}
	k := (l.maxPending + 1) / 2
	for v := l.heads.first; v != nil; v = v.next {
		if k--; k == 0 {
			// Past already and still no probation: those heads are not
			// the clients' delay, or c's own address's; no wake-up.
			at := v.since.Add(probation)
			return at, at.After(time.Now())
		}
	}
	return time.Time{}, false
}

// enterProbeLocked puts c on probation at now: it holds no place, and
// must send its request head within probation.
func (l *Listener) enterProbeLocked(c *trackedConn, now time.Time) {
	c.since = now
	c.state.Store(stProbe)
	l.probe.push(c)
	l.s.stats.probation.Add(1)
	l.scheduleLocked()
}

// evictableAtLocked returns when the oldest connection in stHead from an
// address other than c's may lose its place to c.
func (l *Listener) evictableAtLocked(c *trackedConn) (time.Time, bool) {
	if l.headerTime < 0 {
		return time.Time{}, false
	}
	now := time.Now()
	for v := l.heads.first; v != nil; v = v.next {
		// One past its grace that was no victim is not the client's
		// delay (the server has not read it yet): not a time to wake.
		if at := v.since.Add(l.grace); v.addr != c.addr && at.After(now) {
			return at, true
		}
	}
	return time.Time{}, false
}

// enterHeadLocked starts c's request at now; c already holds a place.
func (l *Listener) enterHeadLocked(c *trackedConn, now time.Time) {
	c.since = now
	c.state.Store(stHead)
	l.heads.push(c)
	a := l.addrs[c.addr]
	if a == nil {
		a = &connList{byAddr: true}
		l.addrs[c.addr] = a
	}
	a.push(c)
	l.scheduleLocked()
}

// leaveHeadLocked takes c out of the lists of connections in stHead; it
// keeps its place.
func (l *Listener) leaveHeadLocked(c *trackedConn) {
	l.heads.remove(c)
	a := l.addrs[c.addr]
	if a.remove(c); a.n == 0 {
		delete(l.addrs, c.addr)
	}
}

// freePlaceLocked gives back a place and wakes those waiting for one.
func (l *Listener) freePlaceLocked() {
	l.pending--
	l.s.stats.pending.Add(-1)
	l.wakeWaitersLocked()
}

func (l *Listener) wakeWaitersLocked() {
	if l.waiters > 0 && l.freed != nil {
		close(l.freed)
		l.freed = nil
	}
}

// untrack forgets c: it was closed, hijacked, or refused with a Close
// frame.
func (l *Listener) untrack(c *trackedConn) {
	l.mu.Lock()
	l.dropLocked(c)
	l.mu.Unlock()
}

// dropLocked takes c out of whatever it held and marks it stDone.
func (l *Listener) dropLocked(c *trackedConn) {
	l.releaseLocked(c)
	c.state.Store(stDone)
	if l.reaping && l.heads.n == 0 && l.idle.n == 0 && l.probe.n == 0 {
		l.pokeLocked() // nothing left to time: let the reaper exit
	}
}

// releaseLocked takes c out of whatever it held (place, lists); the
// caller sets its new state.
func (l *Listener) releaseLocked(c *trackedConn) {
	switch c.state.Load() {
	case stHead:
		l.leaveHeadLocked(c)
		l.freePlaceLocked()
	case stHandle:
		l.freePlaceLocked()
	case stIdle:
		l.idle.remove(c)
		l.s.stats.idle.Add(-1)
	case stProbe:
		l.probe.remove(c)
		l.wakeWaitersLocked() // a probation slot is free
	case stWaiting:
		l.wakeWaitersLocked() // the wait notices it was closed
	}
}

func (l *Listener) pokeLocked() {
	select {
	case l.poke <- struct{}{}:
	default:
	}
}

// killLocked marks c as closed by the Listener for why; finishKill closes
// it once l.mu is released.
func (l *Listener) killLocked(c *trackedConn, why closeWhy) {
	l.dropLocked(c)
	c.killed, c.why = true, why
	l.s.stats.listenerClosed[why].Add(1)
}

// finishKill answers a connection cut for a slow request and closes it:
// with a 408 after the full header time, with a 503 and a retry hint when
// the places were contended (the server could not wait), and not at all
// under TLS (the client could not read it) or for an idle one.
func (l *Listener) finishKill(c *trackedConn) {
	if !c.opaque && c.Conn.SetWriteDeadline(time.Now().Add(l.writeTimeout)) == nil {
		switch {
		case c.why == whyEvicted || c.why == whyProbation || c.why == whyHeaderTimeout && c.busy:
			hint := l.s.pendingRefusal(ReasonInFlight, l.maxPending, l.share).hint
			l.bufMu.Lock()
			l.buf = appendCanned503(l.buf[:0], slowText, hint)
			_, _ = c.Conn.Write(l.buf)
			l.bufMu.Unlock()
		case c.why == whyHeaderTimeout:
			_, _ = c.Conn.Write([]byte(canned408))
		}
	}
	_ = c.Conn.Close()
}

// readSeen follows the bytes b read in state st (stHead or stIdle). It
// returns an error when the Listener closed c meanwhile, or when c's next
// request found no place.
func (l *Listener) readSeen(c *trackedConn, st uint32, b []byte) error {
	if st == stIdle {
		if err := l.wake(c); err != nil {
			return err
		}
	}
	if !c.seen {
		c.seen = true
		if b[0] == 0x16 { // a TLS handshake record: opaque from here on
			l.mu.Lock()
			if c.killed {
				l.mu.Unlock()
				return errDropped
			}
			c.opaque = true
			if st == stProbe { // it cannot prove more: give it a place
				return l.placeProbeLocked(c, stHead) // unlocks
			}
			l.mu.Unlock()
			return nil
		}
	}
	if c.opaque {
		return nil
	}
	if c.read.feed(b) < 0 {
		return nil // an unfinished head is harmless even if c was cut meanwhile
	}
	l.mu.Lock()
	if c.killed {
		l.mu.Unlock()
		return errDropped
	}
	switch c.state.Load() {
	case stHead:
		l.leaveHeadLocked(c)
		c.state.Store(stHandle)
		c.connect = c.read.isConnect()
		c.resp = statusScanner{}
	case stProbe:
		c.connect = c.read.isConnect()
		c.resp = statusScanner{}
		return l.placeProbeLocked(c, stHandle) // unlocks
	}
	l.mu.Unlock()
	return nil
}

// placeProbeLocked finds a place for c, on probation and done with it:
// its request head is in (or it is TLS), so it may take the place of a
// connection from another address that has been sending its request for
// longer than the probation. Once placed, c goes to state to (stHead or
// stHandle); without a place within PendingWait it is closed. It releases
// l.mu.
func (l *Listener) placeProbeLocked(c *trackedConn, to uint32) error {
	l.probe.remove(c)
	c.state.Store(stWaiting)
	victim, why := l.takePlaceLocked(c, true, probation)
	if why != 0 {
		// Refused as a new connection is at Accept.
		if c.state.Load() == stWaiting {
			l.killLocked(c, whyNoPlace)
		}
		l.mu.Unlock()
		l.refuse(c.Conn, l.s.pendingRefusal(ReasonInFlight, l.maxPending, l.share))
		return errDropped
	}
	if to == stHead {
		l.enterHeadLocked(c, time.Now())
	} else {
		c.state.Store(stHandle)
	}
	l.mu.Unlock()
	if victim != nil {
		l.finishKill(victim)
	}
	return nil
}

// wake moves an idle connection whose next request has begun to stHead,
// once it has a place.
func (l *Listener) wake(c *trackedConn) error {
	l.mu.Lock()
	if c.state.Load() != stIdle {
		killed := c.killed
		l.mu.Unlock()
		if killed {
			return errDropped
		}
		return nil
	}
	l.idle.remove(c)
	l.s.stats.idle.Add(-1)
	c.state.Store(stWaiting)
	victim, why := l.takePlaceLocked(c, true, l.grace)
	if why != 0 {
		if c.state.Load() == stWaiting {
			l.killLocked(c, whyNoPlace)
		}
		l.mu.Unlock()
		_ = c.Conn.Close()
		return errDropped
	}
	c.read = headScanner{}
	l.enterHeadLocked(c, time.Now())
	l.mu.Unlock()
	if victim != nil {
		l.finishKill(victim)
	}
	return nil
}

// maybeIdle moves c to stIdle if net/http finished its response: this
// Read is then the wait for the next request. It returns an error if c
// must not be kept idle (MaxIdle negative).
func (l *Listener) maybeIdle(c *trackedConn) error {
	l.mu.Lock()
	if c.state.Load() != stResp || !c.respDone {
		l.mu.Unlock()
		return nil
	}
	if l.maxIdle < 0 {
		l.killLocked(c, whyIdleLimit)
		l.mu.Unlock()
		_ = c.Conn.Close()
		return errDropped
	}
	var victim *trackedConn
	if l.idle.n >= l.maxIdle {
		victim = l.idle.first
		l.killLocked(victim, whyIdleLimit)
	}
	c.since = time.Now()
	c.state.Store(stIdle)
	l.idle.push(c)
	l.s.stats.idle.Add(1)
	l.scheduleLocked()
	l.mu.Unlock()
	if victim != nil {
		l.finishKill(victim)
	}
	return nil
}

// writeSeen follows the bytes of a response written in stHead or
// stHandle: its status line says whether the connection is upgraded
// (101), switched to another protocol, or answered.
func (l *Listener) writeSeen(c *trackedConn, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := c.state.Load()
	if st != stHead && st != stHandle && st != stProbe {
		return
	}
	if c.opaque {
		if st == stHead { // the TLS handshake's answer: no longer the client's time
			l.leaveHeadLocked(c)
			c.state.Store(stHandle)
		}
		return
	}
	switch code := c.resp.feed(p); {
	case code == 0: // status line not complete yet
	case code < 0, code == 101, c.connect && code/100 == 2:
		l.dropLocked(c) // upgraded, tunnelled, or not HTTP/1: not ours
	default:
		l.releaseLocked(c)
		c.state.Store(stResp)
		c.respDone = false
	}
}

// headTimeLocked is the time a connection may take to send its request
// headers with l.pending places used: the full header time up to half of
// MaxPending, then linearly less, down to MinHeaderTimeout when all are
// used.
func (l *Listener) headTimeLocked() time.Duration {
	return l.shrink(l.headerTime)
}

// idleTimeLocked is the time an idle connection is kept, shrinking with
// the pending places used like headTimeLocked.
func (l *Listener) idleTimeLocked() time.Duration {
	return l.shrink(l.idleTime)
}

func (l *Listener) shrink(full time.Duration) time.Duration {
	p, n := l.maxPending, l.pending
	if full < 0 || p <= 0 || 2*n <= p {
		return full
	}
	low := min(l.minTime, full)
	if n >= p {
		return low
	}
	frac := float64(2*n-p) / float64(p) // 0 at half, 1 at all
	return full - time.Duration(frac*float64(full-low))
}

// nextDeadlineLocked returns when the reaper has work next.
func (l *Listener) nextDeadlineLocked() (time.Time, bool) {
	var at time.Time
	if c := l.heads.first; c != nil && l.headerTime >= 0 {
		at = c.since.Add(l.headTimeLocked())
	}
	if c := l.idle.first; c != nil && l.idleTime >= 0 {
		if t := c.since.Add(l.idleTimeLocked()); at.IsZero() || t.Before(at) {
			at = t
		}
	}
	if c := l.probe.first; c != nil {
		if t := c.since.Add(probation); at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at, !at.IsZero()
}

// scheduleLocked starts the reaper, or wakes it when the next deadline
// moved before the time it sleeps until.
func (l *Listener) scheduleLocked() {
	at, ok := l.nextDeadlineLocked()
	switch {
	case !ok:
	case !l.reaping:
		l.reaping = true
		l.wakeAt = at
		go l.reap()
	case at.Before(l.wakeAt):
		l.wakeAt = at
		l.pokeLocked()
	}
}

// reap closes connections past their header or idle time. It runs while
// there are connections to time, and exits when there are none.
func (l *Listener) reap() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	var victims []*trackedConn
	for {
		victims = victims[:0]
		l.mu.Lock()
		now := time.Now()
		if l.headerTime >= 0 {
			for c := l.heads.first; c != nil && now.Sub(c.since) >= l.headTimeLocked(); {
				next := c.next
				if c.inRead.Load() {
					busy := l.headTimeLocked() < l.headerTime
					l.killLocked(c, whyHeaderTimeout)
					c.busy = busy
					victims = append(victims, c)
				}
				c = next
			}
		}
		if l.idleTime >= 0 {
			for c := l.idle.first; c != nil && now.Sub(c.since) >= l.idleTimeLocked(); c = l.idle.first {
				l.killLocked(c, whyIdleTimeout)
				victims = append(victims, c)
			}
		}
		for c := l.probe.first; c != nil && now.Sub(c.since) >= probation; {
			next := c.next
			if c.inRead.Load() {
				l.killLocked(c, whyProbation)
				victims = append(victims, c)
			}
			c = next
		}
		at, ok := l.nextDeadlineLocked()
		if ok && !at.After(now) {
			// Past their time but not read from yet (the server is
			// behind): look again shortly.
			at = now.Add(probation)
		}
		if !ok {
			l.reaping = false
		}
		l.wakeAt = at
		l.mu.Unlock()
		for _, c := range victims {
			l.finishKill(c)
		}
		if !ok {
			return
		}
		t.Reset(time.Until(at))
		select {
		case <-t.C:
		case <-l.poke:
		}
	}
}

// headScanner finds the end of an HTTP/1 request head (the empty line
// after the request line and headers) in the bytes read, without copying
// them. Empty lines before the request line are skipped, as net/http
// skips them after a POST. It is small: it lives as long as the
// connection.
type headScanner struct {
	line  int32 // bytes in the current line so far
	last  byte  // last byte of the current line
	seen  bool  // the request line has begun
	inReq bool  // in the request line
	// connect is how much of "CONNECT " the request line has matched so
	// far, or -1 once it differs.
	connect int8
}

const connectPrefix = "CONNECT "

// feed scans b and returns the index just past the end of the head, or -1
// if it has not ended yet.
func (s *headScanner) feed(b []byte) int {
	off := 0
	for off < len(b) {
		// Match the request line's first bytes against CONNECT.
		for s.connect >= 0 && int(s.connect) < len(connectPrefix) && off < len(b) && (s.inReq || !s.seen) {
			c := b[off]
			if c == '\n' || !s.seen && c == '\r' {
				break
			}
			s.seen, s.inReq = true, true
			if c == connectPrefix[s.connect] {
				s.connect++
			} else {
				s.connect = -1
			}
			s.line++
			s.last = c
			off++
		}
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			if seg := b[off:]; len(seg) > 0 {
				s.line = int32(min(int(s.line)+len(seg), 1<<30)) // net/http caps heads far below
				s.last = seg[len(seg)-1]
			}
			return -1
		}
		seg := b[off : off+i]
		n, last := int(s.line)+len(seg), s.last
		if len(seg) > 0 {
			last = seg[len(seg)-1]
		}
		off += i + 1
		if s.inReq && int(s.connect) < len(connectPrefix) {
			s.connect = -1 // the request line ended before "CONNECT "
		}
		s.line, s.last, s.inReq = 0, 0, false
		if n == 0 || n == 1 && last == '\r' {
			if s.seen {
				return off
			}
			continue
		}
		s.seen = true
	}
	return -1
}

// isConnect reports whether the request line began with "CONNECT ".
func (s *headScanner) isConnect() bool {
	return int(s.connect) == len(connectPrefix)
}

// statusScanner reads the status line of the response written, skipping
// informational (1xx other than 101) responses before it.
type statusScanner struct {
	buf  [12]byte // "HTTP/1.1 200"
	n    uint8
	skip bool // inside an informational response, looking for its end
	head headScanner
}

// feed scans p and returns the status of the final response (101
// included), -1 if the bytes are not an HTTP/1 response, or 0 if the
// status line has not been written yet.
func (s *statusScanner) feed(p []byte) int {
	for len(p) > 0 {
		if s.skip {
			end := s.head.feed(p)
			if end < 0 {
				return 0
			}
			p = p[end:]
			s.skip, s.n = false, 0
			continue
		}
		k := copy(s.buf[s.n:], p)
		s.n += uint8(k)
		p = p[k:]
		const prefix = "HTTP/1."
		if m := min(int(s.n), len(prefix)); string(s.buf[:m]) != prefix[:m] {
			return -1
		}
		if int(s.n) < len(s.buf) {
			return 0
		}
		b := s.buf
		if b[8] != ' ' || b[9] < '1' || b[9] > '5' || b[10] < '0' || b[10] > '9' || b[11] < '0' || b[11] > '9' {
			return -1
		}
		code := int(b[9]-'0')*100 + int(b[10]-'0')*10 + int(b[11]-'0')
		if code >= 200 || code == 101 {
			return code
		}
		// 100 Continue, 103 Early Hints: the final response follows.
		s.skip = true
		s.head = headScanner{seen: true, line: int32(len(s.buf)), last: b[11], connect: -1}
	}
	return 0
}
