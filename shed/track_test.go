package shed

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

func TestHeadScanner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		end     int // index just past the head, -1 if incomplete
		connect bool
	}{
		{"CRLF", "GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 27, false},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\nbody", 24, false},
		{"mixed", "GET / HTTP/1.1\r\nHost: a\n\r\n", 26, false},
		{"no headers", "GET / HTTP/1.0\r\n\r\n", 18, false},
		{"leading blank lines", "\r\n\r\nGET / HTTP/1.1\r\n\r\n", 22, false},
		{"incomplete", "GET / HTTP/1.1\r\nHost: a\r\n", -1, false},
		{"blank lines only", "\r\n\r\n\n", -1, false},
		{"one byte", "G", -1, false},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 59, true},
		{"CONNECT after blank line", "\r\nCONNECT a:1 HTTP/1.1\r\n\r\n", 26, true},
		{"CONNECTX", "CONNECTX a HTTP/1.1\r\n\r\n", 23, false},
		{"short request line", "GET /\r\n\r\n", 9, false},
		{"header value with CR", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 26, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Fed whole, and split at every byte boundary.
			for split := 0; split <= len(tt.in); split++ {
				var s headScanner
				end := s.feed([]byte(tt.in[:split]))
				if end >= 0 {
					if end != tt.end {
						t.Fatalf("split %d: head ends at %d, want %d", split, end, tt.end)
					}
				} else if end = s.feed([]byte(tt.in[split:])); end >= 0 {
					end += split
				}
				if end != tt.end {
					t.Fatalf("split %d: head ends at %d, want %d", split, end, tt.end)
				}
				if end >= 0 && s.isConnect() != tt.connect {
					t.Fatalf("split %d: isConnect %v, want %v", split, s.isConnect(), tt.connect)
				}
			}
			// Byte by byte.
			var s headScanner
			end := -1
			for i := range len(tt.in) {
				if e := s.feed([]byte{tt.in[i]}); e >= 0 {
					end = i + e
					break
				}
			}
			if end != tt.end {
				t.Fatalf("byte by byte: head ends at %d, want %d", end, tt.end)
			}
		})
	}
}

func TestStatusScanner(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		out  string
		want int
	}{
		{"200", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200},
		{"101", "HTTP/1.1 101 Switching Protocols\r\n", 101},
		{"HTTP/1.0 503", "HTTP/1.0 503 Service Unavailable\r\n\r\n", 503},
		{"no reason phrase", "HTTP/1.1 204\r\n\r\n", 204},
		{"100 then 200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 200},
		{"100 without phrase then 201", "HTTP/1.1 100\r\n\r\nHTTP/1.1 201 Created\r\n\r\n", 201},
		{"103 with headers then 200", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", 200},
		{"100 alone", "HTTP/1.1 100 Continue\r\n\r\n", 0},
		{"partial status line", "HTTP/1.1 2", 0},
		{"HTTP/2 preface", "\x00\x00\x12\x04\x00\x00\x00\x00\x00", -1},
		{"HTTP/2 text", "HTTP/2 200\r\n\r\n", -1},
		{"garbage", "hello", -1},
		{"bad code", "HTTP/1.1 2x0 OK\r\n", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for split := 0; split <= len(tt.out); split++ {
				var s statusScanner
				got := s.feed([]byte(tt.out[:split]))
				if got == 0 {
					got = s.feed([]byte(tt.out[split:]))
				}
				if got != tt.want {
					t.Fatalf("split %d: %d, want %d", split, got, tt.want)
				}
			}
		})
	}
}

