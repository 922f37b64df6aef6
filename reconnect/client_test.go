package reconnect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/internal/leakcheck"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// fakeClock fires every timer at once and moves its time forward by the
// timer's duration, recording each wait; Advance moves it by hand.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch, func() bool { return false }
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) Waits() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.waits...)
}

// recorder collects events and lets a test wait for one.
type recorder struct {
	mu     sync.Mutex
	events []Event
	notify chan struct{}
	hook   func(Event) // runs on the client's goroutine, optional
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) OnEvent(e Event) {
	if r.hook != nil {
		r.hook(e)
	}
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// States returns the sequence of states seen.
func (r *recorder) States() string {
	var s []string
	for _, e := range r.Events() {
		s = append(s, e.State.String())
	}
	return strings.Join(s, " ")
}

// waitFor waits until n events of state st have been seen.
func (r *recorder) waitFor(t *testing.T, st State, n int) Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		var seen []Event
		for _, e := range r.Events() {
			if e.State == st {
				seen = append(seen, e)
			}
		}
		if len(seen) >= n {
			return seen[n-1]
		}
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("timed out waiting for %s event #%d; saw: %s", st, n, r.States())
		}
	}
}

// server is a loopback WebSocket server whose handler decides per
// connection (numbered from 1) what to do.
type server struct {
	*httptest.Server
	count atomic.Int32
}

func newServer(t testing.TB, handle func(n int, w http.ResponseWriter, r *http.Request)) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handle(int(s.count.Add(1)), w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *server) url() string { return "ws" + strings.TrimPrefix(s.URL, "http") }

// accept upgrades or fails the test.
func accept(t *testing.T, w http.ResponseWriter, r *http.Request) *websocket.Conn {
	t.Helper()
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		t.Errorf("Accept: %v", err)
		return nil
	}
	return c
}

// echoServer is a server that accepts every connection and echoes it.
func echoServer(t *testing.T) *server {
	t.Helper()
	return newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if c := accept(t, w, r); c != nil {
			echo(c)
		}
	})
}

// echo answers every message until the connection ends.
func echo(c *websocket.Conn) {
	defer c.CloseNow()
	ctx := context.Background()
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return
		}
	}
}

// closeWith accepts and then closes with code and reason. It waits a
// moment first, so that the client has taken the connection for open: a
// Close frame that arrives with the 101 response makes websocket.Dial itself
// fail, a different path (covered by TestClient1013HintThenAccepted).
func closeWith(t *testing.T, w http.ResponseWriter, r *http.Request, code closecode.Code, reason string) {
	t.Helper()
	if c := accept(t, w, r); c != nil {
		time.Sleep(30 * time.Millisecond)
		c.Close(code, reason)
		c.CloseNow()
	}
}

