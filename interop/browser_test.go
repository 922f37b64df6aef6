package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/web"
	"github.com/ebb-ws/ebb/websocket"
)

// chromiumPath is Debian's Chromium. Tests never download a browser.
const chromiumPath = "/usr/bin/chromium"

// chromium is Chromium as a peer for the table. It is not in peers: it has
// no script, the tests drive it through chromedp and interop/browser/page.html.
var chromium = &peer{
	name:    "chromium",
	install: "install Debian's chromium (apt-get install chromium); the tests run " + chromiumPath,
	version: func() (string, error) {
		out, err := exec.Command(chromiumPath, "--version").Output()
		if err != nil {
			return "", fmt.Errorf("%s --version: %w", chromiumPath, err)
		}
		// "Chromium 156.0.8078.108 built on Debian GNU/Linux 12 (bookworm)"
		f := strings.Fields(string(out))
		if len(f) < 2 || f[0] != "Chromium" {
			return "", fmt.Errorf("%s --version printed %q, want \"Chromium <version> …\"", chromiumPath, out)
		}
		return "Chromium " + f[1], nil
	},
}

// requireChromium is requirePeer for Chromium: it skips the test with an
// install hint, or fails it under CI (CI=true), when Chromium is missing.
func requireChromium(t *testing.T) *peer {
	t.Helper()
	p := chromium
	p.once.Do(func() { p.label, p.err = p.version() })
	if p.err != nil {
		msg := fmt.Sprintf("interop: peer %s is not available (%v): %s", p.name, p.err, p.install)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		noteMissing(p)
		t.Skip(msg)
	}
	return p
}

// browserTimeout bounds one tab. A 16 MiB echo through Chromium takes
// seconds (about 5 s on loopback without -race), and the echo subtests
// share a 2-core machine with the other interop tests.
const browserTimeout = 3 * time.Minute

// startBrowser starts a headless Chromium with a fresh profile for the test
// and returns its browser context; it is closed when the test ends.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	requireChromium(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		bcancel()
		acancel()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("interop: starting %s: %v", chromiumPath, err)
	}
	return bctx
}

// site is the test's own HTTP server: the test page, ebb.js, and the
// WebSocket endpoints the test adds, all on one origin so that ebb's
// same-origin check admits the browser.
type site struct {
	mux *http.ServeMux
	url string // http://127.0.0.1:PORT
}

func newSite(t *testing.T) *site {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("GET /ebb.js", web.Handler())
	mux.Handle("GET /closecodes.gen.js", web.Handler())
	mux.Handle("GET /browser/", http.StripPrefix("/browser/", http.FileServer(http.Dir("browser"))))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &site{mux: mux, url: srv.URL}
}

// serveWS serves WebSocket connections at path with Accept(opts) and h;
// the returned channel receives h's result for each connection.
func (s *site) serveWS(path string, opts *websocket.AcceptOptions, h func(ctx context.Context, r *http.Request, c *websocket.Conn) error) <-chan error {
	res := make(chan error, 8)
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			res <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		res <- h(ctx, r, c)
	})
	return res
}

// upgrades counts and timestamps the requests that reach next.
type upgrades struct {
	mu    sync.Mutex
	times []time.Time
}

func (u *upgrades) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.times = append(u.times, time.Now())
		u.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (u *upgrades) list() []time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.times)
}

// openPage opens the test page in a new tab of the browser.
func openPage(t *testing.T, browser context.Context, s *site) context.Context {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	ctx, cancelT := context.WithTimeout(tab, browserTimeout)
	t.Cleanup(cancelT)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(s.url+"/browser/page.html"),
		chromedp.Poll[chromedp.Void]("window.pageReady === true", pollEvery, chromedp.WithPollingTimeout(15*time.Second)),
	); err != nil {
		t.Fatalf("interop: loading the test page in Chromium: %v", err)
	}
	return ctx
}

// call evaluates fn(args...) in the page, awaits the promise it returns,
// and decodes the result into out (which may be nil).
func call(t *testing.T, ctx context.Context, out any, fn string, args ...any) {
	t.Helper()
	js := make([]string, len(args))
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("interop: encoding argument %d of %s: %v", i, fn, err)
		}
		js[i] = string(b)
	}
	expr := fmt.Sprintf("(async () => JSON.stringify((await %s(%s)) ?? null))()", fn, strings.Join(js, ", "))
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("interop: %s in Chromium: %v", fn, err)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(s), out); err != nil {
			t.Fatalf("interop: decoding the result of %s (%s): %v", fn, s, err)
		}
	}
}

