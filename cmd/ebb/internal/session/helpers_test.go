package session_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/session"
	"github.com/ebb-ws/ebb/internal/leakcheck"
	"github.com/ebb-ws/ebb/websocket"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// outcome is what one session produced.
type outcome struct {
	stdout, stderr string
	res            *session.Result
}

// run runs a session with url and captures both streams; a nil in is an
// input that ends at once.
func run(t *testing.T, ctx context.Context, in io.Reader, url string, o *session.Options) outcome {
	t.Helper()
	if in == nil {
		in = strings.NewReader("")
	}
	var out, diag bytes.Buffer
	res := session.Run(ctx, url, in, &out, &diag, o)
	return outcome{stdout: out.String(), stderr: diag.String(), res: res}
}

// openInput is an input that stays open until the test ends: the server
// or the context ends the session.
func openInput(t *testing.T) io.Reader {
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	return r
}

// squash folds runs of white space so wrapped output can be compared with
// the registry's one-line texts.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func wantIn(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(squash(got), squash(w)) {
			t.Errorf("%s lacks %q:\n%s", what, w, got)
		}
	}
}

// wsServer serves WebSocket connections with h and returns the ws:// URL;
// every handler's result is sent on the returned channel.
func wsServer(t *testing.T, opts *websocket.AcceptOptions, h func(ctx context.Context, r *http.Request, c *websocket.Conn) error) (string, <-chan error) {
	t.Helper()
	res := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			res <- err
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		res <- h(ctx, r, c)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), res
}

func handlerResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("server handler did not finish")
		return nil
	}
}

// echoHandler sends every message back until the connection ends.
func echoHandler(ctx context.Context, _ *http.Request, c *websocket.Conn) error {
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return err
		}
	}
}

func wantCloseCode(t *testing.T, err error, code closecode.Code, reason string) {
	t.Helper()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code || ce.Reason != reason {
		t.Errorf("server saw %v, want close %d %q", err, code, reason)
	}
}

// countingServer serves h and counts the WebSocket connections it got.
func countingServer(t *testing.T, h func(ctx context.Context, r *http.Request, c *websocket.Conn) error) (string, *atomic.Int32) {
	t.Helper()
	var n atomic.Int32
	u, _ := wsServer(t, nil, func(ctx context.Context, r *http.Request, c *websocket.Conn) error {
		n.Add(1)
		return h(ctx, r, c)
	})
	return u, &n
}

// closeWith closes a moment after the upgrade, once the client has taken
// the connection for open.
func closeWith(code closecode.Code, reason string) func(context.Context, *http.Request, *websocket.Conn) error {
	return func(_ context.Context, _ *http.Request, c *websocket.Conn) error {
		time.Sleep(30 * time.Millisecond)
		return c.Close(code, reason)
	}
}

// lockedBuffer is a writer a test can read while a session writes to it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runAsync runs a session in the background with writers the test can
// watch; the result arrives on the returned channel.
func runAsync(ctx context.Context, in io.Reader, url string, o *session.Options) (stdout, stderr *lockedBuffer, res <-chan *session.Result) {
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	c := make(chan *session.Result, 1)
	go func() { c <- session.Run(ctx, url, in, stdout, stderr, o) }()
	return stdout, stderr, c
}

// result waits for a session started by runAsync.
func result(t *testing.T, res <-chan *session.Result, stderr *lockedBuffer) *session.Result {
	t.Helper()
	select {
	case r := <-res:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("the session did not end within 20s\nstderr:\n%s", stderr.String())
		return nil
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpServer serves h and returns its ws:// URL and the server.
func httpServer(t *testing.T, h http.Handler) (string, *httptest.Server) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), srv
}