// TestConnList holds the intrusive lists: a connection is in one list by
// state and one by address at once, each linked by its own fields.
func TestConnList(t *testing.T) {
	t.Parallel()
	cs := make([]*trackedConn, 4)
	for i := range cs {
		cs[i] = &trackedConn{why: closeWhy(i)} // why names it in failures
	}
	order := func(q *connList) []int {
		var got []int
		for c := q.first; c != nil; c = q.linkOf(c).next {
			got = append(got, int(c.why))
		}
		var back []int
		for c := q.last; c != nil; c = q.linkOf(c).prev {
			back = append([]int{int(c.why)}, back...)
		}
		if fmt.Sprint(got) != fmt.Sprint(back) || len(got) != q.n {
			t.Fatalf("list forward %v, backward %v, n %d: want the same order and n = len", got, back, q.n)
		}
		return got
	}
	var byState connList
	byAddr := connList{byAddr: true}
	for _, c := range cs {
		byState.push(c)
	}
	for _, i := range []int{3, 1, 0, 2} {
		byAddr.push(cs[i])
	}
	for _, step := range []struct {
		q         *connList
		remove    int
		wantState []int
		wantAddr  []int
	}{
		{&byState, 1, []int{0, 2, 3}, []int{3, 1, 0, 2}}, // middle
		{&byAddr, 3, []int{0, 2, 3}, []int{1, 0, 2}},     // first
		{&byAddr, 2, []int{0, 2, 3}, []int{1, 0}},        // last
		{&byState, 0, []int{2, 3}, []int{1, 0}},          // first
		{&byState, 3, []int{2}, []int{1, 0}},             // last
		{&byState, 2, nil, []int{1, 0}},                  // only
		{&byAddr, 0, nil, []int{1}},
		{&byAddr, 1, nil, nil},
	} {
		step.q.remove(cs[step.remove])
		gotState, gotAddr := order(&byState), order(&byAddr)
		if fmt.Sprint(gotState) != fmt.Sprint(step.wantState) || fmt.Sprint(gotAddr) != fmt.Sprint(step.wantAddr) {
			t.Fatalf("after removing %d (byAddr %v): by state %v, by address %v; want %v, %v",
				step.remove, step.q.byAddr, gotState, gotAddr, step.wantState, step.wantAddr)
		}
		if l := step.q.linkOf(cs[step.remove]); *l != (link{}) {
			t.Fatalf("removed %d still linked: %+v", step.remove, *l)
		}
	}
}

func TestHeaderTimeShrinksAsPlacesFill(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	l := s.Listener(nil, &ListenerOptions{MaxPending: 32})
	tests := []struct {
		pending int
		want    time.Duration
	}{
		{0, 10 * time.Second}, {16, 10 * time.Second}, {20, 7750 * time.Millisecond},
		{24, 5500 * time.Millisecond}, {28, 3250 * time.Millisecond}, {32, time.Second},
	}
	for _, tt := range tests {
		l.pending = tt.pending
		if got := l.headTimeLocked(); got != tt.want {
			t.Errorf("%d of 32 places used: header time %v, want %v", tt.pending, got, tt.want)
		}
		if got, want := l.idleTimeLocked(), DefaultIdleTimeout-time.Duration(float64(DefaultIdleTimeout-time.Second)*float64(2*tt.pending-32)/32); tt.pending > 16 && got != want {
			t.Errorf("%d of 32 places used: idle time %v, want %v", tt.pending, got, want)
		}
	}
	l.pending = 0
	if l.share != 8 || l.grace != 250*time.Millisecond || l.maxIdle != 64 {
		t.Errorf("defaults: share %d grace %v max idle %d, want 8, 250ms, 64", l.share, l.grace, l.maxIdle)
	}
	// Without a bound, the times do not move.
	l = s.Listener(nil, &ListenerOptions{HeaderTimeout: 3 * time.Second, MinHeaderTimeout: time.Minute})
	if got := l.headTimeLocked(); got != 3*time.Second || l.minTime != 3*time.Second {
		t.Errorf("no bound: header time %v (floor %v), want 3s (floor capped at 3s)", got, l.minTime)
	}
}

// get sends a GET for path on c and reads the whole response.
func get(c net.Conn, br *bufio.Reader, path string) (*http.Response, error) {
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return resp, err
}

