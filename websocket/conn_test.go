package websocket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

func TestEchoSizes(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	go echo(server)
	ctx := context.Background()
	for _, n := range []int{0, 1, 125, 126, 127, 2047, 2048, 2049, 65535, 65536, 65537, 1 << 20, 4 << 20} {
		for _, typ := range []MessageType{MessageText, MessageBinary} {
			msg := bytes.Repeat([]byte("ab"), n/2+1)[:n]
			if err := client.Write(ctx, typ, msg); err != nil {
				t.Fatalf("Write %d: %v", n, err)
			}
			gotTyp, got, err := client.Read(ctx)
			if err != nil || gotTyp != typ || !bytes.Equal(got, msg) {
				t.Fatalf("echo of %d %s bytes: got %s of %d bytes, err %v", n, typ, gotTyp, len(got), err)
			}
		}
	}
	if err := client.Close(closecode.NormalClosure, "done"); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// echo sends back every message, streaming it, until the connection ends.
func echo(c *Conn) error {
	ctx := context.Background()
	for {
		typ, r, err := c.Reader(ctx)
		if err != nil {
			return err
		}
		w, err := c.Writer(ctx, typ)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, r); err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
}

func TestStreamingWriterFragments(t *testing.T) {
	t.Parallel()
	peer, c := rawClient(t, nil, "")
	_ = peer
	ctx := context.Background()
	w, err := c.Writer(ctx, MessageText)
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", writerFrameSize+10)
	io.WriteString(w, big)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var ops []opcode
	var total int
	for {
		h, b, err := peer.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, h.opcode)
		total += len(b)
		if h.masked {
			t.Fatal("server frame is masked")
		}
		if h.fin {
			break
		}
	}
	if len(ops) != 2 || ops[0] != opText || ops[1] != opContinuation || total != len(big) {
		t.Fatalf("frames %v with %d bytes, want text+continuation with %d", ops, total, len(big))
	}
}

