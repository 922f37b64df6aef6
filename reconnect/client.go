package reconnect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// Defaults of Options.
const (
	// DefaultQueueMessages bounds the messages queued while the link is
	// down.
	DefaultQueueMessages = 256
	// DefaultQueueBytes bounds the bytes queued while the link is down.
	DefaultQueueBytes = 1 << 20
	// DefaultHandshakeTimeout bounds one connection attempt.
	DefaultHandshakeTimeout = 10 * time.Second
)

var (
	// ErrQueueFull is returned by Write when the link is down and the
	// message does not fit in the queue (Options.QueueMessages,
	// Options.QueueBytes). The message was not queued; the caller still
	// owns it.
	ErrQueueFull = errors.New("reconnect: the link is down and the queue of unsent messages is full; wait for the open event, slow down, or raise Options.QueueMessages/QueueBytes")
	// ErrClosed is the error of a Client the application closed: Read and
	// Write return it after Close, and the final event carries it.
	ErrClosed = errors.New("reconnect: client closed by the application")
)

// Options configure a Client. The zero value (or nil) connects with the
// default websocket.DialOptions, the default Policy, a 10 s handshake
// timeout and a queue of 256 messages or 1 MiB.
type Options struct {
	// Dial is passed to websocket.Dial for every attempt. Its Require list
	// is how a client demands extensions: a server that does not accept
	// them ends the link with a *websocket.MandatoryExtensionError, never
	// retried.
	Dial *websocket.DialOptions
	// Policy decides whether and when to reconnect.
	Policy Policy
	// HandshakeTimeout bounds each connection attempt (TCP, TLS and the
	// upgrade). Zero or negative means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// QueueMessages and QueueBytes bound the queue of messages written
	// while the link is down; both apply. Zero means DefaultQueueMessages
	// and DefaultQueueBytes; a negative value for either turns queueing
	// off, so that Write fails with ErrQueueFull while the link is down.
	QueueMessages int
	QueueBytes    int
	// OnEvent receives every state change, in order, on the client's own
	// goroutine. It must return quickly (the client waits for it) and must
	// not call Close; to stop from there, cancel the context given to New.
	OnEvent func(Event)
	// OnConnect runs on every new connection before the client reads from
	// it and before the queued messages are flushed: the place to
	// authenticate or re-subscribe. It may read from and write to conn
	// (with Resume, what it reads bypasses the resume logic: don't). An
	// error closes the connection with 1011 and counts as a failed attempt
	// (retried with backoff). Like OnEvent it must not call Close.
	OnConnect func(ctx context.Context, conn *websocket.Conn) error
	// Clock stamps events and times the waits; nil means the real clock.
	Clock Clock
	// Rand draws the jitter; nil means math/rand/v2's global source.
	Rand Rand
	// Logger receives one record per state change; nil means silent.
	Logger *slog.Logger
	// Resume makes the client resume a broadcast across reconnections with
	// ebb's resume protocol (see "Resuming a broadcast" in the package
	// documentation): it offers ResumeSubprotocol, asks each new connection
	// for what it missed, strips the envelopes, drops duplicates, and
	// reports every gap as a *GapError from Read. Nil (the default) reads
	// and writes plain messages. It costs a mutex and a few comparisons per
	// message.
	Resume *ResumeOptions
}

// inbound is what the reading goroutine hands to Read: a message, or a
// *GapError (err). When hasSeq is set, seq is the position of a resuming
// client once Read returned it (what LastSeq reports).
type inbound struct {
	typ    websocket.MessageType
	data   []byte
	err    error
	seq    uint64
	hasSeq bool
}

// Message is a data message held in the client's queue.
type Message struct {
	Type websocket.MessageType
	Data []byte
}

