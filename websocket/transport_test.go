package websocket

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func echoHandler(t *testing.T, ao *AcceptOptions) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, ao)
		if err != nil {
			return
		}
		defer c.CloseNow()
		echo(c)
	})
}

func TestDialTLS(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(echoHandler(t, nil))
	defer srv.Close()
	u := "wss" + strings.TrimPrefix(srv.URL, "https")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The test certificate is not trusted by default.
	if _, _, err := Dial(ctx, u, nil); err == nil || !strings.Contains(err.Error(), "TLS handshake") {
		t.Fatalf("Dial without the test CA = %v, want a TLS error", err)
	}
	tlsCfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	c, _, err := Dial(ctx, u, &DialOptions{TLSConfig: tlsCfg})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, MessageText, []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != "over TLS" {
		t.Fatal(string(p), err)
	}
	if err := c.Close(1000, ""); err != nil {
		t.Fatal(err)
	}
}

// TestDialThroughProxy runs Dial through a minimal CONNECT proxy, as
// HTTPS_PROXY/HTTP_PROXY would configure it.
func TestDialThroughProxy(t *testing.T) {
	t.Parallel()
	backend := httptest.NewServer(echoHandler(t, nil))
	defer backend.Close()
	var tunnels atomic.Int32
	var sawAuth atomic.Value
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		sawAuth.Store(r.Header.Get("Proxy-Authorization"))
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		tunnels.Add(1)
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		nc.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go io.Copy(up, brw.Reader)
		io.Copy(nc, up)
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	pu.User = url.UserPassword("ebb", "secret")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := Dial(ctx, wsURL(backend), &DialOptions{Proxy: http.ProxyURL(pu)})
	if err != nil {
		t.Fatal(err)
	}
	c.Write(ctx, MessageBinary, []byte{1, 2, 3})
	if _, p, err := c.Read(ctx); err != nil || len(p) != 3 {
		t.Fatal(p, err)
	}
	c.Close(1000, "")
	if tunnels.Load() != 1 {
		t.Fatalf("%d tunnels, want 1", tunnels.Load())
	}
	if got, _ := sawAuth.Load().(string); !strings.HasPrefix(got, "Basic ") {
		t.Fatalf("Proxy-Authorization %q, want Basic credentials", got)
	}
}

func TestDialContextDeadline(t *testing.T) {
	t.Parallel()
	// A server that accepts TCP but never answers the handshake.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			held <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = Dial(ctx, "ws://"+ln.Addr().String(), nil)
	if err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("Dial = %v after %v, want a timeout near 200ms", err, time.Since(start))
	}
	if !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("error %q does not say the deadline passed", err)
	}
	(<-held).Close()
}

// TestDialReportsImmediateRefusal: a server that writes the 101 response
// and a Close frame together (as shed does for 1013) makes Dial fail with
// the server's *CloseError instead of returning a doomed Conn.
func TestDialReportsImmediateRefusal(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer nc.Close()
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
		frame := appendFrameHeader(nil, frameHeader{fin: true, opcode: opClose, length: int64(len(closePayload(1013, "full; retry-after=2")))})
		frame = append(frame, closePayload(1013, "full; retry-after=2")...)
		nc.Write(append([]byte(resp), frame...))
		// Wait for the client's answer, as shed does.
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, brw)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := Dial(ctx, wsURL(srv), nil)
	var ce *CloseError
	if c != nil || !errors.As(err, &ce) || ce.Code != 1013 || !ce.Remote || ce.Reason != "full; retry-after=2" {
		t.Fatalf("Dial = %v, %v; want the server's 1013", c, err)
	}
	if resp == nil || resp.StatusCode != 101 {
		t.Fatalf("response %v, want the 101", resp)
	}
}
