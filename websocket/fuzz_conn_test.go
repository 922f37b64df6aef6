package websocket

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzConnRead feeds arbitrary bytes to a server Conn as if a client had
// sent them: reading must never panic or hang, and must end with a
// *CloseError.
func FuzzConnRead(f *testing.F) {
	masked := func(op byte, payload string) []byte {
		h := frameHeader{fin: op&0x80 != 0, opcode: opcode(op & 0x0F), masked: true, length: int64(len(payload)), key: [4]byte{9, 8, 7, 6}}
		b := appendFrameHeader(nil, h)
		p := []byte(payload)
		mask(h.key, 0, p)
		return append(b, p...)
	}
	f.Add(masked(0x81, "hello"))
	f.Add(append(masked(0x01, "hel"), masked(0x80, "lo")...))
	f.Add(append(masked(0x89, "ping"), masked(0x88, "\x03\xe8bye")...))
	f.Add(masked(0x88, "\x03"))
	f.Add(masked(0x81, "\xed\xa0\x80"))
	f.Add([]byte{0xC1, 0x80, 0, 0, 0, 0})
	for _, seed := range hostileSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		c := newConn(connConfig{nc: a, server: true, readLimit: 1 << 16})
		go func() {
			b.Write(in)
			b.Close()
		}()
		go io.Copy(io.Discard, b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			_, _, err := c.Read(ctx)
			if err == nil {
				continue
			}
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("Read ended with %v, want a *CloseError", err)
			}
			break
		}
		c.CloseNow()
	})
}

// hostileSeeds are inputs that announce more than they send: a
// continuation of 2^63-1 bytes after 10, a first frame of 2^63-1, and
// fragments whose sum passes 2^63.
func hostileSeeds() [][]byte {
	hdr := func(b0 byte, n uint64) []byte {
		h := []byte{b0, 0xFF}
		h = binary.BigEndian.AppendUint64(h, n)
		return append(h, 9, 8, 7, 6)
	}
	var seeds [][]byte
	seeds = append(seeds, append(append([]byte{0x02, 0x8A, 9, 8, 7, 6}, make([]byte, 10)...), hdr(0x80, 1<<63-1)...))
	seeds = append(seeds, hdr(0x82, 1<<63-1))
	seeds = append(seeds, append(hdr(0x02, 1<<62), hdr(0x80, 1<<62)...))
	seeds = append(seeds, append([]byte{0xC2, 0xFE, 0xFF, 0xFF, 9, 8, 7, 6}, make([]byte, 100)...))
	return seeds
}

// FuzzConnReadWhole reads arbitrary client bytes whole, without a read
// limit and with a small memory budget, alternating Read and ReadInto:
// no panic, no hang, a *CloseError at the end, and the budget entirely
// given back.
func FuzzConnReadWhole(f *testing.F) {
	for _, seed := range hostileSeeds() {
		f.Add(seed)
	}
	f.Add([]byte{0x81, 0x85, 9, 8, 7, 6, 'h' ^ 9, 'e' ^ 8, 'l' ^ 7, 'l' ^ 6, 'o' ^ 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		budget := NewMemoryBudget(64 << 10)
		c := newConn(connConfig{nc: a, server: true, readLimit: -1, budget: budget})
		go func() {
			b.Write(in)
			b.Close()
		}()
		go io.Copy(io.Discard, b)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		buf := make([]byte, 0, 64)
		for i := 0; ; i++ {
			var err error
			if i%2 == 0 {
				_, _, err = c.Read(ctx)
			} else {
				_, _, err = c.ReadInto(ctx, buf)
			}
			if err == nil {
				continue
			}
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("Read ended with %v, want a *CloseError", err)
			}
			break
		}
		c.CloseNow()
		if s := budget.Stats(); s.InUse != 0 || s.Peak > 64<<10 {
			t.Fatalf("budget %+v after the connection ended", s)
		}
	})
}

// FuzzAcceptHeaders runs Accept's request checks on arbitrary header
// values: no panic, and a refusal is always a 4xx with a body.
func FuzzAcceptHeaders(f *testing.F) {
	f.Add("websocket", "Upgrade", "13", "dGhlIHNhbXBsZSBub25jZQ==", "https://a.test", "chat, superchat", "permessage-deflate; client_max_window_bits")
	f.Add("WebSocket", "keep-alive, Upgrade", "8", "x", "", "", "permessage-deflate; server_max_window_bits=\"10\"")
	f.Add("", "", "", "", "null", ",,,", ";;;")
	f.Fuzz(func(t *testing.T, upgrade, connection, version, key, origin, protocols, extensions string) {
		r := httptest.NewRequest("GET", "http://a.test/", nil)
		for k, v := range map[string]string{
			"Upgrade": upgrade, "Connection": connection, "Sec-WebSocket-Version": version,
			"Sec-WebSocket-Key": key, "Origin": origin, "Sec-WebSocket-Protocol": protocols,
			"Sec-WebSocket-Extensions": extensions,
		} {
			if strings.ContainsAny(v, "\r\n") {
				return
			}
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		c, err := Accept(w, r, &AcceptOptions{Subprotocols: []string{"chat"}, Compression: &CompressionOptions{}})
		if c != nil {
			t.Fatal("a recorder cannot be hijacked, yet Accept returned a Conn")
		}
		var ue *UpgradeError
		if !errors.As(err, &ue) {
			t.Fatalf("Accept error %v is not an *UpgradeError", err)
		}
		if ue.Status != w.Code || w.Body.Len() == 0 || (w.Code < 400 || w.Code > 599) {
			t.Fatalf("status %d (recorded %d) with body %q", ue.Status, w.Code, w.Body)
		}
	})
}

// TestServerBehindMiddleware checks that Accept finds the Hijacker through
// a middleware's ResponseWriter that implements Unwrap.
func TestServerBehindMiddleware(t *testing.T) {
	t.Parallel()
	conns := make(chan *Conn, 1)
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		conns <- c
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(&wrappedWriter{ResponseWriter: w}, r)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := Dial(ctx, wsURL(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := <-conns
	go echo(s)
	c.Write(ctx, MessageText, []byte("through middleware"))
	if _, p, err := c.Read(ctx); err != nil || string(p) != "through middleware" {
		t.Fatal(string(p), err)
	}
	c.Close(1000, "")
}

// wrappedWriter is what logging or metrics middleware typically does: it
// embeds the ResponseWriter and offers Unwrap, not Hijack.
type wrappedWriter struct {
	http.ResponseWriter
	status int
}

func (w *wrappedWriter) WriteHeader(s int)           { w.status = s; w.ResponseWriter.WriteHeader(s) }
func (w *wrappedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
