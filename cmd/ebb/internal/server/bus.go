package server

import (
	"context"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/websocket"
)

// bus carries /broadcast messages: one numbered order with a bounded
// history, from which a subscriber resumes. The cluster's (cluster.Node)
// spans every node; without a cluster, localBus keeps the same promises
// in memory, so resume works on a single server too and /broadcast has
// one code path.
type bus interface {
	// publish stores a message and returns its sequence.
	publish(ctx context.Context, typ websocket.MessageType, data []byte) (uint64, error)
	// subscribe delivers every message from from on (0: from now), each
	// once and in order, or returns a *cluster.GapError when the history
	// no longer holds from. A subscriber more than maxBytes behind is
	// ended with a *cluster.LagError, and onLag is called at once.
	subscribe(ctx context.Context, from uint64, maxBytes int, onLag func(*cluster.LagError)) (feed, error)
	// lastSeq is the sequence of the newest message delivered here.
	lastSeq() uint64
	// maxMessage is the largest message publish takes (0: no bound of
	// its own).
	maxMessage() int
}

// feed is one subscription (*cluster.Subscription, or *localSub).
type feed interface {
	Next(ctx context.Context) (cluster.Message, error)
	LiveFrom() uint64
	Queued() int
	Close()
}

// msgType converts between the websocket and cluster message types.
func msgType(t websocket.MessageType) cluster.MessageType {
	if t == websocket.MessageBinary {
		return cluster.Binary
	}
	return cluster.Text
}

func wsType(t cluster.MessageType) websocket.MessageType {
	if t == cluster.Binary {
		return websocket.MessageBinary
	}
	return websocket.MessageText
}

// clusterBus is the cluster node's broadcast.
type clusterBus struct{ n *cluster.Node }

func (b clusterBus) publish(ctx context.Context, typ websocket.MessageType, data []byte) (uint64, error) {
	return b.n.Publish(ctx, msgType(typ), data)
}

func (b clusterBus) subscribe(ctx context.Context, from uint64, maxBytes int, onLag func(*cluster.LagError)) (feed, error) {
	s, err := b.n.Subscribe(ctx, from, cluster.SubscribeOptions{MaxBytes: maxBytes, OnLag: onLag})
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (b clusterBus) lastSeq() uint64 { return b.n.LastSeq() }

func (b clusterBus) maxMessage() int { return b.n.MaxMessage() }

// Defaults for the local history (BroadcastLimits).
const (
	DefaultHistoryMsgs  = 10_000
	DefaultHistoryBytes = 8 << 20
	DefaultHistoryAge   = 10 * time.Minute
)

// localBus is the broadcast of a server without a cluster: the history is
// a queue of the newest messages, bounded in count, bytes and age, and a
// subscriber is a cursor into it (no copy per member). A message past the
// history's bounds is kept while a subscriber still has to deliver it,
// which its own bound (MaxQueueBytes of live messages) limits; so the
// memory held is at most the history's bound plus one member's, however
// many members there are. Sequences start at the bus's creation time in
// microseconds, as the cluster's do, so a client of an earlier process is
// told of a gap instead of being handed old numbers for new messages.
type localBus struct {
	maxMsgs  int
	maxBytes int
	maxAge   time.Duration
	now      func() time.Time

	mu     sync.Mutex
	msgs   []localMsg // oldest first; msgs[i].Seq == base+i
	base   uint64     // sequence of msgs[0] (or of the next message when empty)
	first  uint64     // oldest sequence of the history (≥ base)
	next   uint64     // sequence of the next message
	bytes  int        // bytes of the history [first, next)
	total  uint64     // bytes ever published
	subs   map[*localSub]struct{}
	closed bool
}

type localMsg struct {
	cluster.Message
	cum uint64 // total bytes published up to and including this message
}

func newLocalBus(l BroadcastLimits) *localBus {
	start := uint64(time.Now().UnixMicro())
	return &localBus{
		maxMsgs:  l.HistoryMsgs,
		maxBytes: l.HistoryBytes,
		maxAge:   l.HistoryAge,
		now:      time.Now,
		base:     start,
		first:    start,
		next:     start,
		subs:     make(map[*localSub]struct{}),
	}
}

func (b *localBus) lastSeq() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.next - 1
}

func (b *localBus) maxMessage() int { return 0 }

// publish appends the message, trims the history and wakes the
// subscribers; those it would put more than their bound behind are ended
// with a LagError.
func (b *localBus) publish(_ context.Context, typ websocket.MessageType, data []byte) (uint64, error) {
	type lagged struct {
		s   *localSub
		err *cluster.LagError
	}
	var lags []lagged
	now := b.now()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, cluster.ErrClosed
	}
	seq := b.next
	b.next++
	b.total += uint64(len(data))
	b.msgs = append(b.msgs, localMsg{Message: cluster.Message{Seq: seq, Type: msgType(typ), Data: data, Time: now}, cum: b.total})
	b.bytes += len(data)
	for s := range b.subs {
		if lag := s.checkLocked(len(data)); lag != nil {
			delete(b.subs, s)
			if s.onLag != nil {
				lags = append(lags, lagged{s, lag})
			}
		}
		s.signal()
	}
	b.trimLocked(now) // after the laggards let go of their messages
	b.mu.Unlock()
	for _, l := range lags {
		l.s.onLag(l.err)
	}
	return seq, nil
}