// Client is a WebSocket link that reconnects by its Policy. Read delivers
// the messages of every connection in order; Write sends on the current
// connection or queues while there is none. All methods are safe for
// concurrent use, except that only one goroutine may call Read at a time.
// With Options.Resume, Read delivers a broadcast without loss across
// reconnections, or reports the loss (see "Resuming a broadcast" in the
// package documentation).
//
// A Client runs one goroutine for its life and one more per connection; the
// one per connection reads, so call Read continuously (even if you ignore
// the messages): while a message waits for Read, the client reads nothing
// else and sees no close frame.
type Client struct {
	url    string
	opts   Options
	clock  Clock
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelCauseFunc
	sched  *Schedule

	msgs   chan inbound  // reader → Read, unbuffered
	opened chan struct{} // closed when the first connection opens
	done   chan struct{} // closed when the client has stopped

	maxMsgs, maxBytes int

	mu         sync.Mutex
	conn       *websocket.Conn // set while writes may go straight out
	queue      []Message
	queueBytes int
	state      State
	stopErr    error // final error, set once stopped
	closeCode  closecode.Code
	closeMsg   string
	closeErr   error // result of the close handshake Close asked for
	openedOnce bool

	// Resume state (Options.Resume): last is the last sequence delivered,
	// valid once known is set (a message, a gap, !live or
	// ResumeOptions.From); readSeq is what LastSeq reports, set by Read;
	// live reports that the current connection has finished its replay.
	resume  bool
	known   bool
	last    uint64
	readSeq uint64
	live    bool
}

// New starts a client that connects to url (ws:// or wss://) in the
// background and keeps reconnecting by opts.Policy until it gives up, ctx
// ends or Close is called. ctx bounds the client's whole
// life, not just the first connection. A nil opts means the defaults.
// New fails only for a URL the client could never connect to.
func New(ctx context.Context, rawURL string, opts *Options) (*Client, error) {
	if err := checkURL(rawURL); err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Resume != nil {
		if u, _ := url.Parse(rawURL); u.Query().Has(ResumeFromParam) {
			return nil, fmt.Errorf("reconnect: URL %q already has the query parameter %s, which a resuming client sets itself on every connection: remove it and set ResumeOptions.From instead", rawURL, ResumeFromParam)
		}
		// Offer the subprotocol first, on a copy: the caller's options
		// are never modified.
		var d websocket.DialOptions
		if o.Dial != nil {
			d = *o.Dial
		}
		d.Subprotocols = append([]string{ResumeSubprotocol}, slices.DeleteFunc(slices.Clone(d.Subprotocols), func(p string) bool { return p == ResumeSubprotocol })...)
		o.Dial = &d
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	c := &Client{
		url:    rawURL,
		opts:   o,
		clock:  o.Clock,
		log:    o.Logger,
		msgs:   make(chan inbound),
		opened: make(chan struct{}),
		done:   make(chan struct{}),
	}
	if c.clock == nil {
		c.clock = realClock{}
	}
	if o.Resume != nil {
		c.resume = true
		if o.Resume.From > 0 {
			c.known, c.last = true, o.Resume.From-1
			c.readSeq = c.last
		}
	}
	c.maxMsgs, c.maxBytes = o.QueueMessages, o.QueueBytes
	if c.maxMsgs == 0 {
		c.maxMsgs = DefaultQueueMessages
	}
	if c.maxBytes == 0 {
		c.maxBytes = DefaultQueueBytes
	}
	if c.maxMsgs < 0 || c.maxBytes < 0 {
		c.maxMsgs, c.maxBytes = 0, 0
	}
	c.ctx, c.cancel = context.WithCancelCause(ctx)
	c.sched = NewSchedule(o.Policy, o.Rand, c.clock.Now())
	go c.run()
	return c, nil
}

// Dial is New followed by a wait for the first connection: it returns the
// client once a connection has opened (even if the client stopped right
// after: Read and Err then say why), or nil and the client's final error (a
// *GaveUpError, or the context's error) when it stopped before any
// connection opened. Failed attempts before that
// are retried by the Policy like any other; bound the wait with
// Policy.MaxAttempts, Policy.MaxElapsed or ctx, which also bounds the
// client's life afterwards.
func Dial(ctx context.Context, rawURL string, opts *Options) (*Client, error) {
	c, err := New(ctx, rawURL, opts)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.opened:
		return c, nil
	case <-c.done:
		select {
		case <-c.opened:
			// A connection opened before the client stopped: the caller
			// gets the client, whose Read and Err report the stop.
			return c, nil
		default:
			return nil, c.Err()
		}
	}
}

func checkURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("reconnect: cannot parse URL %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "ws", "wss":
	default:
		return fmt.Errorf("reconnect: URL %q has scheme %q: want ws:// or wss://", rawURL, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("reconnect: URL %q has no host: want e.g. ws://example.com/path", rawURL)
	}
	return nil
}

