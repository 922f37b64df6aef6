package websocket

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// DialOptions configures Dial. The zero value (or nil) is safe: no
// subprotocol, no compression, the proxy from the environment, the system's
// TLS roots, a 32 MiB read limit, the process-wide memory budget, response
// headers of at most 1 MiB. Dial copies the options and never modifies
// them.
type DialOptions struct {
	// Header holds extra request headers (Origin, Authorization, cookies).
	// The handshake's own headers may not be set here.
	Header http.Header

	// Subprotocols lists the subprotocols to offer, in order of preference.
	Subprotocols []string

	// TLSConfig configures wss:// connections. Nil uses the defaults.
	TLSConfig *tls.Config

	// NetDialContext opens the TCP connection. Nil uses a net.Dialer.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Proxy returns the HTTP proxy for a request, as http.Transport.Proxy
	// does. Nil uses http.ProxyFromEnvironment (HTTPS_PROXY, HTTP_PROXY,
	// NO_PROXY); connections go through the proxy with CONNECT.
	Proxy func(*http.Request) (*url.URL, error)

	// Compression offers permessage-deflate (RFC 7692). Nil offers nothing
	// unless Require asks for it, in which case the default options are
	// offered.
	Compression *CompressionOptions

	// Require lists extensions the connection cannot work without. If the
	// server does not accept one of them, Dial closes the connection with
	// 1010 Mandatory Extension and returns a *MandatoryExtensionError.
	Require []Requirement

	// ReadLimit is the largest message accepted, in bytes (decompressed
	// size). 0 means DefaultReadLimit; negative means no limit, in which
	// case MemoryBudget still bounds what Read holds (see
	// Conn.SetReadLimit).
	ReadLimit int64

	// MemoryBudget bounds the memory of messages being read whole, shared
	// with every other Conn given the same budget. Nil means
	// DefaultMemoryBudget, the process-wide one.
	MemoryBudget *MemoryBudget

	// MaxResponseHeaderBytes bounds the handshake response's status line
	// and headers (and a proxy's CONNECT response), so that a hostile or
	// broken server cannot make Dial read without end. 0 means
	// DefaultMaxResponseHeaderBytes (1 MiB, as net/http's server allows for
	// requests). Negative values are an error: there is no unbounded
	// setting.
	MaxResponseHeaderBytes int64

	// Logger receives debug logs. Nil is silent.
	Logger *slog.Logger
}

// DefaultMaxResponseHeaderBytes is how large a handshake response's status
// line and headers may be unless DialOptions.MaxResponseHeaderBytes says
// otherwise: 1 MiB, what net/http's server allows for a request's.
const DefaultMaxResponseHeaderBytes = 1 << 20

// mandatoryCloseWait bounds how long Dial waits for the server to answer
// its 1010 Close frame.
const mandatoryCloseWait = time.Second

