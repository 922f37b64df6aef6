package session_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/explain"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/session"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
	"github.com/ebb-ws/ebb/websocket"
)

// jsonLines decodes one JSON object per line.
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var evs []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("output line %q is not JSON: %v", sc.Text(), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

func TestEcho(t *testing.T) {
	t.Parallel()
	u, res := wsServer(t, nil, echoHandler)
	r := run(t, context.Background(), strings.NewReader("hello\r\nworld €\nlast line without newline"), u, nil)
	if !r.res.OK() {
		t.Fatalf("result %+v, want OK\nstderr:\n%s", r.res, r.stderr)
	}
	if want := "hello\nworld €\nlast line without newline\n"; r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	wantIn(t, "stderr", r.stderr, "connected to "+u,
		"connection closed by this client with 1000 Normal Closure; the server answered 1000 Normal Closure",
		explain.Summary(1000), "ebb explain 1000")
	if strings.Contains(r.stderr, "fix:") {
		t.Errorf("a normal closure needs no fix:\n%s", r.stderr)
	}
	if cl := r.res.Close; cl.Code != 1000 || cl.By != session.ByClient || cl.Sent != 1000 {
		t.Errorf("close = %+v, want 1000 started by this client", cl)
	}
	wantCloseCode(t, handlerResult(t, res), closecode.NormalClosure, "")
}

func TestServerCloses(t *testing.T) {
	t.Parallel()
	hint := closecode.FormatRetryHint("server at capacity", 2500*time.Millisecond)
	tests := []struct {
		name     string
		code     closecode.Code
		reason   string
		wantOK   bool
		wantHint time.Duration
		want     []string
	}{
		{name: "1013 with hint", code: 1013, reason: hint, wantHint: 2500 * time.Millisecond,
			want: []string{`connection closed by the server: 1013 Try Again Later: "` + hint + `"`, "retry class: retry with backoff; the server asks to wait at least 2.5s"}},
		{name: "1001", code: 1001, reason: "restarting", wantOK: true, want: []string{`connection closed by the server: 1001 Going Away: "restarting"`}},
		{name: "1008", code: 1008, reason: "token expired", want: []string{"1008 Policy Violation", "retry class: permanent"}},
		{name: "4000", code: 4000, reason: "app", want: []string{"4000 Private Use", "application decides"}},
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
			r := run(t, context.Background(), openInput(t), u, nil)
			if r.res.OK() != tt.wantOK {
				t.Fatalf("OK = %v, want %v\nstderr:\n%s", r.res.OK(), tt.wantOK, r.stderr)
			}
			if r.stdout != "[binary 3 B] AQID\n" {
				t.Errorf("stdout = %q, want the binary message in base64 with its marker", r.stdout)
			}
			want := append(tt.want, explain.Summary(tt.code), fmt.Sprintf("ebb explain %d", tt.code))
			if !tt.wantOK {
				want = append(want, "fix: "+closecode.Lookup(tt.code).Fix)
			}
			wantIn(t, "stderr", r.stderr, want...)
			cl := r.res.Close
			if cl == nil || cl.Code != tt.code || cl.By != session.ByServer || cl.Reason != tt.reason || cl.HasRetryAfter != (tt.wantHint > 0) || cl.RetryAfter != tt.wantHint {
				t.Errorf("close = %+v, want %d by the server with hint %v", cl, tt.code, tt.wantHint)
			}
			if err := handlerResult(t, res); err != nil {
				t.Errorf("server Close: %v", err)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	u, res := wsServer(t, &websocket.AcceptOptions{Subprotocols: []string{"chat"}}, echoHandler)
	dial := &websocket.DialOptions{Subprotocols: []string{"chat"}}
	r := run(t, context.Background(), strings.NewReader("<b>one & two</b>\nthree\n"), u, &session.Options{Dial: dial, JSON: true})
	if !r.res.OK() || r.stderr != "" {
		t.Fatalf("result %+v, want OK and nothing on stderr\nstderr:\n%s", r.res, r.stderr)
	}
	if !strings.Contains(r.stdout, `"data":"<b>one & two</b>"`) {
		t.Errorf("the message is HTML-escaped or missing:\n%s", r.stdout)
	}
	evs := jsonLines(t, r.stdout)
	if len(evs) != 4 {
		t.Fatalf("got %d events, want open, two messages, closed:\n%s", len(evs), r.stdout)
	}
	if evs[0]["event"] != "open" || evs[0]["subprotocol"] != "chat" {
		t.Errorf("first event = %v, want open with subprotocol chat", evs[0])
	}
	for i, want := range []string{"<b>one & two</b>", "three"} {
		if ev := evs[i+1]; ev["event"] != "message" || ev["type"] != "text" || ev["data"] != want || ev["size"] != float64(len(want)) {
			t.Errorf("event %d = %v, want text message %q", i+1, ev, want)
		}
	}
	ev := evs[3]
	if ev["event"] != "closed" || ev["code"] != float64(1000) || ev["name"] != "Normal Closure" || ev["sent_code"] != float64(1000) ||
		ev["by"] != session.ByClient || ev["reason"] != "" || ev["retry_class"] != closecode.Done.String() {
		t.Errorf("last event = %v, want closed 1000 by the client", ev)
	}
	if _, ok := ev["retry_after_s"]; ok {
		t.Errorf("closed event has retry_after_s without a hint: %v", ev)
	}
	wantCloseCode(t, handlerResult(t, res), closecode.NormalClosure, "")
}

// TestRefusedAtOnce is the "first hour" scenario: a server at its limit
// upgrades and closes with 1013 and a hint. Whether the Close frame comes
// in the same read as the 101 (Dial fails with the server's close) or in
// a write of its own (Dial returns, the first Read gets it), the session
// reports the same, in text and in JSON.
func TestRefusedAtOnce(t *testing.T) {
	t.Parallel()
	const reason = "server at capacity; retry-after=4.5"
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			t.Parallel()
			var outs [2]outcome
			for i, sameWrite := range []bool{true, false} {
				u := wstest.Refuser(t, sameWrite, closecode.TryAgainLater, reason)
				in := openInput(t)
				if !sameWrite {
					// The server closes once this line arrived: after Dial.
					in = io.MultiReader(strings.NewReader("hello\n"), in)
				}
				r := run(t, context.Background(), in, u, &session.Options{JSON: asJSON})
				cl := r.res.Close
				if r.res.OK() || r.res.Err != nil || cl == nil || cl.Code != 1013 || cl.By != session.ByServer || cl.Reason != reason || !cl.HasRetryAfter || cl.RetryAfter != 4500*time.Millisecond {
					t.Fatalf("same write %v: result %+v, close %+v, want 1013 by the server with a 4.5s hint\nstderr:\n%s", sameWrite, r.res, cl, r.stderr)
				}
				// The URLs differ by port; the reports must not differ otherwise.
				r.stdout = strings.ReplaceAll(r.stdout, u, "URL")
				r.stderr = strings.ReplaceAll(r.stderr, u, "URL")
				outs[i] = r
			}
			if outs[0].stdout != outs[1].stdout || outs[0].stderr != outs[1].stderr {
				t.Errorf("the two arrivals are reported differently:\nsame write:\n%s%s\nseparate write:\n%s%s", outs[0].stdout, outs[0].stderr, outs[1].stdout, outs[1].stderr)
			}
			r := outs[0]
			if !asJSON {
				wantIn(t, "stderr", r.stderr, "connected to URL",
					`connection closed by the server: 1013 Try Again Later: "`+reason+`"`,
					"retry class: retry with backoff; the server asks to wait at least 4.5s",
					"means: "+explain.Summary(1013), "fix: "+closecode.Lookup(1013).Fix, "ebb explain 1013")
				return
			}
			evs := jsonLines(t, r.stdout)
			if len(evs) != 2 || evs[0]["event"] != "open" {
				t.Fatalf("events:\n%s\nwant open and closed", r.stdout)
			}
			ev := evs[1]
			if ev["event"] != "closed" || ev["code"] != float64(1013) || ev["name"] != "Try Again Later" || ev["by"] != "server" || ev["reason"] != reason || ev["retry_after_s"] != 4.5 || ev["fix"] != closecode.Lookup(1013).Fix {
				t.Errorf("closed event = %v, want 1013 by the server with retry_after_s 4.5", ev)
			}
		})
	}
}

