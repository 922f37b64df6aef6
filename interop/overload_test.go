package interop

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// The overload rows of the table: the peer's client against ebb's
// admission control (package shed) and its drain.
const (
	featureOverload = "overload 1013"
	featureDrain    = "drain 1012"
)

// The rows join the end of the table; record refuses names it does not
// know, so they are registered before any test runs.
// overloadWait bounds each wait of the overload tests; every step
// finishes in well under a second on loopback.
const overloadWait = 15 * time.Second

// shedServer serves shedEcho behind a Shedder built from opts and returns
// the Shedder and the ws:// URL. The Shedder is shut down (at once) and
// the server closed when the test ends.
func shedServer(t *testing.T, opts *shed.Options) (*shed.Shedder, string) {
	t.Helper()
	sh, err := shed.New(opts)
	if err != nil {
		t.Fatalf("interop: shed.New: %v", err)
	}
	srv := httptest.NewServer(sh.Handler(nil, shedEcho))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), overloadWait)
		defer cancel()
		if err := sh.Shutdown(ctx); err != nil {
			t.Errorf("interop: shed.Shutdown at cleanup: %v", err)
		}
		srv.Close()
	})
	return sh, "ws" + strings.TrimPrefix(srv.URL, "http") + "/interop"
}

// shedEcho sends every message back until the connection ends.
func shedEcho(ctx context.Context, c *websocket.Conn) {
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return
		}
	}
}

// holdSlot connects ebb's client to u and proves with one echo that the
// server admitted it; the connection is closed when the test ends.
func holdSlot(t *testing.T, u string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), overloadWait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("interop: ebb's client could not take the server's only slot: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if err := c.Write(ctx, websocket.MessageText, []byte("hold")); err != nil {
		t.Fatalf("interop: the slot holder's write failed: %v", err)
	}
	if _, p, err := c.Read(ctx); err != nil || string(p) != "hold" {
		t.Fatalf("interop: the slot holder's echo = %q, %v; want %q: the server did not admit it", p, err, "hold")
	}
	return c
}

// waitEvent waits for the peer's first live event of the given kind.
func waitEvent(t *testing.T, pp *peerProc, kind string) {
	t.Helper()
	timer := time.NewTimer(overloadWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-pp.events:
			if !ok {
				evs, err := pp.waitExit()
				t.Fatalf("interop: peer exited (%v) before reporting %q; events: %+v\nstderr:\n%s", err, kind, evs, pp.stderr.String())
			}
			if ev.Event == kind {
				return
			}
		case <-timer.C:
			t.Fatalf("interop: peer did not report %q within %s\nstderr:\n%s", kind, overloadWait, pp.stderr.String())
		}
	}
}

// TestOverload runs each peer's client against ebb's admission control: a
// full server refuses it with 1013 and a retry-after= hint it can read,
// and a draining server sends it 1012.
func TestOverload(t *testing.T) {
	t.Parallel()
	for _, pp := range peers {
		t.Run(pp.name, func(t *testing.T) {
			t.Parallel()
			p := requirePeer(t, pp.name)
			t.Run("refused with 1013", func(t *testing.T) {
				t.Parallel()
				record(t, p, peerClient, featureOverload)
				testOverloadRefusal(t, p)
			})
			t.Run("drained with 1012", func(t *testing.T) {
				t.Parallel()
				record(t, p, peerClient, featureDrain)
				testDrain(t, p)
			})
		})
	}
}

func testOverloadRefusal(t *testing.T, p *peer) {
	sh, u := shedServer(t, &shed.Options{Limits: shed.Limits{MaxConns: 1}})
	holder := holdSlot(t, u)

	pp := p.start(t, peerClient, scenario{URL: u, Steps: []step{{Op: "wait_close"}}, Timeout: int(overloadWait / time.Second)})
	evs := pp.wait()
	noErrors(t, evs)
	closed := one(t, evs, "closed")
	if closed.Code != int(closecode.TryAgainLater) {
		t.Fatalf("interop: %s client saw close %d %q, want 1013 Try Again Later", p.label, closed.Code, closed.Reason)
	}
	if !strings.Contains(closed.Reason, "retry-after=") {
		t.Errorf("interop: %s client saw 1013 with reason %q, want a retry-after= hint", p.label, closed.Reason)
	}
	if hint, ok := closecode.ParseRetryHint(closed.Reason); !ok || hint <= 0 {
		t.Errorf("interop: the hint in %q parses as %v, %v; want a positive delay", closed.Reason, hint, ok)
	}
	st := sh.Stats()
	if st.Admitted != 1 || st.RefusedTotal != 1 || st.CloseSent[closecode.TryAgainLater] != 1 {
		t.Errorf("interop: shed counted %d admitted, %d refused, %d sent 1013; want 1, 1, 1", st.Admitted, st.RefusedTotal, st.CloseSent[closecode.TryAgainLater])
	}

	// The refusal cost the holder nothing: it still echoes.
	ctx, cancel := context.WithTimeout(context.Background(), overloadWait)
	defer cancel()
	if err := holder.Write(ctx, websocket.MessageText, []byte("still here")); err != nil {
		t.Fatalf("interop: the slot holder's write after the refusal failed: %v", err)
	}
	if _, got, err := holder.Read(ctx); err != nil || string(got) != "still here" {
		t.Errorf("interop: the slot holder's echo after the refusal = %q, %v", got, err)
	}
	if err := holder.Close(closecode.NormalClosure, ""); err != nil {
		t.Errorf("interop: closing the slot holder: %v", err)
	}
}

func testDrain(t *testing.T, p *peer) {
	sh, u := shedServer(t, &shed.Options{DrainWindow: 100 * time.Millisecond})
	pp := p.start(t, peerClient, scenario{URL: u, Steps: []step{{Op: "wait_close"}}, Timeout: int(overloadWait / time.Second)})
	waitEvent(t, pp, "open")

	ctx, cancel := context.WithTimeout(context.Background(), overloadWait)
	defer cancel()
	start := time.Now()
	if err := sh.Shutdown(ctx); err != nil {
		t.Errorf("interop: shed.Shutdown: %v (the peer did not answer the drain close in time)", err)
	}
	took := time.Since(start)

	evs := pp.wait()
	noErrors(t, evs)
	closed := one(t, evs, "closed")
	if closed.Code != int(closecode.ServiceRestart) {
		t.Fatalf("interop: %s client saw close %d %q, want 1012 Service Restart", p.label, closed.Code, closed.Reason)
	}
	if _, ok := closecode.ParseRetryHint(closed.Reason); !ok {
		t.Errorf("interop: drain reason %q carries no retry-after= hint", closed.Reason)
	}
	st := sh.Stats()
	if st.Drained != 1 || st.ForceClosed != 0 {
		t.Errorf("interop: shed counted %d drained and %d force-closed; want 1 and 0", st.Drained, st.ForceClosed)
	}
	if took > overloadWait/2 {
		t.Errorf("interop: Shutdown with a 100ms drain window took %v", took)
	}

	// A draining server refuses newcomers with the drain code too: Dial
	// reports it when the Close frame comes with the 101 response, the
	// first Read otherwise.
	c, _, err := websocket.Dial(ctx, u, nil)
	if c != nil {
		defer c.CloseNow()
		_, _, err = c.Read(ctx)
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != closecode.ServiceRestart {
		t.Errorf("interop: a client of the draining server saw %v, want 1012", err)
	}
}