// Dial opens a WebSocket connection to a ws:// or wss:// URL. The handshake
// (TCP, proxy, TLS and HTTP) is bounded by ctx: give it a deadline.
//
// The *http.Response of the handshake is returned whenever one was read,
// on failure too: a refused handshake gives a *HandshakeError and the
// response with the first KiB of its body (for example an HTTP 503 with
// Retry-After from an overloaded server). A server that upgrades only to
// close at once (1013 Try Again Later with a retry hint, from package shed)
// gives the peer's *CloseError when the Close frame arrived with the 101
// response.
func Dial(ctx context.Context, rawURL string, opts *DialOptions) (*Conn, *http.Response, error) {
	var o DialOptions
	if opts != nil {
		o = *opts
	}
	u, err := parseWebSocketURL(rawURL)
	if err != nil {
		return nil, nil, err
	}
	if err := validateRequirements(o.Require); err != nil {
		return nil, nil, err
	}
	if err := o.Compression.validate(); err != nil {
		return nil, nil, err
	}
	switch {
	case o.MaxResponseHeaderBytes == 0:
		o.MaxResponseHeaderBytes = DefaultMaxResponseHeaderBytes
	case o.MaxResponseHeaderBytes < 0:
		return nil, nil, fmt.Errorf("websocket: invalid DialOptions.MaxResponseHeaderBytes %d: want a size in bytes, or 0 for the default of %d (there is no unbounded setting)", o.MaxResponseHeaderBytes, DefaultMaxResponseHeaderBytes)
	}
	compression := compressionForRequirements(o.Compression, o.Require)

	keyBytes := make([]byte, 16)
	crand.Read(keyBytes)
	key := base64.StdEncoding.EncodeToString(keyBytes)
	req := &http.Request{
		Method:     http.MethodGet,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     make(http.Header),
		Host:       u.Host,
	}
	for k, vs := range o.Header {
		if isClientHandshakeHeader(k) {
			return nil, nil, fmt.Errorf("websocket: DialOptions.Header may not set %s: Dial sets it (use Subprotocols and Compression)", k)
		}
		req.Header[k] = slices.Clone(vs)
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", key)
	req.Header.Set("Sec-WebSocket-Version", "13")
	if len(o.Subprotocols) > 0 {
		req.Header.Set("Sec-WebSocket-Protocol", strings.Join(o.Subprotocols, ", "))
	}
	offer := ""
	if compression != nil {
		offer = deflateOffer(compression)
		req.Header.Set("Sec-WebSocket-Extensions", offer)
	}

	nc, err := dialTransport(ctx, u, req, &o)
	if err != nil {
		return nil, nil, err
	}
	stop := watchDeadline(ctx, nc.SetDeadline)
	conn, resp, err := handshake(nc, req, key, offer, compression, &o)
	ctxDone := stop()
	if ctxDone && err == nil {
		err = fmt.Errorf("websocket: handshake with %s interrupted: %w", u.Host, ctx.Err())
	}
	if err != nil {
		nc.Close()
		if causedByContext(ctx, ctxDone, err) && !errors.As(err, new(*HandshakeError)) {
			cause := ctx.Err()
			if cause == nil {
				cause = context.DeadlineExceeded
			}
			err = fmt.Errorf("websocket: handshake with %s: %w (%w)", u.Host, cause, err)
		}
		return nil, resp, err
	}
	if err := conn.refusedAtOnce(ctx); err != nil {
		return nil, resp, err
	}
	if missing := checkRequirements(o.Require, conn.deflateParams, conn.extensions); len(missing) > 0 {
		merr := &MandatoryExtensionError{
			Required: requirementNames(o.Require),
			Offered:  offer,
			Answered: conn.extensions,
			Missing:  missing,
		}
		conn.closeMandatory(ctx, merr.CloseReason())
		return nil, resp, merr
	}
	return conn, resp, nil
}

// refusedAtOnce reports a server that upgraded only to close at once, the
// way an overloaded server refuses with 1013 (package shed writes the 101
// response and the Close frame together). When the Close frame came with
// the handshake response, it is answered and returned as the peer's
// *CloseError, so that callers (a reconnecting client flushing its queue,
// say) never take the connection for open.
func (c *Conn) refusedAtOnce(ctx context.Context) error {
	if c.br.Buffered() < 2 {
		return nil
	}
	if b, err := c.br.Peek(1); err != nil || opcode(b[0]&0x0F) != opClose {
		return nil
	}
	_, _, err := c.Read(ctx)
	if err == nil {
		return nil
	}
	c.CloseNow()
	return err
}

// closeMandatory ends a connection whose server did not accept a required
// extension: Close 1010 with the reason, a short wait for the answer, done.
func (c *Conn) closeMandatory(ctx context.Context, reason string) {
	c.setCloseErr(&CloseError{Code: closecode.MandatoryExtension, Reason: reason})
	if err := c.writeClose(closecode.MandatoryExtension, reason); err == nil {
		deadline := time.Now().Add(mandatoryCloseWait)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		c.readSema <- struct{}{}
		c.awaitClose(deadline)
		<-c.readSema
	}
	c.closeTCP()
}

// parseWebSocketURL accepts ws://, wss:// (and http://, https://) URLs.
func parseWebSocketURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("websocket: invalid URL %q: %v", rawURL, err)
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("websocket: unsupported URL scheme %q in %q: want ws:// or wss://", u.Scheme, rawURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("websocket: URL %q has no host", rawURL)
	}
	u.Fragment = ""
	return u, nil
}

