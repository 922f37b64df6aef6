package shed

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// The tests of websocket.RefuseWithClose live here, with its first user:
// they check the wire bytes with code that shares nothing with websocket.

// fakeHijacker is a ResponseWriter whose Hijack hands out an in-memory
// connection: the client's bytes are in, what the server writes goes to
// out.
type fakeHijacker struct {
	http.ResponseWriter
	in       []byte
	out      bytes.Buffer
	conn     *fakeConn
	hijacked bool
}

func newFakeHijacker(in []byte) *fakeHijacker {
	return &fakeHijacker{ResponseWriter: httptest.NewRecorder(), in: in, conn: &fakeConn{}}
}

func (f *fakeHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	f.hijacked = true
	return f.conn, bufio.NewReadWriter(bufio.NewReader(bytes.NewReader(f.in)), bufio.NewWriter(&f.out)), nil
}

// fakeConn is the hijacked connection: it records deadlines and Close.
type fakeConn struct {
	net.Conn // nil: any other method panics
	deadline time.Time
	closed   bool
}

func (c *fakeConn) SetDeadline(t time.Time) error { c.deadline = t; return nil }
func (c *fakeConn) Close() error                  { c.closed = true; return nil }

// parseRefusal reads the 101 response and the Close frame a refusal wrote.
func parseRefusal(t *testing.T, out []byte) (*http.Response, closecode.Code, string) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(out))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("response does not parse: %v\n%q", err, out)
	}
	rc := &rawClient{br: br}
	op, p, err := rc.readFrame()
	if err != nil || op != 0x8 || len(p) < 2 {
		t.Fatalf("after the 101: opcode %d payload %q err %v, want a Close frame", op, p, err)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatalf("bytes after the Close frame: %q", out)
	}
	return resp, closecode.Code(binary.BigEndian.Uint16(p)), string(p[2:])
}

// clientFrame builds a masked client frame with a length field of
// lenBytes extra bytes (0, 2 or 8).
func clientFrame(opcode byte, payload []byte, lenBytes int) []byte {
	b := []byte{0x80 | opcode}
	switch lenBytes {
	case 2:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	case 8:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(len(payload)))
	default:
		b = append(b, 0x80|byte(len(payload)))
	}
	mask := []byte{0x37, 0xfa, 0x21, 0x3d}
	b = append(b, mask...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	return b
}

func TestRefuseWithCloseWire(t *testing.T) {
	t.Parallel()
	hint := closecode.FormatRetryHint(strings.Repeat("x", 200), 4500*time.Millisecond)
	tests := []struct {
		name     string
		protocol []string
		reason   string
		wantProt string
	}{
		{"no subprotocol", nil, "server at capacity; retry-after=2", ""},
		{"one subprotocol", []string{"chat"}, "r", "chat"},
		{"first of a list", []string{" graphql-ws , chat"}, "r", "graphql-ws"},
		{"first header line", []string{"v1.ebb", "other"}, "r", "v1.ebb"},
		{"not a token", []string{"bad proto"}, "r", ""},
		{"header injection", []string{"a\r\nX-Injected: 1"}, "r", ""},
		{"empty", []string{""}, "r", ""},
		{"longest reason", nil, hint, ""},
		{"no reason", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := upgradeRequest("192.0.2.1:1") // the RFC 6455 §1.3 key
			if tt.protocol != nil {
				r.Header["Sec-Websocket-Protocol"] = tt.protocol
			}
			w := newFakeHijacker(clientFrame(8, []byte{0x03, 0xf5}, 0)) // the client echoes 1013
			got, err := websocket.RefuseWithClose(w, r, closecode.TryAgainLater, tt.reason, &websocket.RefuseOptions{Linger: time.Second})
			if err != nil || got != closecode.TryAgainLater {
				t.Fatalf("RefuseWithClose = %v, %v; want the client's 1013", got, err)
			}
			if !w.conn.closed || time.Until(w.conn.deadline) > time.Second || w.conn.deadline.IsZero() {
				t.Fatalf("connection closed %v, deadline %v: want closed, deadline within Linger", w.conn.closed, w.conn.deadline)
			}
			resp, code, reason := parseRefusal(t, w.out.Bytes())
			if resp.StatusCode != 101 || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
				t.Fatalf("response %d Upgrade %q Connection %q, want 101 websocket Upgrade", resp.StatusCode, resp.Header.Get("Upgrade"), resp.Header.Get("Connection"))
			}
			// RFC 6455 §1.3's example answer.
			if got := resp.Header.Get("Sec-WebSocket-Accept"); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" || got != wantAccept("dGhlIHNhbXBsZSBub25jZQ==") {
				t.Fatalf("Sec-WebSocket-Accept %q, want the RFC's s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", got)
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != tt.wantProt {
				t.Fatalf("Sec-WebSocket-Protocol %q, want %q", got, tt.wantProt)
			}
			if len(resp.Header.Values("Sec-WebSocket-Extensions")) != 0 || resp.Header.Get("X-Injected") != "" {
				t.Fatalf("unexpected headers %v", resp.Header)
			}
			if code != closecode.TryAgainLater || reason != tt.reason {
				t.Fatalf("Close frame %v %q, want 1013 %q", code, reason, tt.reason)
			}
		})
	}
}

