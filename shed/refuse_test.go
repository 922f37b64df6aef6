package shed

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

func TestAcceptKey(t *testing.T) {
	t.Parallel()
	// The example from RFC 6455 §1.3.
	if got := string(appendAcceptKey(nil, "dGhlIHNhbXBsZSBub25jZQ==")); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept key %q, want the RFC's s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", got)
	}
	for _, k := range []string{"AAAAAAAAAAAAAAAAAAAAAA==", "x3JJHMbDL1EzLkh9GBhXDw==", "/////////////////////w=="} {
		if got, want := string(appendAcceptKey([]byte("p:"), k)), "p:"+websocket.AcceptKey(k); got != want {
			t.Errorf("key %q: %q, want websocket.AcceptKey's %q", k, got, want)
		}
	}
}

func TestFirstSubprotocol(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"chat"}, "chat"},
		{[]string{" graphql-ws , chat"}, "graphql-ws"},
		{[]string{"v1.ebb", "other"}, "v1.ebb"},
		{[]string{"bad proto"}, ""},
		{[]string{"a\r\nX-Injected: 1"}, ""},
		{[]string{""}, ""},
	}
	for _, tt := range tests {
		if got := firstSubprotocol(tt.in); got != tt.want {
			t.Errorf("firstSubprotocol(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestValidKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key  string
		want bool
	}{
		{"dGhlIHNhbXBsZSBub25jZQ==", true},
		{"dGhlIHNhbXBsZSBub25jZQ=", false},
		{"dGhlIHNhbXBsZSBub25jZ===", false},
		{"dGhlIHNhbXBsZSBub25jZQ!!", false},
		{"dGhlIHNhbXBsZSBub25jZQ==x", false},
		{"", false},
		// 24 characters but 17 bytes of key.
		{"AAAAAAAAAAAAAAAAAAAAAAA=", false},
	}
	for _, tt := range tests {
		if got := validKey(tt.key); got != tt.want {
			t.Errorf("validKey(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

func TestAppendCloseFrame(t *testing.T) {
	t.Parallel()
	reason := closecode.FormatRetryHint(strings.Repeat("x", 200), 4500e6)
	f := appendCloseFrame(nil, closecode.TryAgainLater, reason)
	if f[0] != 0x88 {
		t.Fatalf("first byte %#x, want 0x88 (FIN, Close)", f[0])
	}
	n := int(f[1])
	if f[1]&0x80 != 0 || n > 125 || len(f) != 2+n {
		t.Fatalf("length byte %#x with %d bytes after it: want unmasked, ≤125, matching", f[1], len(f)-2)
	}
	if code := binary.BigEndian.Uint16(f[2:]); code != 1013 {
		t.Fatalf("code %d, want 1013", code)
	}
	if d, ok := closecode.ParseRetryHint(string(f[4:])); !ok || d != 4500e6 {
		t.Fatalf("hint in a cut reason: %v %v, want 4.5 s", d, ok)
	}
}

// clientFrame builds a masked client frame.
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

func TestReadPeerClose(t *testing.T) {
	t.Parallel()
	closeP := func(code uint16, reason string) []byte {
		return append(binary.BigEndian.AppendUint16(nil, code), reason...)
	}
	cat := func(frames ...[]byte) []byte { return bytes.Join(frames, nil) }
	tests := []struct {
		name   string
		in     []byte
		want   closecode.Code
		wantOK bool
	}{
		{"close 1000", clientFrame(8, closeP(1000, "bye"), 0), 1000, true},
		{"close echoing 1013", clientFrame(8, closeP(1013, ""), 0), 1013, true},
		{"empty close", clientFrame(8, nil, 0), closecode.NoStatusReceived, true},
		{"data frames first", cat(clientFrame(1, []byte("hello"), 0), clientFrame(2, make([]byte, 300), 2), clientFrame(8, closeP(4001, ""), 0)), 4001, true},
		{"64-bit length data first", cat(clientFrame(2, make([]byte, 10), 8), clientFrame(8, closeP(1001, ""), 0)), 1001, true},
		{"too much data before close", cat(clientFrame(2, make([]byte, 5000), 2), clientFrame(8, closeP(1000, ""), 0)), 0, false},
		{"oversized close", clientFrame(8, make([]byte, 126), 2), 0, false},
		{"EOF mid-header", []byte{0x88}, 0, false},
		{"EOF mid-payload", clientFrame(8, closeP(1000, "bye"), 0)[:7], 0, false},
		{"nothing", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := readPeerClose(bufio.NewReader(bytes.NewReader(tt.in)))
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("readPeerClose = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func FuzzReadPeerClose(f *testing.F) {
	f.Add(clientFrame(8, []byte{3, 0xf5}, 0))
	f.Add(append(clientFrame(1, []byte("x"), 2), clientFrame(8, nil, 0)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		code, ok := readPeerClose(bufio.NewReader(bytes.NewReader(in)))
		if !ok && code != 0 {
			t.Fatalf("code %v reported with ok=false", code)
		}
	})
}
