package shed

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// wsGUID is the fixed string RFC 6455 §1.3 appends to Sec-WebSocket-Key.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// maxSkip bounds how many bytes of data frames a refused client may send
// before its Close frame; past it shed stops waiting.
const maxSkip = 4096

// refuse answers a refused upgrade in the decided mode. A close refusal
// falls back to 503 when the request cannot be upgraded (no valid
// Sec-WebSocket-Key or version 13, or a ResponseWriter that cannot
// hijack, as under HTTP/2). The refusal is counted before any I/O, so the
// counts never lag behind what a client has already seen.
func (s *Shedder) refuse(w http.ResponseWriter, r *http.Request, d decision) {
	reason := closecode.FormatRetryHint(d.reason.Text(), d.hint)
	var hj http.Hijacker
	if d.mode == ModeClose {
		if hj = upgradable(w, r); hj == nil {
			d.mode = ModeHTTP
		}
	}
	s.stats.refused[d.reason][d.mode].Add(1)
	if d.mode == ModeClose {
		s.stats.recordCode(d.code, Sent)
	}
	if lg := s.log(); lg != nil && lg.Enabled(r.Context(), slog.LevelDebug) {
		lg.LogAttrs(r.Context(), slog.LevelDebug, "shed: refused upgrade",
			slog.String("reason", d.reason.String()), slog.String("mode", d.mode.String()),
			slog.String("client", d.ip.String()), slog.Duration("hint", d.hint))
	}
	if s.opts.OnState != nil {
		ev := Event{State: StateRefused, Request: r, ClientIP: d.ip, Reason: d.reason, Mode: d.mode, Code: d.code, Hint: d.hint}
		if d.mode == ModeHTTP {
			ev.Code = 0 // no Close frame is sent
		}
		s.emit(ev)
	}
	if d.mode == ModeHTTP || !s.refuseClose(hj, r, d.code, reason) {
		refuseHTTP(w, reason, d.hint)
	}
}

// upgradable returns w's Hijacker if r is a handshake shed can complete.
func upgradable(w http.ResponseWriter, r *http.Request) http.Hijacker {
	if !validKey(headerValue(r.Header, "Sec-Websocket-Key")) || headerValue(r.Header, "Sec-Websocket-Version") != "13" {
		return nil
	}
	hj, _ := w.(http.Hijacker)
	return hj
}

// refuseHTTP answers 503 with Retry-After in whole seconds (rounded up, so
// it is never shorter than the hint) and the reason as the body, in the
// same "retry-after=" form as a close reason. The connection is not kept
// alive: a refused client should go away.
func refuseHTTP(w http.ResponseWriter, reason string, hint time.Duration) {
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(max(1, int64(math.Ceil(hint.Seconds()))), 10))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(append([]byte(reason), '\n'))
}

// refuseClose completes the upgrade without negotiating anything (but see
// firstSubprotocol), sends a Close frame with code and reason in the same
// write, waits at most RefusalLinger for the client's Close, and closes the
// TCP connection. It uses the server's own bufio buffers from Hijack and
// no goroutine. It reports false, having written nothing, if the hijack
// fails.
func (s *Shedder) refuseClose(hj http.Hijacker, r *http.Request, code closecode.Code, reason string) bool {
	key := headerValue(r.Header, "Sec-Websocket-Key")
	conn, brw, err := hj.Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(s.opts.RefusalLinger))
	b := brw.Writer.AvailableBuffer()
	b = append(b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	b = appendAcceptKey(b, key)
	if p := firstSubprotocol(r.Header["Sec-Websocket-Protocol"]); p != "" {
		b = append(b, "\r\nSec-WebSocket-Protocol: "...)
		b = append(b, p...)
	}
	b = append(b, "\r\n\r\n"...)
	b = appendCloseFrame(b, code, reason)
	if _, err := brw.Writer.Write(b); err != nil {
		return true
	}
	if err := brw.Writer.Flush(); err != nil {
		return true
	}
	// Only waiting for the client's Close now, which costs no CPU: let a
	// shed Listener hand out the next pending place.
	leftPending(conn)
	if got, ok := readPeerClose(brw.Reader); ok {
		s.stats.recordCode(got, Received)
	}
	return true
}

func headerValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// firstSubprotocol returns the first subprotocol the client offered, or ""
// if it offered none or the first is not a valid token. A refusal echoes
// it because browsers fail a handshake whose request offered subprotocols
// and whose response selects none, and would then report 1006 instead of
// the 1013 that follows; the connection closes before the protocol is
// ever spoken.
func firstSubprotocol(values []string) string {
	if len(values) == 0 {
		return ""
	}
	p, _, _ := strings.Cut(values[0], ",")
	p = strings.TrimSpace(p)
	for i := 0; i < len(p); i++ {
		if !isTokenChar(p[i]) {
			return ""
		}
	}
	return p
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// §5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validKey reports whether k is a Sec-WebSocket-Key: base64 of 16 bytes
// (RFC 6455 §4.2.1).
func validKey(k string) bool {
	if len(k) != 24 {
		return false
	}
	var src [24]byte
	var dst [18]byte
	copy(src[:], k)
	n, err := base64.StdEncoding.Decode(dst[:], src[:])
	return err == nil && n == 16
}

// appendAcceptKey appends Sec-WebSocket-Accept for key (RFC 6455 §4.2.2):
// base64 of the SHA-1 of the key followed by the GUID.
func appendAcceptKey(dst []byte, key string) []byte {
	var in [24 + len(wsGUID)]byte
	n := copy(in[:24], key)
	n += copy(in[n:], wsGUID)
	sum := sha1.Sum(in[:n])
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// appendCloseFrame appends an unmasked server Close frame (RFC 6455 §5.5.1)
// with code and reason; reason is cut to closecode.MaxReasonBytes.
func appendCloseFrame(dst []byte, code closecode.Code, reason string) []byte {
	reason = closecode.TruncateReason(reason, closecode.MaxReasonBytes)
	dst = append(dst, 0x88, byte(2+len(reason)))
	dst = binary.BigEndian.AppendUint16(dst, uint16(code))
	return append(dst, reason...)
}

// readPeerClose reads frames from a refused client until its Close frame
// (returning its code, or 1005 for an empty one), an error (the deadline,
// EOF) or maxSkip bytes of other frames. It reads through the server's own
// bufio.Reader and allocates nothing.
func readPeerClose(br *bufio.Reader) (closecode.Code, bool) {
	skipped := 0
	for {
		h, err := br.Peek(2)
		if err != nil {
			return 0, false
		}
		opcode := h[0] & 0x0f
		masked := h[1]&0x80 != 0
		n := int(h[1] & 0x7f)
		hdr := 2
		switch n {
		case 126:
			hdr += 2
		case 127:
			hdr += 8
		}
		if masked {
			hdr += 4
		}
		if h, err = br.Peek(hdr); err != nil {
			return 0, false
		}
		var length uint64
		switch n {
		case 126:
			length = uint64(binary.BigEndian.Uint16(h[2:4]))
		case 127:
			length = binary.BigEndian.Uint64(h[2:10])
		default:
			length = uint64(n)
		}
		var mask [4]byte
		if masked {
			copy(mask[:], h[hdr-4:hdr])
		}
		if opcode == 0x8 {
			if length > 125 {
				return 0, false
			}
			if _, err := br.Discard(hdr); err != nil {
				return 0, false
			}
			if length < 2 {
				return closecode.NoStatusReceived, true
			}
			p, err := br.Peek(2)
			if err != nil {
				return 0, false
			}
			return closecode.Code(int(p[0]^mask[0])<<8 | int(p[1]^mask[1])), true
		}
		if length > maxSkip || skipped+hdr+int(length) > maxSkip {
			return 0, false
		}
		skipped += hdr + int(length)
		if _, err := br.Discard(hdr + int(length)); err != nil {
			return 0, false
		}
	}
}
