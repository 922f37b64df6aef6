package reconnect

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// TestClientWriteOnBrokenConnection breaks the client's connection under
// it: the next Write must not be lost but go out on the next connection.
func TestClientWriteOnBrokenConnection(t *testing.T) {
	t.Parallel()
	got := make(chan string, 1)
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		c := accept(t, w, r)
		if c == nil {
			return
		}
		if n == 1 {
			echo(c)
			return
		}
		defer c.CloseNow()
		if _, p, err := c.Read(context.Background()); err == nil {
			got <- string(p)
		}
		c.Read(context.Background())
	})
	conns := make(chan *websocket.Conn, 2)
	c, err := Dial(testCtx(t), srv.url(), &Options{
		Policy: fastPolicy(),
		OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
			conns <- conn
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	(<-conns).CloseNow() // the network drops the first connection
	if err := c.Write(testCtx(t), websocket.MessageText, []byte("after the break")); err != nil {
		t.Fatalf("Write on a broken connection = %v, want it queued for the next one", err)
	}
	select {
	case p := <-got:
		if p != "after the break" {
			t.Errorf("second connection got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the message written on the broken connection never arrived on the next one")
	}
	mustClose(t, c)
}

func TestClientWriteBadType(t *testing.T) {
	t.Parallel()
	srv := echoServer(t)
	c, err := Dial(testCtx(t), srv.url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(testCtx(t), 0, []byte("x")); err == nil || !strings.HasPrefix(err.Error(), "reconnect: ") {
		t.Errorf("Write with message type 0 = %v, want a reconnect: error", err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if _, _, err := c.Read(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context = %v, want context.Canceled", err)
	}
	mustClose(t, c)
}

// TestClientTLSFailureStops: a certificate the client does not trust is
// 1015-class, permanent: one attempt, no retry.
func TestClientTLSFailureStops(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	_, err := Dial(testCtx(t), "wss"+strings.TrimPrefix(srv.URL, "https"), &Options{Policy: fastPolicy()})
	var ge *GaveUpError
	if !errors.As(err, &ge) || ge.Decision.Code != closecode.TLSHandshake || ge.Decision.Retry || ge.Attempts != 0 {
		t.Fatalf("Dial to an untrusted certificate = %v, want giving up at once with 1015", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestClientLogsStateChanges(t *testing.T) {
	t.Parallel()
	srv := newServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
		closeWith(t, w, r, closecode.PolicyViolation, "banned")
	})
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Dial(testCtx(t), srv.url(), &Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="reconnect: connecting"`,
		`level=INFO msg="reconnect: open"`,
		`level=INFO msg="reconnect: closed: 1008 Policy Violation (banned)"`,
		`level=WARN msg="reconnect: stopped: reconnect: gave up: 1008 Policy Violation is permanent`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestEventString(t *testing.T) {
	t.Parallel()
	hint := Policy{}.Decide(closecode.TryAgainLater, "full; retry-after=4.2")
	tests := []struct {
		e    Event
		want string
	}{
		{Event{State: StateConnecting}, "connecting"},
		{Event{State: StateConnecting, Attempt: 3}, "connecting (attempt 3)"},
		{Event{State: StateOpen, Attempt: 2}, "open (attempt 2)"},
		{Event{State: StateClosed, Code: closecode.TryAgainLater, Reason: "full; retry-after=4.2", Remote: true}, "closed: 1013 Try Again Later (full; retry-after=4.2)"},
		{Event{State: StateClosed, Status: 503}, "closed: handshake refused with HTTP 503"},
		{Event{State: StateClosed, Code: closecode.AbnormalClosure, Err: errors.New("connection refused")}, "closed: 1006 Abnormal Closure: connection refused"},
		{Event{State: StateWaiting, Attempt: 3, Delay: 4612345 * time.Microsecond, Hinted: true, Decision: hint}, "waiting 4.612s before attempt 3 (server hint 4.2s)"},
		{Event{State: StateWaiting, Attempt: 1, Delay: 700 * time.Millisecond}, "waiting 700ms before attempt 1"},
		{Event{State: StateStopped, Err: ErrClosed, Unsent: 2}, "stopped: " + ErrClosed.Error() + " (2 messages unsent)"},
		{Event{State: StateConnecting, From: 42}, "connecting (resuming from 42)"},
		{Event{State: StateOpen, Attempt: 2, From: 42, Resume: ResumeAccepted}, "open (attempt 2, resuming from 42)"},
		{Event{State: StateOpen, Resume: ResumeRefused, Subprotocol: "chat"}, `open: the server did not select ebb.resume.v1 (selected "chat"): messages are plain and nothing missed can be resumed`},
		{Event{State: State(42)}, "State(42)"},
	}
	for _, tt := range tests {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
	if hint.String() != hint.Why || !strings.Contains(hint.Why, "4.2s") {
		t.Errorf("Decision.String() = %q, want Why naming the hint", hint.String())
	}
}
