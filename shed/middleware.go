package shed

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Closer closes a live WebSocket connection with a code and a reason,
// running the closing handshake. Shed calls it from its own goroutine,
// concurrently with the handler, to shed or drain a connection, so it must
// be safe for that (ebb's *websocket.Conn, gorilla's WriteControl plus
// Close, and coder's Close all are) and should return within a bounded
// time.
type Closer interface {
	Close(code closecode.Code, reason string) error
}

// CloserFunc adapts a function to Closer, e.g. for gorilla/websocket:
//
//	shed.CloserFunc(func(code closecode.Code, reason string) error {
//		msg := websocket.FormatCloseMessage(int(code), reason)
//		_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
//		return c.Close()
//	})
type CloserFunc func(code closecode.Code, reason string) error

// Close calls f(code, reason).
func (f CloserFunc) Close(code closecode.Code, reason string) error { return f(code, reason) }

// ForceCloser is implemented by Closers that can also drop the connection
// at once, without a closing handshake. Shutdown uses it on connections
// still open when its context ends; for other Closers it closes the
// hijacked net.Conn, if the handler hijacked through the middleware's
// ResponseWriter.
type ForceCloser interface {
	CloseNow() error
}

// Direction says whether a close code was sent or received by the server.
type Direction int

// Directions, the direction label of ebb_close_codes_total.
const (
	// Sent is a Close frame this side chose to send (a refusal, a drain,
	// a handler's Close): its code is this side's decision.
	Sent Direction = iota + 1
	// Received is a Close frame the client sent first or in answer.
	Received
	// Echoed is the Close frame sent in answer to the client's, carrying
	// the client's code back (RFC 6455 §5.5.1): the client's decision,
	// not this side's, so it is not counted as Sent.
	Echoed
)

// String returns the metric label of d: "sent", "received" or "echoed".
func (d Direction) String() string {
	switch d {
	case Received:
		return "received"
	case Echoed:
		return "echoed"
	}
	return "sent"
}

type ctxKey struct{}

// Middleware returns a handler that runs admission on every WebSocket
// upgrade request before next sees it. A refused request is answered by
// shed itself (see Mode) and next does not run. An admitted request holds
// a slot until next returns, so counts are right even if next never calls
// Track; handlers must therefore not return while the connection lives
// (the usual shape in ebb, gorilla/websocket and coder/websocket).
// Requests that are not WebSocket upgrades pass through untouched and
// uncounted; so do HTTP/2 WebSockets (RFC 8441 extended CONNECT), which
// cannot be hijacked.
//
// The ResponseWriter next receives supports Hijack (recording the
// connection so Shutdown can force-close it), Flush and Unwrap.
func (s *Shedder) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isUpgrade(r) {
			next.ServeHTTP(w, r)
			return
		}
		// Let goroutines already waiting to run (established connections
		// among them) go first: during a connect storm, handshakes would
		// otherwise hand the CPU to one another ahead of them (see pace.go).
		runtime.Gosched()
		sl, d := s.admit(r)
		if sl == nil {
			s.refuse(w, r, d)
			return
		}
		s.stats.admitted.Add(1)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, sl))
		sl.mu.Lock() // shedding and drain may already read sl.r
		sl.w, sl.r = w, r
		sl.mu.Unlock()
		s.emit(Event{State: StateAdmitted, Request: r, ClientIP: sl.ip})
		defer func() {
			// A connection handed to its own goroutine (Handler) keeps its
			// slot until it ends; every other one frees it here.
			if !sl.detached.Load() {
				sl.release()
			}
		}()
		next.ServeHTTP(sl, r)
	})
}

// Track registers a live connection's Closer with the Shedder whose
// Middleware admitted r, so that shedding and Shutdown can close it with a
// code. Call it once, right after the upgrade succeeded; if shed already
// decided to close the connection (a drain that started during the
// handshake), the close is sent at once. The returned release
// frees the slot early; calling it is optional (the slot is freed when the
// handler returns anyway) and idempotent. Outside such a request Track does
// nothing and returns a no-op release.
//
// If c also implements ForceCloser, Shutdown uses it when its context
// ends.
func Track(r *http.Request, c Closer) (release func()) {
	sl, _ := r.Context().Value(ctxKey{}).(*slot)
	if sl == nil || c == nil {
		return func() {}
	}
	sl.register(c)
	return sl.release
}

