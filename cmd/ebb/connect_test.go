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
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/shed"
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

// TestConnectInterrupt: interrupted once the server got a first message
// (by then connect is past the handshake and waiting for more input), both
// modes close with 1001 and exit with the interrupted status.
func TestConnectInterrupt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		flags      []string
		wantStderr string
	}{
		{"single", nil, "closed by this client with 1001 Going Away"},
		{"reconnect", []string{"--reconnect"}, "closed 1001 Going Away (interrupted)\nstopped: closed by this client\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
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
			args := append(append([]string{"connect"}, tc.flags...), u)
			r := runCmd(t, ctx, stdin, args...)
			if r.code != exitInterrupted {
				t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitInterrupted, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.wantStderr) || !strings.Contains(r.stderr, "ebb connect: interrupted") {
				t.Errorf("stderr does not report the 1001 close and the interruption:\n%s", r.stderr)
			}
			wantCloseCode(t, handlerResult(t, res), closecode.GoingAway, "interrupted")
		})
	}
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
		{name: "no URL", args: []string{"connect"}, wantExit: exitUsage, want: "ebb connect: want exactly one URL, got 0"},
		{name: "http scheme", args: []string{"connect", "http://example.com/"}, wantExit: exitUsage, want: `has scheme "http": want ws:// or wss://`},
		{name: "no host", args: []string{"connect", "ws:///path"}, wantExit: exitUsage, want: "has no host"},
		{name: "bad header", args: []string{"connect", "-H", "no colon", "ws://127.0.0.1:1/"}, wantExit: exitUsage, want: `header "no colon" is not of the form`},
		{name: "unknown extension", args: []string{"connect", "--require", "x-foo", "ws://127.0.0.1:1/"}, wantExit: exitUsage, want: "supports only the permessage-deflate extension"},
		{name: "bad flag", args: []string{"connect", "--nope", "ws://127.0.0.1:1/"}, wantExit: exitUsage, want: "unknown flag: --nope"},
		{name: "refused", args: []string{"connect", refused}, wantExit: exitFailure, want: "ebb connect:"},
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
			if tt.wantExit == exitUsage && !strings.Contains(r.stderr, "Run 'ebb connect --help' for usage.") {
				t.Errorf("usage error without the pointer to --help:\n%s", r.stderr)
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

// runAsync runs ebb in the background with writers the test can watch
// while it runs; the exit status arrives on the returned channel.
func runAsync(ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr *lockedBuffer, code <-chan int) {
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	c := make(chan int, 1)
	go func() { c <- run(ctx, args, stdin, stdout, stderr) }()
	return stdout, stderr, c
}

// exitStatus waits for a run started by runAsync.
func exitStatus(t *testing.T, code <-chan int, stderr *lockedBuffer) int {
	t.Helper()
	select {
	case c := <-code:
		return c
	case <-time.After(20 * time.Second):
		t.Fatalf("ebb connect did not end within 20s\nstderr:\n%s", stderr.String())
		return 0
	}
}

// refusedLine matches the report of a 1013 close and the wait it causes.
var refusedLine = regexp.MustCompile(`(?m)^closed 1013 Try Again Later \((?:[^)]*; )?retry-after=([0-9.]+)\) — retrying in (\S+), attempt (\d+)`)

// TestConnectReconnectAfter1013 is issue 6's CLI scenario: a server at its
// limit refuses with 1013 and a hint; connect says so, waits at least the
// hint, and gets in once the slot is free; lines typed then go through.
func TestConnectReconnectAfter1013(t *testing.T) {
	t.Parallel()
	s, err := server.New(server.Config{Addr: "127.0.0.1:0", Shed: shed.Options{Limits: shed.Limits{MaxConns: 1}, RetryBase: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	u := "ws://" + s.Addr() + "/echo"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Hold the only slot; its echo proves the server admitted it.
	holder, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.CloseNow()
	if err := holder.Write(ctx, websocket.MessageText, []byte("hold")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := holder.Read(ctx); err != nil {
		t.Fatalf("the slot holder was not admitted: %v", err)
	}

	stdin, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	stdout, stderr, code := runAsync(ctx, stdin, "connect", "--reconnect", "--base", "100ms", "--cap", "1s", u)
	waitFor(t, 10*time.Second, func() bool { return refusedLine.MatchString(stderr.String()) },
		"connect did not report a 1013 with its hint and the wait")
	if err := holder.Close(closecode.NormalClosure, ""); err != nil {
		t.Fatalf("releasing the slot: %v", err)
	}
	// The server admits connect once the holder is gone.
	waitFor(t, 10*time.Second, func() bool {
		st := s.Shedder().Stats()
		return st.Admitted == 2 && st.Connections == 1
	}, "the server did not admit connect after the slot was freed")
	if _, err := io.WriteString(stdinW, "after the wait\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return stdout.String() == "after the wait\n" },
		"the line sent after reconnecting was not echoed")
	stdinW.Close()
	if c := exitStatus(t, code, stderr); c != exitOK {
		t.Fatalf("exit status = %d, want 0\nstderr:\n%s", c, stderr.String())
	}

	out := stderr.String()
	for _, m := range refusedLine.FindAllStringSubmatch(out, -1) {
		hint, ok := closecode.ParseRetryHint("retry-after=" + m[1])
		wait, err := time.ParseDuration(m[2])
		if !ok || err != nil || wait < hint {
			t.Errorf("%q: the wait %s (%v) is not at least the server's hint %s", m[0], m[2], err, m[1])
		}
	}
	refused := refusedLine.FindStringIndex(out)
	lastOpen := strings.LastIndex(out, "open: connected to "+u)
	if lastOpen < refused[0] {
		t.Errorf("no open after the 1013 line:\n%s", out)
	}
	for _, w := range []string{"connecting to " + u + "\n", "connecting to " + u + ", attempt 1\n", "closed 1000 Normal Closure\nstopped: closed by this client\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("stderr lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "gave up") {
		t.Errorf("connect gave up on a 1013:\n%s", out)
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
// the connection for open (a Close frame that comes with the 101 response
// makes Dial itself fail instead).
func closeWith(code closecode.Code, reason string) func(context.Context, *http.Request, *websocket.Conn) error {
	return func(_ context.Context, _ *http.Request, c *websocket.Conn) error {
		time.Sleep(30 * time.Millisecond)
		return c.Close(code, reason)
	}
}

func TestConnectReconnectStops(t *testing.T) {
	t.Parallel()
	fast := []string{"--base", "10ms", "--cap", "20ms"}
	tests := []struct {
		name      string
		code      closecode.Code
		reason    string
		flags     []string
		wantExit  int
		wantConns int32
		want      []string
		notWant   string
	}{
		{name: "1008 stops at once", code: 1008, reason: "token expired", wantExit: exitFailure, wantConns: 1,
			want:    []string{"closed 1008 Policy Violation (token expired)\n", "gave up: 1008 Policy Violation is permanent"},
			notWant: "— retrying in"},
		{name: "1000 ends the link", code: 1000, reason: "done", wantExit: exitOK, wantConns: 1,
			want:    []string{"closed 1000 Normal Closure (done)\n", "gave up: 1000 Normal Closure: the peer ended the link on purpose"},
			notWant: "— retrying in"},
		{name: "1000 with --persistent retries", code: 1000, reason: "done", flags: []string{"--persistent", "--max-attempts", "2"}, wantExit: exitOK, wantConns: 3,
			want: []string{"closed 1000 Normal Closure (done) — retrying in", "attempt 2\n", "gave up after 2 attempts"}},
		{name: "1011 until --max-attempts", code: 1011, reason: "oops", flags: []string{"--max-attempts", "1"}, wantExit: exitFailure, wantConns: 2,
			want: []string{"closed 1011 Internal Error (oops) — retrying in", "gave up after 1 attempts"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, conns := countingServer(t, closeWith(tt.code, tt.reason))
			stdin, stdinW := io.Pipe() // stdin stays open: the server ends the session
			t.Cleanup(func() { stdinW.Close() })
			args := append(append([]string{"connect", "--reconnect"}, fast...), tt.flags...)
			r := runCmd(t, context.Background(), stdin, append(args, u)...)
			if r.code != tt.wantExit {
				t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, tt.wantExit, r.stderr)
			}
			if n := conns.Load(); n != tt.wantConns {
				t.Errorf("the server got %d connections, want %d\nstderr:\n%s", n, tt.wantConns, r.stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if tt.notWant != "" && strings.Contains(r.stderr, tt.notWant) {
				t.Errorf("stderr has %q:\n%s", tt.notWant, r.stderr)
			}
		})
	}
}

// TestConnectReconnectQueues sends stdin while the server refuses the
// handshake with HTTP 503: the lines wait in the queue and go out in order
// once the link is up.
func TestConnectReconnectQueues(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		echoHandler(r.Context(), r, c)
	}))
	t.Cleanup(srv.Close)
	u := "ws" + strings.TrimPrefix(srv.URL, "http")
	r := runCmd(t, context.Background(), strings.NewReader("one\ntwo\nthree\n"), "connect", "--reconnect", "--base", "50ms", "--cap", "100ms", u)
	if r.code != exitOK {
		t.Fatalf("exit status = %d, want 0\nstderr:\n%s", r.code, r.stderr)
	}
	if r.stdout != "one\ntwo\nthree\n" {
		t.Errorf("stdout = %q, want the three lines echoed in order", r.stdout)
	}
	if want := "closed before the upgrade: the server answered HTTP 503 Service Unavailable — retrying in"; !strings.Contains(r.stderr, want) {
		t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
	}
}

func TestConnectReconnectGivesUpOnRefusedPort(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "ws://" + ln.Addr().String() + "/"
	ln.Close()
	r := runCmd(t, context.Background(), nil, "connect", "--reconnect", "--max-attempts", "2", "--base", "10ms", "--cap", "20ms", u)
	if r.code != exitFailure {
		t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitFailure, r.stderr)
	}
	if n := strings.Count(r.stderr, "closed 1006 Abnormal Closure: "); n != 3 {
		t.Errorf("%d closed 1006 lines, want 3 (the first try and 2 attempts):\n%s", n, r.stderr)
	}
	for _, w := range []string{"— retrying in", ", attempt 2\n", "gave up after 2 attempts", "MaxAttempts"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

func TestConnectReconnectJSON(t *testing.T) {
	t.Parallel()
	u, _ := countingServer(t, closeWith(closecode.PolicyViolation, "token expired"))
	stdin, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	r := runCmd(t, context.Background(), stdin, "connect", "--reconnect", "--json", u)
	if r.code != exitFailure {
		t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitFailure, r.stderr)
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing: --json reports on stdout", r.stderr)
	}
	var kinds []string
	var closed, stopped map[string]any
	sc := bufio.NewScanner(strings.NewReader(r.stdout))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", sc.Text(), err)
		}
		kind, _ := ev["event"].(string)
		kinds = append(kinds, kind)
		switch kind {
		case "closed":
			closed = ev
		case "stopped":
			stopped = ev
		}
	}
	if got, want := strings.Join(kinds, ","), "connecting,open,closed,stopped"; got != want {
		t.Fatalf("events %s, want %s:\n%s", got, want, r.stdout)
	}
	if closed["code"] != float64(1008) || closed["reason"] != "token expired" || closed["remote"] != true || closed["retry"] != false || closed["retry_class"] != closecode.Permanent.String() {
		t.Errorf("closed event = %v, want 1008 from the server, not retried", closed)
	}
	if stopped["gave_up"] != true || !strings.Contains(stopped["error"].(string), "1008 Policy Violation is permanent") {
		t.Errorf("stopped event = %v, want gave_up with the 1008 verdict", stopped)
	}
}

func TestConnectReconnectJSONWaiting(t *testing.T) {
	t.Parallel()
	u, _ := countingServer(t, closeWith(closecode.TryAgainLater, closecode.FormatRetryHint("full", 150*time.Millisecond)))
	stdin, stdinW := io.Pipe()
	t.Cleanup(func() { stdinW.Close() })
	r := runCmd(t, context.Background(), stdin, "connect", "--reconnect", "--json", "--max-attempts", "1", "--base", "10ms", "--cap", "20ms", u)
	if r.code != exitFailure {
		t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitFailure, r.stderr)
	}
	var waiting map[string]any
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", line, err)
		}
		if ev["event"] == "waiting" {
			waiting = ev
		}
	}
	if waiting == nil {
		t.Fatalf("no waiting event:\n%s", r.stdout)
	}
	delay, _ := waiting["delay_seconds"].(float64)
	if waiting["attempt"] != float64(1) || waiting["hinted"] != true || waiting["retry_after_seconds"] != 0.2 || delay < 0.2 {
		// FormatRetryHint rounds 150ms up to retry-after=0.2.
		t.Errorf("waiting event = %v, want attempt 1, at least the 0.2s hint, hinted", waiting)
	}
}

