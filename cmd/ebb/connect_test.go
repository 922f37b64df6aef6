package main

import (
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
	"github.com/ebb-ws/ebb/websocket"
)

// The session itself (messages, events, reconnecting, backpressure) is
// tested in package session; these tests hold what package main adds:
// flags, URLs, exit statuses and the one-line errors.

// echoServer serves WebSocket echo and returns its ws:// URL.
func echoServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, p, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, p); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// stdinOpen is a standard input that stays open until the test ends.
func stdinOpen(t *testing.T) io.Reader {
	r, w := io.Pipe()
	t.Cleanup(func() { w.Close() })
	return r
}

// wantUsage checks the usage-error convention TestConventions holds: exit
// 2, stdout empty, exactly "ebb <cmd>: <reason>" and the --help pointer on
// stderr, the reason containing want.
func wantUsage(t *testing.T, r result, cmd, want string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if r.code != exitUsage || r.stdout != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], "ebb "+cmd+": ") ||
		!strings.Contains(lines[0], want) || lines[1] != "Run 'ebb "+cmd+" --help' for usage." {
		t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 2, nothing on stdout, and on stderr \"ebb %s: …%s…\" and the --help pointer", r.code, r.stdout, r.stderr, cmd, want)
	}
}

func TestConnectEcho(t *testing.T) {
	t.Parallel()
	u := echoServer(t)
	r := runCmd(t, context.Background(), strings.NewReader("hello\nworld\n"), "connect", u)
	if r.code != exitOK || r.stdout != "hello\nworld\n" {
		t.Fatalf("exit %d, stdout %q, want 0 and the echo\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, "connection closed by this client with 1000 Normal Closure; the server answered 1000 Normal Closure") {
		t.Errorf("stderr lacks the close:\n%s", r.stderr)
	}
}

// TestConnectURLs: a URL without scheme is ws://, http(s):// is ws(s)://,
// each said in one line on stderr; other schemes are usage errors that
// name what is accepted.
func TestConnectURLs(t *testing.T) {
	t.Parallel()
	u := echoServer(t)
	hostPath := strings.TrimPrefix(u, "ws://") + "/echo"
	tests := []struct {
		name     string
		arg      string
		wantNote string
	}{
		{name: "ws", arg: "ws://" + hostPath},
		{name: "no scheme", arg: hostPath, wantNote: "ebb connect: no scheme in " + hostPath + ": using ws://" + hostPath + "\n"},
		{name: "http", arg: "http://" + hostPath, wantNote: "ebb connect: using ws://" + hostPath + " for http://" + hostPath + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), strings.NewReader("x\n"), "connect", tt.arg)
			if r.code != exitOK || r.stdout != "x\n" {
				t.Fatalf("exit %d, stdout %q, want 0 and the echo\nstderr:\n%s", r.code, r.stdout, r.stderr)
			}
			if tt.wantNote != "" && !strings.HasPrefix(r.stderr, tt.wantNote) {
				t.Errorf("stderr does not start with %q:\n%s", tt.wantNote, r.stderr)
			}
			if tt.wantNote == "" && strings.Contains(r.stderr, "using ") {
				t.Errorf("a note for a ws:// URL:\n%s", r.stderr)
			}
		})
	}
}

func TestWSURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want, note, err string
	}{
		{in: "ws://h:1/p", want: "ws://h:1/p"},
		{in: "wss://h/p?q=1", want: "wss://h/p?q=1"},
		{in: "localhost:8080/echo", want: "ws://localhost:8080/echo", note: "no scheme in localhost:8080/echo: using ws://localhost:8080/echo"},
		{in: "[::1]:8080", want: "ws://[::1]:8080", note: "no scheme"},
		{in: "//h/p", want: "ws://h/p", note: "no scheme"},
		{in: "http://h/p", want: "ws://h/p", note: "using ws://h/p for http://h/p"},
		{in: "HTTPS://h/p", want: "wss://h/p", note: "using wss://h/p for HTTPS://h/p"},
		{in: "ftp://h/", err: `URL "ftp://h/" has scheme "ftp": want ws:// or wss:// (http:// and https:// are taken as ws:// and wss://, a URL without scheme as ws://)`},
		{in: "ws:///path", err: `URL "ws:///path" has no host`},
		{in: "h:port/x", err: `"h:port/x" is not a URL`},
	}
	for _, tt := range tests {
		u, note, err := wsURL(tt.in)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("wsURL(%q) = %q, %v; want error %q", tt.in, u, err, tt.err)
			} else if _, ok := err.(*usageError); !ok {
				t.Errorf("wsURL(%q): error %T, want a usage error", tt.in, err)
			}
		case err != nil || u != tt.want || !strings.Contains(note, tt.note) || (tt.note == "") != (note == ""):
			t.Errorf("wsURL(%q) = %q, note %q, %v; want %q, note %q", tt.in, u, note, err, tt.want, tt.note)
		}
	}
}

