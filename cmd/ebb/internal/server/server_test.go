package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/internal/leakcheck"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// TestMain checks for leaked goroutines; see IgnoreEmbeddedNATSStores for
// the two of nats-server's own it leaves out.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m, leakcheck.IgnoreEmbeddedNATSStores()) }

// start runs a server on a free loopback port and closes it when the test
// ends.
func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

func dial(t *testing.T, ctx context.Context, s *Server, path string) (*websocket.Conn, error) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws://"+s.Addr()+path, nil)
	return c, err
}

func get(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDrainKeepsAnswering is issue 14's item 2: while the drain closes the
// connections with 1012 over its window, the listener stays open, new
// clients are refused in the drain mode (with a hint), /healthz says 503
// and /metrics shows the drain; only after the last connection is gone does
// the listener close.
func TestDrainKeepsAnswering(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode shed.Mode
	}{
		{"close 1012", shed.ModeClose},
		{"http 503", shed.ModeHTTP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, Config{Shed: shed.Options{DrainWindow: 800 * time.Millisecond, DrainCode: closecode.ServiceRestart, DrainMode: tc.mode}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			const n = 8
			var conns []*websocket.Conn
			for range n {
				c, err := dial(t, ctx, s, "/echo")
				if err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			if code, body := get(t, s.Addr(), "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
				t.Fatalf("/healthz before the drain: %d %q", code, body)
			}
			shutdown := make(chan error, 1)
			go func() {
				sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer scancel()
				shutdown <- s.Shutdown(sctx)
			}()
			time.Sleep(100 * time.Millisecond) // inside the 800 ms window

			if code, body := get(t, s.Addr(), "/healthz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "draining" {
				t.Errorf("/healthz while draining: %d %q, want 503 draining", code, body)
			}
			if code, body := get(t, s.Addr(), "/metrics"); code != 200 || !strings.Contains(body, "\nebb_draining 1\n") {
				t.Errorf("/metrics while draining: %d, ebb_draining 1 missing", code)
			}
			_, err := dial(t, ctx, s, "/echo")
			var ce *websocket.CloseError
			var he *websocket.HandshakeError
			switch tc.mode {
			case shed.ModeClose:
				if !errors.As(err, &ce) || ce.Code != closecode.ServiceRestart || !strings.Contains(ce.Reason, "retry-after=") {
					t.Errorf("a new client while draining got %v, want the server's 1012 with a retry hint", err)
				}
			case shed.ModeHTTP:
				if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || he.RetryAfter <= 0 {
					t.Errorf("a new client while draining got %v, want 503 with Retry-After", err)
				}
			}

			for _, c := range conns {
				_, _, err := c.Read(ctx)
				if websocket.CloseStatus(err) != closecode.ServiceRestart {
					t.Errorf("admitted connection ended with %v, want 1012", err)
				}
			}
			if err := <-shutdown; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if c, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
				c.Close()
				t.Errorf("the listener still accepts after the drain finished")
			}
		})
	}
}

