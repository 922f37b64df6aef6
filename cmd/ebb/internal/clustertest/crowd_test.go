package clustertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// crowd is many reconnect.Clients on one URL, each resuming the broadcast
// (Options.Resume) with the library's default policy, as an application
// would use it. Each client checks what it reads: sequences must follow
// one another (a jump is a loss, a repeat a duplicate), every gap is an
// event, and the publisher's payloads ("p<i>") must come in order.
type crowd struct {
	url     string
	resume  bool
	clients []*client // guarded by mu
	wg      sync.WaitGroup

	connected atomic.Int64 // clients with an open connection

	mu      sync.Mutex
	events  []crowdEvent // opens, closes and refusals, in order
	counted bool         // measuring: events are recorded
}

// crowdEvent is a connection opening, closing or refused.
type crowdEvent struct {
	at     time.Time
	client int
	kind   eventKind
	code   closecode.Code // closes and refusals; 0 for an HTTP refusal
	status int            // HTTP status of a refusal, or 0
	reason string
	hint   time.Duration // the server's retry hint, 0 if none
	delay  time.Duration // the client's wait before its next attempt (eventWait)
	err    string        // the error that ended a connection without a close code
}

type eventKind int

func (k eventKind) String() string {
	return [...]string{"?", "open", "closed", "refused", "wait"}[k]
}

const (
	eventOpen    eventKind = iota + 1 // a connection opened (reconnect: attempt counts)
	eventClosed                       // an open connection ended
	eventRefused                      // an attempt ended before the connection opened
	eventWait                         // the client waits delay before its next attempt
)

// client is one member of the crowd and what it saw.
type client struct {
	id int
	c  *reconnect.Client

	mu        sync.Mutex
	opens     int
	open      bool
	everOpen  bool
	readSeq   uint64 // last data sequence read; 0 before the first
	firstSeq  uint64
	received  int    // data messages
	lost      uint64 // messages skipped (sequence jumps) or reported by gaps
	gaps      int    // gap events (GapError)
	dups      int    // sequences at or below the last one read
	pubDups   int    // a payload index at or below the last one read (stored twice)
	lastIndex int    // last payload index read; -1 before the first
	firstIdx  int    // first payload index read
	skipped   int    // payload indices never read (publisher's messages not stored)
	badData   []string
	closes    map[closecode.Code]int
	lastWait  time.Time // when the last wait began
	lastDelay time.Duration
	lastHint  time.Duration
	openedAt  time.Time // last open
	closedAt  time.Time // last close of an open connection
}

func newCrowd(url string, resume bool) *crowd { return &crowd{url: url, resume: resume} }

// record starts recording events (the warm-up's are not kept).
func (cr *crowd) record(on bool) {
	cr.mu.Lock()
	cr.counted = on
	cr.mu.Unlock()
}

func (cr *crowd) addEvent(e crowdEvent) {
	cr.mu.Lock()
	if cr.counted {
		cr.events = append(cr.events, e)
	}
	cr.mu.Unlock()
}

func (cr *crowd) eventsSnapshot() []crowdEvent {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return slices.Clone(cr.events)
}

