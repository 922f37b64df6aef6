package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

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

func TestConnectEcho(t *testing.T) {
	t.Parallel()
	u, res := wsServer(t, nil, echoHandler)
	r := runCmd(t, context.Background(), strings.NewReader("hello\r\nworld €\nlast line without newline"), "connect", u)
	if r.code != exitOK {
		t.Fatalf("exit status = %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
	if want := "hello\nworld €\nlast line without newline\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	for _, w := range []string{"connected to " + u, "connection closed by this client with 1000 Normal Closure; the server answered 1000 Normal Closure", closecode.Lookup(1000).Description} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	wantCloseCode(t, handlerResult(t, res), closecode.NormalClosure, "")
}

func TestConnectServerCloses(t *testing.T) {
	t.Parallel()
	hint := closecode.FormatRetryHint("server at capacity", 2500*time.Millisecond)
	tests := []struct {
		name     string
		code     closecode.Code
		reason   string
		wantExit int
		want     []string
	}{
		{name: "1013 with hint", code: 1013, reason: hint, wantExit: exitFailure,
			want: []string{"connection closed by server: 1013 Try Again Later", hint, "retry with backoff", "server hint: not before 2.5s"}},
		{name: "1001", code: 1001, reason: "restarting", wantExit: exitOK, want: []string{"1001 Going Away", `"restarting"`}},
		{name: "1008", code: 1008, reason: "token expired", wantExit: exitFailure, want: []string{"1008 Policy Violation", "fix:"}},
		{name: "4000", code: 4000, reason: "app", wantExit: exitFailure, want: []string{"4000 Private Use", "application decides"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The server sends a binary message, then closes.
			u, res := wsServer(t, nil, func(ctx context.Context, _ *http.Request, c *websocket.Conn) error {
				if err := c.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3}); err != nil {
					return err
				}
				return c.Close(tt.code, tt.reason)
			})
			stdin, stdinW := io.Pipe() // stdin stays open: the server ends the session
			t.Cleanup(func() { stdinW.Close() })
			r := runCmd(t, context.Background(), stdin, "connect", u)
			if r.code != tt.wantExit {
				t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, tt.wantExit, r.stderr)
			}
			if r.stdout != "[binary 3 B] AQID\n" {
				t.Errorf("stdout = %q, want the binary message in base64 with its marker", r.stdout)
			}
			info := closecode.Lookup(tt.code)
			got := squash(r.stderr)
			for _, w := range append(tt.want, squash(info.Description)) {
				if !strings.Contains(got, squash(w)) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if err := handlerResult(t, res); err != nil {
				t.Errorf("server Close: %v", err)
			}
		})
	}
}