// Read returns the next message from the server, waiting across
// reconnections. It returns ctx's error when ctx ends first, and the
// client's final error (see Err) once the client has stopped.
//
// With Options.Resume, Read returns the original payloads (without the
// envelope), each once and in order, and a *GapError where messages are
// missing from the stream; that error is not final: log it or resync,
// then call Read again.
func (c *Client) Read(ctx context.Context) (websocket.MessageType, []byte, error) {
	select {
	case m := <-c.msgs:
		if m.hasSeq {
			c.mu.Lock()
			c.readSeq = m.seq
			c.mu.Unlock()
		}
		return m.typ, m.data, m.err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	case <-c.ctx.Done():
		return 0, nil, c.stoppingErr()
	}
}

// Write sends a message on the current connection. While the link is down
// it queues a copy of data instead and returns nil; the queue is flushed in
// order after the next connection opens (after OnConnect). If the message
// does not fit in the queue, Write returns an error wrapping ErrQueueFull
// and the message is not queued. A message whose write fails because the
// connection broke is queued too, to go out on the next connection. After
// the client stopped, Write returns its final error.
//
// Nil from Write on an open connection means the message was handed to the
// network, not that the server read it: if the server closes right after,
// the message is gone with the connection, as with any WebSocket. Nothing is
// dropped silently by the client itself (every message is sent, queued,
// refused with an error, or left in Unsent), but an application that needs
// every message to arrive must acknowledge them in its own protocol.
func (c *Client) Write(ctx context.Context, typ websocket.MessageType, data []byte) error {
	if typ != websocket.MessageText && typ != websocket.MessageBinary {
		return fmt.Errorf("reconnect: message type %d is neither MessageText nor MessageBinary", int(typ))
	}
	c.mu.Lock()
	if err := c.ctx.Err(); err != nil {
		c.mu.Unlock()
		return c.stoppingErr()
	}
	conn := c.conn
	if conn == nil {
		defer c.mu.Unlock()
		return c.enqueueLocked(typ, data)
	}
	c.mu.Unlock()

	for {
		err := conn.Write(ctx, typ, data)
		if err == nil || ctx.Err() != nil {
			return err
		}
		c.mu.Lock()
		if c.ctx.Err() != nil {
			c.mu.Unlock()
			return err
		}
		switch c.conn {
		case conn:
			// The connection broke under us: later writes queue too.
			c.conn = nil
			fallthrough
		case nil:
			qerr := c.enqueueLocked(typ, data)
			c.mu.Unlock()
			if qerr != nil {
				return fmt.Errorf("%w (the connection broke while writing: %w)", qerr, err)
			}
			return nil
		default:
			// A new connection is already up: send it there.
			conn = c.conn
			c.mu.Unlock()
		}
	}
}

// enqueueLocked queues a copy of data, or returns ErrQueueFull.
func (c *Client) enqueueLocked(typ websocket.MessageType, data []byte) error {
	if len(c.queue)+1 > c.maxMsgs || c.queueBytes+len(data) > c.maxBytes {
		return fmt.Errorf("%w (%d messages, %d bytes queued; bounds %d messages, %d bytes; message of %d bytes)",
			ErrQueueFull, len(c.queue), c.queueBytes, c.maxMsgs, c.maxBytes, len(data))
	}
	c.queue = append(c.queue, Message{Type: typ, Data: append([]byte(nil), data...)})
	c.queueBytes += len(data)
	return nil
}

