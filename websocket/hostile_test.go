package websocket

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/klauspost/compress/flate"
)

// Tests of the read paths against hostile peers: memory follows the bytes
// received, a process-wide budget bounds messages in flight, and length
// arithmetic cannot be wrapped around. Tests that measure the heap do not
// run in parallel, so that nothing else allocates meanwhile.

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
)

// liveHeap returns the live heap after two garbage collections (the second
// also empties sync.Pools' victim caches).
func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// watchedConn counts what the server reads, so that a test can tell when
// the server has consumed everything sent and waits for more.
type watchedConn struct {
	net.Conn
	read    atomic.Int64
	reading atomic.Int32
}

func (c *watchedConn) Read(p []byte) (int, error) {
	c.reading.Add(1)
	defer c.reading.Add(-1)
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

type watchedListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*watchedConn
}

func (l *watchedListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w := &watchedConn{Conn: nc}
	l.mu.Lock()
	l.conns = append(l.conns, w)
	l.mu.Unlock()
	return w, nil
}

// readResult is what a server connection's reader ended with.
type readResult struct {
	msgs int    // messages read
	last uint32 // CRC-32 of the last message
	size int    // its length
	err  error  // the error that ended the connection
}

// hostileServer upgrades every request with ao, reads messages (echoing
// them when echo is set), and reports each connection's end on ends.
// Connections are watched (see watchedConn).
type hostileServer struct {
	srv  *httptest.Server
	ln   *watchedListener
	ends chan readResult
}

func newHostileServer(t *testing.T, ao *AcceptOptions, echo bool) *hostileServer {
	t.Helper()
	hs := &hostileServer{ends: make(chan readResult, 256)}
	hs.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, ao)
		if err != nil {
			t.Errorf("Accept: %v", err)
			return
		}
		defer c.CloseNow()
		var res readResult
		ctx := context.Background()
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				res.err = err
				break
			}
			res.msgs++
			res.last, res.size = crc32.ChecksumIEEE(p), len(p)
			if echo && c.Write(ctx, typ, p) != nil {
				break
			}
		}
		hs.ends <- res
	}))
	hs.ln = &watchedListener{Listener: hs.srv.Listener}
	hs.srv.Listener = hs.ln
	hs.srv.Start()
	t.Cleanup(hs.srv.Close)
	return hs
}

// dialRaw completes a handshake by hand and returns the peer and the
// number of bytes it sent.
func (hs *hostileServer) dialRaw(t *testing.T, header string) (*rawPeer, int64) {
	t.Helper()
	addr := hs.srv.Listener.Addr().String()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET / HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return &rawPeer{t: t, nc: nc, br: br, mask: true}, int64(len(req))
}

// waitConsumed waits until n server connections have each read want bytes
// and wait in Read for more: by then the server has acted on everything
// sent.
func (hs *hostileServer) waitConsumed(t *testing.T, n int, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		hs.ln.mu.Lock()
		done := 0
		for _, c := range hs.ln.conns {
			if c.read.Load() == want && c.reading.Load() > 0 {
				done++
			}
		}
		hs.ln.mu.Unlock()
		if done == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d server connections consumed their %d bytes", done, n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// header returns a masked client frame header.
func header(op opcode, fin, rsv1 bool, length int64) []byte {
	return appendFrameHeader(nil, frameHeader{fin: fin, rsv1: rsv1, opcode: op, masked: true, length: length, key: [4]byte{1, 2, 3, 4}})
}

// maskedPayload masks p for a frame from header.
func maskedPayload(p []byte) []byte {
	q := bytes.Clone(p)
	mask([4]byte{1, 2, 3, 4}, 0, q)
	return q
}

// pattern returns n bytes that do not compress to nothing and are easy to
// check.
func pattern(n int64) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + i>>11)
	}
	return p
}

