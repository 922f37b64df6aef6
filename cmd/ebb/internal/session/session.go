// Package session runs an interactive WebSocket session, the engine behind
// "ebb connect": each line read from an io.Reader is sent as a text
// message, each message received is written to an io.Writer, and every
// event (open, closed, waiting, …) is reported as text for people or as
// JSON lines for machines. A close code that ends the session is reported
// with who sent it, its reason, the server's retry hint and the registry's
// explanation and fix.
//
// A session is one connection, or with Options.Reconnect a link kept up by
// package reconnect's policy. Received messages wait for the output in a
// queue bounded in bytes (Options.OutputBytes): when the output is slow, the
// session stops reading from the socket and TCP pushes back on the server,
// instead of buffering what the server sends.
//
// Run never prints to the process's standard streams, never reads flags and
// never exits; it returns a Result for the caller to turn into an exit
// status.
package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// Defaults and bounds of Options.
const (
	// DefaultOutputBytes bounds the received messages waiting for the
	// output: 4 MiB, a few screens of text or one large message, while a
	// server that sends faster than the output takes is held back by TCP.
	DefaultOutputBytes = 4 << 20
	// DefaultLinger is how long a session waits for a quiet connection
	// after its input ended: long enough for the answers to the last lines
	// on a local or regional link.
	DefaultLinger = 500 * time.Millisecond
	// MaxLinger caps Options.Linger, so that a server that never stops
	// sending cannot keep a session from closing after its input ended.
	MaxLinger = 10 * time.Second
)

// Options configure a session. The zero value is one connection with
// websocket's default dial options, a 10 s handshake timeout, text output,
// a close with 1000 once the connection was quiet for 500 ms after the
// input ended, and a 4 MiB output queue.
type Options struct {
	// Dial shapes every handshake: headers, subprotocols, TLS, compression
	// and required extensions. Nil means websocket's defaults. It is not
	// modified.
	Dial *websocket.DialOptions
	// HandshakeTimeout bounds each handshake (per attempt with Reconnect).
	// Zero or negative means handshake.DefaultTimeout (10 s).
	HandshakeTimeout time.Duration
	// Linger is how long the connection must stay quiet after the input
	// ended before the session closes it with 1000: answers to the last
	// lines are usually in flight. Zero means DefaultLinger; negative
	// closes at once; values above MaxLinger are capped.
	Linger time.Duration
	// JSON reports every event, messages included, as one JSON object per
	// line on the output (no HTML escaping, durations in seconds rounded
	// to the millisecond). Without it, messages go to the output as they
	// are and events go to the diagnostic writer as text.
	JSON bool
	// OutputBytes bounds the bytes of received messages waiting for the
	// output (each message counts its size plus a small overhead). A
	// message larger than the bound still goes through alone. Zero or
	// negative means DefaultOutputBytes.
	OutputBytes int
	// Reconnect, when set, keeps the link up by this policy instead of
	// ending the session with the first connection. Lines read while the
	// link is down are queued by package reconnect (256 messages or 1 MiB).
	Reconnect *reconnect.Policy
}

// Result is how a session ended.
type Result struct {
	// Close is the close code that ended the session (the last
	// connection's with Reconnect); nil when no connection ended with one,
	// for example when the handshake failed.
	Close *Close
	// Err is the failure that ended the session without a close code: a
	// handshake refused over HTTP, a timeout, an unreachable host. Its
	// text is one line that says what happened and what to try. In text
	// mode it has not been printed (the caller reports it); in JSON mode
	// it was reported as an "error" event already.
	Err error
	// Interrupted reports that ctx ended the session; an open connection
	// was closed with 1001 Going Away.
	Interrupted bool
}

// OK reports whether the session counts as a success: not interrupted,
// and ended by 1000 Normal Closure or 1001 Going Away.
func (r *Result) OK() bool {
	return !r.Interrupted && r.Err == nil && r.Close != nil && normalEnd(r.Close.Code)
}

// Who ended a connection, in Close.By and in JSON events.
const (
	ByServer = "server"
	ByClient = "client"
	ByNobody = "nobody" // the connection was lost without a Close frame
)

// Close describes the close code that ended a connection.
type Close struct {
	// Code and Reason are the close code and reason the connection ended
	// with: the server's answer when this client started the close
	// handshake.
	Code   closecode.Code
	Reason string
	// By says who chose to end the connection: ByServer, ByClient or
	// ByNobody.
	By string
	// Sent is the code this client started the close handshake with, or
	// 0 when it did not start it.
	Sent closecode.Code
	// RetryAfter is the server's retry-after= hint from Reason, when
	// HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
	// Mandatory is set when this client closed with 1010 because the
	// server did not accept a required extension: what was required,
	// offered and answered.
	Mandatory *websocket.MandatoryExtensionError
	// Err is the cause of a connection lost without a Close frame (1006),
	// when known.
	Err error
}

