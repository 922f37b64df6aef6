package shed

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// benchConn is a net.Conn whose reads return the client's Close frame and
// whose writes vanish: the cost of a refusal without the network.
type benchConn struct {
	net.Conn // nil: any other method panics
	in       bytes.Reader
	written  int
}

func (c *benchConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *benchConn) Write(p []byte) (int, error)      { c.written += len(p); return len(p), nil }
func (c *benchConn) Close() error                     { return nil }
func (c *benchConn) SetDeadline(time.Time) error      { return nil }
func (c *benchConn) SetReadDeadline(time.Time) error  { return nil }
func (c *benchConn) SetWriteDeadline(time.Time) error { return nil }
func (c *benchConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1} }

// benchWriter is a hijackable ResponseWriter that reuses its buffers the
// way net/http reuses a connection's.
type benchWriter struct {
	h    http.Header
	code int
	conn benchConn
	brw  *bufio.ReadWriter
	body int
}

func newBenchWriter(clientBytes []byte) *benchWriter {
	w := &benchWriter{h: http.Header{}}
	w.brw = bufio.NewReadWriter(bufio.NewReader(&w.conn), bufio.NewWriter(&w.conn))
	w.reset(clientBytes)
	return w
}

func (w *benchWriter) reset(clientBytes []byte) {
	w.conn.in.Reset(clientBytes)
	w.brw.Reader.Reset(&w.conn)
	w.brw.Writer.Reset(&w.conn)
	clear(w.h)
}

func (w *benchWriter) Header() http.Header         { return w.h }
func (w *benchWriter) Write(p []byte) (int, error) { w.body += len(p); return len(p), nil }
func (w *benchWriter) WriteHeader(code int)        { w.code = code }
func (w *benchWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return &w.conn, w.brw, nil
}

// BenchmarkRefusal measures what one refused upgrade costs shed: the
// admission decision, the hint, the 101 and Close frame, and reading the
// client's Close. "loopback" adds net/http and a real TCP connection
// (client and server allocations both count there).
func BenchmarkRefusal(b *testing.B) {
	clientClose := clientFrame(8, binary.BigEndian.AppendUint16(nil, uint16(closecode.TryAgainLater)), 0)
	refuseAll := func(b *testing.B, l Limits, p func() float64) *Shedder {
		s, err := New(&Options{Limits: l, Pressure: p})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	b.Run("close", func(b *testing.B) {
		s := refuseAll(b, Limits{Pressure: 1}, func() float64 { return 2 })
		h := s.Middleware(http.NotFoundHandler())
		r := upgradeRequest("192.0.2.1:1")
		w := newBenchWriter(clientClose)
		b.ReportAllocs()
		for b.Loop() {
			w.reset(clientClose)
			h.ServeHTTP(w, r)
		}
		if w.conn.written == 0 || s.Stats().CloseReceived[closecode.TryAgainLater] == 0 {
			b.Fatal("no refusal was written or no client Close read")
		}
	})
	b.Run("http503", func(b *testing.B) {
		s := refuseAll(b, Limits{Pressure: 1, HardPressure: 1}, func() float64 { return 2 })
		h := s.Middleware(http.NotFoundHandler())
		r := upgradeRequest("192.0.2.1:1")
		w := newBenchWriter(nil)
		b.ReportAllocs()
		for b.Loop() {
			w.reset(nil)
			h.ServeHTTP(w, r)
		}
		if w.code != http.StatusServiceUnavailable {
			b.Fatalf("status %d, want 503", w.code)
		}
	})
	b.Run("admit", func(b *testing.B) {
		s := refuseAll(b, Limits{MaxConns: 1 << 30, MaxConnsPerIP: 1 << 30}, nil)
		h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			Track(r, CloserFunc(func(closecode.Code, string) error { return nil }))
		}))
		r := upgradeRequest("192.0.2.1:1")
		w := newBenchWriter(nil)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, r)
		}
	})
	b.Run("loopback", func(b *testing.B) {
		s := refuseAll(b, Limits{Pressure: 1}, func() float64 { return 2 })
		srv := httptest.NewServer(s.Middleware(http.NotFoundHandler()))
		defer srv.Close()
		addr := srv.Listener.Addr().String()
		b.ReportAllocs()
		for b.Loop() {
			rc, resp, err := dialRaw(addr, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				b.Fatalf("%v %v", resp, err)
			}
			if code, _, err := rc.readClose(); err != nil || code != closecode.TryAgainLater {
				b.Fatalf("%v %v", code, err)
			}
			_ = rc.writeClose(closecode.TryAgainLater, "")
			_, _ = io.Copy(io.Discard, rc.br)
			rc.Close()
		}
	})
}

// BenchmarkEchoDuringStorm measures the echo latency of admitted clients
// with and without a storm of refused handshakes against the same server
// (16 clients connecting as fast as they can and being refused with 1013).
// Compare the p99-µs metric of the two sub-benchmarks; refusals/s says how
// hard the storm pushed.
func BenchmarkEchoDuringStorm(b *testing.B) {
	const admitted, stormers = 10, 16
	for _, storm := range []bool{false, true} {
		name := "quiet"
		if storm {
			name = "storm"
		}
		b.Run(name, func(b *testing.B) {
			s, err := New(&Options{Limits: Limits{MaxConns: admitted}, RefusalLinger: 200 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			srv := echoServer(b, s)
			addr := srv.Listener.Addr().String()
			var clients []*rawClient
			for range admitted {
				rc, _, err := dialRaw(addr, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer rc.Close()
				if err := rc.echo("warm"); err != nil {
					b.Fatal(err)
				}
				_ = rc.c.SetDeadline(time.Now().Add(time.Minute)) // a lost echo fails, not hangs
				clients = append(clients, rc)
			}
			stop := make(chan struct{})
			var refusals atomic.Int64
			var wg sync.WaitGroup
			if storm {
				for range stormers {
					wg.Go(func() {
						for {
							select {
							case <-stop:
								return
							default:
							}
							rc, _, err := dialRaw(addr, nil)
							if err != nil {
								time.Sleep(time.Millisecond) // e.g. out of ports: do not spin
								continue
							}
							if code, _, err := rc.readClose(); err == nil && code == closecode.TryAgainLater {
								refusals.Add(1)
								_ = rc.writeClose(code, "")
								_, _ = io.Copy(io.Discard, rc.br)
							}
							rc.Close()
						}
					})
				}
				time.Sleep(100 * time.Millisecond) // let the storm build up
			}
			lat := make([]time.Duration, 0, 1024)
			start := time.Now()
			i := 0
			for b.Loop() {
				t0 := time.Now()
				if err := clients[i%admitted].echo("ping"); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				i++
			}
			elapsed := time.Since(start)
			close(stop)
			wg.Wait()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e3 }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(float64(refusals.Load())/elapsed.Seconds(), "refusals/s")
		})
	}
}
