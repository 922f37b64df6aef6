package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// TestLocalBusRetention: the history keeps its bound for newcomers, a
// subscriber still gets every message it has not read (they are kept for
// it), a subscriber past its byte bound is cut off at once, and what it
// held is let go.
func TestLocalBusRetention(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b := newLocalBus(BroadcastLimits{HistoryMsgs: 5, HistoryBytes: 1 << 20, HistoryAge: time.Hour})
	slow, err := b.subscribe(ctx, 0, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	lagged := make(chan *cluster.LagError, 1)
	stuck, err := b.subscribe(ctx, 0, 350, func(e *cluster.LagError) { lagged <- e })
	if err != nil {
		t.Fatal(err)
	}
	first := b.lastSeq() + 1
	for range 10 {
		if _, err := b.publish(ctx, websocket.MessageBinary, make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	}
	// 400 bytes behind a 350-byte bound: cut off at the fourth message.
	select {
	case e := <-lagged:
		if e.Seq != first || e.Limit != 350 || e.Bytes != 400 {
			t.Fatalf("lag %+v, want at %d, 400 bytes over a 350-byte bound", e, first)
		}
	default:
		t.Fatal("OnLag not called for the subscriber past its bound")
	}
	if _, err := stuck.Next(ctx); !errors.As(err, new(*cluster.LagError)) {
		t.Fatalf("Next of the cut-off subscriber: %v, want the LagError", err)
	}
	if q := slow.Queued(); q != 1000 {
		t.Fatalf("slow subscriber's backlog %d, want 1000", q)
	}
	// A newcomer asking for the first message: gone from the history.
	var gap *cluster.GapError
	if _, err := b.subscribe(ctx, first, 1000, nil); !errors.As(err, &gap) || gap.Oldest != first+5 || gap.Newest != first+9 {
		t.Fatalf("subscribe(first) = %v, want a gap to %d", err, first+5)
	}
	// The slow one still gets all ten, in order.
	b.mu.Lock()
	held := len(b.msgs)
	b.mu.Unlock()
	if held != 10 {
		t.Fatalf("%d messages held while a subscriber has ten to read, want 10", held)
	}
	for i := range 10 {
		m, err := slow.Next(ctx)
		if err != nil || m.Seq != first+uint64(i) {
			t.Fatalf("message %d: %d %v", i, m.Seq, err)
		}
	}
	// Read: the next publish lets the extra ones go.
	if _, err := b.publish(ctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	held = len(b.msgs)
	b.mu.Unlock()
	if held != 5 {
		t.Fatalf("%d messages held once read, want the history's 5", held)
	}
	if m, err := slow.Next(ctx); err != nil || m.Seq != first+10 || m.Type != cluster.Text || slow.LiveFrom() != first {
		t.Fatalf("live message: %+v %v (LiveFrom %d)", m, err, slow.LiveFrom())
	}
	slow.Close()
	b.close()
	if _, err := b.subscribe(ctx, 0, 1, nil); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("subscribe after close: %v, want ErrClosed", err)
	}
}

// BenchmarkAdmissionAdvice measures what the cluster adds to one
// admission decision: the advisor reads the node's view (three members)
// and runs cluster.Advise, under shed's lock.
func BenchmarkAdmissionAdvice(b *testing.B) {
	s, err := New(Config{Addr: "127.0.0.1:0", Cluster: &ClusterConfig{Options: cluster.Options{Cluster: "bench", Name: "n0"}}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	nc, err := nats.Connect(s.Node().ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	for _, name := range []string{"n1", "n2"} {
		msg, _ := json.Marshal(map[string]any{"v": 1, "node": name, "inc": "x", "seq": 1, "load": map[string]any{"conns": 10, "limit": 100}})
		_ = nc.Publish("ebb.bench.load."+name, msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.Node().WaitView(ctx, func(v cluster.View) bool { return len(v.Members) == 3 }); err != nil {
		b.Fatal(err)
	}
	req := shed.AdviceRequest{Conns: 50, MaxConns: 100, Demand: 50}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if a := s.advisor.Advise(req); a.Verdict != shed.VerdictAdmit {
			b.Fatalf("verdict %v", a.Verdict)
		}
	}
}

// failingBus is a bus whose history cannot be reached.
type failingBus struct{ err error }

func (b failingBus) publish(context.Context, websocket.MessageType, []byte) (uint64, error) {
	return 0, b.err
}

func (b failingBus) subscribe(context.Context, uint64, int, func(*cluster.LagError)) (feed, error) {
	return nil, b.err
}

func (failingBus) lastSeq() uint64 { return 0 }
func (failingBus) maxMessage() int { return 0 }

// TestBroadcastUnavailable: a member whose subscription cannot be opened
// (a cluster node whose history is not reachable yet) is told so with
// 1013 and the hint, not left with a connection dropped without a Close
// frame (1006) when the handler returns.
func TestBroadcastUnavailable(t *testing.T) {
	sh, err := shed.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(BroadcastLimits{}, failingBus{errors.New("cluster: JetStream not ready yet")}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(sh.Handler(nil, func(ctx context.Context, c *websocket.Conn) { h.serve(ctx, c, 0) }))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 { // the race with the handler's return is not every time
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
		if err == nil {
			_, _, err = c.Read(ctx)
			c.CloseNow()
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != closecode.TryAgainLater || ce.Reason != "broadcast history unavailable; retry-after=2" {
			t.Fatalf("a member of an unreachable broadcast got %v, want 1013 \"broadcast history unavailable; retry-after=2\"", err)
		}
	}
}
