package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// connectOptions holds the flags of "ebb connect".
type connectOptions struct {
	headers     []string
	subprotocol []string
	origin      string
	insecure    bool
	compress    bool
	require     []string
	asJSON      bool
	linger      time.Duration

	// --reconnect and the policy flags that only apply with it.
	reconnect   bool
	maxAttempts int
	maxElapsed  time.Duration
	persistent  bool
	base        time.Duration
	cap         time.Duration
}

func newConnectCmd(e *env) *cobra.Command {
	var o connectOptions
	cmd := &cobra.Command{
		Use:   "connect URL",
		Short: "Connect to a WebSocket server and exchange messages (like wscat)",
		Long: `Connect opens a WebSocket connection to URL (ws:// or wss://).

Each line read from standard input is sent as a text message. Each message
received is printed to standard output: text as it is, binary as
"[binary N B] " followed by the payload in base64. When standard input ends,
connect keeps printing what arrives until the connection has been quiet
for --linger (answers to the last lines are usually in flight), then sends
Close 1000 and waits for the server's reply.

When the connection ends, the close code, the reason and what the code
means (from ebb's close-code registry) are printed to standard error. The
exit status is 0 when the connection ended with 1000 Normal Closure or
1001 Going Away, 1 otherwise, 130 after Ctrl-C (which closes with 1001).

--require EXT makes the extension mandatory: if the server does not accept
it, connect closes with 1010 Mandatory Extension and says what was offered
and what the server answered. --require permessage-deflate implies --compress.

With --json, every event (open, message, closed, error) is printed to
standard output as one JSON object per line.

--reconnect keeps the link up with ebb's reconnect policy: after a close
whose code says retrying can help (1001, 1006, 1011, 1012, 1013, 1014, an
HTTP 429 or 5xx answer), connect waits min(--cap, --base·2^n), jittered,
and never less than the server's retry-after= hint, then connects again.
A code that retrying cannot fix (1002, 1003, 1007–1010, most 4xx answers)
ends it at once; 1000 ends it too unless --persistent is set. Every state
change is printed to standard error with its reason, e.g.
  closed 1013 Try Again Later (retry-after=4.2) — retrying in 4.6s, attempt 3
--max-attempts and --max-elapsed bound the retries. Lines read while the
link is down are queued (up to 256 messages or 1 MiB) and sent in order
once it is up again; at the end of input connect waits for the queue to
go out before it lingers and closes. The exit status follows the last
close code, as without --reconnect. With --json the state changes are
JSON lines too (connecting, open, closed, waiting, stopped).`,
		Example: `  echo hello | ebb connect ws://localhost:8080/echo
  ebb connect -H "Authorization: Bearer $TOKEN" --subprotocol chat.v1 wss://example.com/ws
  ebb connect --require permessage-deflate ws://localhost:8080/echo
  ebb connect --json ws://localhost:8080/echo < messages.txt
  ebb connect --reconnect --max-attempts 10 ws://localhost:8080/echo`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one URL, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dopts, err := o.dialOptions()
			if err != nil {
				return err
			}
			if err := checkURL(args[0]); err != nil {
				return err
			}
			if err := o.checkReconnectFlags(cmd.Flags().Changed); err != nil {
				return err
			}
			if o.reconnect {
				return connectReconnect(cmd.Context(), e, args[0], dopts, &o)
			}
			return connect(cmd.Context(), e, args[0], dopts, &o)
		},
	}
	f := cmd.Flags()
	o.addHandshakeFlags(f)
	f.BoolVar(&o.compress, "compress", false, "offer permessage-deflate compression")
	f.StringArrayVar(&o.require, "require", nil, "extension the server must accept, or close with 1010 (repeatable)")
	f.BoolVar(&o.asJSON, "json", false, "print events as JSON lines on stdout")
	f.DurationVar(&o.linger, "linger", 500*time.Millisecond, "after stdin ends, keep printing messages until none arrived for this long (at most 10s), then close; 0 closes at once")
	f.BoolVar(&o.reconnect, "reconnect", false, "reconnect by ebb's policy (close code, backoff, server hint) instead of ending with the first connection")
	f.IntVar(&o.maxAttempts, "max-attempts", 0, "with --reconnect: give up after this many reconnect attempts in a row; 0 means no limit")
	f.DurationVar(&o.maxElapsed, "max-elapsed", 0, "with --reconnect: give up when the next attempt would start this long after the link was last stable; 0 means no limit")
	f.BoolVar(&o.persistent, "persistent", false, "with --reconnect: reconnect after 1000 Normal Closure too")
	f.DurationVar(&o.base, "base", reconnect.DefaultBase, "with --reconnect: nominal delay before the first reconnect attempt")
	f.DurationVar(&o.cap, "cap", reconnect.DefaultCap, "with --reconnect: longest nominal delay between attempts")
	return cmd
}