func TestRequireRefused(t *testing.T) {
	t.Parallel()
	dial := &websocket.DialOptions{Require: []websocket.Requirement{{Extension: "permessage-deflate"}}}
	for _, asJSON := range []bool{false, true} {
		t.Run(fmt.Sprintf("json=%v", asJSON), func(t *testing.T) {
			t.Parallel()
			u, res := wsServer(t, nil, echoHandler) // compression off
			r := run(t, context.Background(), nil, u, &session.Options{Dial: dial, JSON: asJSON})
			if cl := r.res.Close; r.res.OK() || cl == nil || cl.Code != 1010 || cl.By != session.ByClient || cl.Mandatory == nil {
				t.Fatalf("result %+v, want 1010 by this client with what was missing\nstderr:\n%s", r.res, r.stderr)
			}
			if asJSON {
				evs := jsonLines(t, r.stdout)
				ev := evs[len(evs)-1]
				if ev["event"] != "closed" || ev["code"] != float64(1010) || ev["by"] != "client" || ev["answered"] != "" || !strings.HasPrefix(fmt.Sprint(ev["missing"]), "[permessage-deflate") {
					t.Errorf("closed event = %v, want 1010 by the client, missing permessage-deflate", ev)
				}
			} else {
				wantIn(t, "stderr", r.stderr, "connection closed by this client: 1010 Mandatory Extension", "required: permessage-deflate",
					"offered: permessage-deflate", "answered: (none)", "missing: permessage-deflate", "fix: "+closecode.Lookup(1010).Fix)
			}
			var ce *websocket.CloseError
			if err := handlerResult(t, res); !errors.As(err, &ce) || ce.Code != closecode.MandatoryExtension || !strings.Contains(ce.Reason, "permessage-deflate") {
				t.Errorf("server saw %v, want 1010 naming permessage-deflate", err)
			}
		})
	}
}