// pollEvery polls on a timer: requestAnimationFrame, chromedp's default,
// does not run in a headless tab that is not in front.
var pollEvery = chromedp.WithPollingInterval(20 * time.Millisecond)

// waitFor polls expr in the page until it is true.
func waitFor(t *testing.T, ctx context.Context, expr string, timeout time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, pollEvery, chromedp.WithPollingTimeout(timeout))); err != nil {
		t.Fatalf("interop: waiting up to %s for %s in Chromium: %v; ebb.js events: %+v", timeout, expr, err, pageEvents(t, ctx))
	}
}

// jsEvent is one ebb.js event as the page records it (times in ms).
type jsEvent struct {
	State     string   `json:"state"`
	At        float64  `json:"at"`
	Attempt   int      `json:"attempt"`
	Code      int      `json:"code"`
	Reason    string   `json:"reason"`
	Remote    bool     `json:"remote"`
	Delay     float64  `json:"delay"`
	Hint      float64  `json:"hint"`
	Retry     bool     `json:"retry"`
	Error     string   `json:"error"`
	Message   string   `json:"message"`
	ErrorCode int      `json:"errorCode"`
	Missing   []string `json:"missing"`
	Cause     string   `json:"cause"`
	Resume    string   `json:"resume"`
	From      int      `json:"from"`
	Protocol  string   `json:"protocol"`
}

func pageEvents(t *testing.T, ctx context.Context) []jsEvent {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string]("JSON.stringify(window.events)"))
	if err != nil {
		t.Errorf("interop: reading window.events: %v", err)
		return nil
	}
	var evs []jsEvent
	if err := json.Unmarshal([]byte(s), &evs); err != nil {
		t.Errorf("interop: decoding window.events %s: %v", s, err)
	}
	return evs
}

// domState reads the client's state as the page shows it.
func domState(t *testing.T, ctx context.Context) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#state")))
	if err != nil {
		t.Fatalf("interop: reading #state: %v", err)
	}
	return strings.TrimSpace(s)
}

// waitState waits until the page's #state shows state.
func waitState(t *testing.T, ctx context.Context, state string, timeout time.Duration) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf("document.querySelector('#state').textContent === %q", state), timeout)
	if got := domState(t, ctx); got != state {
		t.Fatalf("interop: #state shows %q, want %q", got, state)
	}
}

func statesOf(evs []jsEvent) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.State
	}
	return out
}

