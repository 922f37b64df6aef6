package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// collect reads n messages from s.
func collect(ctx context.Context, s *Subscription, n int) ([]Message, error) {
	var out []Message
	for len(out) < n {
		m, err := s.Next(ctx)
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
	return out, nil
}

// TestBroadcastOrderExactlyOnce: three publishers on three embedded,
// routed nodes; every node delivers every message once, in one order, the
// same everywhere.
func TestBroadcastOrderExactlyOnce(t *testing.T) {
	t.Parallel()
	nodes, _ := mesh(t, "order", 3)
	waitAllReady(t, 30*time.Second, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var subs []*Subscription
	for _, n := range nodes {
		s, err := n.Subscribe(ctx, 0, SubscribeOptions{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		subs = append(subs, s)
	}
	base := nodes[0].LastSeq()
	const per = 150
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i, n := range nodes {
		wg.Go(func() {
			for j := range per {
				typ := Text
				if j%2 == 1 {
					typ = Binary
				}
				if _, err := n.Publish(ctx, typ, fmt.Appendf(nil, "%d/%d", i, j)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var first []Message
	for i, s := range subs {
		got, err := collect(ctx, s, 3*per)
		if err != nil {
			t.Fatalf("node %d: %d messages, then %v", i, len(got), err)
		}
		seen := map[string]bool{}
		for k, m := range got {
			if m.Seq != base+uint64(k)+1 {
				t.Fatalf("node %d: message %d has seq %d, want %d", i, k, m.Seq, base+uint64(k)+1)
			}
			if seen[string(m.Data)] {
				t.Fatalf("node %d: %q delivered twice", i, m.Data)
			}
			seen[string(m.Data)] = true
			var p, j int
			fmt.Sscanf(string(m.Data), "%d/%d", &p, &j)
			if want := Text + MessageType(j%2); m.Type != want {
				t.Fatalf("node %d: %q has type %v, want %v", i, m.Data, m.Type, want)
			}
			if first != nil && string(first[k].Data) != string(m.Data) {
				t.Fatalf("node %d: seq %d is %q, node 0 has %q", i, m.Seq, m.Data, first[k].Data)
			}
		}
		if first == nil {
			first = got
		}
	}
	// Per publisher, the order is its publish order.
	last := map[int]int{0: -1, 1: -1, 2: -1}
	for _, m := range first {
		var p, j int
		fmt.Sscanf(string(m.Data), "%d/%d", &p, &j)
		if j != last[p]+1 {
			t.Fatalf("publisher %d: message %d after %d", p, j, last[p])
		}
		last[p] = j
	}
}

// TestResumeHandover: a client hops from node to node while messages keep
// coming; each hop resumes from its last sequence, and across all hops it
// sees every message exactly once. One node has a tiny cache, so resumes
// there replay from JetStream.
func TestResumeHandover(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	var nodes []*Node
	for i := range 3 {
		o := fast("resume", fmt.Sprintf("n%d", i))
		o.NATSURL = url
		if i == 1 {
			o.History.CacheMsgs = 4
		}
		nodes = append(nodes, join(t, o))
	}
	waitAllReady(t, 10*time.Second, nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var published []uint64
	var pubErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			seq, err := nodes[2].Publish(ctx, Text, fmt.Appendf(nil, "m%d", i))
			if err != nil {
				pubErr = err
				return
			}
			published = append(published, seq)
			time.Sleep(time.Millisecond)
		}
	})
	start := nodes[0].LastSeq() + 1
	next := start
	var got []uint64
	for hop := range 12 {
		n := nodes[hop%3]
		s, err := n.Subscribe(ctx, next, SubscribeOptions{})
		if err != nil {
			t.Fatalf("hop %d on %s from %d: %v", hop, n.Name(), next, err)
		}
		ms, err := collect(ctx, s, 20+hop*7)
		s.Close()
		if err != nil {
			t.Fatalf("hop %d: %v", hop, err)
		}
		for _, m := range ms {
			got = append(got, m.Seq)
		}
		next = ms[len(ms)-1].Seq + 1
		time.Sleep(time.Duration(hop%4) * 15 * time.Millisecond) // away a while: messages pile up
	}
	close(stop)
	wg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	for i, seq := range got {
		if seq != start+uint64(i) {
			t.Fatalf("message %d has seq %d, want %d (lost or duplicated across a hop)", i, seq, start+uint64(i))
		}
	}
	t.Logf("%d messages over 12 hops, none lost or repeated; %d published", len(got), len(published))
}

// TestGapAndHistoryBounds: the history keeps what its limits allow; a
// resume from before that is told so, as is one from past its end.
func TestGapAndHistoryBounds(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	o := fast("gap", "n0")
	o.NATSURL = url
	o.History = History{MaxMsgs: 10, CacheMsgs: 3}
	n := join(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	waitAllReady(t, 10*time.Second, n)
	// Sequences start at the history's creation time (microseconds);
	// b+1 is the first.
	b := n.LastSeq()
	if now := uint64(time.Now().UnixMicro()); b == 0 || b > now || now-b > uint64(time.Minute/time.Microsecond) {
		t.Fatalf("a new history starts after %d, want the time in microseconds (about %d)", b, now)
	}
	for i := range 30 {
		if _, err := n.Publish(ctx, Binary, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	first, last, err := n.bounds(ctx)
	if err != nil || first != b+21 || last != b+30 {
		t.Fatalf("history holds [b+%d, b+%d] (%v), want [b+21, b+30] with MaxMsgs 10", first-b, last-b, err)
	}
	var gap *GapError
	if _, err := n.Subscribe(ctx, b+5, SubscribeOptions{}); !errors.As(err, &gap) || gap.Requested != b+5 || gap.Oldest != b+21 || gap.Newest != b+30 {
		t.Fatalf("Subscribe(b+5) = %v, want a GapError{b+5, b+21, b+30}", err)
	}
	if _, err := n.Subscribe(ctx, 1, SubscribeOptions{}); !errors.As(err, &gap) || gap.Requested != 1 || gap.Oldest != b+21 {
		t.Fatalf("Subscribe(1) (a client of an older history) = %v, want a GapError{1, b+21, b+30}", err)
	}
	if err := n.Replay(ctx, b+20, 0, func(Message) error { return nil }); !errors.As(err, &gap) || gap.Requested != b+20 {
		t.Fatalf("Replay(b+20) = %v, want a GapError for b+20", err)
	}
	if _, err := n.Subscribe(ctx, b+100, SubscribeOptions{}); !errors.As(err, &gap) || gap.Requested != b+100 || gap.Newest != b+30 {
		t.Fatalf("Subscribe(b+100) = %v, want a GapError saying the history ends at b+30", err)
	} else {
		t.Logf("past the end: %v", err)
	}
	// From the oldest kept: all of it, from JetStream (cache holds 3),
	// then live.
	if err := n.waitLast(ctx, b+30); err != nil {
		t.Fatal(err)
	}
	s, err := n.Subscribe(ctx, b+21, SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := collect(ctx, s, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Publish(ctx, Binary, []byte{30}); err != nil {
		t.Fatal(err)
	}
	live, err := collect(ctx, s, 1)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, live...)
	for i, m := range got {
		if m.Seq != b+uint64(21+i) || m.Data[0] != byte(20+i) || m.Type != Binary {
			t.Fatalf("message %d: seq %d data %v type %v", i, m.Seq, m.Data, m.Type)
		}
	}
	var replayed []uint64
	if err := n.Replay(ctx, b+25, b+27, func(m Message) error { replayed = append(replayed, m.Seq); return nil }); err != nil || len(replayed) != 3 || replayed[0] != b+25 {
		t.Fatalf("Replay(b+25, b+27) = %v, %v", replayed, err)
	}
}

// waitLast waits until the node has delivered seq.
func (n *Node) waitLast(ctx context.Context, seq uint64) error {
	for n.LastSeq() < seq {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// TestLagError: a subscriber that does not read is cut off at its byte
// bound instead of holding messages without bound, and can resume.
func TestLagError(t *testing.T) {
	t.Parallel()
	url := natsServer(t)
	o := fast("lag", "n0")
	o.NATSURL = url
	n := join(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lagged := make(chan *LagError, 2)
	s, err := n.Subscribe(ctx, 0, SubscribeOptions{MaxBytes: 200, OnLag: func(e *LagError) { lagged <- e }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := n.LastSeq() + 1
	if s.LiveFrom() != first {
		t.Fatalf("LiveFrom = %d, want %d (a subscription from now replays nothing)", s.LiveFrom(), first)
	}
	for range 3 {
		if _, err := n.Publish(ctx, Text, make([]byte, 50)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.waitLast(ctx, first+2); err != nil {
		t.Fatal(err)
	}
	if q := s.Queued(); q != 150 {
		t.Fatalf("Queued = %d, want 150 (three 50-byte messages)", q)
	}
	for range 7 {
		if _, err := n.Publish(ctx, Text, make([]byte, 50)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.waitLast(ctx, first+9); err != nil {
		t.Fatal(err)
	}
	var lag *LagError
	if _, err := s.Next(ctx); !errors.As(err, &lag) || lag.Seq != first || lag.Limit != 200 {
		t.Fatalf("Next = %v, want a LagError at %d", err, first)
	}
	select {
	case e := <-lagged:
		if e != lag {
			t.Fatalf("OnLag got %v, Next %v: want the same error", e, lag)
		}
	default:
		t.Fatal("OnLag was not called when the subscription fell behind")
	}
	if len(lagged) != 0 {
		t.Fatal("OnLag called more than once")
	}
	s2, err := n.Subscribe(ctx, lag.Seq, SubscribeOptions{MaxBytes: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.LiveFrom() != first+10 {
		t.Fatalf("LiveFrom of a resumed subscription = %d, want %d (ten to replay)", s2.LiveFrom(), first+10)
	}
	if got, err := collect(ctx, s2, 10); err != nil || got[0].Seq != first || got[9].Seq != first+9 {
		t.Fatalf("resumed: %d messages, %v", len(got), err)
	}
}
