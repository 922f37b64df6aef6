package shed

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// guardedServer serves echoHandler behind s.Middleware, on a listener
// wrapped by s.Listener.
func guardedServer(t *testing.T, s *Shedder, o *ListenerOptions) (*httptest.Server, *Listener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(s.Middleware(http.HandlerFunc(echoHandler)))
	ln := s.Listener(srv.Listener, o)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, ln
}

// wantCanned503 dials addr, sends an upgrade request and checks that the
// answer is the listener's 503 for reason with Retry-After retryAfter.
func wantCanned503(t *testing.T, addr string, reason Reason, retryAfter string) {
	t.Helper()
	rc, resp, err := dialRaw(addr, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer rc.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if got := resp.Header.Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After %q, want %q", got, retryAfter)
	}
	if !resp.Close {
		t.Errorf("response does not close the connection (Connection: %q)", resp.Header.Get("Connection"))
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading 503 body: %v", err)
	}
	if got, want := string(body), reason.Text()+"; retry-after="; len(got) < len(want) || got[:len(want)] != want {
		t.Errorf("body %q, want it to start with %q", got, want)
	}
	if _, ok := closecode.ParseRetryHint(string(body)); !ok {
		t.Errorf("body %q has no retry hint", body)
	}
}

func TestListenerRefusesPastHardDemand(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1, HardDemand: 1}, Jitter: -1, RetryBase: 2 * time.Second})
	srv, ln := guardedServer(t, s, nil)
	addr := addrOf(srv)

	// Below the ceiling: the connection reaches net/http and is upgraded.
	rc, resp, err := dialRaw(addr, nil)
	if err != nil {
		t.Fatalf("dial below the ceiling: %v", err)
	}
	defer rc.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("below the ceiling: status %d, want 101", resp.StatusCode)
	}
	if err := rc.echo("hello"); err != nil {
		t.Fatalf("admitted connection: %v", err)
	}

	// At the ceiling (1 connection ≥ HardDemand 1): the canned 503. The
	// hint is RetryBase × (demand+1)/MaxConns = 2 s × 2, then 2 s × 3.
	wantCanned503(t, addr, ReasonConns, "4")
	wantCanned503(t, addr, ReasonConns, "6")

	st := s.Stats()
	if got := st.Refused[Refusal{ReasonConns, ModeHTTP}]; got != 2 {
		t.Errorf("Stats.Refused[conns,http] = %d, want 2 (all refused: %v)", got, st.Refused)
	}
	if st.Admitted != 1 || st.Connections != 1 {
		t.Errorf("Stats: admitted %d connections %d, want 1 and 1", st.Admitted, st.Connections)
	}
	if got := ln.Refused(); got != 2 {
		t.Errorf("Listener.Refused() = %d, want 2", got)
	}
	if err := rc.echo("still served"); err != nil {
		t.Errorf("admitted connection after the refusals: %v", err)
	}
}

func TestListenerPassesBelowCeiling(t *testing.T) {
	t.Parallel()
	// MaxConns 1 without a hard ceiling: the second client reaches
	// Middleware and gets the upgrade-then-1013 refusal, not a 503.
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}, RefusalLinger: 200 * time.Millisecond})
	srv, ln := guardedServer(t, s, &ListenerOptions{MaxPending: 10})
	addr := addrOf(srv)
	rc, resp, err := dialRaw(addr, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first client: %v, %v", resp, err)
	}
	defer rc.Close()
	rc2, resp, err := dialRaw(addr, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("second client: %v, %v (want 101 then Close 1013)", resp, err)
	}
	defer rc2.Close()
	code, _, err := rc2.readClose()
	if err != nil || code != closecode.TryAgainLater {
		t.Fatalf("second client: close %v, %v; want 1013", code, err)
	}
	if got := ln.Refused(); got != 0 {
		t.Errorf("Listener.Refused() = %d, want 0 below the ceiling", got)
	}
	if got := s.Stats().Refused[Refusal{ReasonConns, ModeClose}]; got != 1 {
		t.Errorf("Stats.Refused[conns,close] = %d, want 1", got)
	}
	// The admitted connection was hijacked and is not pending; the refused
	// one stops being pending once shed closes it.
	waitFor(t, "no pending connections", func() bool { return ln.Pending() == 0 })
}

