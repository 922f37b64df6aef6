package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MessageType is a broadcast's WebSocket message type.
type MessageType int

// Message types; the zero value means none.
const (
	Text MessageType = iota + 1
	Binary
)

func typeOf(h string) MessageType {
	if h == "binary" {
		return Binary
	}
	return Text
}

// Message is one broadcast, as the whole cluster numbers it.
type Message struct {
	// Seq is the message's place in the cluster's one global order
	// (the history stream's sequence): consecutive, starting at the time
	// the history was created in microseconds since 1970, so that a
	// history created again never reuses a number (see the package
	// documentation).
	Seq uint64
	// Type is Text or Binary.
	Type MessageType
	// Data is the payload. It is shared by every subscriber: do not
	// modify it.
	Data []byte
	// Time is when the history stored it.
	Time time.Time
}

// GapError says the history cannot give a resuming client what it asked
// for. Nothing is skipped silently: the caller tells the client, which
// resumes from Oldest knowing it missed Oldest-Requested messages (a
// history created again after a reset starts past every older number, so
// a client of the old one lands here too). Requested past Newest+1 is a
// number this history never gave out (a client of another cluster, or a
// clock set back before a reset): the client should resume from
// Newest+1.
type GapError struct {
	// Requested is the first sequence wanted.
	Requested uint64
	// Oldest and Newest are the oldest and newest sequence the history
	// holds (Oldest > Newest when it is empty).
	Oldest, Newest uint64
}

func (e *GapError) Error() string {
	if e.Requested > e.Newest+1 {
		return fmt.Sprintf("cluster: broadcast %d was requested but the history ends at %d: it was reset; start again from %d", e.Requested, e.Newest, e.Newest+1)
	}
	return fmt.Sprintf("cluster: broadcast %d is no longer in the history (oldest kept %d, newest %d): %d messages are gone; resume from %d", e.Requested, e.Oldest, e.Newest, e.Oldest-e.Requested, e.Oldest)
}

// LagError ends a Subscription whose reader fell more than
// SubscribeOptions.MaxBytes behind the live feed. Nothing is lost: close
// the client (1013) and let it resume from Seq-1, or subscribe again from
// Seq.
type LagError struct {
	// Seq is the first sequence the subscription did not deliver.
	Seq uint64
	// Bytes is how far behind it was; Limit is SubscribeOptions.MaxBytes.
	Bytes, Limit int
}

func (e *LagError) Error() string {
	return fmt.Sprintf("cluster: subscriber fell %d bytes behind the broadcast (limit %d); resume from %d", e.Bytes, e.Limit, e.Seq)
}

