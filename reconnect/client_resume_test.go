package reconnect

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// hub is a broadcast endpoint that speaks RESUME.md, small but faithful:
// a bounded history, replay from ?from=, "!gap" for what the history lost,
// "!live" once the replay is done, then live messages. The history and the
// subscriber set change under one lock, so nothing falls between the
// replay and the live feed, and nothing is sent twice.
type hub struct {
	t    testing.TB
	size int // history bound, in messages

	// plain: do not select the subprotocol (a server without resume).
	plain bool
	// overlap: replay this many messages before from too, as an
	// at-least-once server may; the client must drop them.
	overlap uint64

	mu    sync.Mutex
	next  uint64 // the sequence of the next message published
	hist  []histMsg
	subs  map[chan histMsg]struct{}
	gate  chan struct{} // when set, upgrades wait until it is closed
	froms []string      // the from parameter of each connection, "-" when absent
	conns chan *websocket.Conn
}

type histMsg struct {
	seq  uint64
	typ  websocket.MessageType
	data []byte
}

func newHub(t testing.TB, size int) *hub {
	return &hub{t: t, size: size, next: 1, subs: map[chan histMsg]struct{}{}, conns: make(chan *websocket.Conn, 16)}
}

// publish broadcasts one message and returns its sequence.
func (h *hub) publish(typ websocket.MessageType, data string) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := histMsg{seq: h.next, typ: typ, data: []byte(data)}
	h.next++
	h.hist = append(h.hist, m)
	if len(h.hist) > h.size {
		h.hist = h.hist[len(h.hist)-h.size:]
	}
	for ch := range h.subs {
		select {
		case ch <- m:
		default:
			h.t.Errorf("hub: a subscriber fell 1024 messages behind")
		}
	}
	return m.seq
}

// hold makes new upgrades wait until the returned function is called.
func (h *hub) hold() (release func()) {
	g := make(chan struct{})
	h.mu.Lock()
	h.gate = g
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.gate = nil
		h.mu.Unlock()
		close(g)
	}
}

func (h *hub) fromParams() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.froms...)
}

// conn returns the next connection the hub accepted.
func (h *hub) conn(t *testing.T) *websocket.Conn {
	t.Helper()
	select {
	case c := <-h.conns:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("hub: no connection within 10s")
		return nil
	}
}

type frame struct {
	typ  websocket.MessageType
	data []byte
}

