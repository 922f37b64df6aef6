package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// JSON events of a reconnecting session, besides open, message and error.
type (
	connectingEvent struct {
		Event   string `json:"event"` // "connecting"
		URL     string `json:"url"`
		Attempt int    `json:"attempt"`
	}
	// linkClosedEvent is a closed event with the policy's verdict on it.
	linkClosedEvent struct {
		closedEvent
		Remote bool   `json:"remote"`
		Status int    `json:"status,omitempty"` // HTTP status of a refused handshake
		Retry  bool   `json:"retry"`
		Why    string `json:"why"`
	}
	waitingEvent struct {
		Event       string   `json:"event"` // "waiting"
		Attempt     int      `json:"attempt"`
		DelayS      float64  `json:"delay_s"`
		Hinted      bool     `json:"hinted"`
		RetryAfterS *float64 `json:"retry_after_s,omitempty"`
		Why         string   `json:"why"`
	}
	stoppedEvent struct {
		Event  string `json:"event"` // "stopped"
		Unsent int    `json:"unsent"`
		GaveUp bool   `json:"gave_up"`
		Error  string `json:"error,omitempty"`
	}
)

// linkReport reports the state changes of a reconnecting client. A closed
// event is held until the next one, so that a close and the wait it causes
// read as one line. Its event method runs on the client's goroutine, one
// call at a time.
type linkReport struct {
	ev      *events
	url     string
	host    string
	tls     bool // wss://
	timeout time.Duration

	attempt   int              // of the last connecting event
	pending   *reconnect.Event // a closed event not printed yet
	connected atomic.Bool      // the current attempt got a TCP connection

	mu   sync.Mutex
	last *reconnect.Event // the last closed event
}

// event is the client's OnEvent.
func (r *linkReport) event(e reconnect.Event) {
	switch e.State {
	case reconnect.StateConnecting:
		r.connected.Store(false)
		r.attempt = e.Attempt
	case reconnect.StateClosed:
		e.Err = r.explainTimeout(e.Err)
		r.mu.Lock()
		r.last = &e
		r.mu.Unlock()
	}
	if r.ev.json {
		r.eventJSON(e)
		return
	}
	w := r.ev.diag
	switch e.State {
	case reconnect.StateClosed:
		r.flush()
		r.pending = &e
		return
	case reconnect.StateWaiting:
		// One write per line.
		var b strings.Builder
		b.WriteString("waiting")
		if r.pending != nil {
			b.Reset()
			b.WriteString(closedLine(*r.pending) + " —")
			r.pending = nil
		}
		fmt.Fprintf(&b, " retrying in %v, attempt %d", roundHuman(e.Delay), e.Attempt)
		if e.Hinted {
			fmt.Fprintf(&b, " (the server's hint of %v set the delay)", roundHuman(e.Decision.Hint))
		}
		b.WriteString("\n")
		io.WriteString(w, b.String())
		return
	}
	r.flush()
	switch e.State {
	case reconnect.StateConnecting:
		if e.Attempt == 0 {
			fmt.Fprintf(w, "connecting to %s\n", r.url)
		} else {
			fmt.Fprintf(w, "connecting to %s, attempt %d\n", r.url, e.Attempt)
		}
	case reconnect.StateStopped:
		var b strings.Builder
		var gu *reconnect.GaveUpError
		switch {
		case errors.As(e.Err, &gu):
			b.WriteString(gaveUpLine(gu) + "\n")
			if last := r.lastEvent(); last != nil && last.Status == 0 && !normalEnd(last.Code) {
				hint, ok := closecode.ParseRetryHint(last.Reason)
				writeExplanation(&b, last.Code, hint, ok)
			}
		case errors.Is(e.Err, reconnect.ErrClosed):
			b.WriteString("stopped: closed by this client\n")
		case e.Err != nil:
			fmt.Fprintf(&b, "stopped: %s\n", strings.TrimPrefix(e.Err.Error(), "reconnect: "))
		default:
			b.WriteString("stopped\n")
		}
		if e.Unsent > 0 {
			verb := "were"
			if e.Unsent == 1 {
				verb = "was"
			}
			fmt.Fprintf(&b, "  %s %s never sent\n", plural(e.Unsent, "queued message", "queued messages"), verb)
		}
		io.WriteString(w, b.String())
	}
}