// Publish broadcasts data to the whole cluster and returns its sequence.
// It returns once the history has stored the message (on a quorum of its
// replicas), retrying through leader changes until ctx ends; a retried
// message is stored once (JetStream de-duplicates it by an ID this call
// chooses). The message reaches every node's subscribers in sequence
// order, whichever node published it.
func (n *Node) Publish(ctx context.Context, typ MessageType, data []byte) (uint64, error) {
	if typ != Text && typ != Binary {
		return 0, fmt.Errorf("cluster: Publish with message type %d: want Text or Binary", int(typ))
	}
	if len(data) > n.opts.History.MaxMessage {
		return 0, fmt.Errorf("cluster: Publish of %d bytes: the limit is %d (Options.History.MaxMessage)", len(data), n.opts.History.MaxMessage)
	}
	if err := n.waitReady(ctx); err != nil {
		return 0, err
	}
	msg := nats.NewMsg(n.subjBcast)
	msg.Data = data
	if typ == Binary {
		msg.Header.Set(hdrType, "binary")
	}
	var id [12]byte
	_, _ = rand.Read(id[:])
	msg.Header.Set(jetstream.MsgIDHeader, hex.EncodeToString(id[:]))
	wait := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := n.js.PublishMsg(actx, msg)
		cancel()
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if errors.Is(err, nats.ErrMaxPayload) || (errors.As(err, &apiErr) && apiErr.Code == 400) {
			return 0, fmt.Errorf("cluster: publishing a %d-byte broadcast: %w", len(data), err)
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("cluster: publishing a %d-byte broadcast: %w (last error: %v)", len(data), ctx.Err(), err)
		case <-n.done:
			return 0, ErrClosed
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// MaxMessage returns the largest broadcast Publish accepts
// (Options.History.MaxMessage), so that a server can refuse a larger
// message as it reads it (1009) rather than after.
func (n *Node) MaxMessage() int { return n.opts.History.MaxMessage }

// LastSeq returns the sequence of the last broadcast this node has
// delivered to its subscribers (0 before the first, or before Ready).
func (n *Node) LastSeq() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// deliver hands a message from the feed to the cache and subscribers.
func (n *Node) deliver(m Message) {
	type lagged struct {
		s   *Subscription
		err *LagError
	}
	var lags []lagged
	n.mu.Lock()
	if m.Seq <= n.last || n.left {
		n.mu.Unlock()
		return // a redelivery after a feed reset
	}
	if m.Seq != n.last+1 {
		// The history dropped messages this node had not read yet:
		// subscribers waiting for them see a GapError.
		n.cache.reset(m.Seq)
	}
	n.last = m.Seq
	n.cache.add(m)
	for s := range n.subs {
		if ok, lag := s.push(m); !ok {
			delete(n.subs, s)
			if lag != nil && s.onLag != nil {
				lags = append(lags, lagged{s, lag})
			}
		}
	}
	n.mu.Unlock()
	for _, l := range lags {
		l.s.onLag(l.err)
	}
}

// SubscribeOptions tune a Subscription.
type SubscribeOptions struct {
	// MaxBytes is how many bytes of live messages the subscription may
	// hold for a slow reader before it ends with a *LagError. Default
	// 1 MiB. A message larger than that still fits an empty queue.
	MaxBytes int
	// OnLag, when set, is called once, as soon as the subscription falls
	// more than MaxBytes behind (Next returns the same *LagError once the
	// reader gets there). It lets a server close a client that is stuck
	// in a write at once, instead of when the write gives up. It runs on
	// the node's delivery goroutine: it must not block (start the close
	// in a goroutine).
	OnLag func(*LagError)
}

// Subscription delivers broadcasts in sequence order, each once: first
// those it must replay from the history, then the live ones. One
// goroutine reads it with Next.
type Subscription struct {
	n     *Node
	max   int
	onLag func(*LagError)
	live  uint64 // first sequence not replayed, see LiveFrom

	mu      sync.Mutex
	next    uint64 // next sequence to deliver
	catchTo uint64 // replay from history up to here before the queue
	queue   []Message
	qbytes  int
	err     error // terminal
	wake    chan struct{}
	buf     []Message // replayed messages not yet returned
}

// Subscribe starts a subscription. With from == 0 it delivers the
// broadcasts that arrive from now on. With from > 0 it delivers every
// broadcast with a sequence ≥ from, exactly once and in order: those
// already sent are replayed from the node's cache or the history, and the
// hand-over to the live feed loses and repeats nothing (messages are
// queued from the moment of the call and de-duplicated by sequence).
//
// It returns a *GapError when the history no longer holds from, or when
// from is past its end (the history was reset). It waits for Ready.
func (n *Node) Subscribe(ctx context.Context, from uint64, o SubscribeOptions) (*Subscription, error) {
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 20
	}
	s := &Subscription{n: n, max: o.MaxBytes, onLag: o.OnLag, wake: make(chan struct{}, 1)}
	n.mu.Lock()
	if n.left {
		n.mu.Unlock()
		return nil, ErrClosed
	}
	last := n.last
	cached := n.cache.has(from)
	switch {
	case from == 0:
		s.next, s.catchTo = last+1, last
	case from <= last:
		s.next, s.catchTo = from, last
	default:
		s.next, s.catchTo = from, from-1
	}
	s.live = s.catchTo + 1
	n.subs[s] = struct{}{}
	n.mu.Unlock()
	if from == 0 || cached || from == last+1 {
		return s, nil
	}
	// Check now, so that the caller can tell the client before anything
	// is sent: from must be in the history, or at most one past its end.
	first, newest, err := n.bounds(ctx)
	if err != nil {
		s.Close()
		return nil, n.leftOr(err)
	}
	if from < first || from > newest+1 {
		s.Close()
		return nil, &GapError{Requested: from, Oldest: first, Newest: newest}
	}
	return s, nil
}

// LiveFrom returns the first sequence the subscription delivers as a live
// message rather than from the history: every message it delivers below
// it was replayed. It is LastSeq()+1 as of Subscribe, or the from passed
// to Subscribe when that was later (a node slightly behind the one the
// client came from).
func (s *Subscription) LiveFrom() uint64 { return s.live }

// Queued returns the bytes of live messages waiting for the reader, the
// quantity SubscribeOptions.MaxBytes bounds.
func (s *Subscription) Queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.qbytes
}