// dialSilent opens n TCP connections to addr that never send a request,
// so a Listener counts them as pending until they close.
func dialSilent(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		cs = append(cs, c)
	}
	return cs
}

func TestListenerMaxPendingWaitsForAPlace(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Jitter: -1})
	srv, ln := guardedServer(t, s, &ListenerOptions{MaxPending: 2, PendingWait: 10 * time.Second})
	addr := addrOf(srv)
	silent := dialSilent(t, addr, 2)
	waitFor(t, "two pending connections", func() bool { return ln.Pending() == 2 })

	// The third client waits in the listen queue: no answer while both
	// places are taken...
	type result struct {
		rc   *rawClient
		resp *http.Response
		err  error
	}
	got := make(chan result, 1)
	go func() {
		rc, resp, err := dialRaw(addr, nil)
		got <- result{rc, resp, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("third client answered while MaxPending connections were pending: %v, %v", r.resp, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	// ...and is served as soon as one frees (net/http sees EOF and closes
	// the server side), not refused.
	silent[0].Close()
	var r result
	select {
	case r = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("third client not served 5 s after a place freed")
	}
	if r.err != nil || r.resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("third client: %v, %v; want 101", r.resp, r.err)
	}
	defer r.rc.Close()
	if err := r.rc.echo("x"); err != nil {
		t.Fatal(err)
	}
	// Admitted (hijacked): the remaining silent one is the only pending.
	if got := ln.Pending(); got != 1 {
		t.Errorf("Pending() = %d after the upgrade, want 1", got)
	}
	if got := ln.Refused(); got != 0 {
		t.Errorf("Listener.Refused() = %d, want 0", got)
	}
}

func TestListenerRefusesWhenNoPlaceFrees(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		wait time.Duration
	}{{"after PendingWait", 50 * time.Millisecond}, {"at once", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// HardDemand 1: a MaxPending refusal must not count as
			// demand, or the client after it would be refused at the
			// ceiling.
			s := mustNew(t, &Options{Limits: Limits{HardDemand: 1}, Jitter: -1})
			srv, ln := guardedServer(t, s, &ListenerOptions{MaxPending: 2, PendingWait: tc.wait})
			addr := addrOf(srv)
			silent := dialSilent(t, addr, 2)
			waitFor(t, "two pending connections", func() bool { return ln.Pending() == 2 })

			// The stalled clients hold both places: the third is refused
			// before net/http reads anything; the hint is RetryBase × 3/2
			// = 3 s.
			wantCanned503(t, addr, ReasonInFlight, "3")
			if got := s.Stats().Refused[Refusal{ReasonInFlight, ModeHTTP}]; got != 1 {
				t.Errorf("Stats.Refused[in_flight,http] = %d, want 1", got)
			}
			silent[0].Close()
			waitFor(t, "one pending connection", func() bool { return ln.Pending() == 1 })
			rc, resp, err := dialRaw(addr, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("client after a place freed: %v, %v; want 101", resp, err)
			}
			rc.Close()
		})
	}
}

func TestListenerRefusalLeavesPendingBeforeItsLinger(t *testing.T) {
	t.Parallel()
	// One place. A 1013 refusal lingers up to RefusalLinger for the
	// client's Close; a client that never sends it must not hold the
	// place meanwhile.
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}, RefusalLinger: time.Minute})
	srv, ln := guardedServer(t, s, &ListenerOptions{MaxPending: 1, PendingWait: time.Minute})
	addr := addrOf(srv)
	admitted, resp, err := dialRaw(addr, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first client: %v, %v", resp, err)
	}
	defer admitted.Close()
	for i := range 2 {
		rc, resp, err := dialRaw(addr, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("refused client %d: %v, %v (want 101 then Close 1013)", i, resp, err)
		}
		defer rc.Close() // never answers the Close
		if code, _, err := rc.readClose(); err != nil || code != closecode.TryAgainLater {
			t.Fatalf("refused client %d: close %v, %v; want 1013", i, code, err)
		}
		waitFor(t, "no pending connection", func() bool { return ln.Pending() == 0 })
	}
}

func TestListenerCloseEndsAWaitForAPlace(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := s.Listener(inner, &ListenerOptions{MaxPending: 1, PendingWait: time.Minute})
	addr := inner.Addr().String()
	dialSilent(t, addr, 2)
	first, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept() // takes the second connection, waits for a place
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ln.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting for a place 5 s after Close")
	}
}