// closeOf describes how a connection ended. sent is the code this client
// started the close handshake with, or 0.
func closeOf(ce *websocket.CloseError, sent closecode.Code) *Close {
	cl := &Close{Code: ce.Code, Reason: ce.Reason, Sent: sent}
	if ce.Code == closecode.AbnormalClosure {
		cl.Err = ce.Err
	}
	switch {
	case sent != 0:
		cl.By = ByClient
	case ce.Code == closecode.AbnormalClosure:
		cl.By = ByNobody
	case ce.Remote:
		cl.By = ByServer
	default:
		cl.By = ByClient
	}
	cl.RetryAfter, cl.HasRetryAfter = closecode.ParseRetryHint(ce.Reason)
	return cl
}

// normalEnd reports whether a connection that ended with c counts as
// success.
func normalEnd(c closecode.Code) bool {
	return c == closecode.NormalClosure || c == closecode.GoingAway
}

// failure is a session's Err: the explanation of what failed, wrapping the
// error itself.
type failure struct {
	msg string
	err error
}

func (f *failure) Error() string { return f.msg }
func (f *failure) Unwrap() error { return f.err }

// Run runs a session with url: lines from in go out as text messages,
// received messages are written to out, events to out (JSON) or diag
// (text). It returns when the session ends: the server or the network
// ended it, the input ended and the connection was closed with 1000 (after
// Options.Linger), or ctx ended (the connection is closed with 1001).
// Writes to out and diag are serialized; out may block, which holds back
// the reading (see Options.OutputBytes). opts may be nil.
func Run(ctx context.Context, url string, in io.Reader, out, diag io.Writer, opts *Options) *Result {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.OutputBytes <= 0 {
		o.OutputBytes = DefaultOutputBytes
	}
	if o.Linger == 0 {
		o.Linger = DefaultLinger
	}
	o.Linger = min(o.Linger, MaxLinger)
	ev := &events{out: &lockedWriter{w: out}, diag: &lockedWriter{w: diag}, json: o.JSON}
	if o.Reconnect != nil {
		return runLink(ctx, url, in, ev, &o)
	}
	return runOne(ctx, url, in, ev, &o)
}

// closeWait bounds how long a session waits for the reader to see the end
// of the connection after it asked to close, and for the output to take
// the last messages; Close itself bounds the handshake.
const closeWait = 10 * time.Second

// message is one received data message.
type message struct {
	typ websocket.MessageType
	p   []byte
}