// push queues a live message. It returns false when the subscription is
// closed or over its bound, with the *LagError in the second case (the
// subscription is then failed with it).
func (s *Subscription) push(m Message) (bool, *LagError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false, nil
	}
	if s.qbytes > 0 && s.qbytes+len(m.Data) > s.max {
		lag := &LagError{Seq: s.next, Bytes: s.qbytes + len(m.Data), Limit: s.max}
		s.err = lag
		s.queue, s.qbytes = nil, 0
		s.signal()
		return false, lag
	}
	s.queue = append(s.queue, m)
	s.qbytes += len(m.Data)
	s.signal()
	return true, nil
}

func (s *Subscription) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// fail ends the subscription with err unless it has ended already.
func (s *Subscription) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.queue, s.qbytes = nil, 0
	s.mu.Unlock()
	s.signal()
}

// Close ends the subscription; Next then returns ErrClosed.
func (s *Subscription) Close() {
	s.n.mu.Lock()
	delete(s.n.subs, s)
	s.n.mu.Unlock()
	s.fail(ErrClosed)
}

// Next returns the next broadcast. It blocks until there is one, ctx ends,
// or the subscription ends: with a *GapError (the history lost messages
// this subscription still needed), a *LagError (its reader was too slow)
// or ErrClosed. After an error other than ctx's, every call returns it.
func (s *Subscription) Next(ctx context.Context) (Message, error) {
	for {
		s.mu.Lock()
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return Message{}, err
		}
		if s.next <= s.catchTo {
			next, to := s.next, s.catchTo
			s.mu.Unlock()
			m, err := s.replayOne(ctx, next, to)
			if err != nil {
				err = s.n.leftOr(err)
				if ctx.Err() == nil {
					s.fail(err)
				}
				return Message{}, err
			}
			s.mu.Lock()
			s.next = m.Seq + 1
			s.mu.Unlock()
			return m, nil
		}
		for len(s.queue) > 0 {
			m := s.queue[0]
			s.queue[0] = Message{}
			s.queue = s.queue[1:]
			s.qbytes -= len(m.Data)
			if m.Seq < s.next {
				continue // already replayed
			}
			if m.Seq > s.next {
				first, newest, _ := s.n.bounds(ctx)
				s.err = &GapError{Requested: s.next, Oldest: max(first, m.Seq), Newest: newest}
				s.queue, s.qbytes = nil, 0
				err := s.err
				s.mu.Unlock()
				return Message{}, err
			}
			s.next = m.Seq + 1
			s.mu.Unlock()
			return m, nil
		}
		s.mu.Unlock()
		select {
		case <-s.wake:
		case <-ctx.Done():
			return Message{}, ctx.Err()
		}
	}
}

