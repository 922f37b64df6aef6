package shed

import (
	"net/netip"
	"time"
)

// Demand: how far the clients that want a connection exceed capacity.
//
// Demand is the connections holding a slot plus the refusals counted over
// the last Options.DemandWindow (2 s by default). It is what the hint
// grows with and what Limits.HardDemand is compared with.
//
// Which refusals count: only those of clients that could have been
// admitted had there been room. A refusal for Limits.MaxConnsPerIP, or for
// a Listener's per-address share of pending places, does not count (the
// client is over its own share; more capacity would not admit it), nor
// does a Listener's "no pending place" refusal (MaxPending paces
// handshakes and says nothing about room for connections), nor a drain
// refusal. With MaxConnsPerIP set, one address counts at most as many
// refusals per window as it could still be admitted connections
// (MaxConnsPerIP minus those it holds): a client retrying fast is one
// client, not a crowd. So one address cannot drive the server into hard
// mode and lock everyone else out; without MaxConnsPerIP, shed cannot tell
// a crowd behind one address from one greedy client, and counts every
// refusal.
//
// How fast: a refusal counts for one window, in slots of an eighth of it,
// so demand falls to the connections alone at most one window after the
// last refusal, however large the storm was (a decaying count would take a
// time that grows with the storm's size: 55–60 s with the former 10 s
// half-life). Hard mode has hysteresis so that it does not flap while a
// storm goes on: it starts when demand reaches HardDemand and ends when
// demand falls below three quarters of it. During a storm the refusals
// themselves (1013 or 503, both count) keep demand up; once the storm
// stops, hard mode ends within one window as long as the connections
// alone are below three quarters of HardDemand (set HardDemand well above
// MaxConns, e.g. 2×).

const (
	// demandSlots divides the demand window; a refusal leaves the count
	// between 7/8 and 8/8 of a window after it happened.
	demandSlots = 8
	// hardExit is the fraction of Limits.HardDemand below which hard mode
	// ends once it has started.
	hardExit = 0.75
	// maxDemandAddrs bounds the per-address refusal counts kept for one
	// window; past it, refusals from further addresses count uncapped.
	maxDemandAddrs = 1 << 16
)

// demandWindow counts refusals over a sliding window. The zero value is
// not usable; see init.
type demandWindow struct {
	origin time.Time     // slot 0 starts here
	slot   time.Duration // window / demandSlots
	counts [demandSlots]int
	total  int
	newest int64 // index of the newest slot counted

	// Per-address counts for the MaxConnsPerIP cap: refusals counted in
	// this window-long generation and in the one before it.
	gen       int64
	cur, prev map[netip.Addr]int
}

func (w *demandWindow) init(origin time.Time, window time.Duration) {
	w.origin = origin
	w.slot = max(window/demandSlots, time.Nanosecond)
}

// index returns the slot of now; a clock that went back stays in the
// newest slot.
func (w *demandWindow) index(now time.Time) int64 {
	return max(int64(now.Sub(w.origin)/w.slot), w.newest)
}

// advance drops the slots that fell out of the window at now.
func (w *demandWindow) advance(now time.Time) {
	i := w.index(now)
	if i == w.newest {
		return
	}
	if i-w.newest >= demandSlots {
		w.counts = [demandSlots]int{}
		w.total = 0
	} else {
		for j := w.newest + 1; j <= i; j++ {
			w.total -= w.counts[j%demandSlots]
			w.counts[j%demandSlots] = 0
		}
	}
	w.newest = i
}

// value returns the refusals counted within the window at now.
func (w *demandWindow) value(now time.Time) int {
	w.advance(now)
	return w.total
}

// add counts one refusal at now.
func (w *demandWindow) add(now time.Time) {
	w.advance(now)
	w.counts[w.newest%demandSlots]++
	w.total++
}

// addrCount returns the refusals counted for addr in this generation and
// the one before (between one and two windows), rotating generations.
func (w *demandWindow) addrCount(now time.Time, addr netip.Addr) int {
	g := w.index(now) / demandSlots
	if g != w.gen {
		if g == w.gen+1 {
			w.prev, w.cur = w.cur, w.prev
		} else {
			w.prev = nil
		}
		if len(w.cur) > 1024 {
			w.cur = nil // let a storm's map go instead of keeping its buckets
		} else {
			clear(w.cur)
		}
		w.gen = g
	}
	return w.cur[addr] + w.prev[addr]
}

// addAddr counts one refusal for addr; it reports false, counting nothing,
// when maxDemandAddrs addresses are already counted in this generation.
func (w *demandWindow) addAddr(addr netip.Addr) bool {
	if w.cur == nil {
		w.cur = make(map[netip.Addr]int)
	}
	if _, ok := w.cur[addr]; !ok && len(w.cur) >= maxDemandAddrs {
		return false
	}
	w.cur[addr]++
	return true
}

// demandLocked returns demand at now: connections plus counted refusals.
func (s *Shedder) demandLocked(now time.Time) (demand, refused float64) {
	refused = float64(s.demand.value(now))
	return float64(s.conns) + refused, refused
}

// countRefusalLocked counts a refusal of a client at addr toward demand,
// if that client could have been admitted had there been room (see the
// comment at the top of this file). capped is false when addr stands for
// many clients (a trusted proxy seen by a Listener).
func (s *Shedder) countRefusalLocked(now time.Time, addr netip.Addr, capped bool) {
	if m := s.limits.MaxConnsPerIP; m > 0 && capped {
		room := m - s.perIP[addr]
		if room <= 0 || s.demand.addrCount(now, addr) >= room {
			return
		}
		s.demand.addAddr(addr)
	}
	s.demand.add(now)
}

// hardDemandLocked reports whether demand is past Limits.HardDemand, with
// hysteresis: hard mode starts at HardDemand and ends below hardExit of
// it.
func (s *Shedder) hardDemandLocked(demand float64) bool {
	hd := float64(s.limits.HardDemand)
	switch {
	case hd <= 0:
		s.hard = false
	case s.hard && demand < hardExit*hd:
		s.hard = false
	case !s.hard && demand >= hd:
		s.hard = true
		s.stats.hardEntered.Add(1)
	}
	return s.hard
}