// addHandshakeFlags registers the flags that shape the upgrade request,
// shared by connect and probe.
func (o *connectOptions) addHandshakeFlags(f *pflag.FlagSet) {
	f.StringArrayVarP(&o.headers, "header", "H", nil, `extra request header "Name: value" (repeatable)`)
	f.StringArrayVar(&o.subprotocol, "subprotocol", nil, "subprotocol to offer, in order of preference (repeatable)")
	f.StringVar(&o.origin, "origin", "", "Origin header to send")
	f.BoolVar(&o.insecure, "insecure", false, "skip TLS certificate verification (testing only)")
}

// checkURL rejects what Dial would reject later with a less direct message.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return usagef("connect: %q is not a URL: %v", raw, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return usagef("connect: URL %q has scheme %q: want ws:// or wss://", raw, u.Scheme)
	}
	if u.Host == "" {
		return usagef("connect: URL %q has no host: want ws://host[:port]/path", raw)
	}
	return nil
}

// dialOptions turns the flags into websocket.DialOptions.
func (o *connectOptions) dialOptions() (*websocket.DialOptions, error) {
	h := http.Header{}
	for _, kv := range o.headers {
		name, value, ok := strings.Cut(kv, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, usagef(`connect: header %q is not of the form "Name: value"`, kv)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	if o.origin != "" {
		h.Set("Origin", o.origin)
	}
	d := &websocket.DialOptions{Header: h, Subprotocols: o.subprotocol}
	if o.insecure {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	for _, name := range o.require {
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, usagef("connect: --require needs an extension name such as permessage-deflate")
		}
		if !strings.EqualFold(name, "permessage-deflate") {
			return nil, usagef("connect: --require %q: ebb supports only the permessage-deflate extension", name)
		}
		o.compress = true
		d.Require = append(d.Require, requirement(name))
	}
	if o.compress {
		d.Compression = &websocket.CompressionOptions{}
	}
	return d, nil
}

// requirement names an extension the client requires.
func requirement(name string) websocket.Requirement {
	return websocket.Requirement{Extension: strings.ToLower(name)}
}

// events prints what happens on the connection, as text or JSON lines.
type events struct {
	e      *env
	asJSON bool
}

func (ev *events) json(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only unsupported values fail; everything here is strings and numbers.
		b = []byte(fmt.Sprintf(`{"event":"error","error":%q}`, err.Error()))
	}
	fmt.Fprintf(ev.e.stdout, "%s\n", b)
}

func (ev *events) open(c *websocket.Conn, u string) {
	if ev.asJSON {
		ev.json(map[string]any{"event": "open", "url": u, "subprotocol": c.Subprotocol(), "extensions": c.Extensions()})
		return
	}
	fmt.Fprintf(ev.e.stderr, "connected to %s (subprotocol: %s, extensions: %s)\n", u, orNone(c.Subprotocol()), orNone(c.Extensions()))
}

func (ev *events) message(typ websocket.MessageType, p []byte) {
	switch {
	case ev.asJSON && typ == websocket.MessageText:
		ev.json(map[string]any{"event": "message", "type": "text", "size": len(p), "data": string(p)})
	case ev.asJSON:
		ev.json(map[string]any{"event": "message", "type": "binary", "size": len(p), "base64": base64.StdEncoding.EncodeToString(p)})
	case typ == websocket.MessageText:
		fmt.Fprintf(ev.e.stdout, "%s\n", p)
	default:
		fmt.Fprintf(ev.e.stdout, "[binary %d B] %s\n", len(p), base64.StdEncoding.EncodeToString(p))
	}
}

// closed reports how the connection ended, with the registry's explanation.
// sent is the Close this client started the handshake with, or nil when the
// server (or the network) ended the connection.
func (ev *events) closed(ce *websocket.CloseError, sent *websocket.CloseError) {
	info := closecode.Lookup(ce.Code)
	by := "this client"
	switch {
	case ce.Code == closecode.AbnormalClosure:
		by = "nobody (connection lost)"
	case sent == nil && ce.Remote:
		by = "server"
	}
	hint, hasHint := closecode.ParseRetryHint(ce.Reason)
	if ev.asJSON {
		v := map[string]any{
			"event": "closed", "code": int(ce.Code), "name": info.Name, "reason": ce.Reason,
			"by": by, "retry_class": info.Retry.String(), "description": info.Description, "fix": info.Fix,
		}
		if sent != nil {
			v["sent_code"] = int(sent.Code)
		}
		if hasHint {
			v["retry_after_seconds"] = hint.Seconds()
		}
		ev.json(v)
		return
	}
	w := ev.e.stderr
	if sent != nil && ce.Remote {
		fmt.Fprintf(w, "connection closed by this client with %s; the server answered %s", sent.Code, ce.Code)
		if ce.Reason != "" {
			fmt.Fprintf(w, ": %q", ce.Reason)
		}
		fmt.Fprintln(w)
		ev.explain(info, hint, hasHint)
		return
	}
	fmt.Fprintf(w, "connection closed by %s: %s", by, ce.Code)
	if ce.Reason != "" {
		fmt.Fprintf(w, ": %q", ce.Reason)
	}
	fmt.Fprintln(w)
	ev.explain(info, hint, hasHint)
}

// explain prints the registry's view of the code a connection ended with.
func (ev *events) explain(info closecode.Info, hint time.Duration, hasHint bool) {
	w := ev.e.stderr
	fmt.Fprintf(w, "  retry class: %s", info.Retry)
	if hasHint {
		fmt.Fprintf(w, " (server hint: not before %s)", hint)
	}
	fmt.Fprintln(w)
	for _, line := range wrap(info.Description, 74) {
		fmt.Fprintf(w, "  %s\n", line)
	}
	if !normalEnd(info.Code) {
		for i, line := range wrap(info.Fix, 70) {
			if i == 0 {
				fmt.Fprintf(w, "  fix: %s\n", line)
			} else {
				fmt.Fprintf(w, "       %s\n", line)
			}
		}
	}
}

// failed reports an error that ended the command before or outside the
// close handshake (dial failures, write failures).
func (ev *events) failed(err error) {
	var me *websocket.MandatoryExtensionError
	var he *websocket.HandshakeError
	if ev.asJSON {
		v := map[string]any{"event": "error", "error": err.Error()}
		switch {
		case errors.As(err, &me):
			v["code"] = int(closecode.MandatoryExtension)
			v["required"], v["offered"], v["answered"], v["missing"] = me.Required, me.Offered, me.Answered, me.Missing
		case errors.As(err, &he):
			v["status"] = he.StatusCode
			if he.RetryAfter > 0 {
				v["retry_after_seconds"] = he.RetryAfter.Seconds()
			}
		}
		ev.json(v)
		return
	}
	w := ev.e.stderr
	if !errors.As(err, &me) {
		fmt.Fprintf(w, "ebb connect: %v\n", err)
	}
	switch {
	case me != nil:
		// The error's own text repeats all of this on one line; spread it
		// out so that offered and answered can be compared at a glance.
		info := closecode.Lookup(closecode.MandatoryExtension)
		fmt.Fprintf(w, "ebb connect: the server did not accept a required extension\n")
		fmt.Fprintf(w, "  closed with:  %s\n", closecode.MandatoryExtension)
		fmt.Fprintf(w, "  required:     %s\n", orNone(strings.Join(me.Required, ", ")))
		fmt.Fprintf(w, "  offered:      %s\n", orNone(me.Offered))
		fmt.Fprintf(w, "  answered:     %s\n", orNone(me.Answered))
		fmt.Fprintf(w, "  missing:      %s\n", orNone(strings.Join(me.Missing, "; ")))
		for i, line := range wrap(info.Fix, 62) {
			if i == 0 {
				fmt.Fprintf(w, "  fix:          %s\n", line)
			} else {
				fmt.Fprintf(w, "                %s\n", line)
			}
		}
	case errors.As(err, &he):
		if he.RetryAfter > 0 {
			fmt.Fprintf(w, "  the server asks to retry after %s\n", he.RetryAfter)
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// normalEnd reports whether a connection that ended with c counts as success.
func normalEnd(c closecode.Code) bool {
	return c == closecode.NormalClosure || c == closecode.GoingAway
}

// lingerMax caps --linger's wait for a quiet connection, so that a server
// that never stops sending cannot keep connect from closing after stdin ends.
const lingerMax = 10 * time.Second

// linger waits until no message arrived for quiet (at most lingerMax). It
// returns early when the connection ended meanwhile (ended, with the
// reader's error as end) or when ctx is canceled (interrupted).
func linger(ctx context.Context, quiet time.Duration, activity <-chan struct{}, readErr <-chan error) (ended, interrupted bool, end error) {
	if quiet <= 0 {
		return false, ctx.Err() != nil, nil
	}
	limit := time.NewTimer(lingerMax)
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

// closeWait bounds how long connect waits for the reader to see the end of
// the connection after it asked to close; Close itself bounds the handshake.
const closeWait = 10 * time.Second

func connect(ctx context.Context, e *env, u string, opts *websocket.DialOptions, o *connectOptions) error {
	ev := &events{e: e, asJSON: o.asJSON}
	conn, _, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if ctx.Err() != nil {
			return context.Canceled
		}
		ev.failed(err)
		return &exitError{code: exitFailure}
	}
	defer conn.CloseNow()
	ev.open(conn, u)

	// The reader runs on its own context so that Ctrl-C does not cut the
	// close handshake short: it ends when the connection ends. It hands
	// messages to a printer and goes straight back to Read, so that it is
	// reading, not printing, when Close needs the peer's reply.
	readErr := make(chan error, 1)
	msgs := make(chan message, 256)
	go func() {
		defer close(msgs)
		for {
			typ, p, err := conn.Read(context.Background())
			if err != nil {
				readErr <- err
				return
			}
			msgs <- message{typ, p}
		}
	}()
	printed := make(chan struct{})
	activity := make(chan struct{}, 1) // a message arrived (for linger)
	go func() {
		defer close(printed)
		for m := range msgs {
			ev.message(m.typ, m.p)
			noteActivity(activity)
		}
	}()

	lines, stdinErr, stopLines := startLines(e.stdin)
	defer stopLines()

	interrupted := false
	var end error
	var sent *websocket.CloseError // the Close this client started with
	finish := func(code closecode.Code, reason string) {
		sent = &websocket.CloseError{Code: code, Reason: reason}
		closeConn(conn, code, reason)
		end = waitRead(readErr)
	}
loop:
	for {
		select {
		case line := <-lines:
			if err := conn.Write(ctx, websocket.MessageText, []byte(line)); err != nil {
				if ctx.Err() != nil {
					interrupted = true
					finish(closecode.GoingAway, "interrupted")
				} else {
					end = waitRead(readErr)
				}
				break loop
			}
		case err := <-stdinErr:
			if err != nil {
				fmt.Fprintf(e.stderr, "ebb connect: reading standard input: %v\n", err)
			}
			var ended bool
			ended, interrupted, end = linger(ctx, o.linger, activity, readErr)
			switch {
			case ended:
			case interrupted:
				finish(closecode.GoingAway, "interrupted")
			default:
				finish(closecode.NormalClosure, "")
			}
			break loop
		case end = <-readErr:
			break loop
		case <-ctx.Done():
			interrupted = true
			finish(closecode.GoingAway, "interrupted")
			break loop
		}
	}

	// Print every message that arrived before the end is reported. The
	// printer ends once the reader has (or after waitRead gave up on it).
	select {
	case <-printed:
	case <-time.After(closeWait):
	}
	var ce *websocket.CloseError
	if !errors.As(end, &ce) {
		if end != nil {
			ev.failed(end)
		}
		return &exitError{code: exitFailure}
	}
	ev.closed(ce, sent)
	switch {
	case interrupted:
		return context.Canceled
	case normalEnd(ce.Code):
		return nil
	default:
		return &exitError{code: exitFailure}
	}
}

// message is one received data message.
type message struct {
	typ websocket.MessageType
	p   []byte
}

// closeConn starts the close handshake; the outcome is read by the reader.
func closeConn(c *websocket.Conn, code closecode.Code, reason string) {
	// Close reports the same outcome the reader sees; the reader's copy is
	// the one printed, so this error carries nothing new.
	_ = c.Close(code, reason)
}

// waitRead waits for the reader to see the end of the connection.
func waitRead(readErr <-chan error) error {
	select {
	case err := <-readErr:
		return err
	case <-time.After(closeWait):
		return fmt.Errorf("the connection did not end within %s after the close handshake started", closeWait)
	}
}

// readLines sends each line of r (without its line ending) to lines, then
// nil (at EOF) or the read error to done. It stops early when stop closes.
// noteActivity records that a message arrived (the linger timer watches it),
// without blocking when a signal is already pending.
func noteActivity(activity chan<- struct{}) {
	select {
	case activity <- struct{}{}:
	default:
	}
}

// startLines reads r line by line in the background (see readLines); stop
// ends it.
func startLines(r io.Reader) (lines <-chan string, done <-chan error, stop func()) {
	l := make(chan string)
	d := make(chan error, 1)
	s := make(chan struct{})
	go readLines(r, l, d, s)
	return l, d, func() { close(s) }
}

func readLines(r io.Reader, lines chan<- string, done chan<- error, stop <-chan struct{}) {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 && (err == nil || err == io.EOF) {
			select {
			case lines <- strings.TrimRight(line, "\r\n"):
			case <-stop:
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			select {
			case done <- err:
			case <-stop:
			}
			return
		}
	}
}

// reconnectFlags are the flags that mean nothing without --reconnect.
var reconnectFlags = []string{"max-attempts", "max-elapsed", "persistent", "base", "cap"}

// checkReconnectFlags rejects policy flags given without --reconnect and
// values the policy cannot use. changed reports whether a flag was set on
// the command line.
func (o *connectOptions) checkReconnectFlags(changed func(name string) bool) error {
	if !o.reconnect {
		for _, name := range reconnectFlags {
			if changed(name) {
				return usagef("connect: --%s applies only with --reconnect: add --reconnect or drop --%s", name, name)
			}
		}
		return nil
	}
	switch {
	case o.maxAttempts < 0:
		return usagef("connect: --max-attempts %d: want 0 (no limit) or a positive count", o.maxAttempts)
	case o.maxElapsed < 0:
		return usagef("connect: --max-elapsed %v: want 0 (no limit) or a positive duration such as 5m", o.maxElapsed)
	case o.base <= 0:
		return usagef("connect: --base %v: want a positive duration such as 1s", o.base)
	case o.cap <= 0:
		return usagef("connect: --cap %v: want a positive duration such as 30s", o.cap)
	case o.cap < o.base:
		return usagef("connect: --cap %v is below --base %v: the cap bounds the delays that start at the base", o.cap, o.base)
	}
	return nil
}

// policy turns the flags into the reconnect policy.
func (o *connectOptions) policy() reconnect.Policy {
	return reconnect.Policy{
		Backoff:     reconnect.Backoff{Base: o.base, Cap: o.cap},
		MaxAttempts: o.maxAttempts,
		MaxElapsed:  o.maxElapsed,
		Persistent:  o.persistent,
	}
}

// syncWriter serializes writes from the goroutines of connect --reconnect
// (the client's events, the reader, standard input's loop).
type syncWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (s syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// linkReport prints the state changes of a reconnecting client. A closed
// event is held until the next one, so that a close and the wait it causes
// read as one line. Its methods run on the client's goroutine, one at a
// time.
type linkReport struct {
	ev      *events
	url     string
	attempt int              // of the last connecting event
	pending *reconnect.Event // a closed event not printed yet

	mu       sync.Mutex
	lastCode closecode.Code // of the last closed event; 0 before any
}

// event is the client's OnEvent.
func (r *linkReport) event(e reconnect.Event) {
	switch e.State {
	case reconnect.StateClosed:
		r.mu.Lock()
		if e.Status != 0 {
			// A refused handshake is the failure of a connection
			// that never was: 1006 in the registry's terms.
			r.lastCode = closecode.AbnormalClosure
		} else {
			r.lastCode = e.Code
		}
		r.mu.Unlock()
		if r.ev.asJSON {
			r.closedJSON(e)
			return
		}
		r.flush()
		r.pending = &e
		return
	case reconnect.StateWaiting:
		if r.ev.asJSON {
			v := map[string]any{"event": "waiting", "attempt": e.Attempt, "delay_seconds": e.Delay.Seconds(), "hinted": e.Hinted, "why": e.Decision.Why}
			if e.Decision.Hint > 0 {
				v["retry_after_seconds"] = e.Decision.Hint.Seconds()
			}
			r.ev.json(v)
			return
		}
		// One write per line: other goroutines print to stderr too.
		var b strings.Builder
		b.WriteString("waiting")
		if r.pending != nil {
			b.Reset()
			b.WriteString(closedLine(*r.pending) + " —")
			r.pending = nil
		}
		fmt.Fprintf(&b, " retrying in %v, attempt %d", seconds(e.Delay), e.Attempt)
		if e.Hinted {
			fmt.Fprintf(&b, " (the server's hint of %v set the delay)", seconds(e.Decision.Hint))
		}
		b.WriteString("\n")
		io.WriteString(r.ev.e.stderr, b.String())
		return
	}
	if r.ev.asJSON {
		switch e.State {
		case reconnect.StateConnecting:
			r.attempt = e.Attempt
			r.ev.json(map[string]any{"event": "connecting", "url": r.url, "attempt": e.Attempt})
		case reconnect.StateStopped:
			v := map[string]any{"event": "stopped", "unsent": e.Unsent}
			if e.Err != nil {
				v["error"] = e.Err.Error()
			}
			var gu *reconnect.GaveUpError
			v["gave_up"] = errors.As(e.Err, &gu)
			r.ev.json(v)
		}
		// Open is reported by connected, which sees the connection.
		return
	}
	r.flush()
	w := r.ev.e.stderr
	switch e.State {
	case reconnect.StateConnecting:
		r.attempt = e.Attempt
		if e.Attempt == 0 {
			fmt.Fprintf(w, "connecting to %s\n", r.url)
		} else {
			fmt.Fprintf(w, "connecting to %s, attempt %d\n", r.url, e.Attempt)
		}
	case reconnect.StateStopped:
		var gu *reconnect.GaveUpError
		switch {
		case errors.As(e.Err, &gu):
			fmt.Fprintf(w, "gave up%s\n", strings.TrimPrefix(gu.Error(), "reconnect: gave up"))
		case errors.Is(e.Err, reconnect.ErrClosed):
			fmt.Fprintln(w, "stopped: closed by this client")
		case e.Err != nil:
			fmt.Fprintf(w, "stopped: %s\n", strings.TrimPrefix(e.Err.Error(), "reconnect: "))
		default:
			fmt.Fprintln(w, "stopped")
		}
		if e.Unsent > 0 {
			fmt.Fprintf(w, "  %d queued messages were never sent\n", e.Unsent)
		}
	}
}

// connected is the client's OnConnect: it reports the connection that
// just opened, with what was negotiated.
func (r *linkReport) connected(_ context.Context, c *websocket.Conn) error {
	if r.ev.asJSON {
		r.ev.json(map[string]any{"event": "open", "url": r.url, "attempt": r.attempt, "subprotocol": c.Subprotocol(), "extensions": c.Extensions()})
		return nil
	}
	fmt.Fprintf(r.ev.e.stderr, "open: connected to %s (subprotocol: %s, extensions: %s)\n", r.url, orNone(c.Subprotocol()), orNone(c.Extensions()))
	return nil
}

// flush prints a held closed event on its own line: no wait follows it.
func (r *linkReport) flush() {
	if r.pending == nil {
		return
	}
	fmt.Fprintln(r.ev.e.stderr, closedLine(*r.pending))
	r.pending = nil
}

// code returns the close code of the last closed event, 0 if none.
func (r *linkReport) code() closecode.Code {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastCode
}

// closedLine describes a closed event, e.g.
// `closed 1013 Try Again Later (retry-after=4.2)`.
func closedLine(e reconnect.Event) string {
	var b strings.Builder
	b.WriteString("closed ")
	switch {
	case e.Status != 0:
		fmt.Fprintf(&b, "before the upgrade: the server answered HTTP %d %s", e.Status, http.StatusText(e.Status))
		if e.Decision.Hint > 0 {
			fmt.Fprintf(&b, " (Retry-After %v)", seconds(e.Decision.Hint))
		}
	default:
		b.WriteString(e.Code.String())
		if e.Reason != "" {
			fmt.Fprintf(&b, " (%s)", e.Reason)
		}
		switch {
		case e.Code == closecode.AbnormalClosure && e.Err != nil:
			fmt.Fprintf(&b, ": %v", e.Err)
		case e.Err == nil || errors.Is(e.Err, reconnect.ErrClosed):
		default:
			var me *websocket.MandatoryExtensionError
			if errors.As(e.Err, &me) {
				fmt.Fprintf(&b, ": offered %s, the server answered %s", orNone(me.Offered), orNone(me.Answered))
			}
		}
	}
	return b.String()
}

// closedJSON prints a closed event with the registry's view of its code.
func (r *linkReport) closedJSON(e reconnect.Event) {
	v := map[string]any{"event": "closed", "code": int(e.Code), "reason": e.Reason, "remote": e.Remote,
		"retry": e.Decision.Retry, "why": e.Decision.Why}
	if e.Code != 0 {
		info := closecode.Lookup(e.Code)
		v["name"], v["retry_class"] = info.Name, info.Retry.String()
	}
	if e.Status != 0 {
		v["status"] = e.Status
	}
	if e.Decision.Hint > 0 {
		v["retry_after_seconds"] = e.Decision.Hint.Seconds()
	}
	if e.Err != nil {
		v["error"] = e.Err.Error()
	}
	r.ev.json(v)
}

// seconds rounds d for people: 4.6s, 250ms.
func seconds(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// sentPoll is how often connect --reconnect looks whether its queue went
// out after standard input ended.
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

// connectReconnect is connect with --reconnect: a reconnect.Client instead
// of one connection, its state changes printed as they happen.
func connectReconnect(ctx context.Context, e *env, u string, dopts *websocket.DialOptions, o *connectOptions) error {
	var mu sync.Mutex
	se := &env{stdin: e.stdin, stdout: syncWriter{&mu, e.stdout}, stderr: syncWriter{&mu, e.stderr}}
	ev := &events{e: se, asJSON: o.asJSON}
	rep := &linkReport{ev: ev, url: u}
	// The client outlives Ctrl-C by the time it takes to close with 1001:
	// the loop below closes it when ctx ends.
	c, err := reconnect.New(context.WithoutCancel(ctx), u, &reconnect.Options{
		Dial:      dopts,
		Policy:    o.policy(),
		OnEvent:   rep.event,
		OnConnect: rep.connected,
	})
	if err != nil {
		ev.failed(err)
		return &exitError{code: exitFailure}
	}

	// Read must be called continuously: the client reads nothing else
	// while a message waits for it.
	// readDone closes once Read returned the client's final error; linger
	// sees that as the end of the link.
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

	lines, stdinErr, stopLines := startLines(e.stdin)
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
				fmt.Fprintf(se.stderr, "ebb connect: line not sent: %v\n", err)
			case ctx.Err() != nil:
				interrupted = true
				closeWith(closecode.GoingAway, "interrupted")
				break loop
			default:
				// The client stopped; its events said why.
				break loop
			}
		case err := <-stdinErr:
			if err != nil {
				fmt.Fprintf(se.stderr, "ebb connect: reading standard input: %v\n", err)
			}
			if interrupted = waitSent(ctx, c); interrupted {
				closeWith(closecode.GoingAway, "interrupted")
				break loop
			}
			var ended bool
			ended, interrupted, _ = linger(ctx, o.linger, activity, readDone)
			switch {
			case ended:
			case interrupted:
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
	switch {
	case interrupted:
		return context.Canceled
	case normalEnd(rep.code()):
		return nil
	default:
		return &exitError{code: exitFailure}
	}
}