func (h *hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	g := h.gate
	h.mu.Unlock()
	if g != nil {
		<-g
	}
	q := r.URL.Query()
	var from uint64
	if q.Has(ResumeFromParam) {
		var err error
		if from, err = ParseResumeFrom(q.Get(ResumeFromParam)); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	opts := &websocket.AcceptOptions{Subprotocols: []string{ResumeSubprotocol}}
	if h.plain {
		opts = nil
	}
	c, err := websocket.Accept(w, r, opts)
	if err != nil {
		h.t.Errorf("hub: Accept: %v", err)
		return
	}
	defer c.CloseNow()
	resume := c.Subprotocol() == ResumeSubprotocol

	ch := make(chan histMsg, 1024)
	var first []frame
	h.mu.Lock()
	fp := "-"
	if q.Has(ResumeFromParam) {
		fp = q.Get(ResumeFromParam)
	}
	h.froms = append(h.froms, fp)
	if resume {
		oldest := h.next
		if len(h.hist) > 0 {
			oldest = h.hist[0].seq
		}
		switch {
		case from == 0:
			first = append(first, frame{websocket.MessageText, AppendResumeLive(nil, h.next)})
		case from > h.next:
			// The client is ahead of this history: it was reset. Go live
			// from the oldest message held, then send all of them.
			first = append(first, frame{websocket.MessageText, AppendResumeLive(nil, oldest)})
			for _, m := range h.hist {
				first = append(first, frame{m.typ, AppendResumeData(nil, m.seq, m.data)})
			}
		default:
			start := from
			if from < oldest {
				first = append(first, frame{websocket.MessageText, AppendResumeGap(nil, from, oldest)})
				start = oldest
			}
			start -= min(h.overlap, start-oldest)
			for _, m := range h.hist {
				if m.seq >= start {
					first = append(first, frame{m.typ, AppendResumeData(nil, m.seq, m.data)})
				}
			}
			first = append(first, frame{websocket.MessageText, AppendResumeLive(nil, h.next)})
		}
	}
	h.subs[ch] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, ch)
		h.mu.Unlock()
	}()
	h.conns <- c

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer cancel()
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
		}
	}()
	for _, f := range first {
		if c.Write(ctx, f.typ, f.data) != nil {
			return
		}
	}
	for {
		select {
		case m := <-ch:
			data := m.data
			if resume {
				data = AppendResumeData(nil, m.seq, m.data)
			}
			if c.Write(ctx, m.typ, data) != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// readN reads n messages (or errors) and renders each as "text:payload",
// "binary:payload" or "gap:<reason> <from> <next>".
func readN(t *testing.T, c *Client, n int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []string
	for range n {
		typ, p, err := c.Read(ctx)
		var gap *GapError
		switch {
		case errors.As(err, &gap):
			out = append(out, fmt.Sprintf("gap:%v %d %d", gap.Reason, gap.From, gap.Next))
		case err != nil:
			t.Fatalf("Read after %q: %v", out, err)
		default:
			out = append(out, typ.String()+":"+string(p))
		}
	}
	return out
}

func wantRead(t *testing.T, c *Client, want ...string) {
	t.Helper()
	if got := readN(t, c, len(want)); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Read returned\n  %q\nwant\n  %q", got, want)
	}
}

func waitLive(t *testing.T, c *Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.Live() {
		if time.Now().After(deadline) {
			t.Fatal("the client did not go live within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

func hubServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// TestResumeAcrossReconnects: a connection ends (1012, 1013, a dropped TCP
// connection) after the client read some messages; more are published
// while it is away; the next connection asks for them with from= and Read
// returns exactly the missing ones, once, in order, then the live ones.
func TestResumeAcrossReconnects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		before  int    // messages read before the break
		overlap uint64 // the server replays this many already delivered
		end     func(c *websocket.Conn)
		code    closecode.Code
	}{
		{"1012", 3, 0, func(c *websocket.Conn) { c.Close(closecode.ServiceRestart, "restarting; retry-after=0.01") }, closecode.ServiceRestart},
		{"1013", 3, 0, func(c *websocket.Conn) { c.Close(closecode.TryAgainLater, "fell behind; retry-after=0.01") }, closecode.TryAgainLater},
		{"dropped TCP", 3, 0, func(c *websocket.Conn) { c.CloseNow() }, closecode.AbnormalClosure},
		{"duplicates dropped", 3, 2, func(c *websocket.Conn) { c.CloseNow() }, closecode.AbnormalClosure},
		{"nothing read before", 0, 0, func(c *websocket.Conn) { c.Close(closecode.ServiceRestart, "") }, closecode.ServiceRestart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHub(t, 100)
			h.overlap = tc.overlap
			rec := newRecorder()
			c, err := Dial(testCtx(t), hubServer(t, h), &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}, OnEvent: rec.OnEvent})
			if err != nil {
				t.Fatal(err)
			}
			defer mustClose(t, c)
			first := h.conn(t)
			waitLive(t, c)
			var want []string
			for i := 1; i <= tc.before; i++ {
				typ := websocket.MessageText
				if i%2 == 0 {
					typ = websocket.MessageBinary
				}
				h.publish(typ, "m"+strconv.Itoa(i))
				want = append(want, typ.String()+":m"+strconv.Itoa(i))
			}
			wantRead(t, c, want...)
			if got := c.LastSeq(); got != uint64(tc.before) {
				t.Errorf("LastSeq = %d, want %d", got, tc.before)
			}

			release := h.hold()
			tc.end(first)
			closed := rec.waitFor(t, StateClosed, 1)
			if closed.Code != tc.code {
				t.Errorf("closed with %v, want %v", closed.Code, tc.code)
			}
			if c.Live() {
				t.Error("Live() is true while the link is down")
			}
			// Published while the client is away: 2 text, 2 binary, and a
			// payload that looks like a control message.
			want = nil
			for i, m := range []string{"away1", "away2", "!gap 1 2", "away4"} {
				typ := websocket.MessageText
				if i%2 == 1 {
					typ = websocket.MessageBinary
				}
				h.publish(typ, m)
				want = append(want, typ.String()+":"+m)
			}
			release()
			wantRead(t, c, want...)
			waitLive(t, c)
			h.publish(websocket.MessageText, "live")
			wantRead(t, c, "text:live")
			if got, want := c.LastSeq(), uint64(tc.before+5); got != want {
				t.Errorf("LastSeq = %d, want %d", got, want)
			}
			from := strconv.Itoa(tc.before + 1)
			if got, want := strings.Join(h.fromParams(), " "), "- "+from; got != want {
				t.Errorf("from parameters = %q, want %q", got, want)
			}
			open := rec.waitFor(t, StateOpen, 2)
			if open.Resume != ResumeAccepted || open.From != uint64(tc.before+1) || open.Subprotocol != ResumeSubprotocol {
				t.Errorf("second open event: resume %v from %d subprotocol %q, want accepted from %s", open.Resume, open.From, open.Subprotocol, from)
			}
			if s := open.String(); !strings.Contains(s, "resuming from "+from) {
				t.Errorf("open event reads %q, want it to say resuming from %s", s, from)
			}
		})
	}
}