// eventJSON reports e as a JSON line. Open is reported by connected, which
// sees the connection.
func (r *linkReport) eventJSON(e reconnect.Event) {
	switch e.State {
	case reconnect.StateConnecting:
		r.ev.emit(connectingEvent{Event: "connecting", URL: r.url, Attempt: e.Attempt})
	case reconnect.StateClosed:
		ce := linkClosedEvent{closedEvent: closedJSON(closeOfEvent(e)), Remote: e.Remote, Status: e.Status, Retry: e.Decision.Retry, Why: e.Decision.Why}
		if e.Status != 0 {
			// A refused handshake has no close code of its own; its
			// Retry-After is the hint.
			ce.Code, ce.Name, ce.Description, ce.Fix, ce.RetryClass = 0, "", "", "", ""
			if e.Decision.Hint > 0 {
				ce.RetryAfterS = secsPtr(e.Decision.Hint)
			}
		}
		r.ev.emit(ce)
	case reconnect.StateWaiting:
		we := waitingEvent{Event: "waiting", Attempt: e.Attempt, DelayS: secs(e.Delay), Hinted: e.Hinted, Why: e.Decision.Why}
		if e.Decision.Hint > 0 {
			we.RetryAfterS = secsPtr(e.Decision.Hint)
		}
		r.ev.emit(we)
	case reconnect.StateStopped:
		se := stoppedEvent{Event: "stopped", Unsent: e.Unsent}
		var gu *reconnect.GaveUpError
		if errors.As(e.Err, &gu) {
			se.GaveUp = true
			se.Error = gaveUpLine(gu)
		} else if e.Err != nil {
			se.Error = strings.TrimPrefix(e.Err.Error(), "reconnect: ")
		}
		r.ev.emit(se)
	}
}

// gaveUpLine says why the client gave up, e.g. "gave up after 2 attempts
// in 1.2s: the limit of attempts was reached without a stable connection;
// last: 1006 Abnormal Closure: …".
func gaveUpLine(gu *reconnect.GaveUpError) string {
	var b strings.Builder
	b.WriteString("gave up")
	if gu.Attempts > 0 {
		fmt.Fprintf(&b, " after %s in %v", plural(gu.Attempts, "attempt", "attempts"), roundHuman(gu.Elapsed))
	}
	b.WriteString(": ")
	switch {
	case errors.Is(gu.Limit, reconnect.ErrMaxAttempts):
		b.WriteString("the limit of attempts was reached without a stable connection; last: ")
	case errors.Is(gu.Limit, reconnect.ErrMaxElapsed):
		b.WriteString("the next attempt would start past the time limit; last: ")
	case gu.Limit != nil:
		b.WriteString(strings.TrimPrefix(gu.Limit.Error(), "reconnect: ") + "; last: ")
	}
	b.WriteString(gu.Decision.Why)
	return b.String()
}

// explainTimeout turns the error of an attempt that ran out of time into a
// *handshake.TimeoutError, which says which step timed out.
func (r *linkReport) explainTimeout(err error) error {
	var he *websocket.HandshakeError
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || errors.As(err, &he) {
		return err
	}
	return &handshake.TimeoutError{Host: r.host, Timeout: r.timeout, Connected: r.connected.Load(), TLS: r.tls, Err: err}
}

// connected is the client's OnConnect: it reports the connection that
// just opened, with what was negotiated.
func (r *linkReport) connectedTo(_ context.Context, c *websocket.Conn) error {
	r.ev.open(r.url, c.Subprotocol(), c.Extensions(), r.attempt)
	return nil
}

// flush prints a held closed event on its own line: no wait follows it.
func (r *linkReport) flush() {
	if r.pending == nil {
		return
	}
	io.WriteString(r.ev.diag, closedLine(*r.pending)+"\n")
	r.pending = nil
}

func (r *linkReport) lastEvent() *reconnect.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// closeOfEvent describes how a connection or attempt ended. A handshake
// refused over HTTP is the failure of a connection that never was: 1006 in
// the registry's terms.
func closeOfEvent(e reconnect.Event) *Close {
	cl := &Close{Code: e.Code, Reason: e.Reason}
	switch {
	case e.Status != 0:
		cl.Code, cl.By, cl.Err = closecode.AbnormalClosure, ByServer, e.Err
	case e.Code == closecode.AbnormalClosure:
		cl.By, cl.Err = ByNobody, e.Err
	case e.Remote:
		cl.By = ByServer
	default:
		cl.By = ByClient
	}
	cl.RetryAfter, cl.HasRetryAfter = closecode.ParseRetryHint(e.Reason)
	var me *websocket.MandatoryExtensionError
	if errors.As(e.Err, &me) {
		cl.Mandatory = me
	}
	return cl
}

// closedLine describes a closed event, e.g.
// `closed 1013 Try Again Later (server at capacity; retry-after=4.2)`.
func closedLine(e reconnect.Event) string {
	var b strings.Builder
	b.WriteString("closed ")
	if e.Status != 0 {
		fmt.Fprintf(&b, "before the upgrade: the server answered HTTP %d %s", e.Status, http.StatusText(e.Status))
		if e.Decision.Hint > 0 {
			fmt.Fprintf(&b, " (Retry-After %v)", roundHuman(e.Decision.Hint))
		}
		return b.String()
	}
	b.WriteString(e.Code.String())
	if e.Reason != "" {
		fmt.Fprintf(&b, " (%s)", e.Reason)
	}
	var me *websocket.MandatoryExtensionError
	switch {
	case e.Code == closecode.AbnormalClosure && e.Err != nil:
		fmt.Fprintf(&b, ": %s", handshake.Explain(e.Err))
	case errors.As(e.Err, &me):
		fmt.Fprintf(&b, ": offered %s, the server answered %s", orNone(me.Offered), orNone(me.Answered))
	}
	return b.String()
}