// trimLocked moves the history's start past its bounds (the newest
// message always stays) and frees the messages no subscriber still has
// to deliver.
func (b *localBus) trimLocked(now time.Time) {
	for b.first+1 < b.next {
		m := &b.msgs[b.first-b.base]
		if int(b.next-b.first) <= b.maxMsgs && b.bytes <= b.maxBytes && now.Sub(m.Time) <= b.maxAge {
			break
		}
		b.bytes -= len(m.Data)
		b.first++
	}
	keep := b.first
	for s := range b.subs {
		keep = min(keep, s.next)
	}
	drop := int(keep - b.base)
	if drop <= 0 {
		return
	}
	clear(b.msgs[:drop])
	b.msgs = b.msgs[drop:]
	b.base = keep
	if cap(b.msgs) > 64 && len(b.msgs) < cap(b.msgs)/4 {
		b.msgs = append([]localMsg(nil), b.msgs...) // let a large backing array go
	}
}

func (b *localBus) subscribe(_ context.Context, from uint64, maxBytes int, onLag func(*cluster.LagError)) (feed, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultBroadcastQueueBytes
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, cluster.ErrClosed
	}
	b.trimLocked(b.now())
	s := &localSub{b: b, max: maxBytes, onLag: onLag, wake: make(chan struct{}, 1), live: b.next, base: b.total}
	switch {
	case from == 0:
		s.next = b.next
	case from < b.first || from > b.next:
		return nil, &cluster.GapError{Requested: from, Oldest: b.first, Newest: b.next - 1}
	default:
		s.next = from
	}
	b.subs[s] = struct{}{}
	return s, nil
}

// close ends every subscription with cluster.ErrClosed.
func (b *localBus) close() {
	b.mu.Lock()
	b.closed = true
	subs := b.subs
	b.subs = map[*localSub]struct{}{}
	for s := range subs {
		if s.err == nil {
			s.err = cluster.ErrClosed
		}
		s.signal()
	}
	b.mu.Unlock()
}

// localSub is a cursor into a localBus. Its state is guarded by the bus's
// lock.
type localSub struct {
	b     *localBus
	max   int
	onLag func(*cluster.LagError)
	wake  chan struct{}
	live  uint64 // LiveFrom
	next  uint64 // next sequence to deliver
	base  uint64 // bytes published before the subscription began
	taken uint64 // total bytes through the last message delivered
	err   error
}

// backlogLocked is the bytes of live messages published and not yet
// delivered (replayed ones do not count, as in cluster.Subscription).
func (s *localSub) backlogLocked() int {
	return int(s.b.total - max(s.base, s.taken))
}

// checkLocked ends s with a LagError if a message of n bytes, just
// published, put it over its bound; one message of any size fits an
// empty backlog.
func (s *localSub) checkLocked(n int) *cluster.LagError {
	if s.err != nil {
		return nil
	}
	before := s.backlogLocked() - n
	if before <= 0 || before+n <= s.max {
		return nil
	}
	lag := &cluster.LagError{Seq: s.next, Bytes: before + n, Limit: s.max}
	s.err = lag
	return lag
}

func (s *localSub) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Next returns the next message, waiting for one until ctx ends.
func (s *localSub) Next(ctx context.Context) (cluster.Message, error) {
	b := s.b
	for {
		b.mu.Lock()
		if s.err != nil {
			err := s.err
			b.mu.Unlock()
			return cluster.Message{}, err
		}
		if s.next < b.base {
			// Not reached: a subscriber's messages are kept for it.
			s.err = &cluster.GapError{Requested: s.next, Oldest: b.first, Newest: b.next - 1}
			delete(b.subs, s)
			err := s.err
			b.mu.Unlock()
			return cluster.Message{}, err
		}
		if s.next < b.next {
			m := b.msgs[s.next-b.base]
			s.next++
			s.taken = max(s.taken, m.cum)
			b.mu.Unlock()
			return m.Message, nil
		}
		b.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return cluster.Message{}, ctx.Err()
		}
	}
}

// LiveFrom is the first sequence published after the subscription began.
func (s *localSub) LiveFrom() uint64 { return s.live }

// Queued is the backlog of live messages, in bytes.
func (s *localSub) Queued() int {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	if s.err != nil {
		return 0
	}
	return max(0, s.backlogLocked())
}

// Close ends the subscription; Next then returns cluster.ErrClosed.
func (s *localSub) Close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	if s.err == nil {
		s.err = cluster.ErrClosed
	}
	s.b.mu.Unlock()
	s.signal()
}