// TestAnnouncedSizeIsNotAllocated: 64 connections each send only a frame
// header announcing 32 MiB. The server holds what arrived (nothing) plus a
// first buffer of at most BudgetFreeBytes each, and after they close,
// nothing.
func TestAnnouncedSizeIsNotAllocated(t *testing.T) {
	const conns = 64
	budget := NewMemoryBudget(256 << 20)
	hs := newHostileServer(t, &AcceptOptions{MemoryBudget: budget}, false)
	before := liveHeap()
	var want int64
	peers := make([]*rawPeer, conns)
	for i := range peers {
		p, sent := hs.dialRaw(t, "")
		h := header(opBinary, true, false, 32*mib)
		p.nc.Write(h)
		peers[i], want = p, sent+int64(len(h))
	}
	hs.waitConsumed(t, conns, want)
	held := liveHeap() - before
	t.Logf("%d connections announcing 32 MiB each: live heap grew by %d KiB (%d KiB per connection)", conns, held>>10, held/conns>>10)
	if held > 8*mib {
		t.Errorf("live heap grew by %d KiB for %d announced-only messages, want < 8 MiB", held>>10, conns)
	}
	if s := budget.Stats(); s.InUse != 0 {
		t.Errorf("budget in use %d with no payload received, want 0", s.InUse)
	}
	for _, p := range peers {
		p.nc.Close()
	}
	for range conns {
		if r := <-hs.ends; CloseStatus(r.err) != closecode.AbnormalClosure {
			t.Errorf("server read ended with %v, want 1006", r.err)
		}
	}
	left := liveHeap() - before
	t.Logf("after they closed: live heap %+d KiB", left>>10)
	if left > 1*mib {
		t.Errorf("%d KiB still held after the connections closed", left>>10)
	}
}