// serveEcho echoes every message until the connection ends.
func serveEcho(ctx context.Context, c *websocket.Conn) {
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

// TestBrowserClientOverload: ebb.js in Chromium against a server with room
// for one connection, held by a Go client. The browser client is refused
// with 1013 and a retry hint, waits at least the hint before each new
// attempt, and gets in once the Go client leaves.
func TestBrowserClientOverload(t *testing.T) {
	t.Parallel()
	browser := startBrowser(t)
	// ebb.js in Chromium sees the 1013 and its hint: the overload row of
	// the table, for the browser.
	record(t, chromium, peerClient, featureOverload)
	s := newSite(t)
	// No jitter: the hint for the first refusal is exactly RetryBase times
	// the overload ratio (2 with one connection over a limit of 1).
	sh, err := shed.New(&shed.Options{
		Limits:    shed.Limits{MaxConns: 1},
		RetryBase: 500 * time.Millisecond,
		Jitter:    -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sh.Shutdown(ctx); err != nil {
			t.Errorf("interop: shed Shutdown: %v", err)
		}
	})
	var ups upgrades
	s.mux.Handle("/ws", ups.wrap(sh.Handler(nil, serveEcho)))

	ctx := testCtx(t)
	holder, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/ws", nil)
	if err != nil {
		t.Fatalf("interop: the Go client could not take the only slot: %v", err)
	}
	defer holder.CloseNow()
	if err := holder.Write(ctx, websocket.MessageText, []byte("holding the slot")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := holder.Read(ctx); err != nil {
		t.Fatalf("interop: the Go client holding the slot got no echo: %v", err)
	}

	page := openPage(t, browser, s)
	// A small base and cap, so that the server's hint, not the client's own
	// backoff, decides the wait.
	call(t, page, nil, "startClient", "/ws", map[string]any{"base": 100, "cap": 400})
	waitFor(t, page, "window.events.some((e) => e.state === 'waiting' && e.hint > 0)", 15*time.Second)
	if got := domState(t, page); got != "waiting" && got != "connecting" && got != "closed" {
		t.Errorf("interop: #state shows %q while the client is kept out, want waiting (or connecting/closed)", got)
	}
	released := time.Now()
	if err := holder.Close(closecode.NormalClosure, "making room"); err != nil {
		t.Fatalf("interop: the Go client's Close: %v", err)
	}
	waitState(t, page, "open", 30*time.Second)
	call(t, page, nil, "(async (m) => window.client.send(m))", "hello from ebb.js")
	waitFor(t, page, "window.received.includes('hello from ebb.js')", 10*time.Second)

	evs := pageEvents(t, page)
	t.Logf("ebb.js states: %v", statesOf(evs))
	refusals := 0
	for i, e := range evs {
		if e.State != "closed" {
			continue
		}
		if e.Code != int(closecode.TryAgainLater) || !e.Remote || !e.Retry {
			t.Fatalf("interop: ebb.js event %d: closed %d (remote %v, retry %v) %q, want a retried 1013 from the server", i, e.Code, e.Remote, e.Retry, e.Reason)
		}
		hint, ok := closecode.ParseRetryHint(e.Reason)
		if !ok || !strings.Contains(e.Reason, "retry-after=") {
			t.Fatalf("interop: 1013 reason %q has no retry-after= hint", e.Reason)
		}
		hintMS := float64(hint) / float64(time.Millisecond)
		if e.Hint != hintMS {
			t.Errorf("interop: ebb.js read hint %v ms from %q, Go reads %v ms", e.Hint, e.Reason, hintMS)
		}
		if refusals == 0 && hint < time.Second {
			t.Errorf("interop: first refusal's hint is %v, want ≥ 1s (RetryBase 500ms × overload 2)", hint)
		}
		refusals++
		if i+2 >= len(evs) || evs[i+1].State != "waiting" || evs[i+2].State != "connecting" {
			t.Fatalf("interop: after refusal %d ebb.js went %v, want waiting then connecting", refusals, statesOf(evs[i:]))
		}
		if w := evs[i+1]; w.Delay < hintMS {
			t.Errorf("interop: ebb.js waits %.1f ms after a %v hint, want at least the hint", w.Delay, hint)
		}
		// performance.now and the timer clock can round apart by up to 1 ms.
		if gap := evs[i+2].At - e.At; gap < hintMS-1 {
			t.Errorf("interop: ebb.js attempted again %.1f ms after a 1013 with a %v hint, want at least the hint", gap, hint)
		}
		t.Logf("refusal %d: %q; waited %.0f ms (hint %v)", refusals, e.Reason, evs[i+2].At-e.At, hint)
	}
	if refusals == 0 {
		t.Fatalf("interop: ebb.js was never refused; events %+v", evs)
	}
	if last := evs[len(evs)-1]; last.State != "open" {
		t.Errorf("interop: ebb.js's last state is %q, want open", last.State)
	}
	// The server's view: upgrade 0 is the Go client; every later gap between
	// the browser's attempts is at least the hint it was given.
	times := ups.list()
	if len(times) != refusals+2 {
		t.Errorf("interop: the server saw %d upgrades, want %d (Go client, %d refused, 1 admitted)", len(times), refusals+2, refusals)
	}
	k := 0
	for _, e := range evs {
		if e.State != "closed" {
			continue
		}
		k++
		hint, _ := closecode.ParseRetryHint(e.Reason)
		if k+1 < len(times) {
			if gap := times[k+1].Sub(times[k]); gap < hint {
				t.Errorf("interop: the server saw the browser come back %v after refusing it with a %v hint", gap, hint)
			}
		}
	}
	t.Logf("admitted %v after the slot was freed", times[len(times)-1].Sub(released).Round(time.Millisecond))
	call(t, page, nil, "(async () => window.client.close())")
	waitState(t, page, "stopped", 10*time.Second)
}

// TestBrowserClientPolicyViolation: ebb.js stops after a 1008 and does not
// try again.
func TestBrowserClientPolicyViolation(t *testing.T) {
	t.Parallel()
	browser := startBrowser(t)
	s := newSite(t)
	var ups upgrades
	const reason = "interop: this server refuses every client"
	res := make(chan error, 4)
	s.mux.Handle("/ws", ups.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			res <- err
			return
		}
		defer c.CloseNow()
		res <- c.Close(closecode.PolicyViolation, reason)
	})))
	page := openPage(t, browser, s)
	call(t, page, nil, "startClient", "/ws", map[string]any{"base": 100, "cap": 200})
	waitState(t, page, "stopped", 15*time.Second)
	if err := <-res; err != nil {
		t.Errorf("interop: the server's Close(1008): %v", err)
	}
	// Long enough for several attempts at this base, had it retried.
	time.Sleep(2 * time.Second)
	evs := pageEvents(t, page)
	want := []string{"connecting", "open", "closed", "stopped"}
	if got := statesOf(evs); !slices.Equal(got, want) {
		t.Fatalf("interop: ebb.js went %v after a 1008, want %v", got, want)
	}
	if c := evs[2]; c.Code != int(closecode.PolicyViolation) || c.Reason != reason || !c.Remote || c.Retry {
		t.Errorf("interop: ebb.js saw closed %d %q (remote %v, retry %v), want a final 1008 %q from the server", c.Code, c.Reason, c.Remote, c.Retry, reason)
	}
	if st := evs[3]; st.Error != "GaveUpError" || !strings.Contains(st.Message, "1008") {
		t.Errorf("interop: ebb.js stopped with %s %q, want a GaveUpError naming 1008", st.Error, st.Message)
	}
	if n := len(ups.list()); n != 1 {
		t.Errorf("interop: the server saw %d upgrades, want 1: ebb.js must not retry after 1008", n)
	}
	if got := domState(t, page); got != "stopped" {
		t.Errorf("interop: #state shows %q 2s after the 1008, want stopped", got)
	}
}