func fastPolicy() Policy {
	return Policy{Backoff: Backoff{Base: 5 * time.Millisecond, Cap: 40 * time.Millisecond}}
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustClose(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Close(closecode.NormalClosure, ""); err != nil {
		t.Errorf("Close: %v", err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err() after Close = %v, want ErrClosed", c.Err())
	}
}

func TestClient1013HintThenAccepted(t *testing.T) {
	t.Parallel()
	const refusals = 3
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n <= refusals {
			closeWith(t, w, r, closecode.TryAgainLater, closecode.FormatRetryHint("server at capacity", 200*time.Millisecond))
			return
		}
		if c := accept(t, w, r); c != nil {
			echo(c)
		}
	})
	rec := newRecorder()
	start := time.Now()
	c, err := Dial(testCtx(t), srv.url(), &Options{Policy: fastPolicy(), OnEvent: rec.OnEvent, Rand: seeded(3)})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	// The server refuses after opening: depending on whether its Close
	// frame arrives with the 101 response, the client sees each refusal as
	// a failed dial or as an open connection closed at once. Wait for the
	// fourth, lasting connection.
	for srv.count.Load() < refusals+1 || c.State() != StateOpen {
		if time.Since(start) > 15*time.Second {
			t.Fatalf("no lasting connection; events: %s", rec.States())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if elapsed := time.Since(start); elapsed < refusals*200*time.Millisecond {
		t.Errorf("reconnected %d times in %v: the 200 ms hint was not a floor", refusals, elapsed)
	}
	ctx := testCtx(t)
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	typ, p, err := c.Read(ctx)
	if err != nil || typ != websocket.MessageText || string(p) != "hello" {
		t.Fatalf("Read = %v %q %v, want the echo", typ, p, err)
	}
	mustClose(t, c)

	want := regexp.MustCompile(fmt.Sprintf(`^(connecting (open )?closed waiting ){%d}connecting open closed stopped$`, refusals))
	if got := rec.States(); !want.MatchString(got) {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	for i, e := range rec.Events() {
		switch e.State {
		case StateClosed:
			if i == len(rec.Events())-2 {
				if e.Code != closecode.NormalClosure || e.Remote || e.Err != nil {
					t.Errorf("last closed event = %+v, want the client's own 1000", e)
				}
				continue
			}
			if e.Code != closecode.TryAgainLater || !e.Remote || !strings.Contains(e.Reason, "retry-after=0.2") {
				t.Errorf("event %d = %+v, want a remote 1013 with its hint", i, e)
			}
		case StateWaiting:
			if e.Delay < 200*time.Millisecond || !e.Hinted || e.Decision.Hint != 200*time.Millisecond {
				t.Errorf("event %d waits %v (hinted %v): want ≥ the 200 ms hint", i, e.Delay, e.Hinted)
			}
		}
	}
	if got := srv.count.Load(); got != refusals+1 {
		t.Errorf("server saw %d handshakes, want %d", got, refusals+1)
	}
}

func TestClientQueueFlushOrder(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	got := make(chan []string, 1)
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		<-release
		c := accept(t, w, r)
		if c == nil {
			return
		}
		defer c.CloseNow()
		var msgs []string
		for range 6 {
			_, p, err := c.Read(context.Background())
			if err != nil {
				t.Errorf("server Read: %v", err)
				break
			}
			msgs = append(msgs, string(p))
		}
		got <- msgs
		c.Read(context.Background()) // until the client closes
	})
	rec := newRecorder()
	c, err := New(testCtx(t), srv.url(), &Options{
		Policy:  fastPolicy(),
		OnEvent: rec.OnEvent,
		OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
			return conn.Write(ctx, websocket.MessageText, []byte("subscribe"))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, StateConnecting, 1)
	ctx := testCtx(t)
	for i := range 5 {
		if err := c.Write(ctx, websocket.MessageText, []byte("m"+strconv.Itoa(i))); err != nil {
			t.Fatalf("Write while connecting: %v", err)
		}
	}
	if n := len(c.Unsent()); n != 5 {
		t.Fatalf("Unsent() = %d messages while the handshake is held, want 5", n)
	}
	close(release)
	want := []string{"subscribe", "m0", "m1", "m2", "m3", "m4"}
	if msgs := <-got; fmt.Sprint(msgs) != fmt.Sprint(want) {
		t.Errorf("server received %q, want %q (hook first, then the queue in order)", msgs, want)
	}
	// The client drops a message from the queue once its write returned,
	// which may be just after the server read it.
	for deadline := time.Now().Add(5 * time.Second); len(c.Unsent()) != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Unsent() = %d messages 5 s after the server got them all, want 0", len(c.Unsent()))
		}
	}
	mustClose(t, c)
}

func TestClientQueueBounds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		msgs     int
		bytes    int
		writes   []int // sizes written while down
		accepted int   // how many fit
	}{
		{"message bound", 2, 1000, []int{1, 1, 1}, 2},
		{"byte bound", 10, 8, []int{5, 3, 1}, 2},
		{"message larger than the byte bound", 10, 8, []int{9}, 0},
		{"queueing off", -1, 0, []int{1}, 0},
		{"defaults", 0, 0, []int{DefaultQueueBytes - 1, 1, 1}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			release := make(chan struct{})
			srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				<-release
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			defer close(release)
			rec := newRecorder()
			c, err := New(testCtx(t), srv.url(), &Options{Policy: fastPolicy(), OnEvent: rec.OnEvent, QueueMessages: tt.msgs, QueueBytes: tt.bytes})
			if err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, StateConnecting, 1)
			ctx := testCtx(t)
			for i, size := range tt.writes {
				err := c.Write(ctx, websocket.MessageBinary, make([]byte, size))
				if i < tt.accepted && err != nil {
					t.Fatalf("write %d (%d bytes): %v, want it queued", i, size, err)
				}
				if i >= tt.accepted && !errors.Is(err, ErrQueueFull) {
					t.Fatalf("write %d (%d bytes): %v, want ErrQueueFull", i, size, err)
				}
			}
			if err := c.Close(closecode.NormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			unsent := c.Unsent()
			if len(unsent) != tt.accepted {
				t.Fatalf("Unsent() after Close = %d messages, want %d", len(unsent), tt.accepted)
			}
			for i, m := range unsent {
				if len(m.Data) != tt.writes[i] || m.Type != websocket.MessageBinary {
					t.Errorf("unsent %d = %d bytes type %v, want %d bytes binary", i, len(m.Data), m.Type, tt.writes[i])
				}
			}
			last := rec.Events()[len(rec.Events())-1]
			if last.State != StateStopped || last.Unsent != tt.accepted || !errors.Is(last.Err, ErrClosed) {
				t.Errorf("last event = %v, want stopped with %d unsent", last, tt.accepted)
			}
			if err := c.Write(ctx, websocket.MessageText, nil); !errors.Is(err, ErrClosed) {
				t.Errorf("Write after Close = %v, want ErrClosed", err)
			}
			if _, _, err := c.Read(ctx); !errors.Is(err, ErrClosed) {
				t.Errorf("Read after Close = %v, want ErrClosed", err)
			}
		})
	}
}

func TestClientStopsOnPermanentCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code       closecode.Code
		persistent bool
	}{
		{closecode.PolicyViolation, false},
		{closecode.PolicyViolation, true},
		{closecode.UnsupportedData, false},
		{closecode.Unauthorized, true},
		{closecode.NormalClosure, false},
		{4001, true}, // private use without an Application rule
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v persistent=%v", tt.code, tt.persistent), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				closeWith(t, w, r, tt.code, "go away; retry-after=0.01")
			})
			rec := newRecorder()
			p := fastPolicy()
			p.Persistent = tt.persistent
			// When the Close frame comes with the 101 response, Dial itself
			// reports the stop; otherwise the client opens, then stops.
			c, err := Dial(testCtx(t), srv.url(), &Options{Policy: p, OnEvent: rec.OnEvent})
			if err == nil {
				<-c.Done()
				err = c.Err()
			}
			var ge *GaveUpError
			var ce *websocket.CloseError
			if !errors.As(err, &ge) || !errors.As(err, &ce) || ce.Code != tt.code || !ce.Remote {
				t.Fatalf("Err() = %v, want a *GaveUpError wrapping the server's %v", err, tt.code)
			}
			if ge.Limit != nil || ge.Decision.Retry {
				t.Errorf("GaveUpError = %+v, want the verdict itself to stop", ge)
			}
			if got := rec.States(); got != "connecting open closed stopped" && got != "connecting closed stopped" {
				t.Errorf("events %q, want connecting, (open,) closed, stopped", got)
			}
			if c == nil {
				if n := srv.count.Load(); n != 1 {
					t.Errorf("server saw %d handshakes, want 1", n)
				}
				return
			}
			if _, _, err := c.Read(testCtx(t)); !errors.As(err, &ge) {
				t.Errorf("Read after giving up = %v, want the GaveUpError", err)
			}
			if n := srv.count.Load(); n != 1 {
				t.Errorf("server saw %d handshakes, want 1", n)
			}
			if err := c.Close(closecode.NormalClosure, ""); err != nil {
				t.Errorf("Close after giving up = %v, want nil", err)
			}
		})
	}
}

func TestClientHTTPRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		status    int
		retry     string
		wantWait  time.Duration // floor of the first wait
		wantRetry bool
	}{
		{"429 Retry-After 7", http.StatusTooManyRequests, "7", 7 * time.Second, true},
		{"503 Retry-After 3", http.StatusServiceUnavailable, "3", 3 * time.Second, true},
		{"503 without Retry-After", http.StatusServiceUnavailable, "", 0, true},
		{"403", http.StatusForbidden, "", 0, false},
		{"404", http.StatusNotFound, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n == 1 {
					if tt.retry != "" {
						w.Header().Set("Retry-After", tt.retry)
					}
					http.Error(w, "not now", tt.status)
					return
				}
				if c := accept(t, w, r); c != nil {
					echo(c)
				}
			})
			clock := newFakeClock()
			rec := newRecorder()
			c, err := Dial(testCtx(t), srv.url(), &Options{OnEvent: rec.OnEvent, Clock: clock, Rand: seeded(9)})
			closed := rec.waitFor(t, StateClosed, 1)
			if closed.Status != tt.status || closed.Code != 0 {
				t.Errorf("closed event = %v, want HTTP %d", closed, tt.status)
			}
			if !tt.wantRetry {
				var ge *GaveUpError
				if !errors.As(err, &ge) || ge.Decision.Status != tt.status || c != nil {
					t.Fatalf("Dial = %v, %v; want a *GaveUpError for HTTP %d", c, err, tt.status)
				}
				var he *websocket.HandshakeError
				if !errors.As(err, &he) || he.StatusCode != tt.status {
					t.Errorf("Dial error %v does not wrap the *websocket.HandshakeError", err)
				}
				if len(clock.Waits()) != 0 || srv.count.Load() != 1 {
					t.Errorf("waited %v and made %d handshakes; want no retry", clock.Waits(), srv.count.Load())
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			waits := clock.Waits()
			if len(waits) != 1 || waits[0] < tt.wantWait || waits[0] >= tt.wantWait+time.Second {
				t.Errorf("waits = %v, want one wait in [%v, %v)", waits, tt.wantWait, tt.wantWait+time.Second)
			}
			mustClose(t, c)
		})
	}
}

