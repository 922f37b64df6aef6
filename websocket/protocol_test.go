package websocket

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// TestServerRejectsBadFrames sends frames that break RFC 6455 to a server
// Conn and checks that it closes with the right code, both on the wire and
// in the error Read returns.
func TestServerRejectsBadFrames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		limit  int64
		frames []rawFrame
		want   closecode.Code
	}{
		{"unmasked client frame", 0, []rawFrame{{fin: true, op: opText, payload: []byte("hi"), noMask: true}}, 1002},
		{"RSV1 without extension", 0, []rawFrame{{fin: true, rsv1: true, op: opText, payload: []byte("hi")}}, 1002},
		{"RSV2 set", 0, []rawFrame{{fin: true, rsv2: true, op: opText, payload: []byte("hi")}}, 1002},
		{"RSV3 set", 0, []rawFrame{{fin: true, rsv3: true, op: opBinary}}, 1002},
		{"RSV on ping", 0, []rawFrame{{fin: true, rsv2: true, op: opPing}}, 1002},
		{"reserved data opcode 3", 0, []rawFrame{{fin: true, op: 3}}, 1002},
		{"reserved data opcode 7", 0, []rawFrame{{fin: true, op: 7}}, 1002},
		{"reserved control opcode B", 0, []rawFrame{{fin: true, op: 0xB}}, 1002},
		{"reserved control opcode F", 0, []rawFrame{{fin: true, op: 0xF, payload: []byte("x")}}, 1002},
		{"fragmented ping", 0, []rawFrame{{fin: false, op: opPing, payload: []byte("x")}}, 1002},
		{"fragmented close", 0, []rawFrame{{fin: false, op: opClose, payload: closePayload(1000, "")}}, 1002},
		{"ping of 126 bytes", 0, []rawFrame{{fin: true, op: opPing, payload: make([]byte, 126)}}, 1002},
		{"continuation without start", 0, []rawFrame{{fin: true, op: opContinuation, payload: []byte("x")}}, 1002},
		{"new message inside fragmented one", 0, []rawFrame{
			{fin: false, op: opText, payload: []byte("a")},
			{fin: true, op: opText, payload: []byte("b")},
		}, 1002},
		{"close payload of 1 byte", 0, []rawFrame{{fin: true, op: opClose, payload: []byte{0x03}}}, 1002},
		{"close code 0", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(0, "")}}, 1002},
		{"close code 999", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(999, "")}}, 1002},
		{"close code 1004", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(1004, "")}}, 1002},
		{"close code 1005", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(1005, "")}}, 1002},
		{"close code 1006", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(1006, "")}}, 1002},
		{"close code 1015", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(1015, "")}}, 1002},
		{"close code 1016", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(1016, "")}}, 1002},
		{"close code 2999", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(2999, "")}}, 1002},
		{"close code 5000", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(5000, "")}}, 1002},
		{"close code 65535", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(65535, "")}}, 1002},
		{"close reason not UTF-8", 0, []rawFrame{{fin: true, op: opClose, payload: closePayload(1000, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")}}, 1007},
		{"text not UTF-8", 0, []rawFrame{{fin: true, op: opText, payload: []byte("a\xffb")}}, 1007},
		{"text surrogate", 0, []rawFrame{{fin: true, op: opText, payload: []byte("\xed\xa0\x80")}}, 1007},
		{"text invalid in first fragment", 0, []rawFrame{
			{fin: false, op: opText, payload: []byte("ok\xf4\x90")},
		}, 1007},
		{"text ends mid sequence", 0, []rawFrame{
			{fin: false, op: opText, payload: []byte("ok\xe2")},
			{fin: true, op: opContinuation, payload: []byte("\x82")},
		}, 1007},
		{"message over read limit", 16, []rawFrame{{fin: true, op: opBinary, payload: make([]byte, 17)}}, 1009},
		{"fragmented message over read limit", 16, []rawFrame{
			{fin: false, op: opBinary, payload: make([]byte, 10)},
			{fin: true, op: opContinuation, payload: make([]byte, 10)},
		}, 1009},
		{"huge announced length", 1024, []rawFrame{{fin: true, op: opBinary, useLength: true, length: 1 << 40}}, 1009},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			peer, c := rawClient(t, &AcceptOptions{ReadLimit: tt.limit}, "")
			peerGot := make(chan int, 1)
			go func() {
				for _, f := range tt.frames {
					peer.write(f)
				}
				code, _ := peer.readClose()
				peerGot <- code
			}()
			_, _, err := c.Read(context.Background())
			var ce *CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("Read error = %v, want *CloseError", err)
			}
			if ce.Code != tt.want || ce.Remote {
				t.Fatalf("Read error = %v (code %d, remote %v), want local close %d", err, ce.Code, ce.Remote, tt.want)
			}
			if code := <-peerGot; code != int(tt.want) {
				t.Fatalf("peer received close code %d, want %d", code, tt.want)
			}
			if sent := c.CloseSent(); sent == nil || sent.Code != tt.want {
				t.Fatalf("CloseSent() = %v, want code %d", sent, tt.want)
			}
		})
	}
}