// runOne is a session of one connection.
func runOne(ctx context.Context, u string, in io.Reader, ev *events, o *Options) *Result {
	conn, resp, err := handshake.Dial(ctx, u, o.Dial, o.HandshakeTimeout)
	if err != nil {
		if ctx.Err() != nil {
			return &Result{Interrupted: true}
		}
		return ev.dialFailed(u, resp, err)
	}
	defer conn.CloseNow()
	ev.open(u, conn.Subprotocol(), conn.Extensions(), -1)

	// The reader runs on its own context so that Ctrl-C does not cut the
	// close handshake short: it ends when the connection ends. It hands
	// messages to the printer through a queue bounded in bytes and waits
	// when the queue is full: then nothing reads the socket and TCP holds
	// the server back. If the session closes meanwhile, Close reads the
	// peer's answer itself.
	q := newOutQueue(o.OutputBytes)
	abort := make(chan struct{}) // closed: stop queueing, drop messages
	var abortOnce sync.Once
	stopQueueing := func() { abortOnce.Do(func() { close(abort) }) }
	defer stopQueueing()
	readErr := make(chan error, 1)
	go func() {
		defer q.close()
		for {
			typ, p, err := conn.Read(context.Background())
			if err != nil {
				readErr <- err
				return
			}
			q.put(message{typ, p}, abort)
		}
	}()
	printed := make(chan struct{})
	activity := make(chan struct{}, 1) // a message was printed (for linger)
	var discard atomic.Bool            // Run is returning: print no more
	go func() {
		defer close(printed)
		for {
			m, ok := q.get()
			if !ok {
				return
			}
			if !discard.Load() {
				ev.message(m.typ, m.p)
			}
			q.release(m)
			noteActivity(activity)
		}
	}()
	defer discard.Store(true)

	lines, inputErr, stopLines := startLines(in)
	defer stopLines()

	interrupted := false
	var end error
	var sent closecode.Code // the code this client started the close with
	finish := func(code closecode.Code, reason string) {
		sent = code
		// Close reports the outcome the reader sees too; the reader's copy
		// is the one reported.
		_ = conn.Close(code, reason)
		end = waitRead(readErr)
	}
	interrupt := func() {
		interrupted = true
		stopQueueing()
		finish(closecode.GoingAway, "interrupted")
	}
loop:
	for {
		select {
		case line := <-lines:
			if err := conn.Write(ctx, websocket.MessageText, []byte(line)); err != nil {
				if ctx.Err() != nil {
					interrupt()
				} else {
					end = waitRead(readErr)
				}
				break loop
			}
		case err := <-inputErr:
			if err != nil {
				ev.warn("reading the input failed: %v; closing the connection", err)
			}
			ended, intr, e := linger(ctx, o.Linger, activity, readErr)
			switch {
			case ended:
				end = e
			case intr:
				interrupt()
			default:
				finish(closecode.NormalClosure, "")
			}
			break loop
		case end = <-readErr:
			break loop
		case <-ctx.Done():
			interrupt()
			break loop
		}
	}

	// Print every message that arrived before the end is reported. The
	// printer ends once the reader has.
	select {
	case <-printed:
	case <-time.After(closeWait):
	}
	var ce *websocket.CloseError
	if !errors.As(end, &ce) {
		if end == nil {
			end = errors.New("the connection ended without a close code")
		}
		res := &Result{Err: &failure{msg: handshake.Explain(end), err: end}, Interrupted: interrupted}
		ev.failed(res.Err)
		return res
	}
	cl := closeOf(ce, sent)
	ev.closed(cl)
	return &Result{Close: cl, Interrupted: interrupted}
}

// dialFailed reports a handshake that did not give a connection. A server
// that upgraded only to close at once (1013 in the same read as the 101)
// and a required extension the server did not accept (1010) are closes
// like any other: the open, then the close with its explanation, exactly
// as when the Close frame comes after the connection opened.
func (ev *events) dialFailed(u string, resp *http.Response, err error) *Result {
	var ce *websocket.CloseError
	var me *websocket.MandatoryExtensionError
	upgraded := resp != nil && resp.StatusCode == http.StatusSwitchingProtocols
	switch {
	case upgraded && errors.As(err, &ce) && ce.Remote:
		ev.openFrom(u, resp)
		cl := closeOf(ce, 0)
		ev.closed(cl)
		return &Result{Close: cl}
	case upgraded && errors.As(err, &me):
		ev.openFrom(u, resp)
		cl := &Close{Code: closecode.MandatoryExtension, Reason: me.CloseReason(), By: ByClient, Mandatory: me}
		ev.closed(cl)
		return &Result{Close: cl}
	}
	res := &Result{Err: &failure{msg: handshake.Explain(err), err: err}}
	ev.failed(res.Err)
	return res
}

// waitRead waits for the reader to see the end of the connection.
func waitRead(readErr <-chan error) error {
	select {
	case err := <-readErr:
		return err
	case <-time.After(closeWait):
		return fmt.Errorf("the connection did not end within %v after the close handshake started", closeWait)
	}
}

// linger waits until no message was printed for quiet. It returns early
// when the connection ended meanwhile (ended, with the reader's error as
// end) or when ctx ends (interrupted).
func linger(ctx context.Context, quiet time.Duration, activity <-chan struct{}, readErr <-chan error) (ended, interrupted bool, end error) {
	if quiet <= 0 {
		return false, ctx.Err() != nil, nil
	}
	limit := time.NewTimer(MaxLinger)
	defer limit.Stop()
	idle := time.NewTimer(quiet)
	defer idle.Stop()
	for {
		select {
		case <-activity:
			idle.Reset(quiet)
		case <-idle.C:
			return false, false, nil
		case <-limit.C:
			return false, false, nil
		case err := <-readErr:
			return true, false, err
		case <-ctx.Done():
			return false, true, nil
		}
	}
}

// noteActivity records that a message was printed (the linger timer
// watches it), without blocking when a signal is already pending.
func noteActivity(activity chan<- struct{}) {
	select {
	case activity <- struct{}{}:
	default:
	}
}

// lockedWriter serializes writes from the session's goroutines. Each
// stream has its own lock, so a blocked output does not hold back the
// diagnostics.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