func TestClientMaxAttempts(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	clock := newFakeClock()
	rec := newRecorder()
	_, err := Dial(testCtx(t), srv.url(), &Options{
		Policy:  Policy{MaxAttempts: 4},
		Clock:   clock,
		Rand:    &seqRand{vals: []float64{0}},
		OnEvent: rec.OnEvent,
	})
	if !errors.Is(err, ErrMaxAttempts) {
		t.Fatalf("Dial = %v, want ErrMaxAttempts", err)
	}
	if n := srv.count.Load(); n != 5 {
		t.Errorf("server saw %d handshakes, want 1 + 4 retries", n)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second}
	if got := clock.Waits(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("waits = %v, want %v", got, want)
	}
	var attempts []int
	for _, e := range rec.Events() {
		if e.State == StateConnecting {
			attempts = append(attempts, e.Attempt)
		}
	}
	if fmt.Sprint(attempts) != "[0 1 2 3 4]" {
		t.Errorf("connecting attempts = %v, want [0 1 2 3 4]", attempts)
	}
}

// TestClientStablePeriod runs against a server that accepts and then
// drops every connection with 1011: a connection that lasted the stable
// period (by the fake clock) resets the counter, a shorter one does not.
func TestClientStablePeriod(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		closeWith(t, w, r, closecode.InternalError, "oops")
	})
	clock := newFakeClock()
	rec := newRecorder()
	opens := 0
	rec.hook = func(e Event) {
		if e.State == StateOpen {
			opens++
			if opens == 4 {
				clock.Advance(DefaultStablePeriod) // the 4th connection is stable
			}
		}
	}
	c, err := New(testCtx(t), srv.url(), &Options{
		Policy:  Policy{MaxAttempts: 5},
		Clock:   clock,
		Rand:    &seqRand{vals: []float64{0}},
		OnEvent: rec.OnEvent,
	})
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	if !errors.Is(c.Err(), ErrMaxAttempts) {
		t.Fatalf("Err() = %v, want ErrMaxAttempts", c.Err())
	}
	var attempts []int
	for _, e := range rec.Events() {
		if e.State == StateWaiting {
			attempts = append(attempts, e.Attempt)
		}
	}
	// Three flapping connections count 1, 2, 3; the stable 4th resets;
	// then 1…5 until MaxAttempts.
	if fmt.Sprint(attempts) != "[1 2 3 1 2 3 4 5]" {
		t.Errorf("waiting attempts = %v, want [1 2 3 1 2 3 4 5]", attempts)
	}
	want := "[500ms 1s 2s 500ms 1s 2s 4s 8s]"
	if got := fmt.Sprint(clock.Waits()); got != want {
		t.Errorf("waits = %s, want %s", got, want)
	}
}