// TestBrowserClientRequire: ebb.js requiring permessage-deflate stops with
// a 1010-class error when the server does not compress, and works when it
// does.
func TestBrowserClientRequire(t *testing.T) {
	t.Parallel()
	browser := startBrowser(t)

	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		s := newSite(t)
		var ups upgrades
		res := make(chan error, 4)
		s.mux.Handle("/ws", ups.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil) // compression off
			if err != nil {
				res <- err
				return
			}
			defer c.CloseNow()
			_, _, err = c.Read(context.Background())
			res <- err
		})))
		page := openPage(t, browser, s)
		call(t, page, nil, "startClient", "/ws", map[string]any{"require": []string{"permessage-deflate"}, "base": 100, "cap": 200})
		waitState(t, page, "stopped", 15*time.Second)

		var ce *websocket.CloseError
		select {
		case err := <-res:
			if !errors.As(err, &ce) {
				t.Fatalf("interop: the server's read ended with %v, want the browser's Close", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("interop: the server's connection did not end")
		}
		if ce.Code != closecode.NormalClosure || !strings.Contains(ce.Reason, "permessage-deflate") {
			t.Errorf("interop: the server received close %d %q, want 1000 with a reason naming permessage-deflate", ce.Code, ce.Reason)
		}
		time.Sleep(1500 * time.Millisecond)
		evs := pageEvents(t, page)
		want := []string{"connecting", "closed", "stopped"}
		if got := statesOf(evs); !slices.Equal(got, want) {
			t.Fatalf("interop: ebb.js went %v, want %v", got, want)
		}
		c := evs[1]
		if c.Code != 1010 || c.Remote || c.Retry || c.Error != "MandatoryExtensionError" || c.ErrorCode != 1010 ||
			!slices.Equal(c.Missing, []string{"permessage-deflate"}) {
			t.Errorf("interop: ebb.js closed with %+v, want code 1010 (local, no retry), a MandatoryExtensionError with code 1010 missing [permessage-deflate]", c)
		}
		if st := evs[2]; st.Error != "GaveUpError" || st.Cause != "MandatoryExtensionError" {
			t.Errorf("interop: ebb.js stopped with %s (cause %s), want GaveUpError caused by MandatoryExtensionError", st.Error, st.Cause)
		}
		if n := len(ups.list()); n != 1 {
			t.Errorf("interop: the server saw %d upgrades, want 1: a missing required extension must not be retried", n)
		}
	})

	t.Run("accepted", func(t *testing.T) {
		t.Parallel()
		s := newSite(t)
		var ext atomic.Value
		s.mux.Handle("/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Compression: &websocket.CompressionOptions{}})
			if err != nil {
				return
			}
			defer c.CloseNow()
			ext.Store(c.Extensions())
			serveEcho(context.Background(), c)
		}))
		page := openPage(t, browser, s)
		call(t, page, nil, "startClient", "/ws", map[string]any{"require": []string{"permessage-deflate"}, "base": 100, "cap": 200})
		waitState(t, page, "open", 15*time.Second)
		var got string
		call(t, page, &got, "(async () => window.extensions)")
		if !strings.HasPrefix(got, "permessage-deflate") {
			t.Errorf("interop: ws.extensions is %q, want permessage-deflate", got)
		}
		if srv, _ := ext.Load().(string); srv != got {
			t.Errorf("interop: the server negotiated %q, the browser reports %q", srv, got)
		}
		msg := strings.Repeat("compress me, ebb. ", 200)
		call(t, page, nil, "(async (m) => window.client.send(m))", msg)
		waitFor(t, page, fmt.Sprintf("window.received.includes(%q)", msg), 10*time.Second)
		call(t, page, nil, "(async () => window.client.close())")
		waitState(t, page, "stopped", 10*time.Second)
	})
}

