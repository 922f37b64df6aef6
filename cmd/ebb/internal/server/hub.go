package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// BroadcastLimits bound what one /broadcast member can make the server
// hold. Every member shares the same message bytes, so the memory all
// queues hold together is at most about MaxQueueBytes plus one message,
// whatever the number of members.
type BroadcastLimits struct {
	// MaxQueueBytes is how many bytes of messages a member may lag behind
	// (default DefaultBroadcastQueueBytes). One message larger than this
	// is still delivered when the member's queue is empty.
	MaxQueueBytes int
	// WriteTimeout is how long one message may take to reach a member's
	// socket (default DefaultBroadcastWriteTimeout).
	WriteTimeout time.Duration
}

// Defaults for BroadcastLimits.
const (
	DefaultBroadcastQueueBytes   = 1 << 20
	DefaultBroadcastWriteTimeout = 5 * time.Second
)

// laggardHint is the retry hint sent to a member dropped for falling
// behind: it may come back at once, with a reconnecting client's backoff.
const laggardHint = time.Second

// hub fans /broadcast messages out to every member. Each member has its
// own queue, bounded in bytes, and its own writer goroutine, so one slow
// client never stalls the others nor holds unbounded memory: a member that
// falls more than MaxQueueBytes behind, or whose socket takes longer than
// WriteTimeout to take a message, is closed with 1013 Try Again Later and a
// reason that says why.
type hub struct {
	limits  BroadcastLimits
	log     *slog.Logger
	mu      sync.Mutex
	members map[*member]struct{}
	closed  bool

	sent           atomic.Uint64 // messages fanned out (once per message)
	droppedBytes   atomic.Uint64 // members dropped for MaxQueueBytes
	droppedTimeout atomic.Uint64 // members dropped for WriteTimeout
}

type member struct {
	c      *websocket.Conn
	wake   chan struct{} // capacity 1: the writer has work
	done   chan struct{} // closed when the writer has returned
	mu     sync.Mutex
	queue  []outMsg
	bytes  int
	closed bool // no more messages: left, dropped or the hub closed
}

type outMsg struct {
	typ websocket.MessageType
	p   []byte
}

func newHub(l BroadcastLimits, log *slog.Logger) *hub {
	if l.MaxQueueBytes <= 0 {
		l.MaxQueueBytes = DefaultBroadcastQueueBytes
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultBroadcastWriteTimeout
	}
	return &hub{limits: l, log: log, members: make(map[*member]struct{})}
}

func (h *hub) join(c *websocket.Conn) *member {
	m := &member{c: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		m.closed = true
	} else {
		h.members[m] = struct{}{}
	}
	h.mu.Unlock()
	go h.writeLoop(m)
	return m
}

// leave removes m and waits for its writer to stop.
func (h *hub) leave(m *member) {
	h.remove(m)
	<-m.done
}

func (h *hub) remove(m *member) {
	h.mu.Lock()
	delete(h.members, m)
	h.mu.Unlock()
	m.mu.Lock()
	m.closed = true
	m.queue = nil
	m.bytes = 0
	m.mu.Unlock()
	m.signal()
}

// close stops every writer; members still connected are closed by the
// drain, not here.
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	ms := make([]*member, 0, len(h.members))
	for m := range h.members {
		ms = append(ms, m)
	}
	h.mu.Unlock()
	for _, m := range ms {
		h.remove(m)
	}
}

// send queues p for every member. A member whose queue would pass the byte
// bound is dropped instead (closed with 1013), so the others are not held
// back and its backlog is freed.
func (h *hub) send(typ websocket.MessageType, p []byte) {
	h.sent.Add(1)
	h.mu.Lock()
	var laggards []*member
	for m := range h.members {
		if !m.push(outMsg{typ, p}, h.limits.MaxQueueBytes) {
			laggards = append(laggards, m)
			delete(h.members, m)
		}
	}
	h.mu.Unlock()
	for _, m := range laggards {
		h.droppedBytes.Add(1)
		queued := m.backlog()
		h.drop(m, fmt.Sprintf("too slow for the broadcast: %d bytes behind, limit %d", queued+len(p), h.limits.MaxQueueBytes))
	}
}