// hostPort returns u's host with the default port of its scheme.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := "80"
	if u.Scheme == "https" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// dialTransport connects to the server, through a proxy if one applies, and
// completes TLS for wss://.
func dialTransport(ctx context.Context, u *url.URL, req *http.Request, o *DialOptions) (net.Conn, error) {
	dial := o.NetDialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	proxy := o.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	proxyURL, err := proxy(req)
	if err != nil {
		return nil, fmt.Errorf("websocket: choosing a proxy: %w", err)
	}
	target := hostPort(u)
	var nc net.Conn
	if proxyURL != nil {
		nc, err = dialProxy(ctx, dial, proxyURL, target, o.MaxResponseHeaderBytes)
	} else {
		nc, err = dial(ctx, "tcp", target)
		if err != nil {
			err = fmt.Errorf("websocket: connecting to %s: %w", target, err)
		}
	}
	if err != nil {
		return nil, err
	}
	if u.Scheme != "https" {
		return nc, nil
	}
	cfg := &tls.Config{}
	if o.TLSConfig != nil {
		cfg = o.TLSConfig.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	// WebSocket needs HTTP/1.1: never let ALPN pick h2.
	cfg.NextProtos = []string{"http/1.1"}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: TLS handshake with %s: %w", target, err)
	}
	return tc, nil
}

// dialProxy opens a tunnel to target through an HTTP proxy with CONNECT.
func dialProxy(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), proxyURL *url.URL, target string, maxHeader int64) (net.Conn, error) {
	if proxyURL.Scheme != "http" && proxyURL.Scheme != "" {
		return nil, fmt.Errorf("websocket: unsupported proxy scheme %q in %s: only http:// proxies are supported", proxyURL.Scheme, proxyURL.Redacted())
	}
	paddr := hostPort(&url.URL{Scheme: "http", Host: proxyURL.Host})
	nc, err := dial(ctx, "tcp", paddr)
	if err != nil {
		return nil, fmt.Errorf("websocket: connecting to proxy %s: %w", proxyURL.Redacted(), err)
	}
	stop := watchDeadline(ctx, nc.SetDeadline)
	defer stop()
	connect := &http.Request{
		Method: http.MethodConnect,
		URL:    &url.URL{Opaque: target},
		Host:   target,
		Header: make(http.Header),
	}
	if u := proxyURL.User; u != nil {
		pw, _ := u.Password()
		connect.Header.Set("Proxy-Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pw)))
	}
	if err := connect.Write(nc); err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: CONNECT through proxy %s: %w", proxyURL.Redacted(), err)
	}
	lr := &boundedReader{r: nc}
	br := bufio.NewReader(lr)
	resp, err := readResponse(br, lr, connect, maxHeader)
	if err == errResponseTooLarge {
		nc.Close()
		return nil, fmt.Errorf("websocket: proxy %s CONNECT response headers exceed %d bytes (DialOptions.MaxResponseHeaderBytes); if the proxy is trusted and really sends that much, raise the bound", proxyURL.Redacted(), maxHeader)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: reading proxy %s CONNECT response: %w", proxyURL.Redacted(), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		nc.Close()
		return nil, fmt.Errorf("websocket: proxy %s refused CONNECT to %s: %s", proxyURL.Redacted(), target, resp.Status)
	}
	if br.Buffered() > 0 {
		nc.Close()
		return nil, fmt.Errorf("websocket: proxy %s sent data before the tunnel was used", proxyURL.Redacted())
	}
	return nc, nil
}