// TestNoLimitHugeAnnouncement: without a read limit (negative, or
// MaxInt64), a frame announcing more than the memory budget is refused at
// once with 1009 and allocates nothing; one announcing less holds only what
// arrives; a real 5 MiB message still arrives whole.
func TestNoLimitHugeAnnouncement(t *testing.T) {
	for _, limit := range []int64{-1, math.MaxInt64} {
		t.Run(fmt.Sprintf("limit=%d/refused", limit), func(t *testing.T) {
			peer, server := rawClient(t, &AcceptOptions{ReadLimit: limit}, "")
			res := make(chan error, 1)
			go func() { _, _, err := server.Read(context.Background()); res <- err }()
			peer.nc.Write(header(opBinary, true, false, 1<<62))
			start := time.Now()
			if code, _ := peer.readClose(); code != int(closecode.MessageTooBig) {
				t.Fatalf("peer got close %d, want 1009", code)
			}
			if err := <-res; CloseStatus(err) != closecode.MessageTooBig {
				t.Fatalf("Read = %v, want 1009", err)
			}
			t.Logf("refused after %v", time.Since(start))
		})
		t.Run(fmt.Sprintf("limit=%d/whole", limit), func(t *testing.T) {
			peer, server := rawClient(t, &AcceptOptions{ReadLimit: limit}, "")
			msg := pattern(5 * mib)
			go func() {
				peer.nc.Write(header(opBinary, true, false, int64(len(msg))))
				peer.nc.Write(maskedPayload(msg))
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, p, err := server.Read(ctx)
			if err != nil || !bytes.Equal(p, msg) {
				t.Fatalf("Read = %d bytes, %v; want the 5 MiB sent", len(p), err)
			}
			if cap(p) != len(p) {
				t.Errorf("message of %d bytes in a slice of capacity %d, want exact", len(p), cap(p))
			}
		})
	}
	t.Run("trickled", func(t *testing.T) {
		budget := NewMemoryBudget(1 << 30)
		hs := newHostileServer(t, &AcceptOptions{ReadLimit: -1, MemoryBudget: budget}, false)
		before := liveHeap()
		peer, sent := hs.dialRaw(t, "")
		h := header(opBinary, true, false, 512*mib)
		part := maskedPayload(pattern(mib))
		peer.nc.Write(h)
		peer.nc.Write(part)
		hs.waitConsumed(t, 1, sent+int64(len(h)+len(part)))
		held := liveHeap() - before
		s := budget.Stats()
		t.Logf("512 MiB announced, 1 MiB sent: live heap grew by %d KiB, budget in use %d KiB", held>>10, s.InUse>>10)
		if held > 4*mib || s.InUse > 2*mib {
			t.Errorf("holding %d KiB (budget: %d KiB) for 1 MiB received, want at most twice that", held>>10, s.InUse>>10)
		}
	})
}

// TestFrameLengthArithmetic: limits on announced sizes cannot be wrapped
// around, whatever the frames announce (up to 2^63-1), and a message over
// the limit or the budget is refused before its payload is read.
func TestFrameLengthArithmetic(t *testing.T) {
	t.Parallel()
	frag := func(op opcode, fin bool, n int64) rawFrame {
		return rawFrame{fin: fin, op: op, payload: pattern(min(n, 1<<20)), length: n, useLength: n > 1<<20}
	}
	tests := []struct {
		name    string
		limit   int64
		budget  int64
		frames  []rawFrame
		want    closecode.Code // 0: the message arrives
		wantLen int
	}{
		{"continuation 2^63-1 after 10 B", 0, 0, []rawFrame{frag(opBinary, false, 10), frag(opContinuation, true, math.MaxInt64)}, closecode.MessageTooBig, 0},
		{"continuation 2^63-1 after 10 B, no limit", -1, 0, []rawFrame{frag(opBinary, false, 10), frag(opContinuation, true, math.MaxInt64)}, closecode.MessageTooBig, 0},
		{"continuation 2^63-1 after 10 B, limit 2^63-1", math.MaxInt64, 0, []rawFrame{frag(opBinary, false, 10), frag(opContinuation, true, math.MaxInt64)}, closecode.MessageTooBig, 0},
		{"text continuation 2^63-10 after 10 B, no limit", -1, 0, []rawFrame{{op: opText}, {op: opContinuation, payload: []byte("0123456789")}, frag(opContinuation, true, math.MaxInt64-9)}, closecode.MessageTooBig, 0},
		{"first frame 2^63-1", 0, 0, []rawFrame{frag(opBinary, true, math.MaxInt64)}, closecode.MessageTooBig, 0},
		{"first frame 2^63-1, no limit", -1, 0, []rawFrame{frag(opBinary, false, math.MaxInt64)}, closecode.MessageTooBig, 0},
		{"one byte over the limit", 100, 0, []rawFrame{frag(opBinary, false, 60), frag(opContinuation, true, 41)}, closecode.MessageTooBig, 0},
		{"exactly the limit", 100, 0, []rawFrame{frag(opBinary, false, 60), frag(opContinuation, true, 40)}, 0, 100},
		{"three fragments to the limit", 100, 0, []rawFrame{frag(opBinary, false, 40), frag(opContinuation, false, 40), frag(opContinuation, true, 20)}, 0, 100},
		{"over the budget, under the limit", -1, 1 << 20, []rawFrame{frag(opBinary, false, 10), frag(opContinuation, true, 2<<20)}, closecode.MessageTooBig, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ao := &AcceptOptions{ReadLimit: tt.limit}
			if tt.budget > 0 {
				ao.MemoryBudget = NewMemoryBudget(tt.budget)
			}
			peer, server := rawClient(t, ao, "")
			type result struct {
				p   []byte
				err error
			}
			res := make(chan result, 1)
			go func() { _, p, err := server.Read(context.Background()); res <- result{p, err} }()
			start := time.Now()
			for _, f := range tt.frames {
				if f.useLength {
					f.payload = nil // announce only: the payload never comes
				}
				peer.write(f)
			}
			if tt.want != 0 {
				if code, reason := peer.readClose(); code != int(tt.want) {
					t.Fatalf("peer got close %d %q, want %d", code, reason, tt.want)
				}
				if r := <-res; CloseStatus(r.err) != tt.want {
					t.Fatalf("Read = %v, want %d", r.err, tt.want)
				}
				if d := time.Since(start); d > 4*time.Second {
					t.Fatalf("refused after %v: not at once", d)
				}
				return
			}
			r := <-res
			if r.err != nil || len(r.p) != tt.wantLen {
				t.Fatalf("Read = %d bytes, %v; want %d", len(r.p), r.err, tt.wantLen)
			}
		})
	}
}