// TestConcurrentWriters has many goroutines write at once; every message
// must arrive intact (the most reported bug in other libraries).
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				msg := fmt.Sprintf("%d:%d:%s", w, i, strings.Repeat("z", (w*131+i*17)%5000))
				var err error
				if i%2 == 0 {
					err = client.Write(context.Background(), MessageText, []byte(msg))
				} else {
					var wr io.WriteCloser
					wr, err = client.Writer(context.Background(), MessageText)
					if err == nil {
						io.WriteString(wr, msg[:len(msg)/2])
						io.WriteString(wr, msg[len(msg)/2:])
						err = wr.Close()
					}
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		})
	}
	go func() {
		// Pings interleave with the fragments of messages.
		for range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			server.Ping(ctx)
			cancel()
		}
	}()
	go func() {
		// The client must read for its Ping answers to be processed.
		for {
			if _, _, err := client.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	seen := map[string]bool{}
	for range writers * each {
		_, p, err := server.Read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var w, i int
		var rest string
		if _, err := fmt.Sscanf(string(p), "%d:%d:%s", &w, &i, &rest); err != nil && len(p) > 0 && !strings.HasSuffix(string(p), ":") {
			t.Fatalf("corrupt message %q", p)
		}
		if want := strings.Repeat("z", (w*131+i*17)%5000); rest != want {
			t.Fatalf("message %d:%d corrupted", w, i)
		}
		seen[fmt.Sprintf("%d:%d", w, i)] = true
	}
	wg.Wait()
	if len(seen) != writers*each {
		t.Fatalf("%d distinct messages, want %d", len(seen), writers*each)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	// The server reads to answer pings; the client reads to see pongs.
	go server.Read(context.Background())
	go client.Read(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 3 {
		if err := client.Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	}
	// Without a reader on the other side the pong never comes.
	_, client2 := testPair(t, nil, nil)
	go client2.Read(context.Background())
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if err := client2.Ping(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping without a peer reader = %v, want deadline exceeded", err)
	}
}

func TestCloseHandshakeFromClient(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	errc := make(chan error, 1)
	go func() {
		_, _, err := server.Read(context.Background())
		errc <- err
	}()
	if err := client.Close(closecode.TryAgainLater, "busy; retry-after=3"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	err := <-errc
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != closecode.TryAgainLater || ce.Reason != "busy; retry-after=3" || !ce.Remote {
		t.Fatalf("server Read = %v, want remote 1013 with reason", err)
	}
	if got := client.CloseReceived(); got == nil || got.Code != closecode.TryAgainLater {
		t.Fatalf("client CloseReceived = %v, want the echoed 1013", got)
	}
	select {
	case <-client.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("client connection not closed after the handshake")
	}
	<-server.Done()
	if client.CloseEchoed() || !server.CloseEchoed() {
		t.Errorf("CloseEchoed: client %v, server %v; want false for the side that closed first, true for the one that echoed", client.CloseEchoed(), server.CloseEchoed())
	}
	// Close again is a no-op; writes fail clearly.
	if err := client.Close(closecode.NormalClosure, ""); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := client.Write(context.Background(), MessageText, []byte("late")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
}

func TestCloseHandshakeWithoutReader(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	errc := make(chan error, 1)
	go func() {
		_, _, err := client.Read(context.Background())
		errc <- err
	}()
	// Nobody reads on the server: Close reads the answer itself.
	if err := server.Close(closecode.ServiceRestart, "deploy; retry-after=1.5"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := CloseStatus(<-errc); got != closecode.ServiceRestart {
		t.Fatalf("client saw %d, want 1012", got)
	}
}

func TestCloseRejectsBadArguments(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	tests := []struct {
		name   string
		c      *Conn
		code   closecode.Code
		reason string
	}{
		{"1005 is local only", client, closecode.NoStatusReceived, ""},
		{"1006 is local only", client, closecode.AbnormalClosure, ""},
		{"unassigned 2000", client, 2000, ""},
		{"server cannot send 1010", server, closecode.MandatoryExtension, ""},
		{"reason too long", client, closecode.NormalClosure, strings.Repeat("r", 124)},
		{"reason not UTF-8", client, closecode.NormalClosure, "\xff"},
	}
	for _, tt := range tests {
		if err := tt.c.Close(tt.code, tt.reason); err == nil {
			t.Errorf("%s: Close succeeded", tt.name)
		}
	}
	if client.CloseSent() != nil || server.CloseSent() != nil {
		t.Fatal("a refused Close sent a frame")
	}
}

func TestCloseNowGives1006(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	client.CloseNow()
	_, _, err := server.Read(context.Background())
	if CloseStatus(err) != closecode.AbnormalClosure {
		t.Fatalf("Read after peer CloseNow = %v, want 1006", err)
	}
}

func TestReadContextCancel(t *testing.T) {
	t.Parallel()
	_, client := testPair(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := client.Read(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Read = %v, want deadline exceeded", err)
	}
	select {
	case <-client.Done():
	case <-time.After(time.Second):
		t.Fatal("connection not closed after an interrupted read")
	}
}

func TestReaderStreamsAndDiscards(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	ctx := context.Background()
	msg := bytes.Repeat([]byte("0123456789"), 10000)
	go func() {
		client.Write(ctx, MessageBinary, msg)
		client.Write(ctx, MessageText, []byte("second"))
	}()
	typ, r, err := server.Reader(ctx)
	if err != nil || typ != MessageBinary {
		t.Fatal(typ, err)
	}
	head := make([]byte, 10)
	if _, err := io.ReadFull(r, head); err != nil || string(head) != "0123456789" {
		t.Fatal(string(head), err)
	}
	// Not finished: the next Read skips the rest.
	typ, p, err := server.Read(ctx)
	if err != nil || typ != MessageText || string(p) != "second" {
		t.Fatalf("Read = %v %q %v", typ, p, err)
	}
	// The old reader is stale now.
	if n, err := r.Read(head); n != 0 || err != io.EOF {
		t.Fatalf("stale reader read %d, %v", n, err)
	}
}

func TestSubprotocolNegotiation(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, &AcceptOptions{Subprotocols: []string{"v2.ebb", "v1.ebb"}}, &DialOptions{Subprotocols: []string{"v1.ebb", "v2.ebb"}})
	if server.Subprotocol() != "v2.ebb" || client.Subprotocol() != "v2.ebb" {
		t.Fatalf("server %q client %q, want v2.ebb (the server's preference)", server.Subprotocol(), client.Subprotocol())
	}
	server, client = testPair(t, &AcceptOptions{Subprotocols: []string{"v3"}}, &DialOptions{Subprotocols: []string{"v1.ebb"}})
	if server.Subprotocol() != "" || client.Subprotocol() != "" {
		t.Fatal("a subprotocol was selected without overlap")
	}
}

func TestDialRefusedReturnsResponse(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "at capacity", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, resp, err := Dial(context.Background(), wsURL(srv), nil)
	var he *HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 503 || he.RetryAfter != 7*time.Second || !strings.Contains(he.Body, "at capacity") {
		t.Fatalf("Dial error = %#v", err)
	}
	if resp == nil || resp.StatusCode != 503 {
		t.Fatalf("response = %v, want the 503", resp)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "at capacity") {
		t.Fatalf("body %q", b)
	}
}

func TestDialBadURLs(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"ftp://x", "ws://", "://", "ws://127.0.0.1:1/"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, _, err := Dial(ctx, u, nil); err == nil || !strings.HasPrefix(err.Error(), "websocket: ") {
			t.Errorf("Dial(%q) = %v, want a websocket: error", u, err)
		}
		cancel()
	}
	_, _, err := Dial(context.Background(), "ws://127.0.0.1:1/", &DialOptions{Header: http.Header{"Sec-Websocket-Key": {"x"}}})
	if err == nil || !strings.Contains(err.Error(), "may not set") {
		t.Fatalf("Dial with a handshake header = %v", err)
	}
}

func TestDialChecksAcceptKey(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nc, _, _ := http.NewResponseController(w).Hijack()
		defer nc.Close()
		nc.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n"))
	}))
	defer srv.Close()
	_, _, err := Dial(context.Background(), wsURL(srv), nil)
	if err == nil || !strings.Contains(err.Error(), "Sec-WebSocket-Accept") {
		t.Fatalf("Dial = %v, want an accept-key error", err)
	}
}

func TestReadLimitOnConn(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	server.SetReadLimit(1000)
	go client.Write(context.Background(), MessageBinary, make([]byte, 1001))
	_, _, err := server.Read(context.Background())
	if CloseStatus(err) != closecode.MessageTooBig {
		t.Fatalf("Read = %v, want 1009", err)
	}
	_, _, err = client.Read(context.Background())
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != closecode.MessageTooBig || !ce.Remote {
		t.Fatalf("client Read = %v, want remote 1009", err)
	}
}

func TestRandomFragmentationRoundTrip(t *testing.T) {
	t.Parallel()
	peer, c := rawClient(t, nil, "")
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		msg := make([]byte, r.IntN(3000))
		for i := range msg {
			msg[i] = byte('a' + r.IntN(26))
		}
		cuts := make([]int, 64)
		for i := range cuts {
			cuts[i] = r.IntN(400)
		}
		go func() {
			rest := msg
			op := opText
			for i := 0; ; i++ {
				k := min(len(rest), cuts[i%len(cuts)])
				fin := k == len(rest)
				peer.write(rawFrame{fin: fin, op: op, payload: rest[:k]})
				rest = rest[k:]
				op = opContinuation
				if fin {
					return
				}
			}
		}()
		_, got, err := c.Read(context.Background())
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("got %d bytes, %v; want %d", len(got), err, len(msg))
		}
	}
}