func TestConnectUsage(t *testing.T) {
	t.Parallel()
	u := "ws://127.0.0.1:1/"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no URL", args: nil, want: "want exactly one URL, got 0"},
		{name: "ftp scheme", args: []string{"ftp://example.com/"}, want: `has scheme "ftp": want ws:// or wss://`},
		{name: "no host", args: []string{"ws:///path"}, want: "has no host"},
		{name: "bad header", args: []string{"-H", "no colon", u}, want: `header "no colon" is not of the form`},
		{name: "unknown extension", args: []string{"--require", "x-foo", u}, want: "supports only the permessage-deflate extension"},
		{name: "zero timeout", args: []string{"--timeout", "0s", u}, want: "--timeout 0s: want a positive duration"},
		{name: "negative linger", args: []string{"--linger", "-1s", u}, want: "--linger -1s: want 0 (close at once) or a positive duration"},
		{name: "policy flag without --reconnect", args: []string{"--max-attempts", "3", u}, want: "--max-attempts applies only with --reconnect"},
		{name: "persistent without --reconnect", args: []string{"--persistent", u}, want: "--persistent applies only with --reconnect"},
		{name: "negative attempts", args: []string{"--reconnect", "--max-attempts", "-1", u}, want: "--max-attempts -1: want 0 (no limit) or a positive count"},
		{name: "negative elapsed", args: []string{"--reconnect", "--max-elapsed", "-1s", u}, want: "--max-elapsed -1s"},
		{name: "zero base", args: []string{"--reconnect", "--base", "0s", u}, want: "--base 0s: want a positive duration"},
		{name: "cap below base", args: []string{"--reconnect", "--base", "2s", "--cap", "1s", u}, want: "--cap 1s is below --base 2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantUsage(t, runCmd(t, context.Background(), nil, append([]string{"connect"}, tt.args...)...), "connect", tt.want)
		})
	}
}

// TestConnectRefused1013 is the "first hour" scenario at the command
// line: a 1013 in the same read as the 101 and one in a write of its own
// give the same report, in text and in --json, and exit status 1.
func TestConnectRefused1013(t *testing.T) {
	t.Parallel()
	const reason = "server at capacity; retry-after=4.5"
	for _, asJSON := range []bool{false, true} {
		var rs [2]result
		for i, sameWrite := range []bool{true, false} {
			u := wstest.Refuser(t, sameWrite, closecode.TryAgainLater, reason)
			args := []string{"connect", u}
			if asJSON {
				args = []string{"connect", "--json", u}
			}
			// The separate write goes out once this line arrived.
			r := runCmd(t, context.Background(), io.MultiReader(strings.NewReader("hello\n"), stdinOpen(t)), args...)
			if r.code != exitFailure {
				t.Fatalf("json %v, same write %v: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", asJSON, sameWrite, r.code, r.stdout, r.stderr)
			}
			r.stdout, r.stderr = strings.ReplaceAll(r.stdout, u, "URL"), strings.ReplaceAll(r.stderr, u, "URL")
			rs[i] = r
		}
		if rs[0] != rs[1] {
			t.Errorf("json %v: the two arrivals differ:\nsame write:\n%s%s\nseparate write:\n%s%s", asJSON, rs[0].stdout, rs[0].stderr, rs[1].stdout, rs[1].stderr)
		}
		r := rs[0]
		if !asJSON {
			for _, w := range []string{`connection closed by the server: 1013 Try Again Later: "` + reason + `"`, "the server asks to wait at least 4.5s", "fix: " + closecode.Lookup(1013).Fix, "ebb explain 1013"} {
				if !strings.Contains(squash(r.stderr), squash(w)) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			continue
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		var closed map[string]any
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &closed); err != nil {
			t.Fatalf("last line is not JSON: %v\n%s", err, r.stdout)
		}
		if closed["event"] != "closed" || closed["code"] != float64(1013) || closed["name"] != "Try Again Later" || closed["by"] != "server" || closed["reason"] != reason || closed["retry_after_s"] != 4.5 {
			t.Errorf("closed event = %v, want code, name, by, reason and retry_after_s of the 1013", closed)
		}
		if r.stderr != "" {
			t.Errorf("--json: stderr = %q, want nothing", r.stderr)
		}
	}
}

// TestConnectTimeout: a server that accepts TCP and never answers ends
// connect after --timeout with exit 1 and one line that says what to try.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	u := wstest.Silent(t)
	for _, flags := range [][]string{nil, {"--reconnect", "--max-attempts", "1", "--base", "10ms", "--cap", "20ms"}} {
		start := time.Now()
		r := runCmd(t, context.Background(), stdinOpen(t), append(append([]string{"connect", "--timeout", "200ms"}, flags...), u)...)
		if r.code != exitFailure {
			t.Fatalf("%v: exit %d, want 1\nstderr:\n%s", flags, r.code, r.stderr)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v: connect took %v against a silent server with --timeout 200ms", flags, d)
		}
		if flags == nil {
			want := "ebb connect: the handshake with " + strings.TrimSuffix(strings.TrimPrefix(u, "ws://"), "/") + " did not finish within 200ms: the server accepted the TCP connection but did not answer the upgrade request; check that the URL points at a WebSocket endpoint (a TLS port needs wss://), or allow more time with --timeout\n"
			if r.stderr != want {
				t.Errorf("stderr = %q, want the one line %q", r.stderr, want)
			}
		} else if !strings.Contains(r.stderr, "did not finish within 200ms") || !strings.Contains(r.stderr, "gave up after 1 attempt in") {
			t.Errorf("--reconnect: stderr lacks the timeout and the end:\n%s", r.stderr)
		}
	}
}

