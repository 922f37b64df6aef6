package websocket

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
)

// AcceptOptions configures Accept. The zero value (or nil) is safe: no
// subprotocol, same-origin requests only, no compression, a 32 MiB read
// limit, the process-wide memory budget. Accept copies the options and
// never modifies them.
type AcceptOptions struct {
	// Subprotocols lists the subprotocols the server speaks, in order of
	// preference. The first one the client also offered is selected.
	Subprotocols []string

	// OriginPatterns lists the origins, besides the request's own host,
	// that may open connections (browsers send Origin; other clients
	// usually do not, and requests without Origin are always allowed). A
	// pattern is matched with path.Match against the origin's host
	// ("*.example.com"), or against the whole origin when it contains
	// "://" ("https://app.example.com").
	OriginPatterns []string

	// InsecureSkipOriginCheck accepts connections from any origin. It lets
	// any web page act on behalf of your users with their cookies
	// (cross-site WebSocket hijacking); prefer OriginPatterns.
	InsecureSkipOriginCheck bool

	// Compression enables permessage-deflate (RFC 7692) when the client
	// offers it. Nil disables compression. See CompressionOptions for the
	// memory each mode costs.
	Compression *CompressionOptions

	// ReadLimit is the largest message accepted, in bytes (decompressed
	// size). 0 means DefaultReadLimit; negative means no limit, in which
	// case MemoryBudget still bounds what Read holds (see
	// Conn.SetReadLimit).
	ReadLimit int64

	// MemoryBudget bounds the memory of messages being read whole, shared
	// with every other Conn given the same budget. Nil means
	// DefaultMemoryBudget, the process-wide one.
	MemoryBudget *MemoryBudget

	// ResponseHeader holds extra headers for the 101 response (cookies, for
	// example). Handshake headers in it are ignored.
	ResponseHeader http.Header

	// Logger receives debug logs about handshakes and failed connections.
	// Nil is silent.
	Logger *slog.Logger
}

// UpgradeError is returned by Accept when it refused a request; Accept has
// already answered it with Status and a body explaining the problem.
type UpgradeError struct {
	Status int
	Reason string
}

func (e *UpgradeError) Error() string {
	return fmt.Sprintf("websocket: upgrade refused with HTTP %d: %s", e.Status, e.Reason)
}

// Accept upgrades an HTTP/1.1 request to a WebSocket connection. On
// failure it answers the request itself (400, 403, 405 or 426, with a body
// that says what was wrong) and returns an *UpgradeError.
//
// Accept works with net/http's server, httptest, and middleware whose
// ResponseWriter supports hijacking directly or through Unwrap. The
// connection is detached from the http.Server: Server.Shutdown neither
// closes nor waits for it (package shed drains such connections).
func Accept(w http.ResponseWriter, r *http.Request, opts *AcceptOptions) (*Conn, error) {
	var o AcceptOptions
	if opts != nil {
		o = *opts
	}
	if err := o.Compression.validate(); err != nil {
		// A server misconfiguration, not the client's fault.
		return nil, refuse(w, http.StatusInternalServerError, nil, "server misconfigured: %v", err)
	}
	if err := checkUpgradeRequest(w, r, &o); err != nil {
		return nil, err
	}
	subprotocol := selectSubprotocol(r, o.Subprotocols)
	extResponse, params, err := negotiateDeflateServer(r.Header.Values("Sec-WebSocket-Extensions"), o.Compression)
	if err != nil {
		return nil, refuse(w, http.StatusBadRequest, nil, "malformed Sec-WebSocket-Extensions header: %v", err)
	}

	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, refuse(w, http.StatusInternalServerError, nil,
			"cannot take over the connection (the ResponseWriter does not support hijacking; HTTP/2 is not supported): %v", err)
	}
	// The http.Server's read and write timeouts must not cut the WebSocket.
	nc.SetDeadline(time.Time{})

	resp := make([]byte, 0, 256)
	resp = append(resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	resp = append(resp, AcceptKey(r.Header.Get("Sec-WebSocket-Key"))...)
	resp = append(resp, "\r\n"...)
	if subprotocol != "" {
		resp = append(resp, "Sec-WebSocket-Protocol: "...)
		resp = append(resp, subprotocol...)
		resp = append(resp, "\r\n"...)
	}
	if extResponse != "" {
		resp = append(resp, "Sec-WebSocket-Extensions: "...)
		resp = append(resp, extResponse...)
		resp = append(resp, "\r\n"...)
	}
	for k, vs := range o.ResponseHeader {
		if isHandshakeHeader(k) {
			continue
		}
		for _, v := range vs {
			resp = append(resp, k...)
			resp = append(resp, ": "...)
			resp = append(resp, sanitizeHeaderValue(v)...)
			resp = append(resp, "\r\n"...)
		}
	}
	resp = append(resp, "\r\n"...)
	if _, err := nc.Write(resp); err != nil {
		nc.Close()
		return nil, fmt.Errorf("websocket: writing the 101 response: %w", err)
	}

	cfg := connConfig{
		nc:          nc,
		br:          brw.Reader,
		server:      true,
		subprotocol: subprotocol,
		extensions:  extResponse,
		readLimit:   o.ReadLimit,
		budget:      o.MemoryBudget,
		logger:      o.Logger,
	}
	if params != nil {
		cfg.deflate = newDeflateState(params, true, o.Compression)
		cfg.threshold = compressionThreshold(o.Compression)
	}
	return newConn(cfg), nil
}

