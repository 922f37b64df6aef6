// Package handshake opens WebSocket connections for the ebb commands:
// websocket.Dial under a deadline that says which step ran out of time, and
// the reason a handshake failed in one line a person can act on ("connection
// refused by 127.0.0.1:8080: …", "the server answered HTTP 404 …").
//
// connect and probe share it so that the same failure reads the same in
// both. It never prints, reads flags or exits.
package handshake

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ebb-ws/ebb/websocket"
)

// DefaultTimeout bounds a handshake (TCP, proxy, TLS and the upgrade) when
// the caller gives no timeout: long enough for a slow link, short enough
// that a server which accepts TCP and never answers is reported instead of
// waited on forever.
const DefaultTimeout = 10 * time.Second

// TimeoutError is the error of a handshake that did not finish within its
// timeout. Connected tells the two usual causes apart: a server that
// accepted the TCP connection but never answered the upgrade request (a
// stuck server, a TLS port dialed with ws://, a tarpit), or no TCP
// connection at all (a firewall dropping packets, a wrong address).
type TimeoutError struct {
	// Host is the host:port from the URL.
	Host string
	// Timeout is the deadline the handshake had.
	Timeout time.Duration
	// Connected reports whether the TCP connection (to the server or to
	// the proxy) was established before the deadline.
	Connected bool
	// TLS reports a wss:// URL: after the TCP connection, the TLS
	// handshake may be what stalled.
	TLS bool
	// Err is the error Dial returned.
	Err error
}

// Error says which step ran out of time and what to try.
func (e *TimeoutError) Error() string {
	if e.Connected && e.TLS {
		return fmt.Sprintf("the handshake with %s did not finish within %v: the server accepted the TCP connection but did not complete the TLS handshake or answer the upgrade request; check that the port serves TLS and WebSocket, or allow more time with --timeout", e.Host, e.Timeout)
	}
	if e.Connected {
		return fmt.Sprintf("the handshake with %s did not finish within %v: the server accepted the TCP connection but did not answer the upgrade request; check that the URL points at a WebSocket endpoint (a TLS port needs wss://), or allow more time with --timeout", e.Host, e.Timeout)
	}
	return fmt.Sprintf("could not connect to %s within %v: no answer to the TCP connection attempt; check the host, the port and any firewall on the way, or allow more time with --timeout", e.Host, e.Timeout)
}

// Unwrap returns the error Dial returned, which wraps
// context.DeadlineExceeded.
func (e *TimeoutError) Unwrap() error { return e.Err }

// Dial is websocket.Dial bounded by timeout (DefaultTimeout when zero or
// negative). A handshake that runs out of time returns a *TimeoutError; one
// stopped because ctx ended returns an error wrapping ctx's error. opts is
// not modified; its NetDialContext, if any, is still used.
func Dial(ctx context.Context, rawURL string, opts *websocket.DialOptions, timeout time.Duration) (*websocket.Conn, *http.Response, error) {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	var o websocket.DialOptions
	if opts != nil {
		o = *opts
	}
	var connected atomic.Bool
	dial := o.NetDialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	o.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			connected.Store(true)
		}
		return c, err
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	deadline, _ := dctx.Deadline()
	c, resp, err := websocket.Dial(dctx, rawURL, &o)
	// The connection's own deadline may fire a moment before the
	// context's timer: a failure at or past the deadline is the timeout.
	ours := true
	if pd, ok := ctx.Deadline(); ok && pd.Before(deadline) {
		ours = false // the caller's deadline came first
	}
	if err != nil && resp == nil && ours && ctx.Err() == nil && (dctx.Err() != nil || !time.Now().Before(deadline) || errors.Is(err, context.DeadlineExceeded)) {
		err = &TimeoutError{Host: hostOf(rawURL), Timeout: timeout, Connected: connected.Load(), TLS: strings.HasPrefix(strings.ToLower(rawURL), "wss:"), Err: err}
	}
	return c, resp, err
}

// hostOf returns the host[:port] of a URL, or the URL itself.
func hostOf(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		return u.Host
	}
	return rawURL
}

// Explain says in one line what a failed handshake means and what to try.
// It knows the errors of websocket.Dial and of Dial; anything else is
// returned as it is, without the "websocket: " prefix.
func Explain(err error) string {
	var te *TimeoutError
	var he *websocket.HandshakeError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var oe *net.OpError
	switch {
	case errors.As(err, &te):
		return te.Error()
	case errors.As(err, &he):
		return explainHTTP(he)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve the host %q: %v; check the URL's host name", dnsErr.Name, dnsErr.Err)
	case errors.Is(err, syscall.ECONNREFUSED):
		where := "the server"
		if errors.As(err, &oe) && oe.Addr != nil {
			where = oe.Addr.String()
		}
		return fmt.Sprintf("connection refused by %s: nothing listens on that port; check the host and port, and that the server runs", where)
	case errors.As(err, &certErr):
		return fmt.Sprintf("the server's TLS certificate was not accepted: %v; for a test server with a self-signed certificate, --insecure skips the check", certErr.Err)
	case errors.Is(err, context.DeadlineExceeded):
		return "the handshake did not finish within the timeout (" + strip(err) + "); check that the URL points at a WebSocket endpoint, or allow more time with --timeout"
	}
	return strip(err)
}

// explainHTTP explains an upgrade the server answered with something other
// than a valid 101.
func explainHTTP(he *websocket.HandshakeError) string {
	status := fmt.Sprintf("HTTP %d %s", he.StatusCode, http.StatusText(he.StatusCode))
	var b strings.Builder
	switch {
	case he.StatusCode == http.StatusServiceUnavailable || he.StatusCode == http.StatusTooManyRequests:
		fmt.Fprintf(&b, "the server refused the upgrade with %s", status)
		if he.RetryAfter > 0 {
			fmt.Fprintf(&b, " and Retry-After %v", he.RetryAfter)
		}
		b.WriteString(": it is overloaded or throttling; try again later")
		if he.RetryAfter > 0 {
			fmt.Fprintf(&b, ", not before %v", he.RetryAfter)
		}
	case he.StatusCode == 0 || he.StatusCode == http.StatusSwitchingProtocols:
		return "the server upgraded, but its response breaks RFC 6455: " + he.Reason
	case he.StatusCode >= 300 && he.StatusCode < 400:
		fmt.Fprintf(&b, "the server answered %s instead of upgrading: WebSocket clients do not follow redirects; use the URL it points to", status)
	case he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusForbidden:
		fmt.Fprintf(&b, "the server answered %s instead of upgrading: it wants credentials or refuses this client (a header such as -H 'Authorization: …', or --origin, may be missing)", status)
	case he.StatusCode >= 500:
		fmt.Fprintf(&b, "the server answered %s instead of upgrading: it failed; check its logs or try again later", status)
	default:
		fmt.Fprintf(&b, "the server answered %s instead of upgrading: check that the URL's path is a WebSocket endpoint", status)
	}
	if body := strings.TrimSpace(he.Body); body != "" {
		fmt.Fprintf(&b, " (body: %q)", truncate(body, 120))
	}
	return b.String()
}

// strip returns err's text without the library's "websocket: " prefix.
func strip(err error) string {
	return strings.TrimPrefix(err.Error(), "websocket: ")
}

// truncate shortens s to at most n bytes, on a rune boundary, marking the
// cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