// push queues msg unless that would put more than limit bytes in the
// queue; one message of any size fits in an empty queue.
func (m *member) push(msg outMsg, limit int) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return true // leaving anyway
	}
	if m.bytes > 0 && m.bytes+len(msg.p) > limit {
		m.mu.Unlock()
		return false
	}
	m.queue = append(m.queue, msg)
	m.bytes += len(msg.p)
	m.mu.Unlock()
	m.signal()
	return true
}

func (m *member) backlog() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bytes
}

func (m *member) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// next takes the oldest queued message, waiting for one; ok is false once
// the member is closed.
func (m *member) next() (outMsg, bool) {
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return outMsg{}, false
		}
		if len(m.queue) > 0 {
			msg := m.queue[0]
			m.queue[0] = outMsg{}
			m.queue = m.queue[1:]
			if len(m.queue) == 0 {
				m.queue = nil // let the backing array go
			}
			m.bytes -= len(msg.p)
			m.mu.Unlock()
			return msg, true
		}
		m.mu.Unlock()
		<-m.wake
	}
}

// drop closes a member that fell behind with 1013 and a short hint: it may
// reconnect at once (a reconnecting client adds its own backoff).
func (h *hub) drop(m *member, why string) {
	h.remove(m)
	h.log.Debug("broadcast: member dropped", "remote", m.c.RemoteAddr().String(), "why", why)
	go m.c.Close(closecode.TryAgainLater, closecode.FormatRetryHint(why, laggardHint))
}

func (h *hub) writeLoop(m *member) {
	defer close(m.done)
	for {
		msg, ok := m.next()
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), h.limits.WriteTimeout)
		err := m.c.Write(ctx, msg.typ, msg.p)
		cancel()
		if err != nil {
			if ctx.Err() != nil && websocket.CloseStatus(err) < 0 {
				h.droppedTimeout.Add(1)
				h.drop(m, fmt.Sprintf("too slow for the broadcast: a message took over %s to send", h.limits.WriteTimeout))
			} else {
				h.remove(m)
			}
			return
		}
	}
}

func (h *hub) memberCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.members)
}

func (h *hub) queuedBytes() int {
	h.mu.Lock()
	ms := make([]*member, 0, len(h.members))
	for m := range h.members {
		ms = append(ms, m)
	}
	h.mu.Unlock()
	n := 0
	for _, m := range ms {
		n = max(n, m.backlog())
	}
	return n
}

// writePrometheus appends the broadcast metrics to /metrics.
func (h *hub) writePrometheus(w io.Writer) {
	fmt.Fprintf(w, "# HELP ebb_broadcast_members Clients connected to /broadcast.\n# TYPE ebb_broadcast_members gauge\nebb_broadcast_members %d\n", h.memberCount())
	fmt.Fprintf(w, "# HELP ebb_broadcast_messages_total Messages fanned out to /broadcast members (counted once per message).\n# TYPE ebb_broadcast_messages_total counter\nebb_broadcast_messages_total %d\n", h.sent.Load())
	fmt.Fprintf(w, "# HELP ebb_broadcast_max_member_backlog_bytes Bytes queued for the member furthest behind.\n# TYPE ebb_broadcast_max_member_backlog_bytes gauge\nebb_broadcast_max_member_backlog_bytes %d\n", h.queuedBytes())
	fmt.Fprintf(w, "# HELP ebb_broadcast_dropped_total Members closed with 1013 for falling behind, by reason: queue_bytes (more than the per-member byte bound queued) or write_timeout (a message took longer than the write timeout).\n# TYPE ebb_broadcast_dropped_total counter\n")
	fmt.Fprintf(w, "ebb_broadcast_dropped_total{reason=\"queue_bytes\"} %d\n", h.droppedBytes.Load())
	fmt.Fprintf(w, "ebb_broadcast_dropped_total{reason=\"write_timeout\"} %d\n", h.droppedTimeout.Load())
}