func TestRefuseWithClosePeerAnswer(t *testing.T) {
	t.Parallel()
	closeP := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name string
		in   []byte
		want closecode.Code
	}{
		{"close 1000", clientFrame(8, closeP(1000, "bye"), 0), 1000},
		{"close echoing 1013", clientFrame(8, closeP(1013, ""), 0), 1013},
		{"empty close", clientFrame(8, nil, 0), closecode.NoStatusReceived},
		{"data frames first", cat(clientFrame(1, []byte("hello"), 0), clientFrame(2, make([]byte, 300), 2), clientFrame(8, closeP(4001, ""), 0)), 4001},
		{"64-bit length data first", cat(clientFrame(2, make([]byte, 10), 8), clientFrame(8, closeP(1001, ""), 0)), 1001},
		{"invalid code reported as sent", clientFrame(8, closeP(1005, ""), 0), 1005},
		{"too much data before close", cat(clientFrame(2, make([]byte, 5000), 2), clientFrame(8, closeP(1000, ""), 0)), 0},
		{"oversized close", clientFrame(8, make([]byte, 126), 2), 0},
		{"EOF mid-header", []byte{0x88}, 0},
		{"EOF mid-payload", clientFrame(8, closeP(1000, "bye"), 0)[:6], 0},
		{"nothing", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := newFakeHijacker(tt.in)
			got, err := websocket.RefuseWithClose(w, upgradeRequest("192.0.2.1:1"), closecode.TryAgainLater, "busy", nil)
			if err != nil || got != tt.want {
				t.Fatalf("RefuseWithClose = %v, %v; want %v, nil", got, err, tt.want)
			}
		})
	}
}

func TestRefuseWithCloseWritesNothingWhenItCannot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   closecode.Code
		reason string
		edit   func(r *http.Request)
	}{
		{"local-only code", closecode.NoStatusReceived, "", nil},
		{"1010 from a server", closecode.MandatoryExtension, "", nil},
		{"reason too long", closecode.TryAgainLater, strings.Repeat("x", 124), nil},
		{"reason not UTF-8", closecode.TryAgainLater, "\xff", nil},
		{"bad key", closecode.TryAgainLater, "", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "short") }},
		{"17-byte key", closecode.TryAgainLater, "", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA=") }},
		{"version 8", closecode.TryAgainLater, "", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }},
		{"POST", closecode.TryAgainLater, "", func(r *http.Request) { r.Method = http.MethodPost }},
		{"no Upgrade", closecode.TryAgainLater, "", func(r *http.Request) { r.Header.Del("Upgrade") }},
		{"HTTP/1.0", closecode.TryAgainLater, "", func(r *http.Request) { r.ProtoMinor = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := upgradeRequest("192.0.2.1:1")
			if tt.edit != nil {
				tt.edit(r)
			}
			w := newFakeHijacker(nil)
			if _, err := websocket.RefuseWithClose(w, r, tt.code, tt.reason, nil); err == nil || !strings.HasPrefix(err.Error(), "websocket: ") {
				t.Fatalf("err = %v, want a websocket: error", err)
			}
			if w.hijacked || w.out.Len() != 0 {
				t.Fatalf("hijacked %v, wrote %q: want nothing done", w.hijacked, w.out.Bytes())
			}
		})
	}
	// A ResponseWriter that cannot hijack: no hijack, and the request
	// can still be answered.
	rec := httptest.NewRecorder()
	r := upgradeRequest("192.0.2.1:1")
	if websocket.CanRefuseWithClose(rec, r) {
		t.Fatal("CanRefuseWithClose(recorder) = true")
	}
	if _, err := websocket.RefuseWithClose(rec, r, closecode.TryAgainLater, "", nil); err == nil {
		t.Fatal("RefuseWithClose(recorder) succeeded")
	}
	if rec.Code != 200 || rec.Body.Len() != 0 || rec.Flushed {
		t.Fatalf("recorder written to: %d %q", rec.Code, rec.Body.Bytes())
	}
}

