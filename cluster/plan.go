package cluster

import (
	"math"
	"time"
)

// Balance says how the load balancer in front of the cluster spreads new
// connections, which decides how much of the other nodes' room a drain
// can count on.
type Balance int

// Balance modes.
const (
	// BalanceEven: every node gets an equal share (round robin, random,
	// source hash). The node with the least headroom and the lowest rate
	// limits the whole drain. The safe default.
	BalanceEven Balance = iota
	// BalanceLeast: the balancer sends each connection to the node with
	// the fewest (HAProxy leastconn, nginx least_conn), so headroom adds
	// up across nodes, but not admission rates: the node with the fewest
	// connections — in a rolling restart, the one just back — gets every
	// reconnect until it has caught up, so the drain is paced to what the
	// slowest target alone admits.
	BalanceLeast
)

// Defaults for the zero values of PlanOptions fields.
const (
	DefaultRateShare     = 0.5
	DefaultAssumedRate   = 100
	DefaultMinWindow     = time.Second
	DefaultMaxWindow     = 5 * time.Minute
	DefaultDrainHint     = time.Second
	DefaultDrainInterval = 100 * time.Millisecond
)

// PlanOptions tune PlanDrain.
type PlanOptions struct {
	// Balance is how the load balancer spreads reconnects. Default
	// BalanceEven.
	Balance Balance
	// RateShare is the fraction of the other nodes' admission rate the
	// drain may use, leaving the rest to clients arriving on their own.
	// Default 0.5.
	RateShare float64
	// AssumedRate is the admission rate assumed for a node that reports
	// none (Load.Rate 0). Default 100 per second.
	AssumedRate float64
	// MinWindow and MaxWindow clamp the drain window. Defaults 1 s and 5
	// minutes. A window cut short by MaxWindow (or by the caller's
	// deadline) sends reconnects faster than the others admit them; the
	// excess is refused with 1013 and their rate hint, which is lawful
	// but not free.
	MinWindow, MaxWindow time.Duration
	// Hint is the smallest retry hint sent with the drain's closes.
	// Default 1 s.
	Hint time.Duration
	// Interval is the time between batches of closes. Default 100 ms.
	Interval time.Duration
}

func (o PlanOptions) withDefaults() PlanOptions {
	if o.RateShare <= 0 || o.RateShare > 1 {
		o.RateShare = DefaultRateShare
	}
	if o.AssumedRate <= 0 {
		o.AssumedRate = DefaultAssumedRate
	}
	if o.MinWindow <= 0 {
		o.MinWindow = DefaultMinWindow
	}
	if o.MaxWindow <= 0 {
		o.MaxWindow = DefaultMaxWindow
	}
	o.MaxWindow = max(o.MaxWindow, o.MinWindow)
	if o.Hint <= 0 {
		o.Hint = DefaultDrainHint
	}
	if o.Interval <= 0 {
		o.Interval = DefaultDrainInterval
	}
	return o
}

// DrainPlan paces a drain: close Batch connections every Interval, over
// Window, each with a retry hint drawn uniformly from [Hint, Hint+Spread].
// Closes then arrive at the other nodes at about Rate per second and
// never in bursts larger than one batch spread over one interval.
type DrainPlan struct {
	// Conns is how many connections must move.
	Conns int
	// Targets is how many nodes can take them (live, not draining, not
	// this one).
	Targets int
	// Absorbable is how many connections the targets can take, given the
	// balance mode (math.MaxInt when unlimited).
	Absorbable int
	// Shortfall is how many cannot be absorbed (Conns - Absorbable, at
	// least 0). With a shortfall, the caller should wait for headroom,
	// up to a bound it chooses (Node.WaitView), then drain anyway: the
	// excess is refused with the cluster's overload hint, which is the
	// truth.
	Shortfall int
	// Rate is the close (and so reconnect) rate, per second.
	Rate float64
	// SafeRate is the fastest rate the targets admit (their admission
	// rate times RateShare, given the balance mode). Rate exceeds it only
	// when the window hit MaxWindow.
	SafeRate float64
	// Window is how long the drain takes: Conns / Rate, clamped.
	Window time.Duration
	// Interval and Batch: close Batch connections every Interval.
	Interval time.Duration
	Batch    int
	// Hint and Spread: each close's hint is Hint plus a uniform random
	// part of Spread (one interval), so one batch's reconnects spread over
	// an interval instead of landing at once.
	Hint, Spread time.Duration
}

// PlanDrain plans the drain of conns connections from the node v.Self
// onto the other serving nodes of v. It is a pure function.
//
// The reconnect rate is the targets' admission rate times RateShare: the
// smallest target's rate times their number under BalanceEven (each gets
// an equal share), the smallest target's rate alone under BalanceLeast
// (one node may get them all). The window is conns over that rate,
// clamped to [MinWindow, MaxWindow]. Absorbable is the smallest target's
// headroom times their number under BalanceEven, the sum of their
// headroom under BalanceLeast.
func PlanDrain(v View, conns int, o PlanOptions) DrainPlan {
	o = o.withDefaults()
	p := DrainPlan{Conns: max(0, conns), Interval: o.Interval, Hint: o.Hint, Spread: o.Interval}
	minHead, sumHead := math.MaxInt, 0
	minRate := math.Inf(1)
	for _, m := range v.Members {
		if m.Self || m.Name == v.Self || !m.serving() {
			continue
		}
		p.Targets++
		h := m.Load.headroom()
		minHead = min(minHead, h)
		if sumHead != math.MaxInt {
			if h == math.MaxInt || sumHead > math.MaxInt-h {
				sumHead = math.MaxInt
			} else {
				sumHead += h
			}
		}
		r := m.Load.Rate
		if r <= 0 {
			r = o.AssumedRate
		}
		minRate = min(minRate, r)
	}
	if p.Targets == 0 {
		p.Shortfall = p.Conns
		p.Window = o.MinWindow
		p.Rate = float64(p.Conns) / o.MinWindow.Seconds()
		p.Batch = batchFor(p.Rate, o.Interval, p.Conns)
		return p
	}
	switch o.Balance {
	case BalanceLeast:
		p.Absorbable = sumHead
		p.SafeRate = minRate * o.RateShare
	default:
		if minHead == math.MaxInt || minHead > math.MaxInt/p.Targets {
			p.Absorbable = math.MaxInt
		} else {
			p.Absorbable = minHead * p.Targets
		}
		p.SafeRate = minRate * float64(p.Targets) * o.RateShare
	}
	p.Shortfall = max(0, p.Conns-p.Absorbable)
	w := time.Duration(float64(p.Conns) / p.SafeRate * float64(time.Second))
	p.Window = min(max(w, o.MinWindow), o.MaxWindow)
	p.Rate = float64(p.Conns) / p.Window.Seconds()
	p.Batch = batchFor(p.Rate, o.Interval, p.Conns)
	return p
}

// batchFor is how many closes per interval give rate, at least 1 when
// there is anything to close.
func batchFor(rate float64, interval time.Duration, conns int) int {
	if conns <= 0 {
		return 0
	}
	return min(conns, max(1, int(math.Ceil(rate*interval.Seconds()-1e-6))))
}

// CloseAt returns when (since the drain started) the i-th close (from 0)
// is due under the plan.
func (p DrainPlan) CloseAt(i int) time.Duration {
	if p.Batch <= 0 {
		return 0
	}
	return time.Duration(i/p.Batch) * p.Interval
}