// TestServerAcceptsValidCloseCodes checks that every code valid on the
// wire, 1012–1014 included, is accepted, echoed and reported.
func TestServerAcceptsValidCloseCodes(t *testing.T) {
	t.Parallel()
	for _, code := range []int{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999} {
		t.Run(closecode.Code(code).String(), func(t *testing.T) {
			t.Parallel()
			peer, c := rawClient(t, nil, "")
			peer.write(rawFrame{fin: true, op: opClose, payload: closePayload(code, "bye; retry-after=2")})
			_, _, err := c.Read(context.Background())
			var ce *CloseError
			if !errors.As(err, &ce) || int(ce.Code) != code || !ce.Remote || ce.Reason != "bye; retry-after=2" {
				t.Fatalf("Read error = %#v, want remote close %d with the reason", err, code)
			}
			if got, _ := peer.readClose(); got != code {
				t.Fatalf("echoed code %d, want %d", got, code)
			}
			if rc := c.CloseReceived(); rc == nil || int(rc.Code) != code {
				t.Fatalf("CloseReceived() = %v", rc)
			}
			// The server closes the TCP connection after the handshake.
			peer.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := peer.br.ReadByte(); err == nil {
				t.Fatal("server kept the connection open after the close handshake")
			}
		})
	}
}

func TestEmptyCloseIsAnsweredEmpty(t *testing.T) {
	t.Parallel()
	peer, c := rawClient(t, nil, "")
	peer.write(rawFrame{fin: true, op: opClose})
	_, _, err := c.Read(context.Background())
	if CloseStatus(err) != closecode.NoStatusReceived {
		t.Fatalf("Read error = %v, want 1005", err)
	}
	if got, _ := peer.readClose(); got != 1005 {
		t.Fatalf("answer code %d, want an empty close (1005)", got)
	}
}

// TestControlFramesInsideFragmentedMessage interleaves pings with the
// fragments of a message: the pings are answered and the message arrives
// whole.
func TestControlFramesInsideFragmentedMessage(t *testing.T) {
	t.Parallel()
	peer, c := rawClient(t, nil, "")
	go func() {
		peer.write(rawFrame{fin: false, op: opText, payload: []byte("Hel")})
		peer.write(rawFrame{fin: true, op: opPing, payload: []byte("p1")})
		peer.write(rawFrame{fin: false, op: opContinuation, payload: []byte("lo, ")})
		peer.write(rawFrame{fin: true, op: opPong, payload: []byte("unsolicited")})
		peer.write(rawFrame{fin: true, op: opPing, payload: []byte("p2")})
		peer.write(rawFrame{fin: true, op: opContinuation, payload: []byte("κόσμε")})
	}()
	typ, p, err := c.Read(context.Background())
	if err != nil || typ != MessageText || string(p) != "Hello, κόσμε" {
		t.Fatalf("Read = %v %q %v", typ, p, err)
	}
	for _, want := range []string{"p1", "p2"} {
		h, b, err := peer.readFrame()
		if err != nil || h.opcode != opPong || string(b) != want {
			t.Fatalf("got %v %q %v, want pong %q", h.opcode, b, err, want)
		}
	}
}