// Close stops the client: it closes the current connection with code and
// reason (1000 "" is the usual pair), stops reconnecting and waits until
// the client's goroutines have ended. Messages still queued are not sent;
// Unsent returns them. Close returns the error of the close handshake, or
// an error without closing anything if code may not be sent by a client.
// Calling Close again, or after the client stopped, returns nil.
func (c *Client) Close(code closecode.Code, reason string) error {
	if !closecode.MaySend(code, false) {
		return fmt.Errorf("reconnect: a client cannot close with %v: want 1000, 1001, 1002, 1003, 1007–1014 or 3000–4999", code)
	}
	if len(reason) > closecode.MaxReasonBytes {
		return fmt.Errorf("reconnect: close reason of %d bytes is too long: at most %d bytes fit in a close frame", len(reason), closecode.MaxReasonBytes)
	}
	c.mu.Lock()
	first := c.ctx.Err() == nil
	if first {
		c.closeCode, c.closeMsg = code, reason
		c.cancel(ErrClosed)
	}
	c.mu.Unlock()
	<-c.done
	if !first {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Done is closed once the client has stopped and its goroutines have ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns the reason the client stopped: ErrClosed after Close, a
// *GaveUpError when the policy or a cap ended the link, or an error
// wrapping the context's error. It returns nil while the client runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopErr
}

// State returns the client's current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Unsent returns copies of the messages waiting in the queue: while the
// client runs, those waiting for the next connection; after it stopped,
// those it never sent, for the application to keep or send elsewhere.
func (c *Client) Unsent() []Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Message, len(c.queue))
	for i, m := range c.queue {
		out[i] = Message{Type: m.Type, Data: append([]byte(nil), m.Data...)}
	}
	return out
}

// stoppingErr is the error for Read and Write once the client's context
// has ended, before or after the final error is recorded.
func (c *Client) stoppingErr() error {
	c.mu.Lock()
	err := c.stopErr
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return ctxStopErr(c.ctx)
}

func ctxStopErr(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, ErrClosed) {
		return ErrClosed
	}
	return fmt.Errorf("reconnect: stopped because the context ended: %w", cause)
}