func TestConnectJSON(t *testing.T) {
	t.Parallel()
	u, res := wsServer(t, &websocket.AcceptOptions{Subprotocols: []string{"chat"}}, echoHandler)
	r := runCmd(t, context.Background(), strings.NewReader("one\ntwo\n"), "connect", "--json", "--subprotocol", "chat", u)
	if r.code != exitOK {
		t.Fatalf("exit status = %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 4 {
		t.Fatalf("got %d events, want open, two messages, closed:\n%s", len(evs), r.stdout)
	}
	if evs[0]["event"] != "open" || evs[0]["subprotocol"] != "chat" {
		t.Errorf("first event = %v, want open with subprotocol chat", evs[0])
	}
	for i, want := range []string{"one", "two"} {
		if ev := evs[i+1]; ev["event"] != "message" || ev["type"] != "text" || ev["data"] != want {
			t.Errorf("event %d = %v, want text message %q", i+1, ev, want)
		}
	}
	if ev := evs[3]; ev["event"] != "closed" || ev["code"] != float64(1000) || ev["sent_code"] != float64(1000) || ev["by"] != "this client" || ev["retry_class"] != closecode.Done.String() {
		t.Errorf("last event = %v, want closed 1000", ev)
	}
	wantCloseCode(t, handlerResult(t, res), closecode.NormalClosure, "")
}

func TestConnectHeadersAndOrigin(t *testing.T) {
	t.Parallel()
	opts := &websocket.AcceptOptions{OriginPatterns: []string{"app.example"}}
	u, res := wsServer(t, opts, func(ctx context.Context, r *http.Request, c *websocket.Conn) error {
		got := r.Header.Get("X-Trace") + "|" + r.Header.Get("Authorization") + "|" + r.Header.Get("Origin")
		if err := c.Write(ctx, websocket.MessageText, []byte(got)); err != nil {
			return err
		}
		return echoHandler(ctx, r, c)
	})
	r := runCmd(t, context.Background(), nil, "connect", "-H", "X-Trace: abc", "--header", "Authorization: Bearer t0k", "--origin", "https://app.example", u)
	if r.code != exitOK {
		t.Fatalf("exit status = %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
	if want := "abc|Bearer t0k|https://app.example\n"; r.stdout != want {
		t.Errorf("server saw headers %q, want %q", r.stdout, want)
	}
	wantCloseCode(t, handlerResult(t, res), closecode.NormalClosure, "")
}

func TestConnectRequireRefused(t *testing.T) {
	t.Parallel()
	u, res := wsServer(t, nil, echoHandler) // compression off
	r := runCmd(t, context.Background(), nil, "connect", "--require", "permessage-deflate", u)
	if r.code != exitFailure {
		t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitFailure, r.stderr)
	}
	got := squash(r.stderr)
	for _, w := range []string{"1010 Mandatory Extension", "required: permessage-deflate", "offered: permessage-deflate", "answered: (none)", "missing: permessage-deflate", closecode.Lookup(1010).Fix} {
		if !strings.Contains(got, squash(w)) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	var ce *websocket.CloseError
	if err := handlerResult(t, res); !errors.As(err, &ce) || ce.Code != closecode.MandatoryExtension || !strings.Contains(ce.Reason, "permessage-deflate") {
		t.Errorf("server saw %v, want 1010 naming permessage-deflate", err)
	}
}

func TestConnectInterrupt(t *testing.T) {
	t.Parallel()
	// Interrupt once the server got a first message: by then connect is
	// past the handshake and waiting for more input.
	got := make(chan struct{})
	u, res := wsServer(t, nil, func(ctx context.Context, r *http.Request, c *websocket.Conn) error {
		if _, _, err := c.Read(ctx); err != nil {
			return err
		}
		close(got)
		return echoHandler(ctx, r, c)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdin, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	go func() {
		if _, err := io.WriteString(stdinW, "first\n"); err != nil {
			return
		}
		<-got
		cancel()
	}()
	r := runCmd(t, ctx, stdin, "connect", u)
	if r.code != exitInterrupted {
		t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitInterrupted, r.stderr)
	}
	if !strings.Contains(r.stderr, "closed by this client with 1001 Going Away") || !strings.Contains(r.stderr, "ebb: interrupted") {
		t.Errorf("stderr does not report the 1001 close and the interruption:\n%s", r.stderr)
	}
	wantCloseCode(t, handlerResult(t, res), closecode.GoingAway, "interrupted")
}

func TestConnectFailures(t *testing.T) {
	t.Parallel()
	// A port that refuses connections: listen, note the address, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "ws://" + ln.Addr().String() + "/"
	ln.Close()
	http404 := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(http404.Close)

	tests := []struct {
		name     string
		args     []string
		wantExit int
		want     string
	}{
		{name: "no URL", args: []string{"connect"}, wantExit: exitUsage, want: "connect takes exactly one URL, got 0"},
		{name: "http scheme", args: []string{"connect", "http://example.com/"}, wantExit: exitUsage, want: `has scheme "http": want ws:// or wss://`},
		{name: "no host", args: []string{"connect", "ws:///path"}, wantExit: exitUsage, want: "has no host"},
		{name: "bad header", args: []string{"connect", "-H", "no colon", "ws://127.0.0.1:1/"}, wantExit: exitUsage, want: `header "no colon" is not of the form`},
		{name: "unknown extension", args: []string{"connect", "--require", "x-foo", "ws://127.0.0.1:1/"}, wantExit: exitUsage, want: "supports only the permessage-deflate extension"},
		{name: "bad flag", args: []string{"connect", "--nope", "ws://127.0.0.1:1/"}, wantExit: exitUsage, want: "unknown flag: --nope"},
		{name: "refused", args: []string{"connect", refused}, wantExit: exitFailure, want: "ebb: connect:"},
		{name: "not a websocket endpoint", args: []string{"connect", "ws" + strings.TrimPrefix(http404.URL, "http")}, wantExit: exitFailure, want: "404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, tt.args...)
			if r.code != tt.wantExit {
				t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, tt.wantExit, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) {
				t.Errorf("stderr lacks %q:\n%s", tt.want, r.stderr)
			}
			if tt.wantExit == exitUsage && !strings.Contains(r.stderr, "Usage:\n  ebb connect URL") {
				t.Errorf("usage error without the usage:\n%s", r.stderr)
			}
			if strings.Contains(r.stderr, "goroutine ") {
				t.Errorf("stderr shows a stack trace:\n%s", r.stderr)
			}
		})
	}
}

func TestConnectTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		echoHandler(r.Context(), r, c)
	}))
	// The refused handshake below is expected; keep its log line out.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u := "wss" + strings.TrimPrefix(srv.URL, "https")

	r := runCmd(t, context.Background(), nil, "connect", u)
	if r.code != exitFailure || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("without --insecure: exit %d, stderr:\n%s\nwant exit 1 and a certificate error", r.code, r.stderr)
	}
	r = runCmd(t, context.Background(), strings.NewReader("over tls\n"), "connect", "--insecure", u)
	if r.code != exitOK || r.stdout != "over tls\n" {
		t.Errorf("with --insecure: exit %d, stdout %q, stderr:\n%s\nwant exit 0 and the echo", r.code, r.stdout, r.stderr)
	}
}
