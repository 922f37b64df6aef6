package session_test

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/session"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// fastPolicy retries once, quickly.
var fastPolicy = reconnect.Policy{Backoff: reconnect.Backoff{Base: 10 * time.Millisecond, Cap: 20 * time.Millisecond}, MaxAttempts: 1}

// policy returns a fast policy with changes.
func policy(maxAttempts int, persistent bool) *reconnect.Policy {
	p := fastPolicy
	p.MaxAttempts, p.Persistent = maxAttempts, persistent
	return &p
}

// refusedLine matches the report of a 1013 close and the wait it causes.
var refusedLine = regexp.MustCompile(`(?m)^closed 1013 Try Again Later \((?:[^)]*; )?retry-after=([0-9.]+)\) — retrying in (\S+), attempt (\d+)`)

// TestReconnectAfter1013 is the reconnect scenario: a server at its limit
// refuses with 1013 and a hint; the session says so, waits at least the
// hint, and gets in once the slot is free; lines typed then go through.
func TestReconnectAfter1013(t *testing.T) {
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

	in, inW := io.Pipe()
	t.Cleanup(func() { inW.Close() })
	p := &reconnect.Policy{Backoff: reconnect.Backoff{Base: 100 * time.Millisecond, Cap: time.Second}}
	stdout, stderr, res := runAsync(ctx, in, u, &session.Options{Reconnect: p})
	waitFor(t, 10*time.Second, func() bool { return refusedLine.MatchString(stderr.String()) },
		"the session did not report a 1013 with its hint and the wait")
	if err := holder.Close(closecode.NormalClosure, ""); err != nil {
		t.Fatalf("releasing the slot: %v", err)
	}
	// The server admits the session once the holder is gone.
	waitFor(t, 10*time.Second, func() bool {
		st := s.Shedder().Stats()
		return st.Admitted == 2 && st.Connections == 1
	}, "the server did not admit the session after the slot was freed")
	if _, err := io.WriteString(inW, "after the wait\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, func() bool { return stdout.String() == "after the wait\n" },
		"the line sent after reconnecting was not echoed")
	inW.Close()
	if r := result(t, res, stderr); !r.OK() {
		t.Fatalf("result %+v, want OK\nstderr:\n%s", r, stderr.String())
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
		t.Errorf("the session gave up on a 1013:\n%s", out)
	}
}

func TestReconnectStops(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		code      closecode.Code
		reason    string
		policy    *reconnect.Policy
		wantOK    bool
		wantConns int32
		want      []string
		notWant   []string
	}{
		{name: "1008 stops at once", code: 1008, reason: "token expired", policy: policy(0, false), wantConns: 1,
			want:    []string{"closed 1008 Policy Violation (token expired)\n", "gave up: 1008 Policy Violation is permanent", "fix: " + closecode.Lookup(1008).Fix, "ebb explain 1008"},
			notWant: []string{"— retrying in"}},
		{name: "1000 ends the link", code: 1000, reason: "done", policy: policy(0, false), wantOK: true, wantConns: 1,
			want:    []string{"closed 1000 Normal Closure (done)\n", "gave up: 1000 Normal Closure: the peer ended the link on purpose"},
			notWant: []string{"— retrying in", "fix:"}},
		{name: "1000 with persistent retries", code: 1000, reason: "done", policy: policy(2, true), wantOK: true, wantConns: 3,
			want: []string{"closed 1000 Normal Closure (done) — retrying in", "attempt 2\n", "gave up after 2 attempts in"}},
		{name: "1011 until the attempt limit", code: 1011, reason: "oops", policy: policy(1, false), wantConns: 2,
			want: []string{"closed 1011 Internal Error (oops) — retrying in", "gave up after 1 attempt in", "the limit of attempts was reached without a stable connection; last: 1011", "ebb explain 1011"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, conns := countingServer(t, closeWith(tt.code, tt.reason))
			r := run(t, context.Background(), openInput(t), u, &session.Options{Reconnect: tt.policy})
			if r.res.OK() != tt.wantOK || r.res.Close == nil || r.res.Close.Code != tt.code {
				t.Fatalf("result %+v, want OK %v with %d\nstderr:\n%s", r.res, tt.wantOK, tt.code, r.stderr)
			}
			if n := conns.Load(); n != tt.wantConns {
				t.Errorf("the server got %d connections, want %d\nstderr:\n%s", n, tt.wantConns, r.stderr)
			}
			wantIn(t, "stderr", r.stderr, tt.want...)
			for _, nw := range tt.notWant {
				if strings.Contains(r.stderr, nw) {
					t.Errorf("stderr has %q:\n%s", nw, r.stderr)
				}
			}
		})
	}
}

// TestReconnectQueues sends lines while the server refuses the handshake
// with HTTP 503: the lines wait in the queue and go out in order once the
// link is up.
func TestReconnectQueues(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	u, _ := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	p := &reconnect.Policy{Backoff: reconnect.Backoff{Base: 50 * time.Millisecond, Cap: 100 * time.Millisecond}}
	r := run(t, context.Background(), strings.NewReader("one\ntwo\nthree\n"), u, &session.Options{Reconnect: p})
	if !r.res.OK() {
		t.Fatalf("result %+v, want OK\nstderr:\n%s", r.res, r.stderr)
	}
	if r.stdout != "one\ntwo\nthree\n" {
		t.Errorf("stdout = %q, want the three lines echoed in order", r.stdout)
	}
	wantIn(t, "stderr", r.stderr, "closed before the upgrade: the server answered HTTP 503 Service Unavailable — retrying in")
}