func TestConnectFailures(t *testing.T) {
	t.Parallel()
	http404 := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(http404.Close)
	tests := []struct {
		name string
		url  string
		want string
	}{
		{name: "refused", url: wstest.Refused(t), want: "ebb connect: connection refused by 127.0.0.1:"},
		{name: "not a websocket endpoint", url: "ws" + strings.TrimPrefix(http404.URL, "http"), want: "ebb connect: the server answered HTTP 404 Not Found instead of upgrading"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, "connect", tt.url)
			if r.code != exitFailure || !strings.HasPrefix(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and one line starting %q", r.code, r.stderr, tt.want)
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
		typ, p, err := c.Read(r.Context())
		if err == nil {
			c.Write(r.Context(), typ, p)
			c.Read(r.Context())
		}
	}))
	// The refused handshake below is expected; keep its log line out.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	u := "wss" + strings.TrimPrefix(srv.URL, "https")

	r := runCmd(t, context.Background(), nil, "connect", u)
	if r.code != exitFailure || !strings.Contains(r.stderr, "certificate") || !strings.Contains(r.stderr, "--insecure") {
		t.Errorf("without --insecure: exit %d, stderr:\n%s\nwant exit 1, a certificate error and the way around it", r.code, r.stderr)
	}
	r = runCmd(t, context.Background(), strings.NewReader("over tls\n"), "connect", "--insecure", u)
	if r.code != exitOK || r.stdout != "over tls\n" {
		t.Errorf("with --insecure: exit %d, stdout %q, stderr:\n%s\nwant exit 0 and the echo", r.code, r.stdout, r.stderr)
	}
}

// TestConnectInterrupt: Ctrl-C once the session is under way closes with
// 1001 and exits with the interrupted status.
func TestConnectInterrupt(t *testing.T) {
	t.Parallel()
	for _, flags := range [][]string{nil, {"--reconnect"}} {
		u := echoServer(t)
		ctx, cancel := context.WithCancel(context.Background())
		in, inW := io.Pipe()
		go func() {
			// The echo of the first line proves the session is up.
			io.WriteString(inW, "first\n")
		}()
		out := &notifyWriter{seen: make(chan struct{})}
		go func() {
			<-out.seen
			cancel()
		}()
		var errb strings.Builder
		code := run(ctx, append(append([]string{"connect"}, flags...), u), in, out, &errb)
		inW.Close()
		cancel()
		if code != exitInterrupted || !strings.Contains(errb.String(), "1001 Going Away") || !strings.HasSuffix(errb.String(), "ebb connect: interrupted\n") {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant 130, the 1001 close and the interruption", flags, code, errb.String())
		}
	}
}

// notifyWriter closes seen at the first write.
type notifyWriter struct {
	seen chan struct{}
	once bool
}

func (n *notifyWriter) Write(p []byte) (int, error) {
	if !n.once {
		n.once = true
		close(n.seen)
	}
	return len(p), nil
}