// sentPoll is how often a reconnecting session looks whether its queue
// went out after the input ended.
const sentPoll = 20 * time.Millisecond

// waitSent waits until the client is open with nothing left in its queue,
// has stopped, or ctx ends; it reports whether ctx ended.
func waitSent(ctx context.Context, c *reconnect.Client) (interrupted bool) {
	t := time.NewTicker(sentPoll)
	defer t.Stop()
	for {
		if c.State() == reconnect.StateOpen && len(c.Unsent()) == 0 {
			return false
		}
		select {
		case <-ctx.Done():
			return true
		case <-c.Done():
			return false
		case <-t.C:
		}
	}
}

// hostOf returns the host[:port] of a URL, or the URL itself.
func hostOf(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		return u.Host
	}
	return rawURL
}

// runLink is a session kept up by package reconnect: a reconnect.Client
// instead of one connection, its state changes reported as they happen.
// The client delivers one message at a time and reads nothing else while
// the output takes it, so a slow output holds the server back here too.
func runLink(ctx context.Context, u string, in io.Reader, ev *events, o *Options) *Result {
	timeout := o.HandshakeTimeout
	if timeout <= 0 {
		timeout = handshake.DefaultTimeout
	}
	rep := &linkReport{ev: ev, url: u, host: hostOf(u), tls: strings.HasPrefix(strings.ToLower(u), "wss:"), timeout: timeout}
	var dopts websocket.DialOptions
	if o.Dial != nil {
		dopts = *o.Dial
	}
	dial := dopts.NetDialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	dopts.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			rep.connected.Store(true)
		}
		return c, err
	}
	// The client outlives ctx by the time it takes to close with 1001:
	// the loop below closes it when ctx ends.
	c, err := reconnect.New(context.WithoutCancel(ctx), u, &reconnect.Options{
		Dial:             &dopts,
		Policy:           *o.Reconnect,
		HandshakeTimeout: timeout,
		OnEvent:          rep.event,
		OnConnect:        rep.connectedTo,
	})
	if err != nil {
		res := &Result{Err: &failure{msg: handshake.Explain(err), err: err}}
		ev.failed(res.Err)
		return res
	}

	// Read must be called continuously: the client reads nothing else
	// while a message waits for it. readDone closes once Read returned the
	// client's final error; linger sees that as the end of the link.
	readDone := make(chan error)
	activity := make(chan struct{}, 1)
	go func() {
		defer close(readDone)
		for {
			typ, p, err := c.Read(context.Background())
			if err != nil {
				return
			}
			ev.message(typ, p)
			noteActivity(activity)
		}
	}()

	lines, inputErr, stopLines := startLines(in)
	defer stopLines()

	interrupted := false
	closeWith := func(code closecode.Code, reason string) {
		// The outcome is reported by the client's events.
		_ = c.Close(code, reason)
	}
loop:
	for {
		select {
		case line := <-lines:
			err := c.Write(ctx, websocket.MessageText, []byte(line))
			switch {
			case err == nil:
			case errors.Is(err, reconnect.ErrQueueFull):
				ev.warn("line not sent: %s", strings.TrimPrefix(err.Error(), "reconnect: "))
			case ctx.Err() != nil:
				interrupted = true
				closeWith(closecode.GoingAway, "interrupted")
				break loop
			default:
				// The client stopped; its events said why.
				break loop
			}
		case err := <-inputErr:
			if err != nil {
				ev.warn("reading the input failed: %v; closing the link", err)
			}
			if interrupted = waitSent(ctx, c); interrupted {
				closeWith(closecode.GoingAway, "interrupted")
				break loop
			}
			ended, intr, _ := linger(ctx, o.Linger, activity, readDone)
			interrupted = intr
			switch {
			case ended:
			case intr:
				closeWith(closecode.GoingAway, "interrupted")
			default:
				closeWith(closecode.NormalClosure, "")
			}
			break loop
		case <-c.Done():
			break loop
		case <-ctx.Done():
			interrupted = true
			closeWith(closecode.GoingAway, "interrupted")
			break loop
		}
	}
	// The client has stopped (Close waits for it); its final event is out.
	<-c.Done()
	<-readDone // Read returns the final error once the client has stopped
	res := &Result{Interrupted: interrupted}
	if last := rep.lastEvent(); last != nil {
		res.Close = closeOfEvent(*last)
	}
	return res
}