// TestResumeGap: the client was away longer than the history: Read
// returns a *GapError for exactly the lost messages, then goes on.
func TestResumeGap(t *testing.T) {
	t.Parallel()
	h := newHub(t, 3)
	c, err := Dial(testCtx(t), hubServer(t, h), &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	first := h.conn(t)
	waitLive(t, c)
	h.publish(websocket.MessageText, "a")
	h.publish(websocket.MessageText, "b")
	wantRead(t, c, "text:a", "text:b")
	release := h.hold()
	first.Close(closecode.ServiceRestart, "")
	for i := 3; i <= 10; i++ {
		h.publish(websocket.MessageText, "m"+strconv.Itoa(i))
	}
	release()
	// 3–7 fell out of the 3-message history.
	ctx := testCtx(t)
	_, p, err := c.Read(ctx)
	var gap *GapError
	if !errors.As(err, &gap) || p != nil {
		t.Fatalf("Read = %q, %v; want a *GapError", p, err)
	}
	if *gap != (GapError{Reason: GapTooOld, From: 3, Next: 8}) {
		t.Errorf("gap = %+v, want too old 3 8", *gap)
	}
	if want := "reconnect: messages 3–7 (5) are lost (no longer in the server's history); delivery continues with 8"; err.Error() != want {
		t.Errorf("gap error reads %q, want %q", err, want)
	}
	if got := c.LastSeq(); got != 7 {
		t.Errorf("LastSeq after the gap = %d, want 7", got)
	}
	wantRead(t, c, "text:m8", "text:m9", "text:m10")
	if c.Err() != nil {
		t.Errorf("the client stopped after a gap: %v", c.Err())
	}
}

// TestResumeReset: the server's numbering restarts (a standalone server
// restarted without its history): the client must not drop the new
// numbering's messages as duplicates. It reports the reset and delivers
// what the new history holds.
func TestResumeReset(t *testing.T) {
	t.Parallel()
	var cur atomic.Pointer[hub]
	h1 := newHub(t, 100)
	cur.Store(h1)
	url := hubServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }))
	c, err := Dial(testCtx(t), url, &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	first := h1.conn(t)
	waitLive(t, c)
	for i := 1; i <= 5; i++ {
		h1.publish(websocket.MessageText, "old"+strconv.Itoa(i))
	}
	readN(t, c, 5)
	h2 := newHub(t, 100)
	release := h2.hold()
	cur.Store(h2)
	first.Close(closecode.ServiceRestart, "")
	h2.publish(websocket.MessageText, "new1")
	h2.publish(websocket.MessageText, "new2")
	release()
	wantRead(t, c, "gap:reset 6 1")
	if got := c.LastSeq(); got != 0 {
		t.Errorf("LastSeq after the reset = %d, want 0: the new numbering starts at 1", got)
	}
	wantRead(t, c, "text:new1", "text:new2")
	waitLive(t, c)
	h2.publish(websocket.MessageText, "new3")
	wantRead(t, c, "text:new3")
	if got := c.LastSeq(); got != 3 {
		t.Errorf("LastSeq = %d, want 3 (the new numbering)", got)
	}
	if got := strings.Join(h2.fromParams(), " "); got != "6" {
		t.Errorf("the new server saw from %q, want 6", got)
	}
}