// RecordClose counts a close code the handler of r sent or received
// itself, for Stats and ebb_close_codes_total. Codes shed sends (refusals,
// shedding, drain) are counted by shed; connections accepted with Accept
// are counted automatically. Outside a request admitted by a Shedder it
// does nothing.
func RecordClose(r *http.Request, code closecode.Code, dir Direction) {
	if sl, _ := r.Context().Value(ctxKey{}).(*slot); sl != nil {
		sl.s.RecordClose(code, dir)
	}
}

// slot is one admitted request: its share of the limits, its place in the
// list of tracked connections, and the ResponseWriter the handler sees.
type slot struct {
	s  *Shedder
	ip netip.Addr
	w  http.ResponseWriter // set under mu before the handler runs
	r  *http.Request       // set under mu before the handler runs

	// Guarded by s.mu.
	prev, next *slot
	linked     bool
	inflight   bool

	released atomic.Bool
	detached atomic.Bool // the connection outlives the handler (Handler)

	mu      sync.Mutex
	closer  Closer
	netConn net.Conn      // set when the handler hijacked through us
	req     *closeRequest // set once shed asked for a close
	forced  bool          // Shutdown dropped it
}

// closeRequest is a close shed wants sent on a connection.
type closeRequest struct {
	code   closecode.Code
	reason string
	hint   time.Duration
	why    Reason
	drain  bool
}

func (sl *slot) register(c Closer) {
	sl.mu.Lock()
	req := sl.req
	if sl.closer != nil {
		req = nil // a close already requested went to the first Closer
	}
	sl.closer = c
	sl.mu.Unlock()
	if sl.s.endInFlight(sl) {
		sl.s.emit(Event{State: StateOpen, Request: sl.r, ClientIP: sl.ip})
	}
	if req != nil {
		sl.s.send(sl, c, req)
	}
}

func (sl *slot) release() {
	if !sl.released.CompareAndSwap(false, true) {
		return
	}
	s := sl.s
	sl.mu.Lock()
	c, shedClosed := sl.closer, sl.req != nil
	sl.mu.Unlock()
	if rep, ok := c.(codeReporter); ok {
		sent, received, echoed := rep.closeCodes()
		switch {
		case sent != 0 && echoed:
			s.RecordClose(sent, Echoed)
		case sent != 0 && !shedClosed:
			s.RecordClose(sent, Sent)
		}
		if received != 0 {
			s.RecordClose(received, Received)
		}
	}
	// Last: a Shutdown waiting for the final slot sees complete counts.
	s.releaseSlot(sl)
	s.emit(Event{State: StateClosed, Request: sl.r, ClientIP: sl.ip})
}

// codeReporter is implemented by closers that know which codes their
// connection sent and received (the adapter for ebb's Conn).
type codeReporter interface {
	closeCodes() (sent, received closecode.Code, echoed bool)
}

// Header implements http.ResponseWriter.
func (sl *slot) Header() http.Header { return sl.w.Header() }

// Write implements http.ResponseWriter.
func (sl *slot) Write(p []byte) (int, error) { return sl.w.Write(p) }

// WriteHeader implements http.ResponseWriter.
func (sl *slot) WriteHeader(code int) { sl.w.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the server's writer.
func (sl *slot) Unwrap() http.ResponseWriter { return sl.w }

// Flush implements http.Flusher.
func (sl *slot) Flush() { _ = http.NewResponseController(sl.w).Flush() }

// Hijack implements http.Hijacker and records the connection: the
// handshake is over, and Shutdown can force-close it.
func (sl *slot) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(sl.w).Hijack()
	if err != nil {
		return nil, nil, err
	}
	sl.mu.Lock()
	sl.netConn = c
	sl.mu.Unlock()
	leftPending(c) // no longer pending at a shed Listener
	if sl.s.endInFlight(sl) {
		sl.s.emit(Event{State: StateOpen, Request: sl.r, ClientIP: sl.ip})
	}
	return c, brw, nil
}

// isUpgrade reports whether r asks for a WebSocket upgrade (RFC 6455 §4.1:
// GET with "Connection: Upgrade" and "Upgrade: websocket", tokens compared
// without regard to case).
func isUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet &&
		hasToken(r.Header["Connection"], "upgrade") &&
		hasToken(r.Header["Upgrade"], "websocket")
}

func hasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