// echoResult is what nativeEcho reports.
type echoResult struct {
	Extensions string    `json:"extensions"`
	Protocol   string    `json:"protocol"`
	Messages   []echoMsg `json:"messages"`
	Closed     closed    `json:"closed"`
}

// echoMsg is one echoed message as the page saw it, with the time from
// sending it to having checked the echo.
type echoMsg struct {
	event
	MS float64 `json:"ms"`
}

// events returns the messages as peer events, for wantMessages, and logs
// how long each echo took.
func (r *echoResult) events(t *testing.T) []event {
	t.Helper()
	evs := make([]event, len(r.Messages))
	for i, m := range r.Messages {
		evs[i] = m.event
		t.Logf("echo of %s %d B: %.0f ms in the page", m.Type, m.Size, m.MS)
	}
	return evs
}

// closed is a browser CloseEvent.
type closed struct {
	Code     int    `json:"code"`
	Reason   string `json:"reason"`
	WasClean bool   `json:"wasClean"`
}

// TestBrowserNative: Chromium's own WebSocket as a client of ebb's server.
func TestBrowserNative(t *testing.T) {
	t.Parallel()
	browser := startBrowser(t)
	p := chromium
	s := newSite(t)
	var route atomic.Int64
	path := func() string { return fmt.Sprintf("/native/%d", route.Add(1)) }

	for _, typ := range []string{"text", "binary"} {
		for _, fragmented := range []bool{false, true} {
			how := "whole"
			if fragmented {
				how = "fragmented"
			}
			t.Run("echo-"+typ+"-"+how, func(t *testing.T) {
				t.Parallel()
				record(t, p, peerClient, fmt.Sprintf("echo %s, %s, 0 B–16 MiB", typ, how))
				heavy <- struct{}{}
				defer func() { <-heavy }()
				// Chromium sends every message in one frame; when fragmented,
				// ebb's echo comes back in 16 KiB frames.
				frag := 0
				if fragmented {
					frag = 16 << 10
				}
				at := path()
				res := s.serveWS(at, nil, func(ctx context.Context, _ *http.Request, c *websocket.Conn) error {
					return echo(frag)(ctx, c)
				})
				var got echoResult
				call(t, openPage(t, browser, s), &got, "nativeEcho", at, typ, echoSizes)
				wantMessages(t, got.events(t), typ, echoSizes)
				if got.Closed != (closed{Code: 1000, WasClean: true}) {
					t.Errorf("interop: Chromium saw close %+v, want a clean 1000", got.Closed)
				}
				wantNormalEnd(t, serverResult(t, res))
			})
		}
	}

	t.Run("subprotocol", func(t *testing.T) {
		t.Parallel()
		record(t, p, peerClient, "subprotocol selection")
		at := path()
		res := s.serveWS(at, &websocket.AcceptOptions{Subprotocols: []string{"v1.ebb", "v2.ebb"}},
			func(ctx context.Context, _ *http.Request, c *websocket.Conn) error {
				if c.Subprotocol() != "v1.ebb" {
					return fmt.Errorf("ebb selected %q, want v1.ebb", c.Subprotocol())
				}
				_, _, err := c.Read(ctx)
				return err
			})
		var got string
		call(t, openPage(t, browser, s), &got, "nativeSubprotocol", at, []string{"v2.ebb", "v1.ebb"})
		if got != "v1.ebb" {
			t.Errorf("interop: Chromium's ws.protocol is %q, want v1.ebb (the server's preference)", got)
		}
		wantNormalEnd(t, serverResult(t, res))
	})

	// Codes a browser may send (1000, 3000–4999) go both ways; the others
	// only from the server, and their table cells ("both ways") stay empty.
	codes := []struct {
		code    closecode.Code
		reason  string
		feature string // "" when only the server→browser direction exists
	}{
		{1000, "bye", "close 1000 both ways"},
		{1001, "going away", ""},
		{1008, "policy", ""},
		{1011, "internal error", ""},
		{1012, "restarting", ""},
		{1013, closecode.FormatRetryHint("server at capacity", 4500*time.Millisecond), ""},
		{1014, "bad gateway", ""},
		{3000, "unauthorized", "close 3000 both ways"},
		{4000, "application", "close 4000 both ways"},
	}
	for _, cc := range codes {
		t.Run(fmt.Sprintf("close-%d", cc.code), func(t *testing.T) {
			t.Parallel()
			if cc.feature != "" {
				record(t, p, peerClient, cc.feature)
			}
			page := openPage(t, browser, s)

			// ebb's server closes; Chromium reports the code and reason.
			at := path()
			res := s.serveWS(at, nil, func(ctx context.Context, _ *http.Request, c *websocket.Conn) error {
				return c.Close(cc.code, cc.reason)
			})
			var got closed
			call(t, page, &got, "nativeAwaitClose", at)
			if want := (closed{Code: int(cc.code), Reason: cc.reason, WasClean: true}); got != want {
				t.Errorf("interop: ebb's server closed with %d %q; Chromium saw %+v, want %+v", cc.code, cc.reason, got, want)
			}
			if err := serverResult(t, res); err != nil {
				t.Errorf("interop: ebb's Close(%d): %v", cc.code, err)
			}
			if cc.feature == "" {
				return
			}

			// Chromium closes; ebb's server sees the code and reason.
			at = path()
			res = s.serveWS(at, nil, func(ctx context.Context, _ *http.Request, c *websocket.Conn) error {
				_, _, err := c.Read(ctx)
				return err
			})
			call(t, page, &got, "nativeClose", at, int(cc.code), cc.reason)
			ce := closeErr(t, serverResult(t, res))
			if ce.Code != cc.code || ce.Reason != cc.reason || !ce.Remote {
				t.Errorf("interop: Chromium closed with %d %q; ebb saw %v (remote %v)", cc.code, cc.reason, ce, ce.Remote)
			}
			if got.Code != int(cc.code) || !got.WasClean {
				t.Errorf("interop: Chromium closed with %d and saw ebb answer %+v, want the same code, cleanly", cc.code, got)
			}
		})
	}

	t.Run("permessage-deflate", func(t *testing.T) {
		t.Parallel()
		record(t, p, peerClient, "permessage-deflate, peer's defaults")
		heavy <- struct{}{}
		defer func() { <-heavy }()
		var offered, accepted atomic.Value
		at := path()
		res := s.serveWS(at, &websocket.AcceptOptions{Compression: &websocket.CompressionOptions{}},
			func(ctx context.Context, r *http.Request, c *websocket.Conn) error {
				offered.Store(strings.Join(r.Header.Values("Sec-WebSocket-Extensions"), ", "))
				accepted.Store(c.Extensions())
				return echo(0)(ctx, c)
			})
		sizes := []int{0, 125, 126, 65536, 1 << 20}
		var got echoResult
		call(t, openPage(t, browser, s), &got, "nativeEcho", at, "text", sizes)
		wantNormalEnd(t, serverResult(t, res))
		wantMessages(t, got.events(t), "text", sizes)
		off, _ := offered.Load().(string)
		acc, _ := accepted.Load().(string)
		t.Logf("Chromium offered %q; ebb answered %q", off, acc)
		if !strings.HasPrefix(off, "permessage-deflate") {
			t.Errorf("interop: Chromium offered %q, want a permessage-deflate offer", off)
		}
		if !strings.HasPrefix(acc, "permessage-deflate") || got.Extensions != acc {
			t.Errorf("interop: ebb negotiated %q and Chromium reports %q, want the same permessage-deflate", acc, got.Extensions)
		}
	})
}
