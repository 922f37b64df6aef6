package wsclient

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

func TestFrame(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		n       int
		hdrLen  int
		lenByte byte
	}{
		{"empty", 0, 6, 0x80},
		{"7-bit max", 125, 6, 0x80 | 125},
		{"16-bit min", 126, 8, 0x80 | 126},
		{"16-bit max", 0xffff, 8, 0x80 | 126},
		{"64-bit", 0x10000, 14, 0x80 | 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := bytes.Repeat([]byte("xyz"), tt.n/3+1)[:tt.n]
			f := Frame(OpBinary, true, p)
			if len(f) != tt.hdrLen+tt.n {
				t.Fatalf("frame is %d bytes, want %d", len(f), tt.hdrLen+tt.n)
			}
			if f[0] != 0x80|0x40|OpBinary {
				t.Errorf("first byte %#x, want FIN|RSV1|binary", f[0])
			}
			if f[1] != tt.lenByte {
				t.Errorf("second byte %#x, want %#x", f[1], tt.lenByte)
			}
			switch tt.lenByte & 0x7f {
			case 126:
				if got := binary.BigEndian.Uint16(f[2:]); int(got) != tt.n {
					t.Errorf("16-bit length %d, want %d", got, tt.n)
				}
			case 127:
				if got := binary.BigEndian.Uint64(f[2:]); int(got) != tt.n {
					t.Errorf("64-bit length %d, want %d", got, tt.n)
				}
			}
			key := f[tt.hdrLen-4 : tt.hdrLen]
			got := bytes.Clone(f[tt.hdrLen:])
			for i := range got {
				got[i] ^= key[i&3]
			}
			if !bytes.Equal(got, p) {
				t.Error("payload does not unmask to what was framed")
			}
		})
	}
}

// serverFrame builds an unmasked server frame.
func serverFrame(fin bool, op byte, p []byte) []byte {
	b := []byte{op, 0}
	if fin {
		b[0] |= 0x80
	}
	switch {
	case len(p) < 126:
		b[1] = byte(len(p))
	case len(p) <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(len(p)))
	}
	return append(b, p...)
}

func TestReadMessage(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte{7}, 70000)
	tests := []struct {
		name    string
		wire    [][]byte
		wantOp  byte
		want    []byte
		wantErr int // close code, 0 for none
	}{
		{"single text", [][]byte{serverFrame(true, OpText, []byte("hello"))}, OpText, []byte("hello"), 0},
		{"64-bit length", [][]byte{serverFrame(true, OpBinary, big)}, OpBinary, big, 0},
		{"fragments with a ping between", [][]byte{
			serverFrame(false, OpText, []byte("hel")),
			serverFrame(true, OpPing, []byte("p")),
			serverFrame(true, OpContinuation, []byte("lo")),
		}, OpText, []byte("hello"), 0},
		{"close", [][]byte{serverFrame(true, OpClose, []byte{0x03, 0xf5, 'x'})}, 0, nil, 1013},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &Conn{BR: bufio.NewReader(bytes.NewReader(bytes.Join(tt.wire, nil)))}
			for _, keep := range []bool{true, false} {
				c.BR.Reset(bytes.NewReader(bytes.Join(tt.wire, nil)))
				op, _, n, msg, err := c.ReadMessage(keep, nil)
				if tt.wantErr != 0 {
					var ce *CloseFrameError
					if !errors.As(err, &ce) || ce.Code != tt.wantErr {
						t.Fatalf("err = %v, want close frame %d", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if op != tt.wantOp || n != len(tt.want) {
					t.Errorf("op %d, %d bytes; want op %d, %d bytes", op, n, tt.wantOp, len(tt.want))
				}
				if keep && !bytes.Equal(msg, tt.want) {
					t.Errorf("message %q, want %q", msg, tt.want)
				}
			}
		})
	}
}

func TestReadMessageRejectsMaskedServerFrame(t *testing.T) {
	t.Parallel()
	c := &Conn{BR: bufio.NewReader(bytes.NewReader(Frame(OpText, false, []byte("x"))))}
	if _, _, _, _, err := c.ReadMessage(false, nil); err == nil || !strings.Contains(err.Error(), "masked") {
		t.Fatalf("err = %v, want a masked-frame error", err)
	}
}

func TestDeflateRoundTrip(t *testing.T) {
	t.Parallel()
	msgs := [][]byte{
		[]byte(`{"type":"update","seq":1,"price":41000.5,"size":1.25,"channel":"market.alpha-usd"}`),
		[]byte(`{"type":"update","seq":2,"price":41000.7,"size":1.5,"channel":"market.alpha-usd"}`),
		bytes.Repeat([]byte(`{"k":"v"},`), 300),
		[]byte(`{"type":"update","seq":3,"price":41001.0,"size":0.5,"channel":"market.bravo-usd"}`),
	}
	tests := []struct{ name, answer string }{
		{"takeover", "permessage-deflate"},
		{"no takeover", "permessage-deflate; client_no_context_takeover; server_no_context_takeover"},
		{"small client window", "permessage-deflate; client_max_window_bits=9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The same type plays both ends: compression is symmetric.
			tx, err := NewDeflate(tt.answer)
			if err != nil {
				t.Fatal(err)
			}
			rx, err := NewDeflate(tt.answer)
			if err != nil {
				t.Fatal(err)
			}
			rx.ServerTakeover = tx.ClientTakeover
			for i, m := range msgs {
				z, err := tx.Compress(m)
				if err != nil {
					t.Fatal(err)
				}
				got, err := rx.Decompress(bytes.Clone(z))
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if !bytes.Equal(got, m) {
					t.Fatalf("message %d inflated to %q, want %q", i, got, m)
				}
			}
		})
	}
}

func TestNewDeflateAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		answer  string
		nilWant bool
		errWant bool
	}{
		{"", true, false},
		{"x-webkit-deflate-frame", true, false},
		{"permessage-deflate; client_max_window_bits=7", false, true},
		{"permessage-deflate; mystery", false, true},
		{"permessage-deflate; server_max_window_bits=10", false, false},
	}
	for _, tt := range tests {
		d, err := NewDeflate(tt.answer)
		if (err != nil) != tt.errWant || (d == nil && err == nil) != tt.nilWant {
			t.Errorf("NewDeflate(%q) = %v, %v; want nil %v, error %v", tt.answer, d, err, tt.nilWant, tt.errWant)
		}
	}
}

func TestHandshakeRefused(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		defer b.Close()
		br := bufio.NewReader(b)
		for {
			l, err := br.ReadString('\n')
			if err != nil || l == "\r\n" {
				break
			}
		}
		b.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 4\r\nContent-Length: 0\r\n\r\n"))
	}()
	_, err := Handshake(t.Context(), a, Request("example", ""), 512)
	var he *HandshakeError
	if !errors.As(err, &he) || he.Status != 503 || he.RetryAfter != "4" {
		t.Fatalf("err = %v, want HandshakeError 503 with Retry-After 4", err)
	}
}