// replayOne returns message next (≤ to) from the buffer, the cache or the
// history.
func (s *Subscription) replayOne(ctx context.Context, next, to uint64) (Message, error) {
	for len(s.buf) > 0 && s.buf[0].Seq < next {
		s.buf = s.buf[1:]
	}
	if len(s.buf) == 0 {
		s.buf = s.n.cacheSlice(next, to, 256)
	}
	if len(s.buf) == 0 || s.buf[0].Seq != next {
		var err error
		if s.buf, err = s.n.fetch(ctx, next, to); err != nil {
			return Message{}, err
		}
	}
	m := s.buf[0]
	s.buf[0] = Message{}
	s.buf = s.buf[1:]
	return m, nil
}

// Replay calls fn for every broadcast with a sequence in [from, to], in
// order, from the node's cache or the history; to == 0 means LastSeq().
// It stops at fn's first error and returns it. It returns a *GapError
// when the history no longer holds from (or a later message of the
// range). It waits for Ready.
func (n *Node) Replay(ctx context.Context, from, to uint64, fn func(Message) error) error {
	if err := n.waitReady(ctx); err != nil {
		return err
	}
	if from == 0 {
		return fmt.Errorf("cluster: Replay from 0: sequences start at 1")
	}
	if to == 0 {
		to = n.LastSeq()
	}
	s := &Subscription{n: n}
	for next := from; next <= to; {
		m, err := s.replayOne(ctx, next, to)
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
		next = m.Seq + 1
	}
	return nil
}

// leftOr returns ErrClosed if the node has left (an error from NATS is
// then only the consequence: its connection closed), else err.
func (n *Node) leftOr(err error) error {
	select {
	case <-n.done:
		return ErrClosed
	default:
		return err
	}
}

