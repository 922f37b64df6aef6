package websocket

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// testPair starts an httptest server, dials it, and returns both ends.
// Everything is closed when the test ends.
func testPair(t *testing.T, ao *AcceptOptions, do *DialOptions) (server, client *Conn) {
	t.Helper()
	srv, conns := acceptingServer(t, ao)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := Dial(ctx, wsURL(srv), do)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { client.CloseNow() })
	server = <-conns
	if server == nil {
		t.Fatal("the server did not accept the connection")
	}
	t.Cleanup(func() { server.CloseNow() })
	return server, client
}

// acceptingServer starts an httptest server whose handler upgrades every
// request with ao and hands the server-side Conn over on the channel; a
// failed Accept is reported and closes the channel.
func acceptingServer(t *testing.T, ao *AcceptOptions) (*httptest.Server, <-chan *Conn) {
	t.Helper()
	conns := make(chan *Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, ao)
		if err != nil {
			t.Errorf("Accept: %v", err)
			close(conns)
			return
		}
		conns <- c
	}))
	t.Cleanup(srv.Close)
	return srv, conns
}

func wsURL(srv *httptest.Server) string { return "ws" + strings.TrimPrefix(srv.URL, "http") }

// rawPeer is a hand-written WebSocket endpoint that can send any bytes, to
// test how a Conn handles frames a correct implementation never sends.
type rawPeer struct {
	t    *testing.T
	nc   net.Conn
	br   *bufio.Reader
	mask bool // set for a client peer
}

// rawClient upgrades a raw TCP connection to the server behind url and
// returns the server-side Conn through the handler.
func rawClient(t *testing.T, ao *AcceptOptions, header string) (*rawPeer, *Conn) {
	t.Helper()
	srv, conns := acceptingServer(t, ao)
	nc, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	req := "GET / HTTP/1.1\r\nHost: " + srv.Listener.Addr().String() + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	p := &rawPeer{t: t, nc: nc, br: br, mask: true}
	c := <-conns
	t.Cleanup(func() {
		nc.Close()
		c.CloseNow()
	})
	return p, c
}

type rawFrame struct {
	fin              bool
	rsv1, rsv2, rsv3 bool
	op               opcode
	payload          []byte
	noMask           bool // send a client frame unmasked
	forceMask        bool // send a server frame masked
	length           int64
	useLength        bool // announce length instead of len(payload)
}

func (p *rawPeer) write(f rawFrame) {
	p.t.Helper()
	h := frameHeader{fin: f.fin, rsv1: f.rsv1, rsv2: f.rsv2, rsv3: f.rsv3, opcode: f.op, length: int64(len(f.payload))}
	if f.useLength {
		h.length = f.length
	}
	h.masked = (p.mask && !f.noMask) || f.forceMask
	pl := append([]byte(nil), f.payload...)
	if h.masked {
		h.key = [4]byte{0x12, 0x34, 0x56, 0x78}
		mask(h.key, 0, pl)
	}
	b := appendFrameHeader(nil, h)
	b = append(b, pl...)
	if _, err := p.nc.Write(b); err != nil {
		p.t.Logf("raw write: %v", err)
	}
}

// readFrame reads one frame from the peer under test.
func (p *rawPeer) readFrame() (frameHeader, []byte, error) {
	p.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := readFrameHeader(p.br)
	if err != nil {
		return h, nil, err
	}
	b := make([]byte, h.length)
	if _, err := io.ReadFull(p.br, b); err != nil {
		return h, nil, err
	}
	if h.masked {
		mask(h.key, 0, b)
	}
	return h, b, nil
}

// readClose reads frames until a Close frame, answers it as a correct peer
// would, and returns its code (1005 for none) and reason.
func (p *rawPeer) readClose() (int, string) {
	p.t.Helper()
	for {
		h, b, err := p.readFrame()
		if err != nil {
			p.t.Fatalf("reading close frame: %v", err)
		}
		if h.opcode != opClose {
			continue
		}
		p.write(rawFrame{fin: true, op: opClose, payload: b[:min(len(b), 2)]})
		if len(b) < 2 {
			return 1005, ""
		}
		return int(binary.BigEndian.Uint16(b)), string(b[2:])
	}
}

func closePayload(code int, reason string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(code))
	return append(b, reason...)
}