func TestConnectReconnectFlags(t *testing.T) {
	t.Parallel()
	u := "ws://127.0.0.1:1/"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "policy flag without --reconnect", args: []string{"--max-attempts", "3"}, want: "--max-attempts applies only with --reconnect"},
		{name: "persistent without --reconnect", args: []string{"--persistent"}, want: "--persistent applies only with --reconnect"},
		{name: "negative attempts", args: []string{"--reconnect", "--max-attempts", "-1"}, want: "--max-attempts -1: want 0 (no limit) or a positive count"},
		{name: "negative elapsed", args: []string{"--reconnect", "--max-elapsed", "-1s"}, want: "--max-elapsed -1s"},
		{name: "zero base", args: []string{"--reconnect", "--base", "0s"}, want: "--base 0s: want a positive duration"},
		{name: "cap below base", args: []string{"--reconnect", "--base", "2s", "--cap", "1s"}, want: "--cap 1s is below --base 2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, append(append([]string{"connect"}, tt.args...), u)...)
			if r.code != exitUsage {
				t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitUsage, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.want) || !strings.Contains(r.stderr, "Run 'ebb connect --help' for usage.") {
				t.Errorf("stderr lacks %q and the pointer to --help:\n%s", tt.want, r.stderr)
			}
		})
	}
}

// TestConnectReconnectRequire: a required extension the server refuses is
// a 1010, which no reconnect can fix.
func TestConnectReconnectRequire(t *testing.T) {
	t.Parallel()
	u, conns := countingServer(t, echoHandler) // compression off
	r := runCmd(t, context.Background(), nil, "connect", "--reconnect", "--require", "permessage-deflate", u)
	if r.code != exitFailure {
		t.Fatalf("exit status = %d, want %d\nstderr:\n%s", r.code, exitFailure, r.stderr)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the server got %d connections, want 1: a 1010 is never retried", n)
	}
	for _, w := range []string{"closed 1010 Mandatory Extension (missing required extension: permessage-deflate", ": offered permessage-deflate", "the server answered (none)\n", "gave up: 1010 Mandatory Extension is permanent until the configuration changes"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}
