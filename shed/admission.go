package shed

import (
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Limits are the admission limits. Every limit is optional: zero turns it
// off. They can be changed at run time with Shedder.SetLimits.
type Limits struct {
	// MaxConns is the most connections holding a slot at once (admitted
	// requests whose handler has not returned).
	MaxConns int
	// MaxConnsPerIP is the most connections from one client address (see
	// Options.TrustedProxies and Options.IPv6PrefixBits).
	MaxConnsPerIP int
	// Rate is how many upgrades per second are admitted on average: the
	// refill rate of a token bucket. Only upgrades that pass every other
	// limit take a token.
	Rate float64
	// Burst is the size of the token bucket: how many upgrades may be
	// admitted at once after a quiet period. 0 with Rate set means
	// max(1, ⌈Rate⌉).
	Burst int
	// MaxInFlight is the most admitted handshakes in progress: requests
	// that have entered the handler but not yet hijacked the connection or
	// called Track. It bounds the work of completing handshakes (origin
	// checks, authentication, compression setup) during a surge.
	MaxInFlight int
	// HeapFraction refuses upgrades while the live heap is at or above
	// this fraction of the soft memory limit (GOMEMLIMIT or
	// debug.SetMemoryLimit), e.g. 0.8. Ignored while no limit is set.
	HeapFraction float64
	// SchedLatency refuses upgrades while the 99th percentile of goroutine
	// scheduling latency (runtime/metrics /sched/latencies:seconds, over
	// the last sample interval) is at or above it, e.g. 10 ms: a sign the
	// process has more runnable work than CPU.
	SchedLatency time.Duration
	// Pressure refuses upgrades while Options.Pressure returns a value at
	// or above it.
	Pressure float64
	// HardDemand is the hard ceiling on demand, counted as connections
	// plus the refusals of the last Options.DemandWindow that more
	// capacity could have admitted (per-IP refusals do not count; see
	// Stats.Demand). At or above it, refusals are HTTP 503 instead of
	// upgrade-then-1013, because upgrading every refused client costs
	// more than the server can spare. Hard mode ends once demand falls
	// below three quarters of HardDemand: within one DemandWindow of the
	// end of a storm if the connections alone are below that. Set it
	// well above MaxConns (2× is a good start) so that only a storm
	// reaches it.
	HardDemand int
	// HardPressure is the hard ceiling on runtime pressure, as a ratio to
	// the pressure limits above (1.5 means 50% past one of them). At or
	// above it, refusals are HTTP 503. 0 is off; otherwise it must be ≥ 1.
	HardPressure float64
}

func (l Limits) validate() error {
	ints := []struct {
		name string
		v    int
	}{
		{"MaxConns", l.MaxConns}, {"MaxConnsPerIP", l.MaxConnsPerIP}, {"Burst", l.Burst},
		{"MaxInFlight", l.MaxInFlight}, {"HardDemand", l.HardDemand},
	}
	for _, f := range ints {
		if f.v < 0 {
			return fmt.Errorf("shed: Limits.%s is %d: want 0 (off) or a positive number", f.name, f.v)
		}
	}
	floats := []struct {
		name string
		v    float64
	}{
		{"Rate", l.Rate}, {"HeapFraction", l.HeapFraction}, {"Pressure", l.Pressure}, {"HardPressure", l.HardPressure},
	}
	for _, f := range floats {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("shed: Limits.%s is %v: want 0 (off) or a positive number", f.name, f.v)
		}
	}
	if l.SchedLatency < 0 {
		return fmt.Errorf("shed: Limits.SchedLatency is %v: want 0 (off) or a positive duration", l.SchedLatency)
	}
	if l.HardPressure > 0 && l.HardPressure < 1 {
		return fmt.Errorf("shed: Limits.HardPressure is %v: want 0 (off) or a ratio ≥ 1 (it is measured against the pressure limits)", l.HardPressure)
	}
	return nil
}