// unwrapper hides a Hijacker behind Unwrap, as middleware does.
type unwrapper struct{ w http.ResponseWriter }

func (u unwrapper) Header() http.Header         { return u.w.Header() }
func (u unwrapper) Write(p []byte) (int, error) { return u.w.Write(p) }
func (u unwrapper) WriteHeader(code int)        { u.w.WriteHeader(code) }
func (u unwrapper) Unwrap() http.ResponseWriter { return u.w }

func TestRefuseWithCloseThroughUnwrap(t *testing.T) {
	t.Parallel()
	inner := newFakeHijacker(nil)
	w := unwrapper{unwrapper{inner}}
	r := upgradeRequest("192.0.2.1:1")
	if !websocket.CanRefuseWithClose(w, r) {
		t.Fatal("CanRefuseWithClose through Unwrap = false")
	}
	var written net.Conn
	got, err := websocket.RefuseWithClose(w, r, closecode.PolicyViolation, "go away", &websocket.RefuseOptions{
		Linger:  -1,
		Written: func(c net.Conn) { written = c },
	})
	if err != nil || got != 0 {
		t.Fatalf("RefuseWithClose = %v, %v; want 0 (no wait), nil", got, err)
	}
	if written != inner.conn || !inner.conn.closed {
		t.Fatalf("Written got %v, closed %v: want the hijacked connection, closed", written, inner.conn.closed)
	}
	if _, code, reason := parseRefusal(t, inner.out.Bytes()); code != closecode.PolicyViolation || reason != "go away" {
		t.Fatalf("Close frame %v %q, want 1008 \"go away\"", code, reason)
	}
}

func TestRefuseWithCloseAllocations(t *testing.T) {
	r := upgradeRequest("192.0.2.1:1")
	in := clientFrame(8, []byte{0x03, 0xf5}, 0)
	w := newFakeHijacker(in)
	// The fake's own Hijack allocates its buffers; count them apart.
	hijack := testing.AllocsPerRun(100, func() {
		w.out.Reset()
		_, _, _ = w.Hijack()
	})
	total := testing.AllocsPerRun(100, func() {
		w.out.Reset()
		_, _ = websocket.RefuseWithClose(w, r, closecode.TryAgainLater, "server at capacity; retry-after=2", nil)
	})
	// Decoding the key to validate it is RefuseWithClose's only
	// allocation of its own.
	if own := total - hijack; own > 1 {
		t.Fatalf("RefuseWithClose allocates %v times besides the hijack, want at most 1", own)
	}
}

func FuzzReadPeerClose(f *testing.F) {
	f.Add(clientFrame(8, []byte{3, 0xf5}, 0))
	f.Add(append(clientFrame(1, []byte("x"), 2), clientFrame(8, nil, 0)...))
	r := upgradeRequest("192.0.2.1:1")
	f.Fuzz(func(t *testing.T, in []byte) {
		w := newFakeHijacker(in)
		code, err := websocket.RefuseWithClose(w, r, closecode.TryAgainLater, "busy", nil)
		if err != nil {
			t.Fatalf("RefuseWithClose: %v", err)
		}
		if code != 0 && len(in) < 2 {
			t.Fatalf("code %v reported from %d bytes", code, len(in))
		}
		if !w.conn.closed {
			t.Fatal("connection left open")
		}
	})
}