// TestListenerDrainModeHTTP: while draining in ModeHTTP, upgrades get a 503
// with Retry-After from Middleware, but the Listener refuses nothing at
// accept, so plain requests (/metrics, a health check) still reach the
// server until the last connection is gone.
func TestListenerDrainModeHTTP(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{DrainMode: ModeHTTP, Jitter: -1, DrainHint: 1500 * time.Millisecond})
	srv, ln := guardedServer(t, s, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c, resp, err := dialRaw(addrOf(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "2" {
		t.Errorf("upgrade while draining: %d Retry-After %q, want 503 with Retry-After 2", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	plain, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	plain.Body.Close()
	if plain.StatusCode == http.StatusServiceUnavailable {
		t.Errorf("a plain request while draining got 503; it must reach the handler")
	}
	if got := ln.Refused(); got != 0 {
		t.Errorf("Refused() = %d, want 0: a drain is refused per request, not at accept", got)
	}
}

func TestCanned503(t *testing.T) {
	t.Parallel()
	tests := []struct {
		reason     Reason
		hint       time.Duration
		retryAfter string
	}{
		{ReasonConns, 0, "1"},
		{ReasonConns, 2 * time.Second, "2"},
		{ReasonInFlight, 4500 * time.Millisecond, "5"},
		{ReasonMemory, 59*time.Second + time.Millisecond, "60"},
		{ReasonDraining, 100 * time.Millisecond, "1"},
		{ReasonSchedLatency, 123456 * time.Millisecond, "124"},
	}
	for _, tt := range tests {
		t.Run(tt.reason.String()+"/"+tt.hint.String(), func(t *testing.T) {
			t.Parallel()
			raw := appendCanned503(nil, tt.reason.Text(), tt.hint)
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
			if err != nil {
				t.Fatalf("canned response does not parse: %v\n%s", err, raw)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("body: %v", err)
			}
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != tt.retryAfter || !resp.Close {
				t.Errorf("status %d Retry-After %q close %v; want 503 %q true", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, tt.retryAfter)
			}
			if want := closecode.FormatRetryHint(tt.reason.Text(), tt.hint) + "\n"; string(body) != want {
				t.Errorf("body %q, want %q", body, want)
			}
			if resp.ContentLength != int64(len(body)) {
				t.Errorf("Content-Length %d, body %d bytes", resp.ContentLength, len(body))
			}
			if got, _ := strconv.Atoi(tt.retryAfter); time.Duration(got)*time.Second < tt.hint {
				t.Errorf("Retry-After %ds is shorter than the hint %v", got, tt.hint)
			}
		})
	}
}

// BenchmarkRefusal503 compares a refusal past the hard ceiling answered by
// the Listener in its accept loop with the same refusal answered by
// Middleware through net/http (a goroutine, a parse, a 503). The client's
// side is the same in both and included; run with a fixed count
// (-benchtime=2000x) to keep loopback sockets in TIME_WAIT bounded.
func BenchmarkRefusal503(b *testing.B) {
	for _, guard := range []bool{false, true} {
		name := "middleware"
		if guard {
			name = "listener"
		}
		b.Run(name, func(b *testing.B) {
			s, err := New(&Options{Limits: Limits{MaxConns: 1, HardDemand: 1}})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Shutdown(context.Background())
			srv := httptest.NewUnstartedServer(s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := Accept(w, r, nil)
				if err != nil {
					return
				}
				defer c.CloseNow()
				_, _, _ = c.Read(context.Background())
			})))
			if guard {
				srv.Listener = s.Listener(srv.Listener, nil)
			}
			srv.Start()
			defer srv.Close()
			addr := addrOf(srv)
			held, resp, err := dialRaw(addr, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				b.Fatalf("first client: %v %v", resp, err)
			}
			defer held.Close()
			req := []byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
			buf := make([]byte, 1024)
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = c.Write(req)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					n += m
					if err != nil {
						break
					}
				}
				c.Close()
				if n < 12 || string(buf[9:12]) != "503" {
					b.Fatalf("got %q, want a 503", buf[:n])
				}
			}
		})
	}
}