func TestListenerFollowsKeepAlive(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	srv, ln, _ := hostileServer(t, s, &ListenerOptions{MaxPending: 4, IdleTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addrOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 3 {
		if resp, err := get(c, br, "/metrics"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %d on one connection: %v %v", i, resp, err)
		}
		waitFor(t, "the connection to go idle", func() bool { return ln.Idle() == 1 && ln.Pending() == 0 })
	}
	// Half a request: pending again, idle no more.
	_, _ = io.WriteString(c, "GET /metrics HTTP/1.1\r\n")
	waitFor(t, "the next request to take a place", func() bool { return ln.Pending() == 1 && ln.Idle() == 0 })
	if resp, err := get(c, br, "/metrics"); err != nil || resp.StatusCode != 400 {
		// The rest of the head arrives with a second request line: 400.
		t.Logf("finishing the split request: %v %v", resp, err)
	}
	// An idle connection is closed after IdleTimeout.
	c2, err := net.Dial("tcp", addrOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	br2 := bufio.NewReader(c2)
	if resp, err := get(c2, br2, "/metrics"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	start := time.Now()
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br2.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle connection closed after %v, want about IdleTimeout 300ms", d)
	}
	waitFor(t, "no connection tracked", func() bool { return ln.Idle() == 0 && ln.Pending() == 0 })
	if st := s.Stats(); st.IdleTimeouts < 1 || st.Pending != 0 {
		t.Errorf("stats: %d idle timeouts, %d pending; want ≥ 1 and 0", st.IdleTimeouts, st.Pending)
	}
}

func TestListenerMaxIdleNegativeKeepsNone(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	srv, ln, _ := hostileServer(t, s, &ListenerOptions{MaxPending: 4, MaxIdle: -1})
	c, err := net.Dial("tcp", addrOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if resp, err := get(c, br, "/metrics"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET: %v %v", resp, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the response: %v, want EOF (no idle connection kept)", err)
	}
	if ln.Idle() != 0 || s.Stats().IdleEvicted != 1 {
		t.Fatalf("idle %d, idle_limit closes %d; want 0 and 1", ln.Idle(), s.Stats().IdleEvicted)
	}
}

func TestListenerKeepsNetHTTPDeadlines(t *testing.T) {
	t.Parallel()
	// net/http's ReadHeaderTimeout is shorter than the Listener's: it
	// still applies, and the place is freed.
	s := mustNew(t, nil)
	srv := httptest.NewUnstartedServer(s.Middleware(http.HandlerFunc(echoHandler)))
	srv.Config.ReadHeaderTimeout = 200 * time.Millisecond
	ln := s.Listener(srv.Listener, &ListenerOptions{MaxPending: 4})
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", addrOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\n")
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	if d := time.Since(start); err != nil || d > 2*time.Second {
		t.Fatalf("slow request: %v after %v, want closed after about 200ms", err, d)
	}
	waitFor(t, "the place to be freed", func() bool { return ln.Pending() == 0 })
	if st := s.Stats(); st.HeaderTimeouts != 0 {
		t.Errorf("the Listener timed out %d connections, want net/http to", st.HeaderTimeouts)
	}
}

func TestListenerHeaderTimeoutAtFullUse(t *testing.T) {
	t.Parallel()
	// Four places, all taken by slow requests from four addresses: each
	// has MinHeaderTimeout, not HeaderTimeout.
	s := mustNew(t, nil)
	srv, ln, _ := hostileServer(t, s, &ListenerOptions{MaxPending: 4, HeaderTimeout: time.Minute, MinHeaderTimeout: 400 * time.Millisecond})
	start := time.Now()
	var conns []net.Conn
	for i := range 4 {
		c, err := dialFrom(fmt.Sprintf("127.0.2.%d", i+1), addrOf(srv))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\n")
		conns = append(conns, c)
	}
	// The oldest is cut at 400 ms; the others then have more time, each
	// judged against the places still used (with three of four used,
	// half a minute).
	// The places were contended: a 503 with a hint, not a 408.
	_ = conns[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conns[0]), nil)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("oldest slow client: %v %v, want a 503 with Retry-After", resp, err)
	}
	d := time.Since(start)
	body, _ := io.ReadAll(resp.Body)
	if int64(len(body)) != resp.ContentLength || !resp.Close || !strings.HasPrefix(string(body), slowText+"; retry-after=") {
		t.Fatalf("503 body %q (Content-Length %d), close %v", body, resp.ContentLength, resp.Close)
	}
	if d < 350*time.Millisecond || d > 3*time.Second {
		t.Fatalf("503 after %v, want after about MinHeaderTimeout 400ms", d)
	}
	if got := ln.Pending(); got != 3 {
		t.Fatalf("pending %d after the first 408, want the 3 others", got)
	}
	for _, c := range conns[1:] {
		c.Close()
	}
	waitFor(t, "every place freed", func() bool { return ln.Pending() == 0 })

	// One slow client of four places: the full header time, and a 408.
	ln.mu.Lock()
	ln.headerTime = 300 * time.Millisecond
	ln.mu.Unlock()
	c, err := dialFrom("127.0.2.9", addrOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\n")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err = http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("slow client alone: %v %v, want a 408", resp, err)
	}
	body, _ = io.ReadAll(resp.Body)
	if int64(len(body)) != resp.ContentLength || !resp.Close {
		t.Fatalf("408 body %q (Content-Length %d), close %v", body, resp.ContentLength, resp.Close)
	}
	waitFor(t, "every place freed", func() bool { return ln.Pending() == 0 })
}