func (l Limits) pressureLimited() bool {
	return l.HeapFraction > 0 || l.SchedLatency > 0 || l.Pressure > 0
}

// Reason says why an upgrade was refused or a connection was shed.
type Reason int

// Reasons, one per limit. Their String values are the reason label of the
// ebb_refused_total metric.
const (
	ReasonConns        Reason = iota + 1 // Limits.MaxConns, or Limits.HardDemand
	ReasonPerIP                          // Limits.MaxConnsPerIP
	ReasonRate                           // Limits.Rate (token bucket empty)
	ReasonInFlight                       // Limits.MaxInFlight
	ReasonMemory                         // Limits.HeapFraction
	ReasonSchedLatency                   // Limits.SchedLatency
	ReasonPressure                       // Limits.Pressure
	ReasonDraining                       // Shutdown has started
	ReasonPendingPerIP                   // a Listener's per-address share of pending places (ListenerOptions.MaxPendingPerIP)
	ReasonNodeFull                       // Limits.MaxConns here while the cluster has room (Advisor: VerdictNodeFull)
	ReasonClusterFull                    // the cluster is full or at its own limit (Advisor: VerdictClusterFull)
	numReasons         = iota
)

var reasonNames = [...]string{"", "conns", "per_ip", "rate", "in_flight", "memory", "sched_latency", "pressure", "draining", "pending_per_ip", "node_full", "cluster_full"}

// reasonTexts are the human part of close reasons and 503 bodies.
var reasonTexts = [...]string{
	"",
	"server at capacity",
	"too many connections from your address",
	"too many new connections",
	"too many handshakes in progress",
	"server low on memory",
	"server overloaded",
	"server overloaded",
	"server restarting",
	"too many unfinished requests from your address",
	"node at capacity, cluster has room",
	"cluster at capacity",
}