// TestCompressedAtTheLimit: a compressed message inflating to exactly the
// read limit arrives in a slice of exactly its size; one inflating to one
// byte more is refused with 1009. Neither ever holds more than limit+1
// bytes of buffers.
func TestCompressedAtTheLimit(t *testing.T) {
	t.Parallel()
	const limit = 256 << 10
	for _, size := range []int{limit, limit + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			budget := NewMemoryBudget(64 << 20)
			client, conns, err := deflatePair(t, &AcceptOptions{Compression: &CompressionOptions{}, ReadLimit: limit, MemoryBudget: budget},
				&DialOptions{Compression: &CompressionOptions{}})
			if err != nil {
				t.Fatal(err)
			}
			server := <-conns
			defer server.CloseNow()
			msg := bytes.Repeat([]byte("compressible "), size/13+1)[:size]
			go client.Write(context.Background(), MessageBinary, msg)
			_, p, err := server.Read(context.Background())
			s := budget.Stats()
			t.Logf("message of %d bytes, limit %d: budget peak %d", size, limit, s.Peak)
			if s.Peak > limit+1 {
				t.Errorf("buffers of %d bytes for a limit of %d", s.Peak, limit)
			}
			if size > limit {
				if CloseStatus(err) != closecode.MessageTooBig {
					t.Fatalf("Read = %v, want 1009", err)
				}
				return
			}
			if err != nil || !bytes.Equal(p, msg) {
				t.Fatalf("Read = %d bytes, %v", len(p), err)
			}
			if cap(p) > limit+1 {
				t.Errorf("message in a slice of capacity %d, want at most %d", cap(p), limit+1)
			}
			if s.InUse != 0 {
				t.Errorf("budget still counts %d bytes after delivery", s.InUse)
			}
		})
	}
}

// TestIdleAfterLargeMessage: after a message of the default limit (32 MiB)
// is delivered, an idle connection keeps nothing large.
func TestIdleAfterLargeMessage(t *testing.T) {
	size := int64(DefaultReadLimit)
	if raceEnabled {
		size = 8 * mib
	}
	for _, compressed := range []bool{false, true} {
		t.Run(fmt.Sprint("compressed=", compressed), func(t *testing.T) {
			var copts *CompressionOptions
			if compressed {
				copts = &CompressionOptions{ClientNoContextTakeover: true}
			}
			client, conns, err := deflatePair(t, &AcceptOptions{Compression: copts}, &DialOptions{Compression: copts})
			if err != nil {
				t.Fatal(err)
			}
			server := <-conns
			defer server.CloseNow()
			ctx := context.Background()
			exchange := func(n int64) {
				msg := bytes.Repeat([]byte("json-ish payload "), int(n/17)+1)[:n]
				errc := make(chan error, 1)
				go func() { errc <- client.Write(ctx, MessageBinary, msg) }()
				_, p, err := server.Read(ctx)
				if err != nil || int64(len(p)) != n {
					t.Fatalf("Read = %d bytes, %v", len(p), err)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
			}
			exchange(1000) // everything a connection holds at rest is there
			before := liveHeap()
			exchange(size)
			left := liveHeap() - before
			t.Logf("after a %d MiB message: live heap %+d KiB", size>>20, left>>10)
			if left > 512*kib {
				t.Errorf("an idle connection keeps %d KiB after a %d MiB message", left>>10, size>>20)
			}
		})
	}
}

// deflateBomb returns a compressed message payload (RFC 7692, tail
// stripped) that inflates to n MiB of zeros: one compressed MiB, repeated.
func deflateBomb(t *testing.T, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.BestCompression)
	fw.Write(make([]byte, mib))
	fw.Flush()
	one := b.Bytes() // ends with a sync flush; refers back only to zeros
	return bytes.TrimSuffix(bytes.Repeat(one, n), deflateTail[:])
}

// honestDeadline is the longest an honest client's round trip may take
// during an attack (the race detector slows everything down).
var honestDeadline = map[bool]time.Duration{false: 2 * time.Second, true: 5 * time.Second}[raceEnabled]