// bounds returns the first and last sequence the history holds. A
// JetStream request sent while the stream's leader moves (a node
// restarting) can get no answer at all: each attempt is bounded like
// Publish's, and retried until ctx ends or the node leaves, so that one
// lost request costs 2 s rather than the caller's whole deadline (or,
// without one, forever).
func (n *Node) bounds(ctx context.Context) (first, last uint64, err error) {
	wait := 20 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		first, last, err = n.boundsOnce(actx)
		cancel()
		if err == nil {
			return first, last, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, err
		case <-n.done:
			return 0, 0, ErrClosed
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// boundsOnce is one attempt of bounds.
func (n *Node) boundsOnce(ctx context.Context) (first, last uint64, err error) {
	st, err := n.js.Stream(ctx, n.stream)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: reading the history's bounds: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: reading the history's bounds: %w", err)
	}
	return info.State.FirstSeq, info.State.LastSeq, nil
}

// directGet is the JetStream batch direct-get request.
type directGet struct {
	Seq      uint64 `json:"seq"`
	Batch    int    `json:"batch"`
	MaxBytes int    `json:"max_bytes"`
	UpToSeq  uint64 `json:"up_to_seq,omitempty"`
}

// fetch reads messages [from, to] (a batch of them, starting exactly at
// from) from the history with a direct get, which any current replica
// answers. A replica that is behind may answer short; fetch then asks
// again, and declares a gap only when the stream's leader confirms it.
func (n *Node) fetch(ctx context.Context, from, to uint64) ([]Message, error) {
	wait := 20 * time.Millisecond
	for attempt := 0; ; attempt++ {
		msgs, err := n.directGet(ctx, from, to)
		if err == nil && len(msgs) > 0 && msgs[0].Seq == from {
			return msgs, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		first, last, berr := n.bounds(ctx)
		if berr == nil && from < first {
			return nil, &GapError{Requested: from, Oldest: first, Newest: last}
		}
		if attempt >= 20 {
			if err == nil {
				err = fmt.Errorf("got %d messages starting at %d", len(msgs), firstSeq(msgs))
			}
			return nil, fmt.Errorf("cluster: reading broadcast %d from the history failed %d times: %w", from, attempt+1, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

func firstSeq(m []Message) uint64 {
	if len(m) == 0 {
		return 0
	}
	return m[0].Seq
}

func (n *Node) directGet(ctx context.Context, from, to uint64) ([]Message, error) {
	const batch = 256
	req, _ := json.Marshal(directGet{Seq: from, Batch: int(min(uint64(batch), to-from+1)), MaxBytes: 1 << 20, UpToSeq: to})
	inbox := n.nc.NewRespInbox()
	sub, err := n.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := n.nc.PublishRequest("$JS.API.DIRECT.GET."+n.stream, inbox, req); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var out []Message
	for {
		msg, err := sub.NextMsgWithContext(rctx)
		if err != nil {
			if len(out) > 0 {
				return out, nil
			}
			return nil, err
		}
		if status := msg.Header.Get("Status"); status != "" {
			if status == "204" || status == "404" {
				return out, nil // end of batch, or nothing at or after from
			}
			return out, fmt.Errorf("direct get: status %s %s", status, msg.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(msg.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return out, fmt.Errorf("direct get: sequence header %q: %w", msg.Header.Get(jetstream.SequenceHeader), err)
		}
		ts, _ := time.Parse(time.RFC3339Nano, msg.Header.Get(jetstream.TimeStampHeaer))
		out = append(out, Message{Seq: seq, Type: typeOf(msg.Header.Get(hdrType)), Data: msg.Data, Time: ts})
	}
}

// ring is the node's cache of the newest messages: consecutive sequences
// [first, first+len), bounded in count and bytes.
type ring struct {
	maxMsgs, maxBytes int
	buf               []Message
	start, n          int
	first             uint64
	bytes             int
}

func (r *ring) init(maxMsgs, maxBytes int) {
	r.maxMsgs, r.maxBytes = maxMsgs, maxBytes
}

// reset empties the cache; the next message added must be seq.
func (r *ring) reset(seq uint64) {
	clear(r.buf)
	r.start, r.n, r.bytes, r.first = 0, 0, 0, seq
}

func (r *ring) add(m Message) {
	if r.n > 0 && m.Seq != r.first+uint64(r.n) {
		r.reset(m.Seq)
	}
	if r.n == 0 {
		r.first = m.Seq
	}
	for r.n > 0 && (r.n >= r.maxMsgs || r.bytes+len(m.Data) > r.maxBytes) {
		r.bytes -= len(r.buf[r.start].Data)
		r.buf[r.start] = Message{}
		r.start = (r.start + 1) % len(r.buf)
		r.n--
		r.first++
	}
	if r.n == len(r.buf) {
		nb := make([]Message, min(r.maxMsgs, max(64, 2*len(r.buf))))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.start+i)%len(r.buf)]
		}
		r.buf, r.start = nb, 0
	}
	r.buf[(r.start+r.n)%len(r.buf)] = m
	r.n++
	r.bytes += len(m.Data)
}

func (r *ring) has(seq uint64) bool {
	return r.n > 0 && seq >= r.first && seq < r.first+uint64(r.n)
}

// cacheSlice returns up to limit messages [from, to] from the cache, or
// nil if it does not hold from.
func (n *Node) cacheSlice(from, to uint64, limit int) []Message {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cache.sliceLocked(from, to, limit)
}

// sliceLocked returns up to limit messages [from, to], or nil if the cache
// does not hold from. The caller holds the node's lock.
func (r *ring) sliceLocked(from, to uint64, limit int) []Message {
	if !r.has(from) {
		return nil
	}
	var out []Message
	for seq := from; seq <= to && r.has(seq) && len(out) < limit; seq++ {
		out = append(out, r.buf[(r.start+int(seq-r.first))%len(r.buf)])
	}
	return out
}