func TestHandlerServesAfterReturning(t *testing.T) {
	t.Parallel()
	done := make(chan struct{})
	srv := httptest.NewServer(Handler(nil, func(ctx context.Context, c *Conn) {
		defer close(done)
		echo(c)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := Dial(ctx, wsURL(srv), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(ctx, MessageText, []byte("still served"))
	if _, p, err := c.Read(ctx); err != nil || string(p) != "still served" {
		t.Fatal(string(p), err)
	}
	c.Close(closecode.NormalClosure, "")
	<-done
}

// TestCloseWhileReaderIsBetweenReads: Close is called while the reading
// goroutine is between two Reads; its next Read must still read the
// peer's answer, so Close returns at once instead of timing out.
func TestCloseWhileReaderIsBetweenReads(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	go echo(server)
	ctx := context.Background()
	readErr := make(chan error, 1)
	gate := make(chan struct{})
	go func() {
		<-gate // Close runs before this Read starts.
		for {
			if _, _, err := client.Read(ctx); err != nil {
				readErr <- err
				return
			}
		}
	}()
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- client.Close(closecode.GoingAway, "leaving") }()
	time.Sleep(20 * time.Millisecond)
	close(gate)
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v: it waited for an answer nobody read", d)
	}
	if err := <-readErr; CloseStatus(err) != closecode.GoingAway {
		t.Fatalf("reader ended with %v, want the echoed 1001", err)
	}
}

// TestClientCloseIsPrompt: without a reader, a client's Close returns as
// soon as the server has answered and closed TCP.
func TestClientCloseIsPrompt(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	go echo(server)
	start := time.Now()
	if err := client.Close(closecode.NormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("client Close took %v on loopback", d)
	}
}

func TestReadIntoReusesBuffer(t *testing.T) {
	t.Parallel()
	server, client := testPair(t, nil, nil)
	ctx := context.Background()
	go func() {
		client.Write(ctx, MessageBinary, []byte("first"))
		client.Write(ctx, MessageText, []byte("second, longer"))
		w, _ := client.Writer(ctx, MessageText)
		io.WriteString(w, "frag")
		io.WriteString(w, "mented")
		w.Close()
	}()
	buf := make([]byte, 0, 64)
	for _, want := range []string{"first", "second, longer", "fragmented"} {
		_, p, err := server.ReadInto(ctx, buf)
		if err != nil || string(p) != want {
			t.Fatalf("ReadInto = %q, %v; want %q", p, err, want)
		}
		if &p[0] != &buf[:1][0] {
			t.Fatalf("ReadInto(%q) did not reuse the buffer", want)
		}
	}
}
