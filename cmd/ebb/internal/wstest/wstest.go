// Package wstest holds loopback WebSocket servers written by hand for the
// tests of ebb's commands and engines: servers that behave in ways a
// correct library server cannot be told to (close in the same write as the
// 101 response, never answer the upgrade, send faster than the client
// reads from one reused buffer), so that the client side can be tested
// against them. Every server stops when its test ends.
package wstest

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// serve accepts connections on a loopback listener and runs handle for
// each until the test ends; it returns the listener's address.
func serve(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// upgrade reads the upgrade request and returns the 101 response that
// accepts it, without extensions or subprotocol.
func upgrade(br *bufio.Reader) ([]byte, bool) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, false
	}
	return []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		websocket.AcceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"), true
}

// CloseFrame returns an unmasked Close frame (server to client) with code
// and reason (at most 123 bytes).
func CloseFrame(code closecode.Code, reason string) []byte {
	f := []byte{0x88, byte(2 + len(reason)), 0, 0}
	binary.BigEndian.PutUint16(f[2:], uint16(code))
	return append(f, reason...)
}

// textHeader returns the header of an unmasked, final text frame of n
// bytes, its length in the shortest form (RFC 6455 §5.2).
func textHeader(n int) []byte {
	switch {
	case n < 126:
		return []byte{0x81, byte(n)}
	case n < 1<<16:
		return binary.BigEndian.AppendUint16([]byte{0x81, 126}, uint16(n))
	default:
		return binary.BigEndian.AppendUint64([]byte{0x81, 127}, uint64(n))
	}
}

// readFrame reads one frame from the client (masked, so the payload
// length is what follows the mask key) and returns its opcode.
func readFrame(br *bufio.Reader) (opcode byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		return 0, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return 0, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		n += 4 // mask key
	}
	if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
		return 0, err
	}
	return h[0] & 0x0F, nil
}

// awaitClose reads the client's frames until its Close frame (the answer
// to the server's), for at most a few seconds; the caller then closes the
// TCP connection first, as a server does (RFC 6455 §7.1.1).
func awaitClose(c net.Conn, br *bufio.Reader) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		op, err := readFrame(br)
		if err != nil || op == 0x8 {
			return
		}
	}
}

// Refuser upgrades every client and closes at once with code and reason,
// the way an overloaded server refuses with 1013. With sameWrite the Close
// frame goes out in the same write as the 101 response (the client reads
// both at once and its Dial fails with the server's close); without, it
// goes out only once the client's first frame arrived, so the client's
// Dial has returned a connection and its first Read gets the close. It
// returns the ws:// URL.
func Refuser(t testing.TB, sameWrite bool, code closecode.Code, reason string) string {
	t.Helper()
	return "ws://" + serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		resp, ok := upgrade(br)
		if !ok {
			return
		}
		frame := CloseFrame(code, reason)
		if sameWrite {
			c.Write(append(resp, frame...))
		} else {
			if _, err := c.Write(resp); err != nil {
				return
			}
			op, err := readFrame(br) // the client's first frame
			if err != nil {
				return
			}
			c.Write(frame)
			if op == 0x8 {
				return // the client closed first: that was its Close
			}
		}
		awaitClose(c, br)
	}) + "/"
}

// Silent accepts TCP connections and never answers: the client's upgrade
// request waits forever. It returns the ws:// URL.
func Silent(t testing.TB) string {
	t.Helper()
	return "ws://" + serve(t, func(c net.Conn) {
		io.Copy(io.Discard, c) // until the client or the test ends
	}) + "/"
}

// Flood is a server that sends Count text messages of Size bytes each
// (ASCII, so that checking and printing them costs little) to every
// client, as fast as TCP lets it, from one reused buffer (its own memory
// stays at Size), then closes with 1000.
type Flood struct {
	// URL is the server's ws:// URL.
	URL string
	// Count and Size are the number of messages and the size of each.
	Count, Size int

	sent atomic.Int64
}

// Sent returns how many whole messages the server has written so far.
func (f *Flood) Sent() int { return int(f.sent.Load()) }

// NewFlood starts a Flood server.
func NewFlood(t testing.TB, count, size int) *Flood {
	t.Helper()
	f := &Flood{Count: count, Size: size}
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	hdr := textHeader(size)
	f.URL = "ws://" + serve(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		resp, ok := upgrade(br)
		if !ok {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
		for range count {
			if _, err := c.Write(hdr); err != nil {
				return
			}
			if _, err := c.Write(payload); err != nil {
				return
			}
			f.sent.Add(1)
		}
		c.Write(CloseFrame(closecode.NormalClosure, "done"))
		awaitClose(c, br)
	}) + "/"
	return f
}

// Refused returns a ws:// URL whose port refuses connections: a listener's
// address, closed again.
func Refused(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "ws://" + ln.Addr().String() + "/"
	ln.Close()
	return u
}