// checkUpgradeRequest validates the client's handshake (RFC 6455 §4.2.1)
// and answers the request when it is refused.
func checkUpgradeRequest(w http.ResponseWriter, r *http.Request, o *AcceptOptions) error {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		h := http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}
		return refuse(w, http.StatusUpgradeRequired, h,
			"this endpoint speaks WebSocket: the request needs \"Upgrade: websocket\" (got %q)", r.Header.Get("Upgrade"))
	}
	if r.Method != http.MethodGet {
		return refuse(w, http.StatusMethodNotAllowed, http.Header{"Allow": {"GET"}},
			"a WebSocket upgrade must use GET, not %s", r.Method)
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return refuse(w, http.StatusHTTPVersionNotSupported, nil,
			"a WebSocket upgrade needs HTTP/1.1, not %s (WebSocket over HTTP/2 is not supported)", r.Proto)
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") {
		return refuse(w, http.StatusBadRequest, nil,
			"the Connection header must contain \"Upgrade\" (got %q)", r.Header.Get("Connection"))
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		return refuse(w, http.StatusUpgradeRequired, http.Header{"Sec-WebSocket-Version": {"13"}},
			"unsupported Sec-WebSocket-Version %q: this server speaks version 13 (RFC 6455)", v)
	}
	if key := r.Header.Get("Sec-WebSocket-Key"); !validKey(key) {
		return refuse(w, http.StatusBadRequest, nil,
			"invalid Sec-WebSocket-Key %q: want the base64 encoding of 16 random bytes", key)
	}
	if !o.InsecureSkipOriginCheck {
		if err := checkOrigin(r, o.OriginPatterns); err != nil {
			return refuse(w, http.StatusForbidden, nil, "%v", err)
		}
	}
	return nil
}

// checkOrigin allows requests without Origin, from the request's own host,
// or from an origin matching one of patterns.
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("malformed Origin header %q", origin)
	}
	if strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = origin
		}
		ok, err := path.Match(strings.ToLower(p), strings.ToLower(target))
		if err != nil {
			return fmt.Errorf("bad origin pattern %q in AcceptOptions.OriginPatterns: %v", p, err)
		}
		if ok {
			return nil
		}
	}
	return fmt.Errorf("origin %q is not allowed: it is not the request's host %q and matches no AcceptOptions.OriginPatterns", origin, r.Host)
}

// selectSubprotocol picks the server's most preferred subprotocol that the
// client offered.
func selectSubprotocol(r *http.Request, server []string) string {
	offered := headerTokens(r.Header, "Sec-WebSocket-Protocol")
	for _, p := range server {
		if slices.Contains(offered, p) {
			return p
		}
	}
	return ""
}

// refuse answers a refused upgrade with status and a plain-text reason.
func refuse(w http.ResponseWriter, status int, h http.Header, format string, args ...any) error {
	reason := fmt.Sprintf(format, args...)
	for k, vs := range h {
		w.Header()[k] = vs
	}
	http.Error(w, "websocket: "+reason, status)
	return &UpgradeError{Status: status, Reason: reason}
}

func isHandshakeHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Upgrade", "Connection", "Sec-Websocket-Accept", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions":
		return true
	}
	return false
}

// sanitizeHeaderValue drops CR and LF so a header value cannot inject lines.
func sanitizeHeaderValue(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, v)
}
