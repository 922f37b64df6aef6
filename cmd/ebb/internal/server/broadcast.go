package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/websocket"
)

// BroadcastLimits bound what /broadcast holds: the history it resumes
// from (without a cluster; a cluster's is ClusterConfig.Options.History)
// and what one member can make the server hold. Messages are shared by
// every member, so without a cluster they take at most the history's
// bytes plus MaxQueueBytes (a message past the history's bound stays
// while a member that is not too far behind still has to get it),
// however many members there are. In a cluster, the node keeps its cache
// of the newest messages (History.CacheBytes) and each member's queue
// references them (at most MaxQueueBytes each).
type BroadcastLimits struct {
	// MaxQueueBytes is how many bytes of messages a member may lag behind
	// the live broadcast (default DefaultBroadcastQueueBytes). A member
	// further behind is closed with 1013 and a short hint; it resumes
	// without loss while the history holds what it missed. One message
	// larger than this is still delivered when the member is not behind.
	MaxQueueBytes int
	// WriteTimeout is how long one message may take to reach a member's
	// socket (default DefaultBroadcastWriteTimeout).
	WriteTimeout time.Duration
	// HistoryMsgs, HistoryBytes and HistoryAge bound the history of a
	// server without a cluster (defaults DefaultHistoryMsgs,
	// DefaultHistoryBytes, DefaultHistoryAge); the oldest messages go
	// first. A client resuming from a message no longer held is told of
	// the gap.
	HistoryMsgs  int
	HistoryBytes int
	HistoryAge   time.Duration
}

// Defaults for BroadcastLimits.
const (
	DefaultBroadcastQueueBytes   = 1 << 20
	DefaultBroadcastWriteTimeout = 5 * time.Second
)

func (l BroadcastLimits) withDefaults() BroadcastLimits {
	if l.MaxQueueBytes <= 0 {
		l.MaxQueueBytes = DefaultBroadcastQueueBytes
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultBroadcastWriteTimeout
	}
	if l.HistoryMsgs <= 0 {
		l.HistoryMsgs = DefaultHistoryMsgs
	}
	if l.HistoryBytes <= 0 {
		l.HistoryBytes = DefaultHistoryBytes
	}
	if l.HistoryAge <= 0 {
		l.HistoryAge = DefaultHistoryAge
	}
	return l
}

// Timings of /broadcast.
const (
	// laggardHint is the retry hint sent to a member dropped for falling
	// behind: it may come back at once (a reconnecting client adds its
	// own backoff) and resume.
	laggardHint = time.Second
	// busHint is the hint when the broadcast's history cannot be reached
	// (a cluster without a JetStream quorum, or not formed yet).
	busHint = 2 * time.Second
	// busTimeout bounds one subscribe or publish against the history.
	busTimeout = 5 * time.Second
	// maxGapRetries bounds the subscribes of one member whose history
	// keeps moving past it.
	maxGapRetries = 5
	// maxKeptFrameBuffer is the largest envelope buffer a member keeps
	// between messages.
	maxKeptFrameBuffer = 64 << 10
)

// hub keeps the /broadcast members and their counters. The messages go
// through the bus; each member reads its own subscription, bounded in
// bytes by the subscription itself, so a member is bounded once.
type hub struct {
	limits BroadcastLimits
	bus    bus
	log    *slog.Logger

	mu      sync.Mutex
	members map[*member]struct{}

	published      atomic.Uint64 // messages published by this server's members
	droppedBytes   atomic.Uint64 // members dropped for MaxQueueBytes
	droppedTimeout atomic.Uint64 // members dropped for WriteTimeout
	resumes        atomic.Uint64 // members that asked for a from
	gaps           atomic.Uint64 // "!gap" sent
}

func newHub(l BroadcastLimits, b bus, log *slog.Logger) *hub {
	return &hub{limits: l.withDefaults(), bus: b, log: log, members: make(map[*member]struct{})}
}

// member is one /broadcast connection.
type member struct {
	c      *websocket.Conn
	resume bool // speaks ResumeProtocol
	drop   sync.Once
	buf    []byte // envelope buffer, writer goroutine only

	mu     sync.Mutex
	sub    feed
	closed bool // the member left: no new subscription
}

// setSub makes f m's subscription; false (f closed) if m has left.
func (m *member) setSub(f feed) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		f.Close()
		return false
	}
	m.sub = f
	return true
}

func (m *member) feed() feed {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sub
}

// close ends m's subscription, and any it would open later.
func (m *member) close() {
	m.mu.Lock()
	m.closed = true
	f := m.sub
	m.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

func (h *hub) memberCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.members)
}

// queuedBytes is the backlog of the member furthest behind.
func (h *hub) queuedBytes() int {
	h.mu.Lock()
	ms := make([]*member, 0, len(h.members))
	for m := range h.members {
		ms = append(ms, m)
	}
	h.mu.Unlock()
	n := 0
	for _, m := range ms {
		if f := m.feed(); f != nil {
			n = max(n, f.Queued())
		}
	}
	return n
}

