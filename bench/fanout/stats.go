package fanout

import (
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The timeline counts in buckets of tick; maxTicks bounds it (a run is
// minutes long).
const (
	tick     = 100 * time.Millisecond
	maxTicks = 9000
)

// shards spreads latency recording over several histograms, so that a
// thousand client goroutines do not queue on one lock.
const shards = 16

// Phase numbers: latency is recorded per phase of the message's id.
const (
	PhaseSteady  = 0
	PhaseRestart = 1
)

// Stats gathers what every client and the publisher see. Methods are safe
// for concurrent use.
type Stats struct {
	Start time.Time // the clock of payload timestamps and of the timeline

	pubNode  atomic.Int32  // node the publisher is connected to
	splitID  atomic.Uint64 // first id of the restart phase (0: not yet)
	conn     atomic.Int64  // established subscriptions
	attempts [maxTicks]atomic.Int32
	opened   [maxTicks]atomic.Int32
	lost     [maxTicks]atomic.Int32 // established subscriptions that ended
	refused  [maxTicks]atomic.Int32 // attempts that ended before established

	mu        sync.Mutex
	codes     [2]map[string]int // how subscriptions ended, per phase
	refusals  [2]map[string]int // how attempts failed, per phase
	phase     int
	published bitset

	lat [2][shards]struct {
		sync.Mutex
		h *hdrhistogram.Histogram
	}
}

// NewStats starts the clock.
func NewStats() *Stats {
	s := &Stats{Start: time.Now()}
	for p := range s.codes {
		s.codes[p], s.refusals[p] = map[string]int{}, map[string]int{}
		for i := range s.lat[p] {
			// 1 µs to 2 min, 3 significant digits.
			s.lat[p][i].h = hdrhistogram.New(1, 120_000_000, 3)
		}
	}
	s.pubNode.Store(-1)
	return s
}

// Now returns the time since Start in nanoseconds, the payloads' clock.
func (s *Stats) Now() int64 { return int64(time.Since(s.Start)) }

func (s *Stats) sec() int { return min(int(time.Since(s.Start)/tick), maxTicks-1) }

// SetPublisherNode records which node the publisher's messages enter by.
func (s *Stats) SetPublisherNode(n int) { s.pubNode.Store(int32(n)) }

// BeginRestart marks the start of the rolling restart: messages from id
// on count in the restart phase, and so do the closes seen from now on.
func (s *Stats) BeginRestart(id uint64) {
	s.splitID.Store(id)
	s.mu.Lock()
	s.phase = PhaseRestart
	s.mu.Unlock()
}

// Connected returns the number of established subscriptions.
func (s *Stats) Connected() int { return int(s.conn.Load()) }

func (s *Stats) attempt() { s.attempts[s.sec()].Add(1) }

func (s *Stats) open() {
	s.opened[s.sec()].Add(1)
	s.conn.Add(1)
}

func (s *Stats) ended(how string) {
	s.lost[s.sec()].Add(1)
	s.conn.Add(-1)
	s.mu.Lock()
	s.codes[s.phase][how]++
	s.mu.Unlock()
}

// closedByHarness counts a subscription the harness itself closed at the
// end of the run: not a disconnect the system caused.
func (s *Stats) closedByHarness() { s.conn.Add(-1) }

func (s *Stats) refuse(how string) {
	s.refused[s.sec()].Add(1)
	s.mu.Lock()
	s.refusals[s.phase][how]++
	s.mu.Unlock()
}

// Published records that the publisher's message id was accepted.
func (s *Stats) Published(id uint64) {
	s.mu.Lock()
	s.published.set(id)
	s.mu.Unlock()
}

// record adds one publish→receive latency of message id received by a
// client on node.
func (s *Stats) record(client, node int, id uint64, ns int64) {
	if node == int(s.pubNode.Load()) || ns < 0 {
		return
	}
	p := PhaseSteady
	if split := s.splitID.Load(); split != 0 && id >= split {
		p = PhaseRestart
	}
	sh := &s.lat[p][client%shards]
	sh.Lock()
	sh.h.RecordValue(max(1, ns/1000))
	sh.Unlock()
}

// Latency merges the latency histograms of a phase (µs).
func (s *Stats) Latency(phase int) *hdrhistogram.Histogram {
	h := hdrhistogram.New(1, 120_000_000, 3)
	for i := range s.lat[phase] {
		sh := &s.lat[phase][i]
		sh.Lock()
		h.Merge(sh.h)
		sh.Unlock()
	}
	return h
}

// Second is one second of the timeline.
type Second struct {
	At       int `json:"t"`        // seconds since the start of the window
	Attempts int `json:"attempts"` // connection attempts started
	Opened   int `json:"opened"`   // subscriptions established
	Lost     int `json:"lost"`     // established subscriptions that ended
	Refused  int `json:"refused"`  // attempts that failed
}

// Timeline returns the seconds from from to to (times since Start),
// numbered from 0.
func (s *Stats) Timeline(from, to time.Duration) []Second {
	per := int(time.Second / tick)
	first, last := int(from/tick), min(int(to/tick), maxTicks)
	var out []Second
	for i := first; i < last; i += per {
		sec := Second{At: len(out)}
		for j := i; j < min(i+per, last); j++ {
			sec.Attempts += int(s.attempts[j].Load())
			sec.Opened += int(s.opened[j].Load())
			sec.Lost += int(s.lost[j].Load())
			sec.Refused += int(s.refused[j].Load())
		}
		out = append(out, sec)
	}
	return out
}

// WatchBack reports, on the returned channel, how long after now the
// established subscriptions first fell below want and then were all back
// (the time since now), or -1 if that did not happen within limit.
func (s *Stats) WatchBack(want int, limit time.Duration) <-chan time.Duration {
	ch := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		dipped := false
		for time.Since(start) < limit {
			n := s.Connected()
			if n < want {
				dipped = true
			} else if dipped {
				ch <- time.Since(start)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		ch <- -1
	}()
	return ch
}

// Codes returns how subscriptions ended and how attempts failed in a
// phase, by name ("1012", "3001", "1006 no close frame", "HTTP 503", …).
func (s *Stats) Codes(phase int) (ended, refused map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps(s.codes[phase]), maps(s.refusals[phase])
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// FormatCodes renders a code count map as "1012 ×300, 1006 no close frame ×2",
// the most frequent first.
func FormatCodes(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var out string
	for i, k := range keys {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%s ×%d", k, m[k])
	}
	if out == "" {
		return "none"
	}
	return out
}

// Loss is the delivery account over every client, against the messages
// the system accepted.
type Loss struct {
	Published      int // messages accepted (by the publisher's ack or seen by a client)
	Expected       int // sum over clients of the messages each should have had
	Lost           int // expected but never received, summed over clients
	ClientsLosing  int // clients that lost at least one
	MaxLost        int // the most one client lost
	DupByID        int // deliveries of a payload id the client already had
	DupBySeq       int // messages whose sequence/offset was not after the last one
	SkippedBySeq   int // sequence numbers jumped over without a gap notice
	GapNotices     int // "!gap" notices (ebb) or failed recoveries (Centrifugo)
	GapMessages    int // messages the gap notices said were gone
	BadPayloads    int // deliveries that were not the publisher's payload
	ProtocolErrors int // server messages that did not parse
	GaveUp         int // clients whose policy stopped reconnecting
}

// Account computes the loss account of clients against the ids from
// first on (the first id sent after every client subscribed).
func (s *Stats) Account(clients []*Client, first uint64) Loss {
	s.mu.Lock()
	pub := s.published.clone()
	s.mu.Unlock()
	for _, c := range clients {
		pub.or(&c.seen)
	}
	var l Loss
	ids := pub.ids(first)
	l.Published = len(ids)
	for _, c := range clients {
		lost := 0
		for _, id := range ids {
			if !c.seen.has(id) {
				lost++
			}
		}
		l.Expected += len(ids)
		l.Lost += lost
		if lost > 0 {
			l.ClientsLosing++
		}
		l.MaxLost = max(l.MaxLost, lost)
		l.DupByID += c.dupID
		l.DupBySeq += c.dupSeq
		l.SkippedBySeq += c.skipped
		l.GapNotices += c.gaps
		l.GapMessages += c.gapMsgs
		l.BadPayloads += c.bad
		l.ProtocolErrors += c.protoErrs
		if c.gaveUp {
			l.GaveUp++
		}
	}
	return l
}

// bitset is a growable set of message ids.
type bitset struct{ w []uint64 }

func (b *bitset) set(id uint64) {
	i := int(id / 64)
	if i >= len(b.w) {
		b.w = append(b.w, make([]uint64, i+1-len(b.w)+len(b.w)/2)...)
	}
	b.w[i] |= 1 << (id % 64)
}

func (b *bitset) has(id uint64) bool {
	i := int(id / 64)
	return i < len(b.w) && b.w[i]&(1<<(id%64)) != 0
}

func (b *bitset) clone() bitset { return bitset{w: slices.Clone(b.w)} }

func (b *bitset) or(o *bitset) {
	if len(o.w) > len(b.w) {
		b.w = append(b.w, make([]uint64, len(o.w)-len(b.w))...)
	}
	for i, v := range o.w {
		b.w[i] |= v
	}
}

// ids lists the members from first on.
func (b *bitset) ids(first uint64) []uint64 {
	var out []uint64
	for i, w := range b.w {
		for w != 0 {
			bit := uint64(0)
			for w&(1<<bit) == 0 {
				bit++
			}
			w &^= 1 << bit
			if id := uint64(i)*64 + bit; id >= first {
				out = append(out, id)
			}
		}
	}
	return out
}