// emit records the state and hands the event to OnEvent and the logger.
func (c *Client) emit(e Event) {
	e.Time = c.clock.Now()
	c.mu.Lock()
	c.state = e.State
	c.mu.Unlock()
	if c.log != nil {
		level := slog.LevelInfo
		switch e.State {
		case StateConnecting:
			level = slog.LevelDebug
		case StateOpen:
			if e.Resume == ResumeRefused {
				level = slog.LevelWarn
			}
		case StateStopped:
			if e.Err != nil && !errors.Is(e.Err, ErrClosed) {
				level = slog.LevelWarn
			}
		}
		c.log.Log(context.Background(), level, "reconnect: "+e.String(), "url", c.url, "state", e.State.String(), "attempt", e.Attempt)
	}
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

// run is the client's goroutine: connect, serve, decide, wait, repeat.
func (c *Client) run() {
	defer close(c.done)
	attempt := 0
	for {
		if c.ctx.Err() != nil {
			c.stop(ctxStopErr(c.ctx), Decision{})
			return
		}
		from := c.resumeFrom()
		c.emit(Event{State: StateConnecting, Attempt: attempt, From: from})
		conn, d, ended := c.connect(attempt, from)
		if conn != nil {
			d, ended = c.serve(conn, attempt, from)
		}
		if ended {
			c.stop(ctxStopErr(c.ctx), Decision{})
			return
		}
		w, err := c.sched.Next(c.clock.Now(), d)
		if err != nil {
			c.stop(err, d)
			return
		}
		attempt = w.Attempt
		c.emit(Event{State: StateWaiting, Attempt: w.Attempt, Delay: w.Delay, Hinted: w.Hinted, Decision: d})
		if !c.sleep(w.Delay) {
			c.stop(ctxStopErr(c.ctx), d)
			return
		}
	}
}

// sleep waits d on the client's clock; false means the context ended.
func (c *Client) sleep(d time.Duration) bool {
	ch, stop := c.clock.NewTimer(d)
	defer stop()
	select {
	case <-ch:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// connect makes one attempt, asking to resume from from when it is not 0.
// It returns the open connection, or the verdict on the failure; ended
// reports that the client's context ended.
func (c *Client) connect(attempt int, from uint64) (conn *websocket.Conn, d Decision, ended bool) {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.HandshakeTimeout)
	conn, resp, err := websocket.Dial(ctx, resumeURL(c.url, from), c.opts.Dial)
	cancel()
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err == nil {
		return conn, Decision{}, false
	}
	if conn != nil {
		conn.CloseNow()
	}
	if c.ctx.Err() != nil {
		return nil, Decision{}, true
	}
	d = c.dialDecision(err, resp)
	// A server that upgraded only to close at once (1013 from an overloaded
	// server) makes Dial return its *CloseError: the server sent that code.
	var ce *websocket.CloseError
	remote := errors.As(err, &ce) && ce.Remote
	c.emit(Event{State: StateClosed, Attempt: attempt, Code: d.Code, Reason: d.Reason, Remote: remote, Status: d.Status, Decision: d, Err: err})
	return nil, d, false
}

// dialDecision classifies a failed attempt.
func (c *Client) dialDecision(err error, resp *http.Response) Decision {
	p := c.opts.Policy
	var d Decision
	var me *websocket.MandatoryExtensionError
	var he *websocket.HandshakeError
	var ce *websocket.CloseError
	status, header := 0, http.Header(nil)
	if resp != nil {
		status, header = resp.StatusCode, resp.Header
	}
	if status == 0 && errors.As(err, &he) {
		status = he.StatusCode
		if he.RetryAfter > 0 {
			header = http.Header{"Retry-After": {strconv.FormatInt(int64((he.RetryAfter+time.Second-1)/time.Second), 10)}}
		}
	}
	switch {
	case errors.As(err, &me):
		d = p.Decide(closecode.MandatoryExtension, "missing required extension: "+strings.Join(me.Missing, ", "))
	case status != 0 && status != http.StatusSwitchingProtocols:
		d = p.DecideHTTP(status, header, c.clock.Now())
	case errors.As(err, &ce):
		d = p.Decide(ce.Code, ce.Reason)
	case status == http.StatusSwitchingProtocols || he != nil:
		// The server said 101 but broke the handshake rules.
		d = p.Decide(closecode.ProtocolError, "")
		d.Why = "the server's 101 answer broke the handshake rules: " + d.Why
	case isTLSFailure(err):
		d = p.Decide(closecode.TLSHandshake, "")
	default:
		d = p.Decide(closecode.AbnormalClosure, "")
	}
	d.Err = err
	return d
}

// isTLSFailure reports certificate and TLS-framing failures, which
// retrying repeats (1015).
func isTLSFailure(err error) bool {
	var (
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
	)
	return errors.As(err, &cve) || errors.As(err, &rhe) || errors.As(err, &uae) ||
		errors.As(err, &hne) || errors.As(err, &cie)
}

// serve runs one open connection until it ends, and returns the verdict on
// how it ended; ended reports that the client's context ended.
func (c *Client) serve(conn *websocket.Conn, attempt int, from uint64) (Decision, bool) {
	c.sched.Opened(c.clock.Now())
	c.mu.Lock()
	first := !c.openedOnce
	c.openedOnce = true
	c.live = false
	c.mu.Unlock()
	rs := ResumeOff
	if c.resume {
		rs = ResumeRefused
		if conn.Subprotocol() == ResumeSubprotocol {
			rs = ResumeAccepted
		}
	}
	c.emit(Event{State: StateOpen, Attempt: attempt, From: from, Resume: rs, Subprotocol: conn.Subprotocol()})
	if first {
		close(c.opened)
	}

	if c.opts.OnConnect != nil {
		if err := c.opts.OnConnect(c.ctx, conn); err != nil {
			if c.ctx.Err() != nil {
				c.closeConn(conn, nil, attempt)
				return Decision{}, true
			}
			conn.Close(closecode.InternalError, "reconnect: OnConnect failed")
			conn.CloseNow()
			d := Decision{
				Retry: true, Class: closecode.Backoff, Code: closecode.InternalError,
				Reason: "OnConnect failed",
				Why:    "the OnConnect hook failed: retry with backoff", Err: err,
			}
			c.emit(Event{State: StateClosed, Attempt: attempt, Code: d.Code, Reason: d.Reason, Decision: d, Err: err})
			return d, false
		}
	}

	ended := make(chan error, 1)
	go c.readLoop(conn, ended, rs, !first)

	if err := c.flush(conn); err != nil {
		// The connection broke while flushing; the reader reports how.
		conn.CloseNow()
	}

	var err error
	select {
	case err = <-ended:
	case <-c.ctx.Done():
		c.closeConn(conn, ended, attempt)
		return Decision{}, true
	}
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	c.live = false
	c.mu.Unlock()
	conn.CloseNow()
	if c.ctx.Err() != nil {
		return Decision{}, true
	}

	var ce *websocket.CloseError
	var me *MalformedResumeError
	var d Decision
	switch {
	case errors.As(err, &me):
		// readLoop closed with 1008: the server breaks the protocol, and
		// a new connection would replay the same message.
		d = Decision{
			Class: closecode.Permanent, Code: closecode.PolicyViolation, Reason: malformedReason(me),
			Why: "the server sent a malformed " + ResumeSubprotocol + " message, so the client closed with 1008 Policy Violation; a new connection would replay it: fix the server",
		}
		ce = nil
	case errors.As(err, &ce):
		d = c.opts.Policy.Decide(ce.Code, ce.Reason)
	default:
		d = c.opts.Policy.Decide(closecode.AbnormalClosure, "")
	}
	d.Err = err
	c.emit(Event{State: StateClosed, Attempt: attempt, Code: d.Code, Reason: d.Reason, Remote: ce != nil && ce.Remote, Decision: d, Err: err})
	return d, false
}

// flush sends the queue in order, then opens the connection to direct
// writes. Writes queued meanwhile go out in the same pass.
func (c *Client) flush(conn *websocket.Conn) error {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.conn = conn
			c.mu.Unlock()
			return nil
		}
		m := c.queue[0]
		c.mu.Unlock()
		if err := conn.Write(c.ctx, m.Type, m.Data); err != nil {
			return err
		}
		c.mu.Lock()
		c.queue[0] = Message{}
		c.queue = c.queue[1:]
		c.queueBytes -= len(m.Data)
		c.mu.Unlock()
	}
}

