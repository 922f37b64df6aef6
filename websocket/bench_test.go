package websocket

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

var benchSizes = []int{16, 1 << 10, 16 << 10, 1 << 20}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func BenchmarkMask(b *testing.B) {
	key := [4]byte{1, 2, 3, 4}
	for _, n := range benchSizes {
		buf := make([]byte, n)
		b.Run("word/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				mask(key, 1, buf)
			}
		})
		b.Run("bytewise/"+sizeName(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				maskBytewise(key, 1, buf)
			}
		})
	}
}

func BenchmarkUTF8(b *testing.B) {
	inputs := map[string][]byte{
		"ascii": bytes.Repeat([]byte("hello, world "), 1300)[:16<<10],
		"mixed": []byte(strings.Repeat("κόσμε, 世界 and ascii ", 700))[:16<<10],
	}
	for name, in := range inputs {
		// Cut on a rune boundary so the input is valid as a whole.
		for !utf8.Valid(in) {
			in = in[:len(in)-1]
		}
		b.Run("stream-4KiB-chunks/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				var v utf8Validator
				for off := 0; off < len(in); off += 4096 {
					v.write(in[off:min(off+4096, len(in))])
				}
				if !v.done() {
					b.Fatal("invalid")
				}
			}
		})
		b.Run("stdlib-whole/"+name, func(b *testing.B) {
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				utf8.Valid(in)
			}
		})
	}
}

// countConn is a net.Conn that only counts what is written to it.
type countConn struct {
	net.Conn
	n int
}

func (c *countConn) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

func BenchmarkFrameWrite(b *testing.B) {
	for _, server := range []bool{true, false} {
		role := "client"
		if server {
			role = "server"
		}
		for _, n := range benchSizes {
			b.Run(role+"/"+sizeName(n), func(b *testing.B) {
				c := newConn(connConfig{nc: &countConn{}, server: server})
				msg := make([]byte, n)
				ctx := context.Background()
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if err := c.Write(ctx, MessageBinary, msg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// replayConn serves the same bytes over and over, so reading frames can be
// measured without a network.
type replayConn struct {
	net.Conn
	data []byte
	off  int
}

func (c *replayConn) Read(p []byte) (int, error) {
	if c.off == len(c.data) {
		c.off = 0
	}
	n := copy(p, c.data[c.off:])
	c.off += n
	return n, nil
}

func BenchmarkFrameRead(b *testing.B) {
	for _, typ := range []MessageType{MessageBinary, MessageText} {
		for _, n := range benchSizes {
			b.Run(typ.String()+"/"+sizeName(n), func(b *testing.B) {
				h := frameHeader{fin: true, opcode: typ.opcode(), masked: true, length: int64(n), key: [4]byte{1, 2, 3, 4}}
				payload := bytes.Repeat([]byte("a"), n)
				mask(h.key, 0, payload)
				frame := append(appendFrameHeader(nil, h), payload...)
				rc := &replayConn{data: bytes.Repeat(frame, max(1, 65536/len(frame)))}
				c := newConn(connConfig{nc: rc, br: bufio.NewReaderSize(rc, 4096), server: true})
				ctx := context.Background()
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					if _, _, err := c.Read(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkEcho measures a full round trip over loopback TCP: the client
// writes a message, the server echoes it, the client reads it back.
func BenchmarkEcho(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := Accept(w, r, nil)
				if err != nil {
					return
				}
				defer c.CloseNow()
				for {
					typ, p, err := c.Read(context.Background())
					if err != nil {
						return
					}
					if c.Write(context.Background(), typ, p) != nil {
						return
					}
				}
			})}
			go srv.Serve(ln)
			defer srv.Close()
			ctx := context.Background()
			c, _, err := Dial(ctx, "ws://"+ln.Addr().String(), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			msg := make([]byte, n)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Write(ctx, MessageBinary, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := c.Read(ctx); err != nil {
					b.Fatal(err)
				}
			}
			c.Close(1000, "")
		})
	}
}

// BenchmarkReadFragmented reads messages sent in 4 KiB frames: the path
// that gathers a message whose size is not known in advance.
func BenchmarkReadFragmented(b *testing.B) {
	for _, n := range []int{16 << 10, 1 << 20} {
		b.Run(sizeName(n), func(b *testing.B) {
			var stream []byte
			payload := bytes.Repeat([]byte("a"), n)
			for off := 0; off < n; off += 4096 {
				op := opContinuation
				if off == 0 {
					op = opBinary
				}
				end := min(off+4096, n)
				h := frameHeader{fin: end == n, opcode: op, masked: true, length: int64(end - off), key: [4]byte{1, 2, 3, 4}}
				p := bytes.Clone(payload[off:end])
				mask(h.key, 0, p)
				stream = append(appendFrameHeader(stream, h), p...)
			}
			rc := &replayConn{data: bytes.Repeat(stream, max(1, 65536/len(stream)))}
			c := newConn(connConfig{nc: rc, br: bufio.NewReaderSize(rc, 4096), server: true})
			ctx := context.Background()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := c.Read(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadCompressed reads compressed messages (no context takeover,
// so that the same bytes can be replayed): the inflate path.
func BenchmarkReadCompressed(b *testing.B) {
	params := &deflateParams{clientNoContextTakeover: true, serverMaxWindowBits: 15, clientMaxWindowBits: 15}
	for _, n := range []int{1 << 10, 16 << 10, 1 << 20} {
		b.Run(sizeName(n), func(b *testing.B) {
			var msg []byte
			for i, docs := 0, benchJSON(64); len(msg) < n; i++ {
				msg = append(msg, docs[i%len(docs)]...)
			}
			msg = msg[:n]
			client := newDeflateState(params, false, nil)
			var z bytes.Buffer
			w := client.startMessage(&z)
			w.Write(msg)
			if err := client.finishMessage(); err != nil {
				b.Fatal(err)
			}
			h := frameHeader{fin: true, rsv1: true, opcode: opBinary, masked: true, length: int64(z.Len()), key: [4]byte{1, 2, 3, 4}}
			p := bytes.Clone(z.Bytes())
			mask(h.key, 0, p)
			frame := append(appendFrameHeader(nil, h), p...)
			rc := &replayConn{data: bytes.Repeat(frame, max(1, 65536/len(frame)))}
			c := newConn(connConfig{nc: rc, br: bufio.NewReaderSize(rc, 4096), server: true, deflate: newDeflateState(params, true, nil)})
			ctx := context.Background()
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				_, got, err := c.Read(ctx)
				if err != nil || len(got) != n {
					b.Fatal(len(got), err)
				}
			}
		})
	}
}