// serve runs one member: it subscribes (replaying what a resuming client
// missed), hands the subscription to a writer goroutine, and publishes
// what the client sends until the connection ends.
func (h *hub) serve(ctx context.Context, c *websocket.Conn, readLimit int64) {
	m := &member{c: c, resume: c.Subprotocol() == ResumeProtocol}
	from := uint64(0)
	if m.resume {
		from = fromOf(ctx)
	}
	if from > 0 {
		h.resumes.Add(1)
	}
	if mm := h.bus.maxMessage(); mm > 0 && (readLimit <= 0 || int64(mm) < readLimit) {
		c.SetReadLimit(int64(mm))
	}
	h.mu.Lock()
	h.members[m] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.members, m)
		h.mu.Unlock()
	}()
	// Subscribe before reading, so a client sees its own first message.
	sub, live, err := h.open(ctx, m, from)
	if err != nil {
		h.fail(m, err)
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.writeLoop(ctx, m, sub, live)
	}()
	defer func() {
		m.close()
		<-done
	}()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			logEnd(h.log, "broadcast", c, err)
			return
		}
		pctx, cancel := context.WithTimeout(ctx, busTimeout)
		_, err = h.bus.publish(pctx, typ, msg)
		cancel()
		if err != nil {
			h.log.Warn("broadcast: publishing failed", "remote", c.RemoteAddr().String(), "err", err)
			go c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("broadcast unavailable, message not stored", busHint))
			return
		}
		h.published.Add(1)
	}
}

// open subscribes m from want (0: live), telling a resuming client of
// every gap on the way. It reports whether "!live" is still to be sent.
func (h *hub) open(ctx context.Context, m *member, want uint64) (feed, bool, error) {
	for range maxGapRetries {
		sctx, cancel := context.WithTimeout(ctx, busTimeout)
		sub, err := h.bus.subscribe(sctx, want, h.limits.MaxQueueBytes, func(lag *cluster.LagError) { h.dropLaggard(m, lag) })
		cancel()
		var gap *cluster.GapError
		if errors.As(err, &gap) {
			next := gapNext(gap)
			if err := h.sendGap(ctx, m, want, next); err != nil {
				return nil, false, err
			}
			want = next
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if !m.setSub(sub) {
			return nil, false, cluster.ErrClosed
		}
		live := m.resume
		if live && (want == 0 || want >= sub.LiveFrom()) {
			// Nothing to replay: the position comes first.
			if err := h.write(ctx, m, websocket.MessageText, liveFrame(sub.LiveFrom())); err != nil {
				sub.Close()
				return nil, false, err
			}
			live = false
		}
		return sub, live, nil
	}
	return nil, false, fmt.Errorf("the history moved past %d broadcasts %d times in a row", want, maxGapRetries)
}

// gapNext is where delivery goes on after a gap: the oldest message held,
// or, for a sequence the history never gave out, the next one it will.
func gapNext(g *cluster.GapError) uint64 {
	if g.Requested > g.Newest+1 || g.Oldest < g.Requested {
		return g.Newest + 1
	}
	return g.Oldest
}

// sendGap tells a resuming client that from … next-1 are gone. When next
// is not past from, the client asked for a number this history never gave
// out (its numbering was reset, or the client's came from elsewhere): no
// "!gap" then; the "!live <next>" that follows, at or below what the
// client has, tells it the numbering restarted (RESUME.md as the clients
// read it).
func (h *hub) sendGap(ctx context.Context, m *member, from, next uint64) error {
	h.gaps.Add(1)
	if !m.resume || next <= from {
		return nil // a plain client was promised nothing
	}
	return h.write(ctx, m, websocket.MessageText, gapFrame(from, next))
}

// writeLoop delivers m's subscription to its connection until either
// ends. pendingLive says "!live" is due after the replay.
func (h *hub) writeLoop(ctx context.Context, m *member, sub feed, pendingLive bool) {
	for {
		msg, err := sub.Next(ctx)
		var gap *cluster.GapError
		switch {
		case errors.As(err, &gap):
			// The history dropped what this member still needed.
			sub.Close()
			next := gapNext(gap)
			if h.sendGap(ctx, m, gap.Requested, next) != nil {
				return
			}
			if sub, pendingLive, err = h.open(ctx, m, next); err != nil {
				h.fail(m, err)
				return
			}
			continue
		case err != nil:
			// Lag (the member is being dropped), or closed: the member
			// left, or the node left the cluster after the drain.
			return
		}
		payload := msg.Data
		if m.resume {
			m.buf = appendData(m.buf[:0], msg.Seq, msg.Data)
			payload = m.buf
		}
		err = h.write(ctx, m, wsType(msg.Type), payload)
		if cap(m.buf) > maxKeptFrameBuffer {
			m.buf = nil
		}
		if err != nil {
			return
		}
		if pendingLive && msg.Seq+1 >= sub.LiveFrom() {
			if h.write(ctx, m, websocket.MessageText, liveFrame(msg.Seq+1)) != nil {
				return
			}
			pendingLive = false
		}
	}
}

// write sends one message within WriteTimeout; a member too slow for it
// is dropped with 1013.
func (h *hub) write(ctx context.Context, m *member, typ websocket.MessageType, p []byte) error {
	wctx, cancel := context.WithTimeout(ctx, h.limits.WriteTimeout)
	err := m.c.Write(wctx, typ, p)
	cancel()
	if err != nil && wctx.Err() != nil && websocket.CloseStatus(err) < 0 {
		h.droppedTimeout.Add(1)
		h.dropMember(m, fmt.Sprintf("too slow for the broadcast: a message took over %s to send", h.limits.WriteTimeout))
	}
	return err
}

// dropLaggard is the subscription's OnLag: it closes the member at once,
// even while its writer is stuck in a write, and frees its backlog (the
// subscription has already let it go).
func (h *hub) dropLaggard(m *member, lag *cluster.LagError) {
	h.droppedBytes.Add(1)
	h.dropMember(m, fmt.Sprintf("too slow for the broadcast: %d bytes behind, limit %d", lag.Bytes, lag.Limit))
}

// dropMember closes m with 1013 and a short hint, once. m stops counting
// as a member at once, though its close handshake may wait for a write
// stuck on a full socket.
func (h *hub) dropMember(m *member, why string) {
	m.drop.Do(func() {
		h.mu.Lock()
		delete(h.members, m)
		h.mu.Unlock()
		h.log.Debug("broadcast: member dropped", "remote", m.c.RemoteAddr().String(), "why", why)
		go m.c.Close(closecode.TryAgainLater, closecode.FormatRetryHint(why, laggardHint))
	})
}

// fail closes a member whose subscription could not be opened. It closes
// before returning: serve returns right after, and the connection is then
// dropped (shed.Handler's CloseNow), which would lose a Close frame still
// on its way and leave the client with 1006 instead of 1013 and its hint.
func (h *hub) fail(m *member, err error) {
	if errors.Is(err, cluster.ErrClosed) {
		return // the server is going away; the drain closes the member
	}
	h.log.Warn("broadcast: cannot follow the broadcast", "remote", m.c.RemoteAddr().String(), "err", err)
	first := false
	m.drop.Do(func() { first = true })
	if first {
		m.c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("broadcast history unavailable", busHint))
	}
}