// TestBroadcastDropsLaggard: a member that never reads is closed with 1013
// once it is more than MaxQueueBytes behind, counted in /metrics, while a
// member that reads gets every message in order; the backlog memory stays
// near the bound.
func TestBroadcastDropsLaggard(t *testing.T) {
	const limit = 1 << 20
	s := start(t, Config{Broadcast: BroadcastLimits{MaxQueueBytes: limit}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// The laggard: a raw client that completes the handshake and then
	// never reads, with a small receive buffer so the server's socket
	// fills up soon.
	lag, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer lag.Close()
	lag.(*net.TCPConn).SetReadBuffer(16 << 10)
	fmt.Fprintf(lag, "GET /broadcast HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(lag), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("laggard handshake: %v %v", resp, err)
	}

	reader, err := dial(t, ctx, s, "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer reader.CloseNow()
	sender, err := dial(t, ctx, s, "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	waitMembers(t, s, 3)

	// 12.5 MiB in all: more than the laggard's socket buffers and the
	// bound together. The sender waits for the reader before each message,
	// so the members that read never fall behind.
	const msgs, size = 100, 128 << 10
	var wg sync.WaitGroup
	wg.Add(1)
	got := make(chan error, 1)
	delivered := make(chan struct{}, msgs)
	go func() { // the sender gets its own messages too: drain them
		defer wg.Done()
		for range msgs {
			if _, _, err := sender.Read(ctx); err != nil {
				return
			}
		}
	}()
	go func() {
		for i := range msgs {
			_, p, err := reader.Read(ctx)
			if err != nil {
				got <- fmt.Errorf("reader: message %d: %w", i, err)
				return
			}
			if p[0] != byte(i) {
				got <- fmt.Errorf("reader: message %d carries %d: out of order", i, p[0])
				return
			}
			delivered <- struct{}{}
		}
		got <- nil
	}()
	var peak uint64
	for i := range msgs {
		p := bytes.Repeat([]byte{byte(i)}, size)
		if err := sender.Write(ctx, websocket.MessageBinary, p); err != nil {
			t.Fatal(err)
		}
		peak = max(peak, uint64(s.hub.queuedBytes()))
		select {
		case <-delivered:
		case <-ctx.Done():
			t.Fatalf("message %d never reached the reader", i)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if s.hub.droppedBytes.Load() != 1 {
		t.Errorf("dropped for queue bytes = %d, want 1 (the laggard)", s.hub.droppedBytes.Load())
	}
	if peak > limit+size {
		t.Errorf("largest member backlog %d bytes, want at most the bound plus one message (%d)", peak, limit+size)
	}
	if _, body := get(t, s.Addr(), "/metrics"); !strings.Contains(body, `ebb_broadcast_dropped_total{reason="queue_bytes"} 1`) {
		t.Errorf("/metrics does not count the dropped member")
	}
	if s.hub.memberCount() != 2 {
		t.Errorf("members = %d, want 2 after the laggard was dropped", s.hub.memberCount())
	}
}

func waitMembers(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.hub.memberCount() < n {
		if time.Now().After(deadline) {
			t.Fatalf("members = %d, want %d", s.hub.memberCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEchoKeepsNoLargeBuffer: after echoing a 4 MiB message, an idle echo
// connection holds no buffer of that size (the attack: 64 MiB kept
// per idle connection).
func TestEchoKeepsNoLargeBuffer(t *testing.T) {
	s := start(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const conns, size = 8, 4 << 20
	before := heapInUse()
	var cs []*websocket.Conn
	for range conns {
		c, err := dial(t, ctx, s, "/echo")
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageBinary, make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		if _, p, err := c.Read(ctx); err != nil || len(p) != size {
			t.Fatalf("echo: %d bytes, %v", len(p), err)
		}
		cs = append(cs, c)
	}
	grew := int64(heapInUse()) - int64(before)
	if grew > conns*size/4 {
		t.Errorf("heap grew by %d KiB with %d idle echo connections after a %d MiB message each; a connection keeps its large buffer", grew>>10, conns, size>>20)
	}
	t.Logf("heap growth with %d idle connections after a 4 MiB echo each: %d KiB", conns, grew>>10)
	runtime.KeepAlive(cs)
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestIdleKeepAliveClosed: a keep-alive HTTP connection that sends nothing
// after its request is closed after IdleTimeout.
func TestIdleKeepAliveClosed(t *testing.T) {
	s := start(t, Config{IdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("idle keep-alive connection: read %v, want EOF (closed by the server)", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("closed after %s, want about the 200 ms idle timeout", d)
	}
}

// TestMetricsAddr: with MetricsAddr, monitoring answers on a listener of
// its own.
func TestMetricsAddr(t *testing.T) {
	s := start(t, Config{MetricsAddr: "127.0.0.1:0"})
	if s.MetricsAddr() == "" || s.MetricsAddr() == s.Addr() {
		t.Fatalf("MetricsAddr = %q, want a second address", s.MetricsAddr())
	}
	for _, path := range []string{"/metrics", "/healthz", "/api/stats"} {
		if code, body := get(t, s.MetricsAddr(), path); code != 200 || body == "" {
			t.Errorf("GET %s on the metrics address: %d", path, code)
		}
	}
	if _, body := get(t, s.MetricsAddr(), "/metrics"); !strings.Contains(body, "ebb_broadcast_members 0") || !strings.Contains(body, "ebb_connections 0") {
		t.Errorf("/metrics lacks the shed or broadcast metrics")
	}
}