// TestReconnectUnsent: a line queued while the server keeps refusing is
// reported as never sent, in the singular.
func TestReconnectUnsent(t *testing.T) {
	t.Parallel()
	u, _ := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "warming up", http.StatusServiceUnavailable)
	}))
	r := run(t, context.Background(), io.MultiReader(strings.NewReader("one\n"), openInput(t)), u, &session.Options{Reconnect: policy(1, false)})
	if r.res.OK() {
		t.Fatalf("result %+v, want a failure\nstderr:\n%s", r.res, r.stderr)
	}
	wantIn(t, "stderr", r.stderr, "gave up after 1 attempt in", "  1 queued message was never sent\n")
}

func TestReconnectGivesUpOnRefusedPort(t *testing.T) {
	t.Parallel()
	u := wstest.Refused(t)
	r := run(t, context.Background(), nil, u, &session.Options{Reconnect: policy(2, false)})
	if r.res.OK() || r.res.Close == nil || r.res.Close.Code != closecode.AbnormalClosure {
		t.Fatalf("result %+v, want 1006\nstderr:\n%s", r.res, r.stderr)
	}
	if n := strings.Count(r.stderr, "closed 1006 Abnormal Closure: connection refused by "); n != 3 {
		t.Errorf("%d closed 1006 lines, want 3 (the first try and 2 attempts):\n%s", n, r.stderr)
	}
	wantIn(t, "stderr", r.stderr, "— retrying in", ", attempt 2\n", "gave up after 2 attempts in", "the limit of attempts was reached")
}

func TestReconnectJSON(t *testing.T) {
	t.Parallel()
	u, _ := countingServer(t, closeWith(closecode.PolicyViolation, "token expired"))
	r := run(t, context.Background(), openInput(t), u, &session.Options{Reconnect: policy(0, false), JSON: true})
	if r.res.OK() {
		t.Fatalf("result %+v, want a failure", r.res)
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing: JSON reports on stdout", r.stderr)
	}
	var kinds []string
	var closed, stopped map[string]any
	for _, ev := range jsonLines(t, r.stdout) {
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
	if closed["code"] != float64(1008) || closed["name"] != "Policy Violation" || closed["by"] != "server" || closed["reason"] != "token expired" ||
		closed["remote"] != true || closed["retry"] != false || closed["retry_class"] != closecode.Permanent.String() || closed["fix"] != closecode.Lookup(1008).Fix {
		t.Errorf("closed event = %v, want 1008 from the server, not retried", closed)
	}
	if stopped["gave_up"] != true || !strings.Contains(stopped["error"].(string), "1008 Policy Violation is permanent") {
		t.Errorf("stopped event = %v, want gave_up with the 1008 verdict", stopped)
	}
}

func TestReconnectJSONWaiting(t *testing.T) {
	t.Parallel()
	u, _ := countingServer(t, closeWith(closecode.TryAgainLater, closecode.FormatRetryHint("full", 150*time.Millisecond)))
	r := run(t, context.Background(), openInput(t), u, &session.Options{Reconnect: policy(1, false), JSON: true})
	if r.res.OK() {
		t.Fatalf("result %+v, want a failure", r.res)
	}
	var waiting, closed map[string]any
	for _, ev := range jsonLines(t, r.stdout) {
		switch ev["event"] {
		case "waiting":
			waiting = ev
		case "closed":
			closed = ev
		}
	}
	if waiting == nil || closed == nil {
		t.Fatalf("no waiting or closed event:\n%s", r.stdout)
	}
	// FormatRetryHint rounds 150ms up to retry-after=0.2.
	delay, _ := waiting["delay_s"].(float64)
	if waiting["attempt"] != float64(1) || waiting["hinted"] != true || waiting["retry_after_s"] != 0.2 || delay < 0.2 {
		t.Errorf("waiting event = %v, want attempt 1, at least the 0.2s hint, hinted", waiting)
	}
	if closed["retry_after_s"] != 0.2 || closed["by"] != "server" {
		t.Errorf("closed event = %v, want the 0.2s hint from the server", closed)
	}
	// No float noise: seconds have at most three decimals.
	if noisy := regexp.MustCompile(`_s":[0-9]+\.[0-9]{4,}`).FindString(r.stdout); noisy != "" {
		t.Errorf("float noise in %q:\n%s", noisy, r.stdout)
	}
}

// TestReconnectRequire: a required extension the server refuses is a
// 1010, which no reconnect can fix.
func TestReconnectRequire(t *testing.T) {
	t.Parallel()
	u, conns := countingServer(t, echoHandler) // compression off
	dial := &websocket.DialOptions{Require: []websocket.Requirement{{Extension: "permessage-deflate"}}}
	r := run(t, context.Background(), nil, u, &session.Options{Dial: dial, Reconnect: policy(0, false)})
	if r.res.OK() || r.res.Close == nil || r.res.Close.Code != 1010 || r.res.Close.Mandatory == nil {
		t.Fatalf("result %+v, want 1010", r.res)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the server got %d connections, want 1: a 1010 is never retried", n)
	}
	wantIn(t, "stderr", r.stderr, "closed 1010 Mandatory Extension (missing required extension: permessage-deflate",
		": offered permessage-deflate", "the server answered (none)\n",
		"gave up: 1010 Mandatory Extension is permanent until the configuration changes", "fix: "+closecode.Lookup(1010).Fix)
}