// writePrometheus appends the broadcast metrics to /metrics.
func (h *hub) writePrometheus(w io.Writer) {
	fmt.Fprintf(w, "# HELP ebb_broadcast_members Clients connected to /broadcast.\n# TYPE ebb_broadcast_members gauge\nebb_broadcast_members %d\n", h.memberCount())
	fmt.Fprintf(w, "# HELP ebb_broadcast_messages_total Messages published to /broadcast by this server's clients.\n# TYPE ebb_broadcast_messages_total counter\nebb_broadcast_messages_total %d\n", h.published.Load())
	fmt.Fprintf(w, "# HELP ebb_broadcast_last_seq Sequence number of the newest broadcast delivered on this server.\n# TYPE ebb_broadcast_last_seq gauge\nebb_broadcast_last_seq %d\n", h.bus.lastSeq())
	fmt.Fprintf(w, "# HELP ebb_broadcast_max_member_backlog_bytes Bytes of live messages the member furthest behind has yet to receive.\n# TYPE ebb_broadcast_max_member_backlog_bytes gauge\nebb_broadcast_max_member_backlog_bytes %d\n", h.queuedBytes())
	fmt.Fprintf(w, "# HELP ebb_broadcast_dropped_total Members closed with 1013 for falling behind, by reason: queue_bytes (more than the per-member byte bound behind) or write_timeout (a message took longer than the write timeout).\n# TYPE ebb_broadcast_dropped_total counter\n")
	fmt.Fprintf(w, "ebb_broadcast_dropped_total{reason=\"queue_bytes\"} %d\n", h.droppedBytes.Load())
	fmt.Fprintf(w, "ebb_broadcast_dropped_total{reason=\"write_timeout\"} %d\n", h.droppedTimeout.Load())
	fmt.Fprintf(w, "# HELP ebb_broadcast_resumes_total Members that asked to resume from a sequence (resume protocol, from=N).\n# TYPE ebb_broadcast_resumes_total counter\nebb_broadcast_resumes_total %d\n", h.resumes.Load())
	fmt.Fprintf(w, "# HELP ebb_broadcast_gaps_total Gaps met by members: messages a member needed that the history no longer held (a resuming client is told with !gap).\n# TYPE ebb_broadcast_gaps_total counter\nebb_broadcast_gaps_total %d\n", h.gaps.Load())
}