func TestClientReadAcrossReconnects(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		c := accept(t, w, r)
		if c == nil {
			return
		}
		ctx := context.Background()
		if n <= 2 {
			c.Write(ctx, websocket.MessageText, []byte("from "+strconv.Itoa(n)))
			c.Close(closecode.ServiceRestart, "restarting; retry-after=0.01")
			c.CloseNow()
			return
		}
		c.Write(ctx, websocket.MessageBinary, []byte("from 3"))
		echo(c)
	})
	c, err := Dial(testCtx(t), srv.url(), &Options{Policy: fastPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for i, want := range []string{"from 1", "from 2", "from 3"} {
		_, p, err := c.Read(ctx)
		if err != nil || string(p) != want {
			t.Fatalf("Read #%d = %q, %v; want %q", i+1, p, err, want)
		}
	}
	mustClose(t, c)
}

func TestClientOnConnectErrorRetries(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	var calls atomic.Int32
	rec := newRecorder()
	c, err := Dial(testCtx(t), srv.url(), &Options{
		Policy:  fastPolicy(),
		OnEvent: rec.OnEvent,
		OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
			if calls.Add(1) == 1 {
				return errors.New("subscription refused")
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, StateOpen, 2)
	closed := rec.waitFor(t, StateClosed, 1)
	if closed.Code != closecode.InternalError || closed.Err == nil || closed.Err.Error() != "subscription refused" {
		t.Errorf("closed event = %v (%v), want 1011 carrying the hook's error", closed, closed.Err)
	}
	ctx := testCtx(t)
	if err := c.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != "x" {
		t.Fatalf("Read = %q, %v", p, err)
	}
	mustClose(t, c)
}

func TestClientContextCancel(t *testing.T) {
	t.Parallel()
	t.Run("while open: closes with 1001", func(t *testing.T) {
		t.Parallel()
		got := make(chan error, 1)
		srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if c := accept(t, w, r); c != nil {
				_, _, err := c.Read(context.Background())
				got <- err
				c.CloseNow()
			}
		})
		ctx, cancel := context.WithCancel(testCtx(t))
		c, err := Dial(ctx, srv.url(), &Options{Policy: fastPolicy()})
		if err != nil {
			t.Fatal(err)
		}
		cancel()
		<-c.Done()
		if err := c.Err(); !errors.Is(err, context.Canceled) {
			t.Errorf("Err() = %v, want context.Canceled", err)
		}
		if code := websocket.CloseStatus(<-got); code != closecode.GoingAway {
			t.Errorf("server saw close %v, want 1001 Going Away", code)
		}
	})
	t.Run("while waiting", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		rec := newRecorder()
		ctx, cancel := context.WithCancel(testCtx(t))
		c, err := New(ctx, srv.url(), &Options{OnEvent: rec.OnEvent})
		if err != nil {
			t.Fatal(err)
		}
		w := rec.waitFor(t, StateWaiting, 1)
		if w.Delay < time.Hour {
			t.Errorf("waiting %v, want at least the one-hour Retry-After", w.Delay)
		}
		cancel()
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("client still waiting 5 s after its context was cancelled")
		}
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("Err() = %v, want context.Canceled", c.Err())
		}
	})
	t.Run("Dial gives up when the context ends first", func(t *testing.T) {
		t.Parallel()
		srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		ctx, cancel := context.WithTimeout(testCtx(t), 100*time.Millisecond)
		defer cancel()
		c, err := Dial(ctx, srv.url(), nil)
		if c != nil || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Dial = %v, %v; want nil and DeadlineExceeded", c, err)
		}
	})
}

func TestClientServerGone(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {})
	url := srv.url()
	srv.Close() // nothing listens any more: every dial is refused
	_, err := Dial(testCtx(t), url, &Options{Policy: Policy{Backoff: fastPolicy().Backoff, MaxAttempts: 2}})
	var ge *GaveUpError
	if !errors.As(err, &ge) || !errors.Is(err, ErrMaxAttempts) || ge.Decision.Code != closecode.AbnormalClosure {
		t.Fatalf("Dial to a closed port = %v, want giving up after 1006 retries", err)
	}
}

func TestClientMandatoryExtension(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	rec := newRecorder()
	_, err := Dial(testCtx(t), srv.url(), &Options{
		Policy:  fastPolicy(),
		OnEvent: rec.OnEvent,
		Dial:    &websocket.DialOptions{Require: []websocket.Requirement{{Extension: "permessage-deflate"}}},
	})
	var me *websocket.MandatoryExtensionError
	var ge *GaveUpError
	if !errors.As(err, &me) || !errors.As(err, &ge) {
		t.Fatalf("Dial = %v, want a *GaveUpError wrapping *websocket.MandatoryExtensionError", err)
	}
	if ge.Decision.Code != closecode.MandatoryExtension || ge.Decision.Retry {
		t.Errorf("decision = %+v, want 1010 without retry", ge.Decision)
	}
	if n := srv.count.Load(); n != 1 {
		t.Errorf("server saw %d handshakes, want 1: a missing extension is never retried", n)
	}
	if got, want := rec.States(), "connecting closed stopped"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
}

func TestNewRejectsBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://example.com/", "example.com", "ws://", "ws://%zz"} {
		if c, err := New(context.Background(), u, nil); err == nil || c != nil || !strings.HasPrefix(err.Error(), "reconnect: ") {
			t.Errorf("New(%q) = %v, %v; want a reconnect: error", u, c, err)
		}
	}
}

func TestCloseRejectsBadCodes(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	c, err := Dial(testCtx(t), srv.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range []closecode.Code{1005, 1006, 1015, 999, 5000} {
		if err := c.Close(code, ""); err == nil {
			t.Errorf("Close(%v) = nil, want an error", code)
		}
	}
	if err := c.Close(1000, strings.Repeat("x", 124)); err == nil {
		t.Error("Close with a 124-byte reason = nil, want an error")
	}
	if c.State() != StateOpen {
		t.Errorf("State() = %v after refused Close calls, want open", c.State())
	}
	mustClose(t, c)
	if err := c.Close(1000, ""); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}
