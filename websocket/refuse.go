package websocket

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ebb-ws/ebb/closecode"
)

// DefaultRefuseLinger is how long RefuseWithClose waits for the client's
// Close frame when RefuseOptions.Linger is zero.
const DefaultRefuseLinger = time.Second

// refuseMaxSkip bounds how many bytes of other frames a refused client may
// send before its Close frame; past it RefuseWithClose stops waiting.
const refuseMaxSkip = 4096

// RefuseOptions configure RefuseWithClose. The zero value (or nil) is
// usable.
type RefuseOptions struct {
	// Linger bounds how long RefuseWithClose waits, after writing, for the
	// client's answering Close frame before it closes the TCP connection
	// anyway; it is also the write deadline. It is the time the calling
	// goroutine is held. Default DefaultRefuseLinger (1 s); a negative
	// value closes at once after the write.
	Linger time.Duration
	// Written, if not nil, is called with the hijacked connection once
	// the response and the Close frame are written, before the wait for
	// the client's Close. Package shed uses it to give the connection's
	// admission place to the next client while this one answers.
	Written func(net.Conn)
}

// CanRefuseWithClose reports whether RefuseWithClose can complete r's
// opening handshake: r is an HTTP/1.1 GET asking to upgrade to websocket
// (version 13, with a valid Sec-WebSocket-Key) and w can be hijacked,
// directly or through Unwrap (not under HTTP/2). It does not check Origin:
// a refusal gives nothing away. When it reports false, answer the request
// with an HTTP status instead (503 with Retry-After for an overloaded
// server). It reads headers only and allocates little.
func CanRefuseWithClose(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet || r.ProtoMajor != 1 || r.ProtoMinor < 1 ||
		!headerHasToken(r.Header, "Upgrade", "websocket") || !headerHasToken(r.Header, "Connection", "upgrade") ||
		firstHeader(r.Header, "Sec-Websocket-Version") != "13" || !validKey(firstHeader(r.Header, "Sec-Websocket-Key")) {
		return false
	}
	for range 8 { // middleware rarely nests deeper
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
	return false
}

// RefuseWithClose answers a WebSocket upgrade request by completing the
// opening handshake and closing at once with code and reason, so that the
// client learns why it was turned away: browsers report an HTTP error
// response only as 1006, but they do report a Close frame's code and
// reason. Typical uses are 1013 Try Again Later with a retry hint
// (closecode.FormatRetryHint) from an overloaded server, and 1008 Policy
// Violation or 3003 Forbidden from one that refuses the client.
//
// It costs about what the 101 response costs: no Conn, no goroutine, and
// one small allocation (validating the key) besides hijacking's. The response (no extension; the client's
// first subprotocol echoed, because a browser fails a handshake whose
// request offered subprotocols and whose response selects none, and would
// then report 1006) and the Close frame go out in one write through the
// server's own buffer. It then reads, through the same buffer, until the
// client's Close frame arrives (skipping at most 4 KiB of other frames),
// Linger passes, or the client hangs up, and closes the connection. It
// returns the code of the client's Close frame as sent (1005 for one
// without a code), or 0 if none arrived.
//
// It writes nothing and returns an error when code may not be sent by a
// server, reason is longer than closecode.MaxReasonBytes or not UTF-8,
// CanRefuseWithClose(w, r) is false, or the hijack fails (the error then
// wraps the one from http.ResponseController.Hijack, e.g.
// http.ErrNotSupported); the request can still be answered with an HTTP
// status then. Once the connection is hijacked it is always closed before
// RefuseWithClose returns, and an error means the write failed.
func RefuseWithClose(w http.ResponseWriter, r *http.Request, code closecode.Code, reason string, opts *RefuseOptions) (closecode.Code, error) {
	if !closecode.MaySend(code, true) {
		return 0, fmt.Errorf("websocket: a server may not send close code %d (%s): want 1000–1003, 1007–1009 or 1011–1014, or 3000–4999", int(code), closecode.Lookup(code).Name)
	}
	if len(reason) > closecode.MaxReasonBytes || !utf8.ValidString(reason) {
		return 0, fmt.Errorf("websocket: close reason %q does not fit a Close frame: want valid UTF-8 of at most %d bytes (closecode.TruncateReason shortens one)", reason, closecode.MaxReasonBytes)
	}
	if !CanRefuseWithClose(w, r) {
		return 0, errors.New("websocket: cannot refuse with a Close frame: the request is not a valid version 13 upgrade (GET, Upgrade: websocket, Sec-WebSocket-Key) or the ResponseWriter cannot hijack; answer with an HTTP status instead")
	}
	var linger time.Duration
	if opts != nil {
		linger = opts.Linger
	}
	if linger == 0 {
		linger = DefaultRefuseLinger
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return 0, fmt.Errorf("websocket: cannot take over the connection to refuse it: %w", err)
	}
	defer nc.Close()
	// Bounds the write as well as the wait; at least a moment to write.
	_ = nc.SetDeadline(time.Now().Add(max(linger, 100*time.Millisecond)))

	b := brw.Writer.AvailableBuffer()
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = appendAcceptKey(b, firstHeader(r.Header, "Sec-Websocket-Key"))
	if p := firstSubprotocol(r.Header["Sec-Websocket-Protocol"]); p != "" {
		b = append(b, "\r\nSec-WebSocket-Protocol: "...)
		b = append(b, p...)
	}
	b = append(b, "\r\n\r\n"...)
	b = appendFrameHeader(b, frameHeader{fin: true, opcode: opClose, length: int64(2 + len(reason))})
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	b = append(b, reason...)
	if _, err := brw.Writer.Write(b); err != nil {
		return 0, fmt.Errorf("websocket: writing the refusal: %w", err)
	}
	if err := brw.Writer.Flush(); err != nil {
		return 0, fmt.Errorf("websocket: writing the refusal: %w", err)
	}
	if opts != nil && opts.Written != nil {
		opts.Written(nc)
	}
	if linger < 0 {
		return 0, nil
	}
	return readRefusedClose(brw.Reader), nil
}

// firstHeader returns the first value of h[canonicalKey] without the
// allocation of canonicalizing a key such as "Sec-WebSocket-Key".
func firstHeader(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// appendAcceptKey appends AcceptKey(key) to dst without allocating.
func appendAcceptKey(dst []byte, key string) []byte {
	var in [64]byte
	sum := sha1.Sum(append(append(in[:0], key...), acceptGUID...))
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// firstSubprotocol returns the first subprotocol the client offered, or ""
// if it offered none or the first is not a token (a refusal never echoes
// what could inject a header).
func firstSubprotocol(values []string) string {
	if len(values) == 0 {
		return ""
	}
	p, _, _ := strings.Cut(values[0], ",")
	if p = strings.TrimSpace(p); !extIsToken(p) {
		return ""
	}
	return p
}

// readRefusedClose reads frames from a refused client until its Close
// frame and returns the code in it (1005 for none). It returns 0 on an
// error (the deadline, EOF, an unreadable header), for an oversized Close
// frame, or after refuseMaxSkip bytes of other frames. It reads through the
// server's bufio.Reader and allocates nothing.
func readRefusedClose(br *bufio.Reader) closecode.Code {
	skipped := int64(0)
	for {
		h, err := readFrameHeader(br)
		if err != nil {
			return 0
		}
		if h.opcode != opClose {
			if skipped += h.length; h.length > refuseMaxSkip || skipped > refuseMaxSkip {
				return 0
			}
			if _, err := br.Discard(int(h.length)); err != nil {
				return 0
			}
			continue
		}
		if h.length > maxControlPayload {
			return 0
		}
		if h.length < 2 {
			return closecode.NoStatusReceived
		}
		p, err := br.Peek(2)
		if err != nil {
			return 0
		}
		var c [2]byte
		copy(c[:], p)
		if h.masked {
			mask(h.key, 0, c[:])
		}
		return closecode.Code(binary.BigEndian.Uint16(c[:]))
	}
}