// TestResumeFrom: ResumeOptions.From asks the first connection for a
// saved position; the URL's own query is kept.
func TestResumeFrom(t *testing.T) {
	t.Parallel()
	h := newHub(t, 100)
	for i := 1; i <= 4; i++ {
		h.publish(websocket.MessageText, "m"+strconv.Itoa(i))
	}
	var query atomic.Value
	url := hubServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query.Store(r.URL.RawQuery)
		h.ServeHTTP(w, r)
	}))
	c, err := Dial(testCtx(t), url+"/feed?room=a%20b", &Options{Policy: fastPolicy(), Resume: &ResumeOptions{From: 3}})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	if got := c.LastSeq(); got != 2 {
		t.Errorf("LastSeq before any Read = %d, want From-1 = 2", got)
	}
	wantRead(t, c, "text:m3", "text:m4")
	if got := query.Load(); got != "room=a%20b&from=3" {
		t.Errorf("query = %q, want the URL's own then from=3", got)
	}

	if _, err := New(testCtx(t), url+"/?from=4", &Options{Resume: &ResumeOptions{}}); err == nil || !strings.Contains(err.Error(), "ResumeOptions.From") {
		t.Errorf("New with from= in the URL = %v, want an error pointing to ResumeOptions.From", err)
	}
}

// TestResumeUnknownControl: controls this version does not know are
// skipped; the offered subprotocols keep the application's own, after
// ebb.resume.v1, and the caller's DialOptions are not modified.
func TestResumeUnknownControl(t *testing.T) {
	t.Parallel()
	offered := make(chan string, 1)
	url := hubServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		offered <- r.Header.Get("Sec-WebSocket-Protocol")
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{ResumeSubprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := context.Background()
		for _, m := range []string{"!live 1", "!ping 12", "1\nfirst", "!hello", "2\nsecond"} {
			c.Write(ctx, websocket.MessageText, []byte(m))
		}
		c.Read(ctx)
	}))
	dial := &websocket.DialOptions{Subprotocols: []string{"chat", ResumeSubprotocol}}
	c, err := Dial(testCtx(t), url, &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	wantRead(t, c, "text:first", "text:second")
	if got := <-offered; got != "ebb.resume.v1, chat" {
		t.Errorf("offered %q, want \"ebb.resume.v1, chat\"", got)
	}
	if len(dial.Subprotocols) != 2 || dial.Subprotocols[0] != "chat" {
		t.Errorf("the caller's DialOptions changed: %q", dial.Subprotocols)
	}
}