// TestClientRejectsBadServerFrames checks the client side: masked server
// frames and other violations end the connection with 1002.
func TestClientRejectsBadServerFrames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame rawFrame
		want  closecode.Code
	}{
		{"masked server frame", rawFrame{fin: true, op: opText, payload: []byte("hi"), forceMask: true}, 1002},
		{"reserved opcode", rawFrame{fin: true, op: 4}, 1002},
		{"RSV1 without extension", rawFrame{fin: true, rsv1: true, op: opBinary}, 1002},
		{"invalid UTF-8", rawFrame{fin: true, op: opText, payload: []byte{0xC0, 0xAF}}, 1007},
		{"close code 1006", rawFrame{fin: true, op: opClose, payload: closePayload(1006, "")}, 1002},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			peer, c := rawServer(t)
			peerGot := make(chan int, 1)
			go func() {
				peer.write(tt.frame)
				code, _ := peer.readClose()
				peerGot <- code
			}()
			_, _, err := c.Read(context.Background())
			if got := CloseStatus(err); got != tt.want {
				t.Fatalf("Read error = %v, want code %d", err, tt.want)
			}
			if code := <-peerGot; code != int(tt.want) {
				t.Fatalf("server peer received %d, want %d", code, tt.want)
			}
		})
	}
}

// rawServer accepts one connection by hand and dials it with Dial.
func rawServer(t *testing.T) (*rawPeer, *Conn) {
	t.Helper()
	peers := make(chan *rawPeer, 1)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			AcceptKey(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n"
		nc.Write([]byte(resp))
		peers <- &rawPeer{t: t, nc: nc, br: brw.Reader}
		<-done
		nc.Close()
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(done) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := Dial(ctx, wsURL(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return <-peers, c
}

// TestHandshakeRefusals checks Accept's answers to bad upgrade requests.
func TestHandshakeRefusals(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, &AcceptOptions{OriginPatterns: []string{"*.allowed.test"}})
		if err == nil {
			c.CloseNow()
		}
	}))
	t.Cleanup(srv.Close)
	good := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	tests := []struct {
		name    string
		method  string
		headers string
		status  int
		body    string
	}{
		{"plain GET", "GET", "", 426, "Upgrade: websocket"},
		{"POST", "POST", good, 405, "must use GET"},
		{"no Connection upgrade", "GET", strings.Replace(good, "Connection: Upgrade", "Connection: keep-alive", 1), 400, "Connection header"},
		{"old version", "GET", strings.Replace(good, "Version: 13", "Version: 8", 1), 426, "Sec-WebSocket-Version \"8\""},
		{"bad key", "GET", strings.Replace(good, "dGhlIHNhbXBsZSBub25jZQ==", "short", 1), 400, "Sec-WebSocket-Key"},
		{"cross origin", "GET", good + "Origin: https://evil.test\r\n", 403, "not allowed"},
		{"allowed origin", "GET", good + "Origin: https://app.allowed.test\r\n", 101, ""},
		{"same origin", "GET", good + "Origin: http://" + srv.Listener.Addr().String() + "\r\n", 101, ""},
		{"no origin", "GET", good, 101, ""},
		{"tokens in mixed case and lists", "GET", strings.NewReplacer("Upgrade: websocket", "Upgrade: WebSocket", "Connection: Upgrade", "Connection: keep-alive, UPGRADE").Replace(good), 101, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nc, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			req := tt.method + " / HTTP/1.1\r\nHost: " + srv.Listener.Addr().String() + "\r\n" + tt.headers + "\r\n"
			nc.Write([]byte(req))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if tt.body != "" {
				b := make([]byte, 512)
				n, _ := resp.Body.Read(b)
				got := string(b[:n]) + resp.Header.Get("Upgrade")
				if !strings.Contains(got, tt.body) && !strings.Contains(string(b[:n]), tt.body) {
					t.Fatalf("body %q does not mention %q", b[:n], tt.body)
				}
			}
		})
	}
}