// readLoop reads conn until it ends and delivers messages to Read. Once
// the client is stopping it keeps reading (and discards) so that the close
// handshake can complete. rs says whether the connection resumes;
// reconnected that an earlier connection was open (so that messages may
// have been published while the client was away).
func (c *Client) readLoop(conn *websocket.Conn, ended chan<- error, rs ResumeStatus, reconnected bool) {
	if rs == ResumeRefused {
		c.mu.Lock()
		known, last := c.known, c.last
		c.mu.Unlock()
		if known || reconnected {
			g := &GapError{Reason: GapNoResume}
			if known {
				g.From = last + 1
			}
			c.deliverGap(g)
		}
	}
	for {
		typ, data, err := conn.Read(context.Background())
		if err != nil {
			ended <- err
			return
		}
		if rs != ResumeAccepted {
			c.deliver(inbound{typ: typ, data: data})
			continue
		}
		m, err := ParseResumeMessage(typ, data)
		if err != nil {
			var me *MalformedResumeError
			errors.As(err, &me)
			if c.log != nil {
				c.log.Warn("reconnect: closing with 1008: "+err.Error(), "url", c.url)
			}
			conn.Close(closecode.PolicyViolation, malformedReason(me))
			conn.CloseNow()
			ended <- err
			return
		}
		c.resumed(m, typ, reconnected)
	}
}

// deliver hands m to Read and reports whether Read took it (false: the
// client is stopping).
func (c *Client) deliver(m inbound) bool {
	select {
	case c.msgs <- m:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// closeConn ends conn because the client is stopping: with the code and
// reason Close asked for, or 1001 Going Away when the context ended.
func (c *Client) closeConn(conn *websocket.Conn, ended <-chan error, attempt int) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
	}
	code, reason := c.closeCode, c.closeMsg
	c.mu.Unlock()
	if code == 0 {
		code, reason = closecode.GoingAway, "client stopping"
	}
	err := conn.Close(code, reason)
	conn.CloseNow()
	if ended != nil {
		<-ended
	}
	c.mu.Lock()
	c.closeErr = err
	c.mu.Unlock()
	d := Decision{
		Class: closecode.Classify(code), Code: code, Reason: reason,
		Why: "the client closed the connection because it is stopping", Err: err,
	}
	c.emit(Event{State: StateClosed, Attempt: attempt, Code: code, Reason: reason, Decision: d, Err: err})
}

// stop records the final error and reports it.
func (c *Client) stop(err error, d Decision) {
	c.mu.Lock()
	c.stopErr = err
	c.conn = nil
	c.live = false
	unsent := len(c.queue)
	c.mu.Unlock()
	c.cancel(err)
	c.emit(Event{State: StateStopped, Decision: d, Err: err, Unsent: unsent})
}