// handshake sends the upgrade request and checks the response strictly
// (RFC 6455 §4.1).
func handshake(nc net.Conn, req *http.Request, key, offer string, compression *CompressionOptions, o *DialOptions) (*Conn, *http.Response, error) {
	if err := req.Write(nc); err != nil {
		return nil, nil, fmt.Errorf("websocket: sending the upgrade request: %w", err)
	}
	lr := &boundedReader{r: nc}
	br := bufio.NewReaderSize(lr, 4096)
	resp, err := readResponse(br, lr, req, o.MaxResponseHeaderBytes)
	if err == errResponseTooLarge {
		return nil, nil, &HandshakeError{Reason: fmt.Sprintf("response status line and headers exceed %d bytes (DialOptions.MaxResponseHeaderBytes); if the server is trusted and really sends that much, raise the bound", o.MaxResponseHeaderBytes)}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("websocket: reading the handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return nil, resp, &HandshakeError{
			StatusCode: resp.StatusCode,
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After")),
			Body:       string(body),
			Reason:     "server did not switch protocols",
		}
	}
	resp.Body = http.NoBody
	fail := func(format string, args ...any) (*Conn, *http.Response, error) {
		return nil, resp, &HandshakeError{StatusCode: resp.StatusCode, Reason: fmt.Sprintf(format, args...)}
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") {
		return fail("response Upgrade header is %q, want \"websocket\"", resp.Header.Get("Upgrade"))
	}
	if !headerHasToken(resp.Header, "Connection", "upgrade") {
		return fail("response Connection header is %q, want \"Upgrade\"", resp.Header.Get("Connection"))
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), AcceptKey(key); got != want {
		return fail("Sec-WebSocket-Accept is %q, want %q", got, want)
	}
	subprotocol := resp.Header.Get("Sec-WebSocket-Protocol")
	if subprotocol != "" && !slices.Contains(o.Subprotocols, subprotocol) {
		return fail("server selected subprotocol %q, which was not offered (offered %q)", subprotocol, o.Subprotocols)
	}
	answered := strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", ")
	var params *deflateParams
	if answered != "" {
		if compression == nil {
			return fail("server answered Sec-WebSocket-Extensions %q, but no extension was offered", answered)
		}
		params, err = parseDeflateResponse(resp.Header.Values("Sec-WebSocket-Extensions"), compression)
		if err != nil {
			return fail("server answered an invalid Sec-WebSocket-Extensions %q to the offer %q: %v", answered, offer, err)
		}
	}
	cfg := connConfig{
		nc:          nc,
		br:          br,
		subprotocol: subprotocol,
		extensions:  answered,
		readLimit:   o.ReadLimit,
		budget:      o.MemoryBudget,
		logger:      o.Logger,
	}
	if params != nil {
		cfg.deflate = newDeflateState(params, false, compression)
		cfg.threshold = compressionThreshold(compression)
	}
	c := newConn(cfg)
	c.deflateParams = params
	return c, resp, nil
}

// errResponseTooLarge is readResponse's error for a response whose status
// line and headers exceed the bound.
var errResponseTooLarge = errors.New("websocket: response headers too large")

// readResponse reads an HTTP response's status line and headers through br,
// which reads from lr, allowing at most maxHeader bytes for them. Memory
// stays near maxHeader whatever the server sends. The body is not bounded:
// callers read at most a little of it.
func readResponse(br *bufio.Reader, lr *boundedReader, req *http.Request, maxHeader int64) (*http.Response, error) {
	// br may read up to one buffer past the headers, into what follows.
	allowed := addSat(maxHeader, int64(br.Size()))
	lr.left = allowed
	resp, err := http.ReadResponse(br, req)
	header := allowed - lr.left - int64(br.Buffered())
	hit := lr.hit
	lr.left = -1
	if hit || err == nil && header > maxHeader {
		return nil, errResponseTooLarge
	}
	return resp, err
}

// boundedReader reads from r at most left bytes, then fails; a negative
// left lifts the bound.
type boundedReader struct {
	r    io.Reader
	left int64
	hit  bool // the bound stopped a read
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left < 0 {
		return b.r.Read(p)
	}
	if b.left == 0 {
		b.hit = true
		return 0, errResponseTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// parseRetryAfter reads a Retry-After header given in seconds or as an
// HTTP date; it returns 0 when there is none or it cannot be read.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := time.Until(t); d > 0 {
			return d
		}
	}
	return 0
}

func isClientHandshakeHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol":
		return true
	}
	return false
}