// add starts n more clients, at most perSecond a second (0: at once).
func (cr *crowd) add(ctx context.Context, n int, perSecond float64) error {
	var tick *time.Ticker
	if perSecond > 0 {
		tick = time.NewTicker(time.Duration(float64(time.Second) / perSecond))
		defer tick.Stop()
	}
	for range n {
		if tick != nil {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := cr.start(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (cr *crowd) start(ctx context.Context) error {
	cr.mu.Lock()
	cl := &client{id: len(cr.clients), lastIndex: -1, closes: map[closecode.Code]int{}}
	cr.mu.Unlock()
	opts := &reconnect.Options{
		// Wide enough for a drain's 1012 and a slow handshake under
		// -race; the policy's own backoff and the hints decide the rest.
		HandshakeTimeout: 10 * time.Second,
		OnEvent:          func(e reconnect.Event) { cr.onEvent(cl, e) },
	}
	if cr.resume {
		opts.Resume = &reconnect.ResumeOptions{}
	}
	c, err := reconnect.New(ctx, cr.url, opts)
	if err != nil {
		return err
	}
	cl.c = c
	cr.mu.Lock()
	cr.clients = append(cr.clients, cl)
	cr.mu.Unlock()
	cr.wg.Go(func() { cl.read(ctx) })
	return nil
}

// onEvent runs on the client's goroutine for every state change.
func (cr *crowd) onEvent(cl *client, e reconnect.Event) {
	switch e.State {
	case reconnect.StateOpen:
		cl.mu.Lock()
		cl.opens++
		cl.open, cl.everOpen = true, true
		cl.openedAt = e.Time
		cl.mu.Unlock()
		cr.connected.Add(1)
		cr.addEvent(crowdEvent{at: e.Time, client: cl.id, kind: eventOpen})
	case reconnect.StateClosed:
		hint, _ := closecode.ParseRetryHint(e.Reason)
		code := e.Code
		cl.mu.Lock()
		wasOpen := cl.open
		cl.open = false
		if wasOpen {
			cl.closedAt = e.Time
		}
		if e.Status == 0 {
			cl.closes[code]++
		}
		cl.mu.Unlock()
		kind := eventRefused
		if wasOpen {
			kind = eventClosed
			cr.connected.Add(-1)
		}
		if e.Status != 0 {
			code = 0
		}
		ev := crowdEvent{at: e.Time, client: cl.id, kind: kind, code: code, status: e.Status, reason: e.Reason, hint: hint}
		if e.Err != nil && (code == closecode.AbnormalClosure || e.Status != 0) {
			ev.err = e.Err.Error()
		}
		cr.addEvent(ev)
	case reconnect.StateWaiting:
		cl.mu.Lock()
		cl.lastWait, cl.lastDelay, cl.lastHint = e.Time, e.Delay, e.Decision.Hint
		cl.mu.Unlock()
		cr.addEvent(crowdEvent{at: e.Time, client: cl.id, kind: eventWait, delay: e.Delay, hint: e.Decision.Hint})
	case reconnect.StateStopped:
		cl.mu.Lock()
		if cl.open {
			cl.open = false
			cr.connected.Add(-1)
		}
		cl.mu.Unlock()
	}
}

// read reads the client until ctx ends, checking the stream.
func (cl *client) read(ctx context.Context) {
	for {
		_, p, err := cl.c.Read(ctx)
		var gap *reconnect.GapError
		switch {
		case errors.As(err, &gap):
			cl.mu.Lock()
			cl.gaps++
			if gap.From > 0 && gap.Next > gap.From {
				cl.lost += gap.Next - gap.From
			}
			if gap.Next > 0 {
				cl.readSeq = gap.Next - 1
			}
			cl.mu.Unlock()
			continue
		case err != nil:
			return
		}
		seq := cl.c.LastSeq()
		cl.mu.Lock()
		cl.received++
		switch {
		case cl.readSeq == 0:
			cl.firstSeq = seq
		case seq <= cl.readSeq:
			cl.dups++
		case seq > cl.readSeq+1:
			cl.lost += seq - cl.readSeq - 1
		}
		cl.readSeq = max(cl.readSeq, seq)
		if idx, ok := payloadIndex(p); !ok {
			if len(cl.badData) < 3 {
				cl.badData = append(cl.badData, fmt.Sprintf("%d:%q", seq, p))
			}
		} else {
			switch {
			case cl.lastIndex < 0:
				cl.firstIdx = idx
			case idx <= cl.lastIndex:
				cl.pubDups++
			case idx > cl.lastIndex+1:
				cl.skipped += idx - cl.lastIndex - 1
			}
			cl.lastIndex = max(cl.lastIndex, idx)
		}
		cl.mu.Unlock()
	}
}

// payloadIndex parses the publisher's "p<i>".
func payloadIndex(p []byte) (int, bool) {
	s, ok := strings.CutPrefix(string(p), "p")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil && i >= 0
}

// clientView is a copy of a client's record.
type clientView struct {
	id                  int
	opens               int
	open, live          bool
	readSeq, firstSeq   uint64
	received            int
	lost                uint64
	gaps, dups, pubDups int
	lastIndex           int
	firstIdx, skipped   int
	badData             []string
	closes              map[closecode.Code]int
	lastWait            time.Time
	lastDelay, lastHint time.Duration
	openedAt, closedAt  time.Time
	stopped             bool
	stopErr             error
	everOpen            bool
}

func (cl *client) view() clientView {
	live := cl.c.Live()
	var stopErr error
	stopped := false
	select {
	case <-cl.c.Done():
		stopped, stopErr = true, cl.c.Err()
	default:
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return clientView{
		id: cl.id, opens: cl.opens, open: cl.open, live: live, readSeq: cl.readSeq, firstSeq: cl.firstSeq,
		received: cl.received, lost: cl.lost, gaps: cl.gaps, dups: cl.dups, pubDups: cl.pubDups,
		lastIndex: cl.lastIndex, firstIdx: cl.firstIdx, skipped: cl.skipped, badData: slices.Clone(cl.badData), closes: maps(cl.closes),
		lastWait: cl.lastWait, lastDelay: cl.lastDelay, lastHint: cl.lastHint,
		openedAt: cl.openedAt, closedAt: cl.closedAt, stopped: stopped, stopErr: stopErr, everOpen: cl.everOpen,
	}
}

func maps(m map[closecode.Code]int) map[closecode.Code]int {
	out := make(map[closecode.Code]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// list returns the clients started so far.
func (cr *crowd) list() []*client {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return slices.Clone(cr.clients)
}

// received is the data messages the clients have read so far.
func (cr *crowd) received() int {
	n := 0
	for _, cl := range cr.list() {
		cl.mu.Lock()
		n += cl.received
		cl.mu.Unlock()
	}
	return n
}

// liveCount counts the clients whose current connection has replayed what
// they missed (reconnect.Client.Live).
func (cr *crowd) liveCount() int {
	n := 0
	for _, cl := range cr.list() {
		if cl.c.Live() {
			n++
		}
	}
	return n
}

// close closes every client (1000) and waits for their readers.
func (cr *crowd) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, cl := range cr.list() {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = cl.c.Close(closecode.NormalClosure, "")
		})
	}
	wg.Wait()
	cr.wg.Wait()
}

// publisher sends "p0", "p1", … to /broadcast through the balancer at a
// steady rate, with a reconnect.Client (its messages queue while it is
// reconnecting and go out in order when it is back). It is a member of
// /broadcast too, so it reads (and drops) what it gets.
type publisher struct {
	c       *reconnect.Client
	sent    atomic.Int64 // messages handed to Write without error
	refused atomic.Int64 // Write errors (queue full)
	last    atomic.Int64 // index of the last message handed to Write; -1 before
	halt    context.CancelFunc
	done    chan struct{}

	mu      sync.Mutex
	closes  map[string]int // how its connections ended: "1012", "1013 <reason>", …
	readers sync.WaitGroup
}

// startPublisher starts a publisher whose client lives as long as ctx (or
// until close).
func startPublisher(ctx context.Context, url string, rate float64) (*publisher, error) {
	p := &publisher{done: make(chan struct{}), closes: map[string]int{}}
	c, err := reconnect.New(ctx, url, &reconnect.Options{
		QueueMessages: max(256, int(rate*30)),
		OnEvent: func(e reconnect.Event) {
			if e.State != reconnect.StateClosed {
				return
			}
			k := fmt.Sprint(int(e.Code))
			if e.Code == closecode.TryAgainLater {
				why, _, _ := strings.Cut(e.Reason, "; retry-after=")
				k += " " + why
			}
			p.mu.Lock()
			p.closes[k]++
			p.mu.Unlock()
		},
	})
	if err != nil {
		return nil, err
	}
	pctx, halt := context.WithCancel(ctx)
	p.c, p.halt = c, halt
	p.last.Store(-1)
	p.readers.Go(func() {
		for {
			if _, _, err := c.Read(ctx); err != nil && !errors.As(err, new(*reconnect.GapError)) {
				return
			}
		}
	})
	p.readers.Go(func() {
		defer close(p.done)
		start := time.Now()
		tick := time.NewTicker(max(time.Millisecond, time.Duration(float64(time.Second)/rate)))
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			// Catch up with the schedule after a slow tick, so the rate
			// holds on a busy machine.
			due := int(time.Since(start).Seconds() * rate)
			for ; i < due; i++ {
				if err := c.Write(pctx, websocket.MessageText, []byte("p"+strconv.Itoa(i))); err != nil {
					if pctx.Err() != nil {
						return
					}
					p.refused.Add(1)
					continue
				}
				p.sent.Add(1)
				p.last.Store(int64(i))
			}
		}
	})
	return p, nil
}

// stop stops sending and waits until the queue has gone out on an open
// connection; it returns the index of the last message.
func (p *publisher) stop(ctx context.Context, t *testing.T) int {
	t.Helper()
	p.halt()
	<-p.done
	waitUntil(ctx, t, "the publisher's queue sent", func() bool {
		return p.c.State() == reconnect.StateOpen && len(p.c.Unsent()) == 0
	})
	return int(p.last.Load())
}

// closed returns how the publisher's connections ended.
func (p *publisher) closed() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int, len(p.closes))
	for k, v := range p.closes {
		out[k] = v
	}
	return out
}

// close closes the publisher's client and waits for its goroutines.
func (p *publisher) close() {
	p.halt()
	<-p.done
	_ = p.c.Close(closecode.NormalClosure, "")
	p.readers.Wait()
}