func TestListenerCONNECTTunnelIsNotIdle(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.NotFound(w, r)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		_, _ = io.Copy(c, brw) // echo the tunnel
	}))
	ln := s.Listener(srv.Listener, &ListenerOptions{MaxPending: 4, IdleTimeout: 50 * time.Millisecond, HeaderTimeout: 100 * time.Millisecond, MinHeaderTimeout: 50 * time.Millisecond})
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := net.Dial("tcp", addrOf(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(c, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	time.Sleep(200 * time.Millisecond) // past every Listener time
	for _, msg := range []string{"ping\r\n\r\n", "pong"} {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("tunnel echo: %q %v, want %q", buf, err, msg)
		}
	}
	if ln.Pending() != 0 || ln.Idle() != 0 {
		t.Fatalf("tunnel counted as pending %d or idle %d", ln.Pending(), ln.Idle())
	}
}

func TestListenerExpectContinue(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	}))
	ln := s.Listener(srv.Listener, &ListenerOptions{MaxPending: 4})
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("body of the request"))
		req.Header.Set("Expect", "100-continue")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "body of the request" {
			t.Fatalf("request %d: body %q", i, b)
		}
		waitFor(t, "the connection to go idle", func() bool { return ln.Pending() == 0 && ln.Idle() == 1 })
	}
}

func TestListenerUnderTLS(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}})
	mux := http.NewServeMux()
	mux.Handle("/ws", s.Middleware(http.HandlerFunc(echoHandler)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the silent client's failed handshake
	ln := s.Listener(srv.Listener, &ListenerOptions{MaxPending: 4, HeaderTimeout: 300 * time.Millisecond, MinHeaderTimeout: 100 * time.Millisecond})
	srv.Listener = ln
	srv.StartTLS() // tls.NewListener(ln, …): the Listener sees ciphertext
	t.Cleanup(srv.Close)

	// HTTPS requests work, kept alive.
	for i := range 2 {
		resp, err := srv.Client().Get(srv.URL + "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %d over TLS: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	// A WebSocket over TLS leaves pending when Middleware hijacks it.
	tc, err := tls.Dial("tcp", srv.Listener.Addr().String(), srv.Client().Transport.(*http.Transport).TLSClientConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(tc, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
	rc := &rawClient{c: tc, br: bufio.NewReader(tc)}
	if resp, err := http.ReadResponse(rc.br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade over TLS: %v %v", resp, err)
	}
	if err := rc.echo("over tls"); err != nil {
		t.Fatal(err)
	}
	// A connection that never starts its TLS handshake is timed out.
	silent, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("silent TLS client: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("silent TLS client closed after %v, want about 300ms", d)
	}
	waitFor(t, "nothing pending", func() bool { return ln.Pending() == 0 })
	_ = rc.writeClose(closecode.NormalClosure, "")
}
