package handshake_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
	"github.com/ebb-ws/ebb/internal/leakcheck"
	"github.com/ebb-ws/ebb/websocket"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

func TestDialTimeout(t *testing.T) {
	t.Parallel()
	// A dialer that never connects: the TCP step times out.
	blackhole := &websocket.DialOptions{NetDialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	tests := []struct {
		name          string
		url           string
		opts          *websocket.DialOptions
		wantConnected bool
		want          string
	}{
		{name: "no answer to the upgrade", url: wstest.Silent(t), wantConnected: true,
			want: "did not finish within 150ms: the server accepted the TCP connection but did not answer the upgrade request"},
		{name: "no answer to TLS", url: "wss://" + strings.TrimPrefix(wstest.Silent(t), "ws://"), wantConnected: true,
			want: "did not finish within 150ms: the server accepted the TCP connection but did not complete the TLS handshake or answer the upgrade request"},
		{name: "no TCP connection", url: "ws://192.0.2.1:9/", opts: blackhole,
			want: "could not connect to 192.0.2.1:9 within 150ms: no answer to the TCP connection attempt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, _, err := handshake.Dial(context.Background(), tt.url, tt.opts, 150*time.Millisecond)
			if c != nil {
				c.CloseNow()
			}
			var te *handshake.TimeoutError
			if !errors.As(err, &te) || te.Connected != tt.wantConnected || te.Timeout != 150*time.Millisecond {
				t.Fatalf("Dial: %v (%T), want a TimeoutError, connected %v", err, err, tt.wantConnected)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("TimeoutError does not unwrap to the deadline: %v", err)
			}
			if msg := handshake.Explain(err); !strings.Contains(msg, tt.want) || !strings.Contains(msg, "--timeout") {
				t.Errorf("Explain = %q, want %q and the way out", msg, tt.want)
			}
		})
	}

	// The caller's own cancellation is not a timeout.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, _, err := handshake.Dial(ctx, wstest.Silent(t), nil, 10*time.Second)
	var te *handshake.TimeoutError
	if errors.As(err, &te) || !errors.Is(err, context.Canceled) {
		t.Errorf("canceled Dial: %v, want the cancellation, not a timeout", err)
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	refused := wstest.Refused(t)
	_, _, refusedErr := handshake.Dial(context.Background(), refused, nil, 0)
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "refused", err: refusedErr, want: "connection refused by " + strings.TrimSuffix(strings.TrimPrefix(refused, "ws://"), "/") + ": nothing listens on that port"},
		{name: "503", err: &websocket.HandshakeError{StatusCode: 503, RetryAfter: 30 * time.Second, Body: "busy"},
			want: `the server refused the upgrade with HTTP 503 Service Unavailable and Retry-After 30s: it is overloaded or throttling; try again later, not before 30s (body: "busy")`},
		{name: "429", err: &websocket.HandshakeError{StatusCode: 429}, want: "HTTP 429 Too Many Requests: it is overloaded or throttling; try again later"},
		{name: "404", err: &websocket.HandshakeError{StatusCode: 404}, want: "the server answered HTTP 404 Not Found instead of upgrading: check that the URL's path is a WebSocket endpoint"},
		{name: "302", err: &websocket.HandshakeError{StatusCode: 302}, want: "WebSocket clients do not follow redirects"},
		{name: "401", err: &websocket.HandshakeError{StatusCode: 401}, want: "it wants credentials"},
		{name: "500", err: &websocket.HandshakeError{StatusCode: 500}, want: "it failed; check its logs"},
		{name: "bad 101", err: &websocket.HandshakeError{StatusCode: 101, Reason: "Sec-WebSocket-Accept is wrong"}, want: "the server upgraded, but its response breaks RFC 6455: Sec-WebSocket-Accept is wrong"},
		{name: "long body", err: &websocket.HandshakeError{StatusCode: 404, Body: strings.Repeat("é", 100)}, want: "é…\")"},
		{name: "dns", err: fmt.Errorf("websocket: connecting: %w", &net.DNSError{Name: "nohost.invalid", Err: "no such host", IsNotFound: true}), want: `cannot resolve the host "nohost.invalid": no such host`},
		{name: "certificate", err: fmt.Errorf("websocket: tls: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), want: "TLS certificate was not accepted: x509: certificate signed by unknown authority; for a test server with a self-signed certificate, --insecure skips the check"},
		{name: "other", err: errors.New("websocket: something else"), want: "something else"},
	}
	for _, tt := range tests {
		if got := handshake.Explain(tt.err); !strings.Contains(got, tt.want) || strings.Contains(got, "\n") || strings.HasPrefix(got, "websocket: ") {
			t.Errorf("%s: Explain = %q, want one line with %q", tt.name, got, tt.want)
		}
	}
}