// TestHandshakeTimeout: a server that accepts TCP and never answers the
// upgrade ends the session after the handshake timeout with an error that
// says so, in both modes.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	u := wstest.Silent(t)
	const timeout = 200 * time.Millisecond
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		for _, asJSON := range []bool{false, true} {
			r := run(t, context.Background(), openInput(t), u, &session.Options{HandshakeTimeout: timeout, JSON: asJSON})
			var te *handshake.TimeoutError
			if !errors.As(r.res.Err, &te) || !te.Connected || te.Timeout != timeout || r.res.OK() {
				t.Fatalf("json %v: result %+v, want a timeout after the TCP connection", asJSON, r.res)
			}
			msg := r.res.Err.Error()
			for _, w := range []string{"did not finish within 200ms", "accepted the TCP connection but did not answer the upgrade", "--timeout"} {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			switch {
			case asJSON && !strings.Contains(r.stdout, `"event":"error","error":"the handshake with`):
				t.Errorf("--json: no error event:\n%s", r.stdout)
			case !asJSON && r.stderr != "":
				t.Errorf("text: the error is the caller's to print, stderr = %q", r.stderr)
			}
		}
	})
	t.Run("reconnect", func(t *testing.T) {
		t.Parallel()
		p := &session.Options{HandshakeTimeout: timeout, Reconnect: &fastPolicy}
		r := run(t, context.Background(), openInput(t), u, p)
		if cl := r.res.Close; r.res.OK() || cl == nil || cl.Code != closecode.AbnormalClosure {
			t.Fatalf("result %+v, want the last attempt's 1006", r.res)
		}
		if n := strings.Count(r.stderr, "did not finish within 200ms: the server accepted the TCP connection"); n != 2 {
			t.Errorf("%d attempts report the timeout, want 2:\n%s", n, r.stderr)
		}
		wantIn(t, "stderr", r.stderr, "gave up after 1 attempt in", "the limit of attempts was reached")
	})
}

// TestInterrupt: interrupted once the server got a first message (by then
// the session is past the handshake and waiting for more input), both
// modes close with 1001 and report the interruption.
func TestInterrupt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		reconnect  bool
		wantStderr string
	}{
		{"single", false, "connection closed by this client with 1001 Going Away; the server answered"},
		{"reconnect", true, "closed 1001 Going Away (interrupted)\nstopped: closed by this client\n"},
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
			in, inW := io.Pipe()
			t.Cleanup(func() { inW.Close() })
			go func() {
				if _, err := io.WriteString(inW, "first\n"); err != nil {
					return
				}
				<-got
				cancel()
			}()
			o := &session.Options{}
			if tc.reconnect {
				o.Reconnect = &fastPolicy
			}
			r := run(t, ctx, in, u, o)
			if !r.res.Interrupted || r.res.OK() {
				t.Fatalf("result %+v, want interrupted\nstderr:\n%s", r.res, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, r.stderr)
			}
			wantCloseCode(t, handlerResult(t, res), closecode.GoingAway, "interrupted")
		})
	}
}

func TestDialFailures(t *testing.T) {
	t.Parallel()
	refused := wstest.Refused(t)
	notWS, _ := httpServer(t, http.NotFoundHandler())
	busy, _ := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	tests := []struct {
		name    string
		url     string
		want    string
		status  int
		retryAS float64
	}{
		{name: "refused", url: refused, want: "connection refused by 127.0.0.1:"},
		{name: "not a websocket endpoint", url: notWS, want: "the server answered HTTP 404 Not Found instead of upgrading", status: 404},
		{name: "503", url: busy, want: "the server refused the upgrade with HTTP 503 Service Unavailable and Retry-After 30s", status: 503, retryAS: 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, context.Background(), nil, tt.url, nil)
			if r.res.Err == nil || r.res.Close != nil || r.res.OK() || !strings.Contains(r.res.Err.Error(), tt.want) {
				t.Fatalf("result %+v (err %v), want a failure saying %q", r.res, r.res.Err, tt.want)
			}
			r = run(t, context.Background(), nil, tt.url, &session.Options{JSON: true})
			evs := jsonLines(t, r.stdout)
			if len(evs) != 1 || evs[0]["event"] != "error" || !strings.Contains(evs[0]["error"].(string), tt.want) {
				t.Fatalf("--json events:\n%s\nwant one error event", r.stdout)
			}
			if st, _ := evs[0]["status"].(float64); int(st) != tt.status {
				t.Errorf("status = %v, want %d", evs[0]["status"], tt.status)
			}
			if ra, _ := evs[0]["retry_after_s"].(float64); ra != tt.retryAS {
				t.Errorf("retry_after_s = %v, want %v", evs[0]["retry_after_s"], tt.retryAS)
			}
		})
	}
}
