package shed

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/internal/leakcheck"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// upgradeRequest builds a WebSocket upgrade request from remote.
func upgradeRequest(remote string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/ws", nil)
	r.RemoteAddr = remote
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	r.Header.Set("Sec-WebSocket-Version", "13")
	return r
}

func mustNew(t testing.TB, o *Options) *Shedder {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s
}

// fakeCloser records the close it was asked for and, like a real
// connection, ends its handler by closing done.
type fakeCloser struct {
	mu     sync.Mutex
	code   closecode.Code
	reason string
	at     time.Time
	calls  int
	forced bool
	done   chan struct{}
	ignore bool // do not end the handler on Close (a stuck peer)
	once   sync.Once
}

func newFakeCloser() *fakeCloser { return &fakeCloser{done: make(chan struct{})} }

func (f *fakeCloser) Close(code closecode.Code, reason string) error {
	f.mu.Lock()
	f.code, f.reason, f.at = code, reason, time.Now()
	f.calls++
	f.mu.Unlock()
	if !f.ignore {
		f.once.Do(func() { close(f.done) })
	}
	return nil
}

func (f *fakeCloser) CloseNow() error {
	f.mu.Lock()
	f.forced = true
	f.mu.Unlock()
	f.once.Do(func() { close(f.done) })
	return nil
}

func (f *fakeCloser) get() (closecode.Code, string, int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.code, f.reason, f.calls, f.forced
}

// rawClient is a hand-written WebSocket client: it shares no code with
// shed or websocket, so it checks what is really on the wire.
type rawClient struct {
	c  net.Conn
	br *bufio.Reader
}

// dialRaw connects to addr and sends an upgrade request with extra headers.
// It returns the client and the handshake response.
func dialRaw(addr string, header http.Header) (*rawClient, *http.Response, error) {
	return dialRawFrom("", addr, header)
}

// dialRawFrom is dialRaw from the local address local ("" for any). Linux
// routes all of 127.0.0.0/8 to the loopback interface, so 127.0.0.2,
// 127.0.0.3, … are other client addresses for shed's per-address rules.
func dialRawFrom(local, addr string, header http.Header) (*rawClient, *http.Response, error) {
	c, err := dialFrom(local, addr)
	if err != nil {
		return nil, nil, err
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var k [16]byte
	_, _ = rand.Read(k[:])
	key := base64.StdEncoding.EncodeToString(k[:])
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + "\r\n"
	for k, vs := range header {
		for _, v := range vs {
			req += k + ": " + v + "\r\n"
		}
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("reading handshake response: %w", err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), wantAccept(key); got != want {
			c.Close()
			return nil, resp, fmt.Errorf("Sec-WebSocket-Accept is %q, want %q", got, want)
		}
	}
	return &rawClient{c: c, br: br}, resp, nil
}

// dialFrom opens a TCP connection to addr from the local IP local ("" for
// any).
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	return d.Dial("tcp", addr)
}

func sha1Sum(b []byte) []byte {
	s := sha1.Sum(b)
	return s[:]
}

// wsGUID is the fixed string RFC 6455 §1.3 appends to Sec-WebSocket-Key.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wantAccept computes Sec-WebSocket-Accept the slow, obvious way.
func wantAccept(key string) string {
	return base64.StdEncoding.EncodeToString(sha1Sum([]byte(key + wsGUID)))
}

// readFrame reads one unmasked server frame.
func (rc *rawClient) readFrame() (opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(rc.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("server frame is masked")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(rc.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(rc.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes is too big for a test", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(rc.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// writeFrame writes one masked, final client frame.
func (rc *rawClient) writeFrame(opcode byte, payload []byte) error {
	b := []byte{0x80 | opcode}
	switch {
	case len(payload) < 126:
		b = append(b, 0x80|byte(len(payload)))
	case len(payload) <= 0xffff:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(len(payload)))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i%4])
	}
	_, err := rc.c.Write(b)
	return err
}

func (rc *rawClient) writeClose(code closecode.Code, reason string) error {
	p := binary.BigEndian.AppendUint16(nil, uint16(code))
	return rc.writeFrame(0x8, append(p, reason...))
}

// readClose reads frames until a Close frame and returns its code and reason.
func (rc *rawClient) readClose() (closecode.Code, string, error) {
	for {
		op, p, err := rc.readFrame()
		if err != nil {
			return 0, "", err
		}
		if op != 0x8 {
			continue
		}
		if len(p) < 2 {
			return closecode.NoStatusReceived, "", nil
		}
		return closecode.Code(binary.BigEndian.Uint16(p)), string(p[2:]), nil
	}
}

func (rc *rawClient) Close() error { return rc.c.Close() }
