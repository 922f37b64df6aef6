package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// Roles, named after what the peer plays.
const (
	peerClient = "client" // the peer dials ebb's server (websocket.Accept)
	peerServer = "server" // ebb's client (websocket.Dial) dials the peer
)

// testTimeout bounds the Go side of one scenario.
const testTimeout = 60 * time.Second

// heavy limits how many big-message scenarios run at once, so that the
// 16 MiB echoes under -race stay within memory and CPU on a 2-core machine.
var heavy = make(chan struct{}, 2)

// forEachPeer runs fn as a parallel subtest for every peer in both roles.
func forEachPeer(t *testing.T, fn func(t *testing.T, p *peer, role string)) {
	t.Helper()
	for _, pp := range peers {
		for _, role := range []string{peerClient, peerServer} {
			t.Run(pp.name+"-"+role, func(t *testing.T) {
				t.Parallel()
				fn(t, requirePeer(t, pp.name), role)
			})
		}
	}
}

// ebbServer serves one WebSocket connection with ebb's Accept and runs h on
// it; the returned channel receives h's result (or Accept's error).
func ebbServer(t *testing.T, opts *websocket.AcceptOptions, h func(ctx context.Context, c *websocket.Conn) error) (string, <-chan error) {
	t.Helper()
	res := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			res <- fmt.Errorf("accept: %w", err)
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		res <- h(ctx, c)
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/interop", res
}

// serverResult waits for the ebb server's handler.
func serverResult(t *testing.T, res <-chan error) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(testTimeout):
		t.Fatal("interop: ebb's server handler did not finish")
		return nil
	}
}