// TestResumePlainServer: a server that does not select the subprotocol.
// The client says so (a warning event and log record), delivers the plain
// messages untouched, and from the second connection on reports through
// Read that what was published meanwhile may be lost.
func TestResumePlainServer(t *testing.T) {
	t.Parallel()
	t.Run("reconnect", func(t *testing.T) {
		t.Parallel()
		h := newHub(t, 100)
		h.plain = true
		rec := newRecorder()
		var logs syncBuffer
		c, err := Dial(testCtx(t), hubServer(t, h), &Options{
			Policy: fastPolicy(), Resume: &ResumeOptions{}, OnEvent: rec.OnEvent,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer mustClose(t, c)
		first := h.conn(t)
		open := rec.waitFor(t, StateOpen, 1)
		if open.Resume != ResumeRefused || open.Subprotocol != "" {
			t.Errorf("open event: resume %v, subprotocol %q; want refused, none", open.Resume, open.Subprotocol)
		}
		wantEvent := "open: the server did not select ebb.resume.v1 (selected none): messages are plain and nothing missed can be resumed"
		if got := open.String(); got != wantEvent {
			t.Errorf("open event reads %q, want %q", got, wantEvent)
		}
		if !strings.Contains(logs.String(), "level=WARN msg=\"reconnect: "+wantEvent) {
			t.Errorf("no warning logged:\n%s", logs.String())
		}
		h.publish(websocket.MessageText, "1\nlooks like an envelope")
		wantRead(t, c, "text:1\nlooks like an envelope")
		if c.LastSeq() != 0 || c.Live() {
			t.Errorf("LastSeq %d, Live %v on a plain connection; want 0, false", c.LastSeq(), c.Live())
		}
		first.CloseNow()
		h.conn(t)
		h.publish(websocket.MessageBinary, "after")
		wantRead(t, c, "gap:no resume 0 0", "binary:after")
		if got := strings.Join(h.fromParams(), " "); got != "- -" {
			t.Errorf("from parameters %q, want none (no position on a plain server)", got)
		}
	})
	t.Run("saved position", func(t *testing.T) {
		t.Parallel()
		h := newHub(t, 100)
		h.plain = true
		c, err := Dial(testCtx(t), hubServer(t, h), &Options{Policy: fastPolicy(), Resume: &ResumeOptions{From: 10}})
		if err != nil {
			t.Fatal(err)
		}
		defer mustClose(t, c)
		h.conn(t)
		_, _, err = c.Read(testCtx(t))
		var gap *GapError
		if !errors.As(err, &gap) || *gap != (GapError{Reason: GapNoResume, From: 10}) {
			t.Fatalf("first Read = %v, want a no-resume gap from 10", err)
		}
		if !strings.Contains(err.Error(), "(from 10 on)") || !strings.Contains(err.Error(), "enable resume on the server") {
			t.Errorf("gap error %q does not say from where and what to do", err)
		}
		h.publish(websocket.MessageText, "plain")
		wantRead(t, c, "text:plain")
	})
}

// TestResumeMalformed: a message that breaks the protocol ends the
// connection with 1008 Policy Violation, and the client stops with an
// error that says what was wrong instead of retrying into the same
// message.
func TestResumeMalformed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		typ  websocket.MessageType
		msg  string
		why  string
	}{
		{"no envelope", websocket.MessageText, "hello", `starts with 'h'`},
		{"leading zero", websocket.MessageBinary, "01\nx", "leading zero"},
		{"binary control", websocket.MessageBinary, "!live 3", "control message in a binary frame"},
		{"backwards gap", websocket.MessageText, "!gap 9 5", "want from < next"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var conns atomic.Int32
			got := make(chan error, 1)
			url := hubServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conns.Add(1)
				c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{ResumeSubprotocol}})
				if err != nil {
					return
				}
				defer c.CloseNow()
				ctx := context.Background()
				c.Write(ctx, websocket.MessageText, []byte("!live 1"))
				c.Write(ctx, websocket.MessageText, []byte("1\nfine"))
				c.Write(ctx, tc.typ, []byte(tc.msg))
				_, _, err = c.Read(ctx)
				got <- err
			}))
			rec := newRecorder()
			c, err := Dial(testCtx(t), url, &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}, OnEvent: rec.OnEvent})
			if err != nil {
				t.Fatal(err)
			}
			wantRead(t, c, "text:fine")
			var ce *websocket.CloseError
			if err := <-got; !errors.As(err, &ce) || ce.Code != closecode.PolicyViolation || !strings.HasPrefix(ce.Reason, "malformed ebb.resume.v1 message: ") || !strings.Contains(ce.Reason, tc.why) {
				t.Errorf("the server's read ended with %v, want close 1008 naming %q", err, tc.why)
			}
			<-c.Done()
			closed := rec.waitFor(t, StateClosed, 1)
			var me *MalformedResumeError
			if closed.Code != closecode.PolicyViolation || closed.Remote || !errors.As(closed.Err, &me) || !strings.Contains(me.Why, tc.why) {
				t.Errorf("closed event %v (err %v), want a local 1008 with a *MalformedResumeError", closed, closed.Err)
			}
			var gave *GaveUpError
			if err := c.Err(); !errors.As(err, &gave) || !errors.As(err, &me) || !strings.Contains(err.Error(), "fix the server") {
				t.Errorf("Err() = %v, want a *GaveUpError wrapping the *MalformedResumeError", err)
			}
			if _, _, err := c.Read(testCtx(t)); !errors.As(err, &me) {
				t.Errorf("Read after the stop = %v, want the final error", err)
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("%d connections, want 1: a malformed message is not retried", n)
			}
		})
	}
}