// TestDeflateBombs: many connections each send a small compressed message
// that inflates past the read limit. Budget peak, heap peak and the honest
// client's round trips are measured while they run.
func TestDeflateBombs(t *testing.T) {
	type attack struct {
		name   string
		bombs  int
		limit  int64
		budget int64
	}
	// The budget holds two bombs at their limit: bombs holding part of it
	// wait for each other, until, all waiting, the one holding most is
	// let past the limit, reaches it, and is refused.
	tests := []attack{
		{"20 bombs, default limit", 20, 0, 64 * mib},
		{"50 bombs, default limit", 50, 0, 64 * mib},
	}
	if raceEnabled { // the race detector makes inflating some 20 times slower
		tests = []attack{{"20 bombs, 4 MiB limit", 20, 4 * mib, 16 * mib}}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			budget := NewMemoryBudget(tt.budget)
			hs := newHostileServer(t, &AcceptOptions{Compression: &CompressionOptions{}, ReadLimit: tt.limit, MemoryBudget: budget}, true)
			limit := tt.limit
			if limit == 0 {
				limit = DefaultReadLimit
			}
			bomb := deflateBomb(t, int(limit/mib)+2)
			frame := append(header(opBinary, true, true, int64(len(bomb))), maskedPayload(bomb)...)

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			honest, _, err := Dial(ctx, "ws"+hs.srv.URL[len("http"):], nil)
			if err != nil {
				t.Fatal(err)
			}
			defer honest.CloseNow()

			base := liveHeap()
			var peakHeap atomic.Int64
			stopSampling := make(chan struct{})
			sampled := make(chan struct{})
			go func() {
				defer close(sampled)
				var m runtime.MemStats
				for {
					runtime.ReadMemStats(&m)
					if v := int64(m.HeapInuse); v > peakHeap.Load() {
						peakHeap.Store(v)
					}
					select {
					case <-stopSampling:
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			}()

			peers := make([]*rawPeer, tt.bombs)
			for i := range peers {
				peers[i], _ = hs.dialRaw(t, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
			}
			codes := make(chan int, tt.bombs)
			attackDone := make(chan struct{})
			var wg sync.WaitGroup
			for _, p := range peers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.nc.Write(frame)
					p.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
					code := 0
					for {
						h, err := readFrameHeader(p.br)
						if err != nil {
							break
						}
						b := make([]byte, h.length)
						if _, err := io.ReadFull(p.br, b); err != nil {
							break
						}
						if h.opcode == opClose && len(b) >= 2 {
							code = int(b[0])<<8 | int(b[1])
							break
						}
					}
					p.nc.Close()
					codes <- code
				}()
			}
			go func() { wg.Wait(); close(attackDone) }()

			// The honest client echoes small messages throughout.
			var rounds, during int
			var worst time.Duration
			msg := []byte("honest client, small message")
			for {
				attacking := true
				select {
				case <-attackDone:
					attacking = false
				default:
				}
				if !attacking && rounds >= 20 {
					break
				}
				start := time.Now()
				rctx, rcancel := context.WithTimeout(ctx, honestDeadline)
				err := honest.Write(rctx, MessageText, msg)
				var p []byte
				if err == nil {
					_, p, err = honest.Read(rctx)
				}
				rcancel()
				if err != nil || !bytes.Equal(p, msg) {
					t.Fatalf("honest round trip %d failed after %v: %v", rounds, time.Since(start), err)
				}
				rounds++
				if attacking {
					during++
					worst = max(worst, time.Since(start))
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(stopSampling)
			<-sampled

			tally := map[int]int{}
			for range tt.bombs {
				tally[<-codes]++
			}
			s := budget.Stats()
			heapGrew := peakHeap.Load() - base
			t.Logf("%d bombs of %d KiB inflating past %d MiB, budget %d MiB: close codes %v; budget peak %d MiB, %d waits, %d refused 1009, %d refused 1013, %d overdrafts; heap in use peak +%d MiB; honest client: %d round trips during the attack, worst %v",
				tt.bombs, len(bomb)>>10, limit>>20, tt.budget>>20, tally, s.Peak>>20, s.Waits, s.RefusedTooBig, s.RefusedTryLater, s.Overdrafts, heapGrew>>20, during, worst.Round(time.Millisecond))
			if tally[1009] != tt.bombs {
				t.Errorf("close codes %v, want every bomb refused with 1009", tally)
			}
			// The budget is exceeded only to break a deadlock, by one
			// message: at most the read limit plus one byte.
			if s.Peak > tt.budget+limit+1 {
				t.Errorf("budget peak %d MiB, want at most the budget (%d MiB) plus one message (%d MiB)", s.Peak>>20, tt.budget>>20, limit>>20)
			}
			// Heap slack: chunks given back to pools and the garbage of
			// final copies last until the next collection, up to as much
			// again; decompressors and connections add a few MiB.
			if bound := 2*(tt.budget+limit) + 16*mib; heapGrew > bound {
				t.Errorf("heap in use grew by %d MiB, want at most %d MiB (twice the budget plus one message, plus 16 MiB)", heapGrew>>20, bound>>20)
			}
			if s.InUse != 0 {
				t.Errorf("budget still counts %d bytes after the attack", s.InUse)
			}
		})
	}
}

// TestBudgetTakesTurns: messages that together need more than the budget
// wait for each other and all arrive.
func TestBudgetTakesTurns(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	budget := NewMemoryBudget(4 << 20)
	budget.maxWait = time.Minute
	type result struct {
		p   []byte
		err error
	}
	var results []chan result
	proceed := make(chan struct{})
	msg := maskedPayload(pattern(size))
	for range 3 {
		peer, server := rawClient(t, &AcceptOptions{MemoryBudget: budget}, "")
		res := make(chan result, 1)
		go func() { _, p, err := server.Read(context.Background()); res <- result{p, err} }()
		go func() {
			peer.nc.Write(header(opBinary, true, false, size))
			peer.nc.Write(msg[:size*3/4])
			<-proceed
			peer.nc.Write(msg[size*3/4:])
		}()
		results = append(results, res)
	}
	// Three final buffers of 2 MiB do not fit in 4 MiB, and none can be
	// complete yet: one waits.
	waitUntil(t, "a message waiting for the budget", func() bool { return budget.Stats().Waiters > 0 })
	close(proceed)
	want := pattern(size)
	for i, res := range results {
		r := <-res
		if r.err != nil || !bytes.Equal(r.p, want) {
			t.Fatalf("message %d: %d bytes, %v", i, len(r.p), r.err)
		}
	}
	s := budget.Stats()
	t.Logf("3 messages of 2 MiB through a 4 MiB budget: %+v", s)
	// All three may hold part of the budget and wait: one of them then
	// goes on past it (Overdrafts), by at most its own size.
	if s.Waits == 0 || s.RefusedTryLater != 0 || s.RefusedTooBig != 0 || s.Peak > 4<<20+size || s.InUse != 0 {
		t.Fatalf("stats %+v: want waits, no refusal, peak within 4 MiB plus one message, nothing left", s)
	}
}

// TestBudgetRefusals: a message larger than the whole budget is refused at
// once with 1009; one that waits too long for room with 1013 and a retry
// hint; a read whose context ends while it waits gives its room back.
func TestBudgetRefusals(t *testing.T) {
	t.Parallel()
	t.Run("larger than the budget", func(t *testing.T) {
		t.Parallel()
		budget := NewMemoryBudget(1 << 20)
		peer, server := rawClient(t, &AcceptOptions{MemoryBudget: budget}, "")
		res := make(chan error, 1)
		go func() { _, _, err := server.Read(context.Background()); res <- err }()
		start := time.Now()
		peer.nc.Write(header(opBinary, true, false, 2<<20)) // and no payload
		if code, reason := peer.readClose(); code != int(closecode.MessageTooBig) {
			t.Fatalf("peer got %d %q, want 1009", code, reason)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("refused after %v, want at once (no payload ever comes)", d)
		}
		if err := <-res; CloseStatus(err) != closecode.MessageTooBig {
			t.Fatalf("Read = %v", err)
		}
		if s := budget.Stats(); s.RefusedTooBig != 1 || s.Waits != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("compressed, larger than the budget", func(t *testing.T) {
		t.Parallel()
		budget := NewMemoryBudget(1 << 20)
		client, conns, err := deflatePair(t, &AcceptOptions{Compression: &CompressionOptions{}, MemoryBudget: budget}, &DialOptions{Compression: &CompressionOptions{}})
		if err != nil {
			t.Fatal(err)
		}
		server := <-conns
		defer server.CloseNow()
		go client.Write(context.Background(), MessageBinary, make([]byte, 2<<20))
		if _, _, err := server.Read(context.Background()); CloseStatus(err) != closecode.MessageTooBig {
			t.Fatalf("Read = %v, want 1009", err)
		}
		if s := budget.Stats(); s.RefusedTooBig != 1 || s.Peak > 1<<20 {
			t.Fatalf("stats %+v", s)
		}
	})
	// waitingPair starts message A, which takes 900 KiB of a 1 MiB budget
	// and keeps reading, and message B, which then waits for room.
	// waitingPair starts message A, which takes 900 KiB of a 1 MiB budget
	// and keeps reading, and message B, which then waits for room, its
	// Read bounded by bTimeout (0: none).
	waitingPair := func(t *testing.T, maxWait, bTimeout time.Duration) (budget *MemoryBudget, a *rawPeer, aRes, bRes chan error, bPeer *rawPeer) {
		budget = NewMemoryBudget(1 << 20)
		budget.maxWait = maxWait
		a, serverA := rawClient(t, &AcceptOptions{MemoryBudget: budget}, "")
		aRes = make(chan error, 1)
		go func() { _, _, err := serverA.Read(context.Background()); aRes <- err }()
		a.nc.Write(header(opBinary, true, false, 900<<10))
		a.nc.Write(maskedPayload(pattern(700 << 10)))
		waitUntil(t, "A's buffer in the budget", func() bool { return budget.Stats().InUse == 900<<10 })
		bPeer, serverB := rawClient(t, &AcceptOptions{MemoryBudget: budget}, "")
		bRes = make(chan error, 1)
		go func() {
			ctx := context.Background()
			if bTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, bTimeout)
				defer cancel()
			}
			_, _, err := serverB.Read(ctx)
			bRes <- err
		}()
		go func() {
			bPeer.nc.Write(header(opBinary, true, false, 600<<10))
			bPeer.nc.Write(maskedPayload(pattern(400 << 10)))
		}()
		return
	}
	t.Run("waited too long", func(t *testing.T) {
		t.Parallel()
		budget, a, aRes, bRes, b := waitingPair(t, 300*time.Millisecond, 0)
		start := time.Now()
		code, reason := b.readClose()
		waited := time.Since(start)
		if code != int(closecode.TryAgainLater) {
			t.Fatalf("B got %d %q, want 1013", code, reason)
		}
		hint, ok := closecode.ParseRetryHint(reason)
		if !ok || hint < time.Second || hint > 2*time.Second+100*time.Millisecond {
			t.Fatalf("1013 reason %q: want a retry-after= hint of 1 to 2 s", reason)
		}
		if err := <-bRes; CloseStatus(err) != closecode.TryAgainLater {
			t.Fatalf("B's Read = %v", err)
		}
		if waited > 4*time.Second {
			t.Fatalf("B refused after %v, want after the 300 ms wait", waited)
		}
		a.nc.Write(maskedPayload(pattern(200 << 10)))
		if err := <-aRes; err != nil {
			t.Fatalf("A's Read = %v", err)
		}
		if s := budget.Stats(); s.RefusedTryLater != 1 || s.Overdrafts != 0 || s.InUse != 0 || s.Peak > 1<<20 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("context ends while waiting", func(t *testing.T) {
		t.Parallel()
		budget, a, aRes, bRes, _ := waitingPair(t, time.Minute, 300*time.Millisecond)
		err := <-bRes
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("B's Read = %v, want the context's deadline", err)
		}
		waitUntil(t, "B's room given back", func() bool { s := budget.Stats(); return s.Waiters == 0 && s.InUse == 900<<10 })
		a.nc.Write(maskedPayload(pattern(200 << 10)))
		if err := <-aRes; err != nil {
			t.Fatalf("A's Read = %v", err)
		}
		if s := budget.Stats(); s.InUse != 0 || s.RefusedTryLater != 0 || s.Waits == 0 {
			t.Fatalf("stats %+v: want B to have waited, no refusal, nothing left", s)
		}
	})
}

// floodServer answers one request on a raw socket with status, then the
// headers junk writes (until it fails or is done), then, if end is set, the
// end of the headers. It returns the server's address.
func floodServer(t *testing.T, status string, junk func(io.Writer) error, end bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		br := bufio.NewReader(nc)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		head := status + "\r\n"
		if key := req.Header.Get("Sec-WebSocket-Key"); key != "" {
			head += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(key) + "\r\n"
		}
		if _, err := io.WriteString(nc, head); err != nil || junk(nc) != nil {
			return
		}
		if end {
			io.WriteString(nc, "\r\n")
			io.Copy(io.Discard, nc) // until the client closes
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// junkLines writes total bytes of 1 KiB header lines.
func junkLines(total int64) func(io.Writer) error {
	return func(w io.Writer) error {
		line := "X-Pad: " + string(bytes.Repeat([]byte("a"), 1015)) + "\r\n"
		chunk := bytes.Repeat([]byte(line), 64) // 64 KiB
		for sent := int64(0); sent < total; sent += int64(len(chunk)) {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}
}

// junkLine writes one header line of total bytes, without its end.
func junkLine(total int64) func(io.Writer) error {
	return func(w io.Writer) error {
		if _, err := io.WriteString(w, "X-Big: "); err != nil {
			return err
		}
		chunk := bytes.Repeat([]byte("a"), 64<<10)
		for sent := int64(0); sent < total; sent += int64(len(chunk)) {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestDialBoundsResponseHeaders: a server (or proxy) that follows its 101
// (or 200) with tens of MB of headers fails the handshake once
// MaxResponseHeaderBytes are read, and the client allocates little.
func TestDialBoundsResponseHeaders(t *testing.T) {
	const flood = 64 << 20
	tests := []struct {
		name    string
		status  string
		junk    func(io.Writer) error
		proxy   bool
		max     int64
		wantErr string
	}{
		{"many lines", "HTTP/1.1 101 Switching Protocols", junkLines(flood), false, 0, "exceed 1048576 bytes (DialOptions.MaxResponseHeaderBytes)"},
		{"one endless line", "HTTP/1.1 101 Switching Protocols", junkLine(flood), false, 0, "exceed 1048576 bytes (DialOptions.MaxResponseHeaderBytes)"},
		{"endless status line", "HTTP/1.1 101 ", junkLine(flood), false, 0, "exceed 1048576 bytes (DialOptions.MaxResponseHeaderBytes)"},
		{"smaller bound", "HTTP/1.1 101 Switching Protocols", junkLines(flood), false, 64 << 10, "exceed 65536 bytes"},
		{"proxy", "HTTP/1.1 200 Connection established", junkLines(flood), true, 0, "CONNECT response headers exceed 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := floodServer(t, tt.status, tt.junk, false)
			opts := &DialOptions{MaxResponseHeaderBytes: tt.max}
			target := "ws://" + addr
			if tt.proxy {
				target = "ws://backend.invalid"
				opts.Proxy = func(*http.Request) (*url.URL, error) { return &url.URL{Scheme: "http", Host: addr}, nil }
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			c, _, err := Dial(ctx, target, opts)
			runtime.ReadMemStats(&after)
			if c != nil {
				c.CloseNow()
			}
			allocated := int64(after.TotalAlloc - before.TotalAlloc)
			t.Logf("%s: Dial failed after %v having allocated %d KiB: %v", tt.name, time.Since(start).Round(time.Millisecond), allocated>>10, err)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Dial error %v, want one quoting %q", err, tt.wantErr)
			}
			if he := new(HandshakeError); !tt.proxy && !errors.As(err, &he) {
				t.Errorf("Dial error %T, want a *HandshakeError", err)
			}
			if allocated > 16<<20 {
				t.Errorf("Dial allocated %d KiB reading a flood of headers, want < 16 MiB", allocated>>10)
			}
		})
	}
	t.Run("larger bound", func(t *testing.T) {
		addr := floodServer(t, "HTTP/1.1 101 Switching Protocols", junkLines(2<<20), true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := Dial(ctx, "ws://"+addr, &DialOptions{MaxResponseHeaderBytes: 4 << 20})
		if err != nil {
			t.Fatalf("Dial with 2 MiB of headers and a 4 MiB bound: %v", err)
		}
		c.CloseNow()
		if n := len(resp.Header.Values("X-Pad")); n < 2000 {
			t.Fatalf("response has %d X-Pad headers, want 2048", n)
		}
	})
	t.Run("negative bound", func(t *testing.T) {
		_, _, err := Dial(context.Background(), "ws://127.0.0.1:1", &DialOptions{MaxResponseHeaderBytes: -1})
		if err == nil || !strings.Contains(err.Error(), "MaxResponseHeaderBytes -1") {
			t.Fatalf("Dial error %v, want one about MaxResponseHeaderBytes -1", err)
		}
	})
}