// ebbDial connects ebb's client to a peer server on port.
func ebbDial(t *testing.T, ctx context.Context, port int, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws://127.0.0.1:"+strconv.Itoa(port)+"/interop", opts)
	if err != nil {
		t.Fatalf("interop: ebb's client could not connect to the peer: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// ebbDialThenRead dials the peer and reads until the connection ends. A
// peer whose Close frame arrives with its 101 response makes Dial itself
// return the *CloseError (see websocket.Dial); c is nil then.
func ebbDialThenRead(t *testing.T, ctx context.Context, port int) (c *websocket.Conn, err error) {
	t.Helper()
	c, _, err = websocket.Dial(ctx, "ws://127.0.0.1:"+strconv.Itoa(port)+"/interop", nil)
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return nil, err
	}
	if err != nil {
		t.Fatalf("interop: ebb's client could not connect to the peer: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	_, _, err = c.Read(ctx)
	return c, err
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// closeErr extracts the *CloseError ending a read, or fails.
func closeErr(t *testing.T, err error) *websocket.CloseError {
	t.Helper()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("interop: want the connection to end with a *websocket.CloseError, got %v", err)
	}
	return ce
}

func msgType(typ string) websocket.MessageType {
	if typ == "binary" {
		return websocket.MessageBinary
	}
	return websocket.MessageText
}

func typeName(typ websocket.MessageType) string {
	if typ == websocket.MessageBinary {
		return "binary"
	}
	return "text"
}

// writeMsg sends p whole, or through a Writer in chunks of frag bytes.
func writeMsg(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, p []byte, frag int) error {
	if frag <= 0 {
		return c.Write(ctx, typ, p)
	}
	w, err := c.Writer(ctx, typ)
	if err != nil {
		return err
	}
	for off := 0; off < len(p); off += frag {
		if _, err := w.Write(p[off:min(off+frag, len(p))]); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

// echo reads messages until the connection ends, checks that each is one
// of the deterministic payloads and sends it back. It returns the error
// that ended the connection.
func echo(frag int) func(ctx context.Context, c *websocket.Conn) error {
	return func(ctx context.Context, c *websocket.Conn) error {
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return err
			}
			if want := payload(typeName(typ), len(p)); !bytes.Equal(p, want) {
				return fmt.Errorf("ebb received a %s message of %d bytes that differs from the payload sent", typ, len(p))
			}
			if err := writeMsg(ctx, c, typ, p, frag); err != nil {
				return err
			}
		}
	}
}

// wantNormalEnd checks that an ebb-side read ended with the peer's 1000.
func wantNormalEnd(t *testing.T, err error) {
	t.Helper()
	ce := closeErr(t, err)
	if ce.Code != closecode.NormalClosure {
		t.Errorf("interop: ebb saw the connection end with %v, want 1000 from the peer", ce)
	}
}

// wantClosed checks the peer's "closed" event.
func wantClosed(t *testing.T, evs []event, code int, reason string) {
	t.Helper()
	ev := one(t, evs, "closed")
	if ev.Code != code || ev.Reason != reason {
		t.Errorf("interop: peer saw close %d %q, want %d %q", ev.Code, ev.Reason, code, reason)
	}
}

// wantMessages checks the peer's message reports against the payloads.
func wantMessages(t *testing.T, evs []event, typ string, sizes []int) {
	t.Helper()
	got := find(evs, "message")
	if len(got) != len(sizes) {
		t.Fatalf("interop: peer reported %d messages, want %d; events: %+v", len(got), len(sizes), evs)
	}
	for i, ev := range got {
		if ev.Type != typ || ev.Size != sizes[i] || ev.SHA256 != sum(payload(typ, sizes[i])) {
			t.Errorf("interop: message %d: peer saw %s %d B sha256 %s, want %s %d B sha256 %s",
				i, ev.Type, ev.Size, ev.SHA256, typ, sizes[i], sum(payload(typ, sizes[i])))
		}
	}
}

// echoSizes covers every frame-length encoding (7-bit, 16-bit, 64-bit) and
// their edges, up to 16 MiB.
var echoSizes = []int{0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20, 16 << 20}

// fragSize picks the fragment size for a fragmented message: several
// frames per message, at most 64 KiB each.
func fragSize(size int) int { return min(64<<10, size/7+1) }

func TestEcho(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"text", "binary"} {
		for _, fragmented := range []bool{false, true} {
			how := "whole"
			if fragmented {
				how = "fragmented"
			}
			t.Run(typ+"-"+how, func(t *testing.T) {
				t.Parallel()
				forEachPeer(t, func(t *testing.T, p *peer, role string) {
					record(t, p, role, fmt.Sprintf("echo %s, %s, 0 B–16 MiB", typ, how))
					heavy <- struct{}{}
					defer func() { <-heavy }()
					testEcho(t, p, role, typ, fragmented)
				})
			})
		}
	}
}

func testEcho(t *testing.T, p *peer, role, typ string, fragmented bool) {
	var steps []step
	for _, n := range echoSizes {
		s := step{Op: "send", Type: typ, Size: n}
		if fragmented {
			s.Fragment = fragSize(n)
		}
		steps = append(steps, s, step{Op: "expect"})
	}
	steps = append(steps, step{Op: "close", Code: 1000})

	switch role {
	case peerClient:
		frag := 0
		if fragmented {
			frag = 16 << 10
		}
		url, res := ebbServer(t, nil, echo(frag))
		evs := p.start(t, peerClient, scenario{URL: url, Steps: steps}).wait()
		noErrors(t, evs)
		wantMessages(t, evs, typ, echoSizes)
		wantClosed(t, evs, 1000, "")
		wantNormalEnd(t, serverResult(t, res))

	case peerServer:
		pp := p.start(t, peerServer, scenario{})
		ctx := testCtx(t)
		c := ebbDial(t, ctx, pp.listening(), nil)
		for _, n := range echoSizes {
			want := payload(typ, n)
			frag := 0
			if fragmented {
				frag = fragSize(n)
			}
			if err := writeMsg(ctx, c, msgType(typ), want, frag); err != nil {
				t.Fatalf("interop: ebb could not send %d B: %v", n, err)
			}
			gotType, got, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("interop: ebb got no echo of %d B: %v", n, err)
			}
			if gotType != msgType(typ) || !bytes.Equal(got, want) {
				t.Fatalf("interop: echo of %s %d B came back as %s %d B with different content", typ, n, gotType, len(got))
			}
		}
		if err := c.Close(closecode.NormalClosure, ""); err != nil {
			t.Errorf("interop: ebb's Close: %v", err)
		}
		evs := pp.wait()
		noErrors(t, evs)
		wantMessages(t, evs, typ, echoSizes)
		wantClosed(t, evs, 1000, "")
	}
}

func TestPingPong(t *testing.T) {
	t.Parallel()
	const hello = "hello from the peer"
	forEachPeer(t, func(t *testing.T, p *peer, role string) {
		record(t, p, role, "ping/pong both ways")
		after := payload("text", 7) // sent by ebb once its own ping was answered
		switch role {
		case peerClient:
			url, res := ebbServer(t, nil, func(ctx context.Context, c *websocket.Conn) error {
				// A pong is read by whoever reads: keep a reader running.
				readErr := make(chan error, 1)
				go func() {
					for {
						if _, _, err := c.Read(ctx); err != nil {
							readErr <- err
							return
						}
					}
				}()
				if err := c.Ping(ctx); err != nil {
					return fmt.Errorf("ebb's ping was not answered: %w", err)
				}
				if err := c.Write(ctx, websocket.MessageText, after); err != nil {
					return err
				}
				return <-readErr
			})
			evs := p.start(t, peerClient, scenario{URL: url, Steps: []step{
				{Op: "ping", Data: hello}, {Op: "expect"}, {Op: "close", Code: 1000},
			}}).wait()
			noErrors(t, evs)
			if ev := one(t, evs, "pong"); ev.Data != hello {
				t.Errorf("interop: peer's pong carried %q, want %q", ev.Data, hello)
			}
			wantMessages(t, evs, "text", []int{len(after)})
			wantNormalEnd(t, serverResult(t, res))

		case peerServer:
			pp := p.start(t, peerServer, scenario{Steps: []step{
				{Op: "ping", Data: hello}, {Op: "send", Type: "text", Size: len(after)}, {Op: "wait_close"},
			}})
			ctx := testCtx(t)
			c := ebbDial(t, ctx, pp.listening(), nil)
			msgs := make(chan []byte, 1)
			readErr := make(chan error, 1)
			go func() {
				for {
					_, m, err := c.Read(ctx)
					if err != nil {
						readErr <- err
						return
					}
					msgs <- m
				}
			}()
			if err := c.Ping(ctx); err != nil {
				t.Errorf("interop: ebb's ping was not answered: %v", err)
			}
			select {
			case m := <-msgs:
				if !bytes.Equal(m, after) {
					t.Errorf("interop: ebb received %q after the peer's ping, want %q", m, after)
				}
			case err := <-readErr:
				t.Fatalf("interop: connection ended before the peer's message: %v", err)
			}
			if err := c.Close(closecode.NormalClosure, ""); err != nil {
				t.Errorf("interop: ebb's Close: %v", err)
			}
			<-readErr
			evs := pp.wait()
			noErrors(t, evs)
			if ev := one(t, evs, "pong"); ev.Data != hello {
				t.Errorf("interop: peer's pong carried %q, want %q", ev.Data, hello)
			}
			wantClosed(t, evs, 1000, "")
		}
	})
}

func TestSubprotocol(t *testing.T) {
	t.Parallel()
	server := []string{"v3.ebb", "v1.ebb"}
	cases := []struct {
		name    string
		offered []string
		want    string
	}{
		{name: "common", offered: []string{"v2.ebb", "v1.ebb"}, want: "v1.ebb"},
		{name: "none in common", offered: []string{"v9.ebb"}, want: ""},
	}
	forEachPeer(t, func(t *testing.T, p *peer, role string) {
		record(t, p, role, "subprotocol selection")
		for _, tc := range cases {
			switch role {
			case peerClient:
				url, res := ebbServer(t, &websocket.AcceptOptions{Subprotocols: server}, func(ctx context.Context, c *websocket.Conn) error {
					if got := c.Subprotocol(); got != tc.want {
						c.Close(closecode.PolicyViolation, "wrong subprotocol")
						return fmt.Errorf("%s: ebb's server selected %q, want %q", tc.name, got, tc.want)
					}
					return echo(0)(ctx, c)
				})
				pp := p.start(t, peerClient, scenario{URL: url, Subprotocols: tc.offered, Steps: []step{
					{Op: "send", Type: "text", Size: 3}, {Op: "expect"}, {Op: "close", Code: 1000},
				}})
				if p.name == "node" && tc.want == "" {
					// ws fails the connection itself when it offered
					// subprotocols and the server chose none (RFC 6455
					// §4.1 allows it); ebb's server then sees the drop.
					evs, err := pp.waitExit()
					if ev := one(t, evs, "handshake_error"); err == nil || !strings.Contains(ev.Error, "no subprotocol") {
						t.Errorf("%s: want ws to refuse a response without subprotocol, got %+v (exit %v)", tc.name, ev, err)
					}
					if ce := closeErr(t, serverResult(t, res)); ce.Code != closecode.AbnormalClosure {
						t.Errorf("%s: ebb's server saw %v, want the connection dropped (1006)", tc.name, ce)
					}
					continue
				}
				evs := pp.wait()
				noErrors(t, evs)
				if got := one(t, evs, "open").Subprotocol; got != tc.want {
					t.Errorf("%s: peer client got subprotocol %q, want %q", tc.name, got, tc.want)
				}
				wantMessages(t, evs, "text", []int{3})
				wantNormalEnd(t, serverResult(t, res))

			case peerServer:
				pp := p.start(t, peerServer, scenario{Subprotocols: server, Steps: []step{{Op: "wait_close"}}})
				ctx := testCtx(t)
				c := ebbDial(t, ctx, pp.listening(), &websocket.DialOptions{Subprotocols: tc.offered})
				if got := c.Subprotocol(); got != tc.want {
					t.Errorf("%s: ebb's client got subprotocol %q, want %q", tc.name, got, tc.want)
				}
				if err := c.Close(closecode.NormalClosure, ""); err != nil {
					t.Errorf("interop: ebb's Close: %v", err)
				}
				evs := pp.wait()
				noErrors(t, evs)
				if got := one(t, evs, "open").Subprotocol; got != tc.want {
					t.Errorf("%s: peer server selected %q, want %q", tc.name, got, tc.want)
				}
			}
		}
	})
}

// closeCases are the codes the interop matrix closes with, in both
// directions, each with a reason; 1013 carries a retry hint.
var closeCases = []struct {
	code   closecode.Code
	reason string
}{
	{1000, "done"},
	{1001, "going away"},
	{1008, "policy: token expired"},
	{1011, "internal error"},
	{1012, "restarting"},
	{1013, closecode.FormatRetryHint("server at capacity", 2500*time.Millisecond)},
	{1014, "upstream failed"},
	{3000, "unauthorized"},
	{4000, "app: bye \u20ac"},
}

func TestCloseCodes(t *testing.T) {
	t.Parallel()
	for _, cc := range closeCases {
		feature := fmt.Sprintf("close %d both ways", cc.code)
		if cc.code == closecode.TryAgainLater {
			feature = "close 1013 + retry-after both ways"
		}
		t.Run(strconv.Itoa(int(cc.code)), func(t *testing.T) {
			t.Parallel()
			forEachPeer(t, func(t *testing.T, p *peer, role string) {
				record(t, p, role, feature)
				t.Run("ebb closes", func(t *testing.T) { testEbbCloses(t, p, role, cc.code, cc.reason) })
				t.Run("peer closes", func(t *testing.T) { testPeerCloses(t, p, role, cc.code, cc.reason) })
			})
		})
	}
}

// wantHint checks that a 1013 reason still carries its hint after the trip.
func wantHint(t *testing.T, code closecode.Code, reason string) {
	t.Helper()
	if code != closecode.TryAgainLater {
		return
	}
	d, ok := closecode.ParseRetryHint(reason)
	if !ok || d != 2500*time.Millisecond {
		t.Errorf("interop: retry hint in %q = %v, %v; want 2.5s", reason, d, ok)
	}
}

func testEbbCloses(t *testing.T, p *peer, role string, code closecode.Code, reason string) {
	wait := []step{{Op: "wait_close"}}
	var c *websocket.Conn
	var evs []event
	switch role {
	case peerClient:
		url, res := ebbServer(t, nil, func(ctx context.Context, sc *websocket.Conn) error {
			c = sc
			return sc.Close(code, reason)
		})
		evs = p.start(t, peerClient, scenario{URL: url, Steps: wait}).wait()
		if err := serverResult(t, res); err != nil {
			t.Errorf("interop: ebb's server Close(%d): %v", code, err)
		}
	case peerServer:
		pp := p.start(t, peerServer, scenario{Steps: wait})
		c = ebbDial(t, testCtx(t), pp.listening(), nil)
		if err := c.Close(code, reason); err != nil {
			t.Errorf("interop: ebb's client Close(%d): %v", code, err)
		}
		evs = pp.wait()
	}
	noErrors(t, evs)
	wantClosed(t, evs, int(code), reason)
	wantHint(t, code, one(t, evs, "closed").Reason)
	if c == nil {
		return
	}
	if got := c.CloseReceived(); got == nil || got.Code != code {
		t.Errorf("interop: ebb received %v in answer to its close %d, want the same code echoed", got, code)
	}
}

func testPeerCloses(t *testing.T, p *peer, role string, code closecode.Code, reason string) {
	closeStep := []step{{Op: "close", Code: int(code), Reason: reason}}
	var err error
	var evs []event
	switch role {
	case peerClient:
		url, res := ebbServer(t, nil, echo(0))
		evs = p.start(t, peerClient, scenario{URL: url, Steps: closeStep}).wait()
		err = serverResult(t, res)
	case peerServer:
		pp := p.start(t, peerServer, scenario{Steps: closeStep})
		_, err = ebbDialThenRead(t, testCtx(t), pp.listening())
		evs = pp.wait()
	}
	noErrors(t, evs)
	ce := closeErr(t, err)
	if ce.Code != code || ce.Reason != reason || !ce.Remote {
		t.Errorf("interop: ebb saw %+v, want code %d reason %q from the peer", ce, code, reason)
	}
	wantHint(t, ce.Code, ce.Reason)
	// ebb answers with the code it received (RFC 6455 §5.5.1).
	if got := one(t, evs, "closed"); got.Code != int(code) {
		t.Errorf("interop: peer got close %d in answer to its %d, want the same code echoed", got.Code, code)
	}
}

// invalidCodes may not appear on the wire; a receiver answers 1002. One of
// each kind: below 1000, reserved, local-only, unassigned, above 4999.
var invalidCodes = []int{999, 1004, 1005, 1006, 1015, 2999, 5000}

func TestInvalidCloseCode(t *testing.T) {
	t.Parallel()
	forEachPeer(t, func(t *testing.T, p *peer, role string) {
		record(t, p, role, "invalid close code answered with 1002")
		for _, code := range invalidCodes {
			t.Run(strconv.Itoa(code), func(t *testing.T) {
				raw := []step{{Op: "raw_close", Code: code, Reason: "invalid"}}
				var c *websocket.Conn
				var err error
				var evs []event
				switch role {
				case peerClient:
					url, res := ebbServer(t, nil, func(ctx context.Context, sc *websocket.Conn) error {
						c = sc
						return echo(0)(ctx, sc)
					})
					evs = p.start(t, peerClient, scenario{URL: url, Steps: raw}).wait()
					err = serverResult(t, res)
				case peerServer:
					pp := p.start(t, peerServer, scenario{Steps: raw})
					c, err = ebbDialThenRead(t, testCtx(t), pp.listening())
					evs = pp.wait()
				}
				ce := closeErr(t, err)
				if ce.Code != closecode.ProtocolError {
					t.Errorf("interop: ebb ended with %v after receiving close code %d, want 1002", ce, code)
				}
				// When Dial met the bad Close frame with the 101 response, it
				// answered with 1002 itself and ce is that local close.
				if c == nil && ce.Remote {
					t.Errorf("interop: ebb's dial ended with the peer's %v, want its own 1002", ce)
				}
				if c != nil {
					if sent := c.CloseSent(); sent == nil || sent.Code != closecode.ProtocolError {
						t.Errorf("interop: ebb sent %v after receiving close code %d, want 1002", sent, code)
					}
				}
				if got := one(t, evs, "closed"); got.Code != int(closecode.ProtocolError) {
					t.Errorf("interop: peer saw close %d after sending code %d, want 1002", got.Code, code)
				}
			})
		}
	})
}

func TestMandatoryExtension(t *testing.T) {
	t.Parallel()
	const ext = "permessage-deflate"
	forEachPeer(t, func(t *testing.T, p *peer, role string) {
		record(t, p, role, "1010 when permessage-deflate is required but refused")
		switch role {
		case peerClient:
			// The peer requires compression; ebb's server has it off.
			url, res := ebbServer(t, nil, echo(0))
			evs := p.start(t, peerClient, scenario{URL: url, Compression: &deflate{}, Require: []string{ext}}).wait()
			noErrors(t, evs)
			one(t, evs, "required_missing")
			ce := closeErr(t, serverResult(t, res))
			if ce.Code != closecode.MandatoryExtension || !ce.Remote || !strings.Contains(ce.Reason, ext) {
				t.Errorf("interop: ebb's server saw %+v, want 1010 from the client naming %s", ce, ext)
			}

		case peerServer:
			// ebb's client requires compression; the peer server has it off.
			pp := p.start(t, peerServer, scenario{Steps: []step{{Op: "wait_close"}}})
			ctx := testCtx(t)
			c, _, err := websocket.Dial(ctx, "ws://127.0.0.1:"+strconv.Itoa(pp.listening())+"/", &websocket.DialOptions{
				Compression: &websocket.CompressionOptions{},
				Require:     []websocket.Requirement{{Extension: ext}},
			})
			if c != nil {
				c.CloseNow()
				t.Fatal("interop: Dial succeeded although the server refused a required extension")
			}
			var me *websocket.MandatoryExtensionError
			if !errors.As(err, &me) {
				t.Fatalf("interop: Dial returned %v, want a *websocket.MandatoryExtensionError", err)
			}
			if len(me.Missing) != 1 || !strings.HasPrefix(me.Missing[0], ext) || !strings.Contains(me.Offered, ext) || strings.Contains(me.Answered, ext) {
				t.Errorf("interop: MandatoryExtensionError = %+v, want %s offered, missing and not answered", me, ext)
			}
			evs := pp.wait()
			noErrors(t, evs)
			ev := one(t, evs, "closed")
			if ev.Code != int(closecode.MandatoryExtension) || !strings.Contains(ev.Reason, ext) {
				t.Errorf("interop: peer server saw close %d %q, want 1010 with a reason naming %s", ev.Code, ev.Reason, ext)
			}
		}
	})
}

// deflateCases are the permessage-deflate parameters each peer is set up
// with: what a peer client offers, or what a peer server answers.
var deflateCases = []struct {
	feature string
	params  deflate
}{
	{"permessage-deflate, peer's defaults", deflate{}},
	{"permessage-deflate, no context takeover", deflate{ServerNoContextTakeover: true, ClientNoContextTakeover: true}},
	{"permessage-deflate, max window bits 10", deflate{ServerMaxWindowBits: 10, ClientMaxWindowBits: 10}},
	{"permessage-deflate, no takeover + window bits 9", deflate{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ServerMaxWindowBits: 9, ClientMaxWindowBits: 9}},
}

// deflateMessages exercise compression: an empty message, the same text
// three times (context takeover makes the repeats tiny), large and
// fragmented messages of both types.
var deflateMessages = []step{
	{Op: "send", Type: "text", Size: 0},
	{Op: "send", Type: "text", Size: 4096},
	{Op: "send", Type: "text", Size: 4096},
	{Op: "send", Type: "text", Size: 4096},
	{Op: "send", Type: "text", Size: 100_000, Fragment: 7000},
	{Op: "send", Type: "binary", Size: 1 << 20},
	{Op: "send", Type: "binary", Size: 65536, Fragment: 10_000},
}

// extParams splits a negotiated Sec-WebSocket-Extensions value into the
// parameters of its permessage-deflate entry, or nil when it has none.
func extParams(header string) map[string]string {
	for _, ext := range strings.Split(header, ",") {
		parts := strings.Split(ext, ";")
		if strings.TrimSpace(parts[0]) != "permessage-deflate" {
			continue
		}
		params := map[string]string{}
		for _, p := range parts[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
			params[k] = strings.Trim(v, `"`)
		}
		return params
	}
	return nil
}

func TestDeflate(t *testing.T) {
	t.Parallel()
	for _, dc := range deflateCases {
		t.Run(strings.TrimPrefix(dc.feature, "permessage-deflate, "), func(t *testing.T) {
			t.Parallel()
			forEachPeer(t, func(t *testing.T, p *peer, role string) {
				record(t, p, role, dc.feature)
				testDeflate(t, p, role, dc.params)
			})
		})
	}
}

func testDeflate(t *testing.T, p *peer, role string, params deflate) {
	var steps []step
	var sizes []int
	var types []string
	for _, s := range deflateMessages {
		steps = append(steps, s, step{Op: "expect"})
		sizes = append(sizes, s.Size)
		types = append(types, s.Type)
	}
	steps = append(steps, step{Op: "close", Code: 1000})

	var negotiated string // as ebb sees it
	var evs []event
	switch role {
	case peerClient:
		url, res := ebbServer(t, &websocket.AcceptOptions{Compression: &websocket.CompressionOptions{}}, func(ctx context.Context, c *websocket.Conn) error {
			negotiated = c.Extensions()
			return echo(0)(ctx, c)
		})
		evs = p.start(t, peerClient, scenario{URL: url, Compression: &params, Steps: steps}).wait()
		wantNormalEnd(t, serverResult(t, res))

	case peerServer:
		pp := p.start(t, peerServer, scenario{Compression: &params})
		ctx := testCtx(t)
		c := ebbDial(t, ctx, pp.listening(), &websocket.DialOptions{
			Compression: &websocket.CompressionOptions{},
			Require:     []websocket.Requirement{{Extension: "permessage-deflate"}},
		})
		negotiated = c.Extensions()
		for _, s := range deflateMessages {
			want := payload(s.Type, s.Size)
			if err := writeMsg(ctx, c, msgType(s.Type), want, s.Fragment); err != nil {
				t.Fatalf("interop: ebb could not send %s %d B: %v", s.Type, s.Size, err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil {
				t.Fatalf("interop: no echo of %s %d B: %v", s.Type, s.Size, err)
			}
			if typ != msgType(s.Type) || !bytes.Equal(got, want) {
				t.Fatalf("interop: echo of %s %d B came back as %s %d B with different content", s.Type, s.Size, typ, len(got))
			}
		}
		if err := c.Close(closecode.NormalClosure, ""); err != nil {
			t.Errorf("interop: ebb's Close: %v", err)
		}
		evs = pp.wait()
	}
	noErrors(t, evs)
	wantClosed(t, evs, 1000, "")

	peerSaw := one(t, evs, "open").Extensions
	if peerSaw != negotiated {
		t.Errorf("interop: ebb negotiated %q but the peer saw %q", negotiated, peerSaw)
	}
	got := extParams(negotiated)
	if got == nil {
		t.Fatalf("interop: permessage-deflate was not negotiated (Sec-WebSocket-Extensions %q)", negotiated)
	}
	if role == peerClient {
		// What RFC 7692 §7.1 obliges a server to answer to this offer.
		if _, ok := got["server_no_context_takeover"]; params.ServerNoContextTakeover && !ok {
			t.Errorf("interop: offer had server_no_context_takeover, answer %q lacks it", negotiated)
		}
		if params.ServerMaxWindowBits != 0 {
			bits, err := strconv.Atoi(got["server_max_window_bits"])
			if err != nil || bits < 8 || bits > params.ServerMaxWindowBits {
				t.Errorf("interop: offer had server_max_window_bits=%d, answer %q must carry a value from 8 to %d", params.ServerMaxWindowBits, negotiated, params.ServerMaxWindowBits)
			}
		}
	}
	msgs := find(evs, "message")
	if len(msgs) != len(sizes) {
		t.Fatalf("interop: peer reported %d messages, want %d", len(msgs), len(sizes))
	}
	for i, ev := range msgs {
		if ev.Type != types[i] || ev.SHA256 != sum(payload(types[i], sizes[i])) {
			t.Errorf("interop: message %d: peer saw %s %d B sha256 %s, want %s %d B", i, ev.Type, ev.Size, ev.SHA256, types[i], sizes[i])
		}
	}
}