// TestResumeNoPositionYet: a connection that ends before "!live" leaves
// the client without a position; the next connection cannot ask for what
// was missed, and Read says so.
func TestResumeNoPositionYet(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	url := hubServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{ResumeSubprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		if r.URL.Query().Has(ResumeFromParam) {
			t.Errorf("connection %d asked from=%s without a position", n.Load()+1, r.URL.Query().Get(ResumeFromParam))
		}
		if n.Add(1) == 1 {
			time.Sleep(20 * time.Millisecond)
			c.Close(closecode.ServiceRestart, "")
			return
		}
		ctx := context.Background()
		c.Write(ctx, websocket.MessageText, []byte("!live 7"))
		c.Write(ctx, websocket.MessageText, []byte("7\nseven"))
		c.Read(ctx)
	}))
	c, err := Dial(testCtx(t), url, &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	wantRead(t, c, "gap:no resume 0 7", "text:seven")
	if !strings.Contains((&GapError{Reason: GapNoResume, Next: 7}).Error(), "before the client learned its position") {
		t.Error("the no-position gap does not say what happened")
	}
}

// TestResumeOffUnchanged: without Options.Resume nothing is offered and
// payloads are untouched.
func TestResumeOffUnchanged(t *testing.T) {
	t.Parallel()
	offered := make(chan string, 1)
	url := hubServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		offered <- r.Header.Get("Sec-WebSocket-Protocol") + "|" + r.URL.RawQuery
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{ResumeSubprotocol}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.Write(context.Background(), websocket.MessageText, []byte("!live 1"))
		c.Read(context.Background())
	}))
	rec := newRecorder()
	c, err := Dial(testCtx(t), url, &Options{OnEvent: rec.OnEvent})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	wantRead(t, c, "text:!live 1")
	if got := <-offered; got != "|" {
		t.Errorf("offered subprotocol|query = %q, want nothing", got)
	}
	if e := rec.waitFor(t, StateOpen, 1); e.Resume != ResumeOff || c.Live() || c.LastSeq() != 0 {
		t.Errorf("resume %v, live %v, last %d without Options.Resume", e.Resume, c.Live(), c.LastSeq())
	}
}

func TestGapErrorText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		g    GapError
		want string
	}{
		{GapError{Reason: GapTooOld, From: 4, Next: 5}, "reconnect: message 4 is lost (no longer in the server's history); delivery continues with 5"},
		{GapError{Reason: GapReset, From: 501, Next: 3}, "reconnect: the server's numbering restarted at 3, below the 501 the client asked for: its history was reset (a restart without its store?); messages from 501 on in the old numbering may be lost; delivery continues with 3"},
		{GapError{Reason: GapNoResume}, "reconnect: the server did not select the subprotocol ebb.resume.v1, so messages published while the client was away cannot be asked for and may be lost; the messages that follow are plain: enable resume on the server"},
	} {
		if got := tc.g.Error(); got != tc.want {
			t.Errorf("%+v reads\n  %q\nwant\n  %q", tc.g, got, tc.want)
		}
	}
	if !bytes.Contains([]byte(GapReason(9).String()), []byte("9")) || ResumeStatus(9).String() != "ResumeStatus(9)" {
		t.Error("unknown enum values do not print their number")
	}
}

// TestResumeLastSeqFromLive: a client that asked for live messages learns
// its position from "!live" before reading anything, and a reconnect
// asks for what followed it.
func TestResumeLastSeqFromLive(t *testing.T) {
	t.Parallel()
	h := newHub(t, 100)
	h.publish(websocket.MessageText, "before the client")
	h.publish(websocket.MessageText, "before the client")
	c, err := Dial(testCtx(t), hubServer(t, h), &Options{Policy: fastPolicy(), Resume: &ResumeOptions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer mustClose(t, c)
	first := h.conn(t)
	waitLive(t, c)
	if got := c.LastSeq(); got != 2 {
		t.Errorf("LastSeq after !live 3 = %d, want 2", got)
	}
	release := h.hold()
	first.CloseNow()
	h.publish(websocket.MessageText, "while away")
	release()
	wantRead(t, c, "text:while away")
	if got := strings.Join(h.fromParams(), " "); got != "- 3" {
		t.Errorf("from parameters = %q, want \"- 3\"", got)
	}
}