// String returns the metric label of r, e.g. "per_ip".
func (r Reason) String() string {
	if r > 0 && int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

// Text returns the human text shed puts in close reasons and 503 bodies,
// e.g. "server at capacity".
func (r Reason) Text() string {
	if r > 0 && int(r) < len(reasonTexts) {
		return reasonTexts[r]
	}
	return "refused"
}

// Mode says how an upgrade was refused.
type Mode int

// Refusal modes. Their String values are the mode label of
// ebb_refused_total.
const (
	// ModeClose completes the upgrade (101, no extension, the client's
	// first subprotocol echoed so that browsers accept it) and sends
	// a Close frame at once: 1013 with a retry hint, or the drain code
	// while draining. Every client, browsers included, sees the code and
	// the reason.
	ModeClose Mode = iota + 1
	// ModeHTTP answers 503 Service Unavailable with a Retry-After header
	// (whole seconds, rounded up) and a short text body, without
	// upgrading. Cheapest, but a browser reports only 1006.
	ModeHTTP
	numModes = iota
)

// String returns the metric label of m: "close" or "http".
func (m Mode) String() string {
	switch m {
	case ModeClose:
		return "close"
	case ModeHTTP:
		return "http"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// decision is the outcome of admission for one request.
type decision struct {
	reason Reason // 0: admitted
	mode   Mode
	code   closecode.Code
	hint   time.Duration
	ip     netip.Addr
	text   string // human part of the reason; "" = reason.Text()
}

// pastHardLocked reports whether the process is past a hard ceiling:
// Limits.HardPressure on the pressure ratio, or Limits.HardDemand on
// demand (with hysteresis, see demand.go). Past one, refusals are 503s.
func (s *Shedder) pastHardLocked(ratio, demand float64) bool {
	hardDemand := s.hardDemandLocked(demand) // always, to keep its state current
	return s.limits.HardPressure > 0 && ratio >= s.limits.HardPressure || hardDemand
}

// hardLimitLocked refuses d with an HTTP 503 if the process is past a hard
// ceiling and reports whether it did. The refusal counts toward demand
// (capped per address unless capped is false). Middleware and the Listener
// share it.
func (s *Shedder) hardLimitLocked(d *decision, ratio float64, why Reason, demand float64, now time.Time, capped bool) bool {
	l := &s.limits
	hardDemand := s.hardDemandLocked(demand)
	switch {
	case l.HardPressure > 0 && ratio >= l.HardPressure:
		s.refuseLocked(d, why, ModeHTTP, ratio)
	case hardDemand:
		s.refuseLocked(d, ReasonConns, ModeHTTP, overload(demand+1, l.MaxConns, l.HardDemand))
	default:
		return false
	}
	s.countRefusalLocked(now, d.ip, capped)
	return true
}

// admit decides on one upgrade request. It returns a slot holding the
// request's share of every limit when the request is admitted, or nil and
// the refusal.
//
// The per-IP limit is checked first: a client over its own share is told
// so (and its refusal does not count toward demand, see demand.go) even
// when the server is also full or past a hard ceiling, where its refusal
// is a 503 like everyone's.
func (s *Shedder) admit(r *http.Request) (*slot, decision) {
	d := decision{ip: s.clientIP(r)}
	now := s.now()
	var rd *reading
	if s.pressureOn.Load() {
		rd = s.sampler.read(now)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	l := &s.limits
	ratio, preason := rd.ratio(l)
	demand, refused := s.demandLocked(now)
	counts := true
	// The Advisor, if any, is asked at most once, and only where its
	// answer matters (see Advisor).
	var adv Advice
	asked := false
	advise := func() Advice { return s.adviceLocked(&d, &asked, &adv, ratio, demand) }
	connsRatio := overload(demand+1, l.MaxConns, 0)
	switch {
	case s.draining:
		d.reason, d.mode, d.code = ReasonDraining, s.opts.DrainMode, s.opts.DrainCode
		d.hint = s.drainHintLocked()
		return nil, d
	case l.MaxConnsPerIP > 0 && s.perIP[d.ip] >= l.MaxConnsPerIP:
		// One client over its own share: its hint does not grow with
		// refusals of everyone else.
		mode := ModeClose
		if s.pastHardLocked(ratio, demand) {
			mode = ModeHTTP
		}
		s.refuseLocked(&d, ReasonPerIP, mode, overload(float64(s.perIP[d.ip]+1), l.MaxConnsPerIP, 0))
		counts = false
	case l.MaxConnsPerIP > 0 && advise().Verdict == VerdictAddrFull:
		// Over its share across the cluster: refused as above.
		mode := ModeClose
		if s.pastHardLocked(ratio, demand) {
			mode = ModeHTTP
		}
		s.refuseAdvisedLocked(&d, ReasonPerIP, mode, adv, overload(float64(s.perIP[d.ip]+1), l.MaxConnsPerIP, 0))
		counts = false
	case s.hardLimitLocked(&d, ratio, preason, demand, now, true):
		counts = false // counted already
	case ratio >= 1:
		s.refuseLocked(&d, preason, ModeClose, ratio)
	case l.MaxConns > 0 && s.conns >= l.MaxConns:
		switch a := advise(); a.Verdict {
		case VerdictNodeFull:
			s.refuseAdvisedLocked(&d, ReasonNodeFull, ModeClose, a, connsRatio)
		case VerdictClusterFull:
			s.refuseAdvisedLocked(&d, ReasonClusterFull, ModeClose, a, connsRatio)
		default:
			s.refuseLocked(&d, ReasonConns, ModeClose, connsRatio)
		}
	case advise().Verdict == VerdictClusterFull:
		s.refuseAdvisedLocked(&d, ReasonClusterFull, ModeClose, adv, connsRatio)
	case adv.Verdict == VerdictNodeFull:
		s.refuseAdvisedLocked(&d, ReasonNodeFull, ModeClose, adv, connsRatio)
	case l.MaxInFlight > 0 && s.inflight >= l.MaxInFlight:
		s.refuseLocked(&d, ReasonInFlight, ModeClose, overload(float64(s.inflight)+refused+1, l.MaxInFlight, 0))
	case l.Rate > 0 && !s.bucket.take(now):
		// The bucket refills at Rate per second, so the refused crowd
		// (plus this client) is served after about (refused+1)/Rate.
		wait := (refused + 1) / l.Rate
		s.refuseLocked(&d, ReasonRate, ModeClose, wait/s.opts.RetryBase.Seconds())
	}
	if d.reason != 0 {
		if counts {
			s.countRefusalLocked(now, d.ip, true)
		}
		return nil, d
	}
	sl := &slot{s: s, ip: d.ip, inflight: true}
	s.conns++
	s.inflight++
	s.perIP[d.ip]++
	s.linkLocked(sl)
	return sl, d
}

// overload is how far demand is past a limit, as a ratio ≥ 1; the hint
// grows with it. fallback is used when limit is off.
func overload(demand float64, limit, fallback int) float64 {
	if limit <= 0 {
		limit = fallback
	}
	if limit <= 0 {
		return 1
	}
	return max(1, demand/float64(limit))
}

// refuseLocked fills in d as a 1013 refusal with a hint for ratio. It does
// not count the refusal toward demand; callers do that for the reasons
// that count (countRefusalLocked).
func (s *Shedder) refuseLocked(d *decision, reason Reason, mode Mode, ratio float64) {
	d.reason, d.mode, d.code = reason, mode, closecode.TryAgainLater
	d.hint = s.hintLocked(ratio)
}

// hintLocked computes a retry hint for an overload ratio:
// min(RetryMax, RetryBase·ratio), then spread upward by jitter.
func (s *Shedder) hintLocked(ratio float64) time.Duration {
	if math.IsNaN(ratio) || ratio < 1 {
		ratio = 1
	}
	h := min(float64(s.opts.RetryBase)*ratio, float64(s.opts.RetryMax))
	return s.jitterLocked(time.Duration(h))
}

// jitterLocked spreads d upward by a random fraction in [0, Jitter).
func (s *Shedder) jitterLocked(d time.Duration) time.Duration {
	if s.opts.Jitter <= 0 {
		return d
	}
	var u float64
	if s.rng != nil {
		u = s.rng.Float64()
	} else {
		u = randFloat64()
	}
	return time.Duration(float64(d) * (1 + s.opts.Jitter*u))
}

// release gives back the slot's share of every limit. It runs once per
// slot, when the handler returns or the release func from Track is called.
func (s *Shedder) releaseSlot(sl *slot) {
	s.mu.Lock()
	s.unlinkLocked(sl)
	s.conns--
	if sl.inflight {
		sl.inflight = false
		s.inflight--
	}
	if n := s.perIP[sl.ip] - 1; n > 0 {
		s.perIP[sl.ip] = n
	} else {
		delete(s.perIP, sl.ip)
	}
	if s.draining && s.conns == 0 {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
	s.mu.Unlock()
}

// endInFlight marks the handshake of sl as done. It reports whether this
// call did it (the first of hijack, Track and release).
func (s *Shedder) endInFlight(sl *slot) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !sl.inflight || !sl.linked {
		return false
	}
	sl.inflight = false
	s.inflight--
	return true
}

func (s *Shedder) linkLocked(sl *slot) {
	sl.prev = s.tail
	if s.tail != nil {
		s.tail.next = sl
	} else {
		s.head = sl
	}
	s.tail = sl
	sl.linked = true
}

func (s *Shedder) unlinkLocked(sl *slot) {
	if !sl.linked {
		return
	}
	if sl.prev != nil {
		sl.prev.next = sl.next
	} else {
		s.head = sl.next
	}
	if sl.next != nil {
		sl.next.prev = sl.prev
	} else {
		s.tail = sl.prev
	}
	sl.prev, sl.next, sl.linked = nil, nil, false
}
