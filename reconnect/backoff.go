package reconnect

import (
	"math"
	"math/rand/v2"
	"time"
)

// Defaults of Backoff and Policy: 1 s doubling to a 30 s cap, half of every
// delay jittered, a 10 s stable period.
const (
	// DefaultBase is the nominal delay before the first reconnect attempt.
	DefaultBase = time.Second
	// DefaultCap is the longest nominal delay; doubling stops here.
	DefaultCap = 30 * time.Second
	// DefaultJitter is the share of each nominal delay that is random
	// ("equal jitter": the delay lies in [d/2, d)).
	DefaultJitter = 0.5
	// DefaultStablePeriod is how long a connection must stay up before the
	// attempt counter starts again from zero.
	DefaultStablePeriod = 10 * time.Second
	// DefaultRestartStable is how long a connection must stay up for a
	// 1012 Service Restart to reset the attempt counter (see
	// Policy.RestartStable).
	DefaultRestartStable = time.Second
)

// Rand is the random source behind the jitter. *math/rand/v2.Rand and
// *math/rand.Rand satisfy it; tests inject a seeded one to get exact delay
// sequences. Float64 must return a value in [0, 1).
type Rand interface {
	Float64() float64
}

// globalRand draws from math/rand/v2's goroutine-safe global source; it is
// what a nil Rand means.
type globalRand struct{}

func (globalRand) Float64() float64 { return rand.Float64() }

// Backoff computes how long a client waits before a reconnect attempt: the
// nominal delay before attempt n (counting from 0) is min(Cap, Base·2^n),
// and every delay, the first one and those at the cap included, is jittered.
//
// The jitter scheme is "equal jitter" by default: of the nominal delay d,
// the share Jitter (0.5) is random, so the delay lies uniformly in
// [d·(1−Jitter), d). This choice keeps three properties at once:
//   - a crowd of clients that lost their server together spreads over a
//     window half as wide as the delay itself, at every attempt and at the
//     cap too, where clients without jitter all return in step;
//   - no delay exceeds the nominal one, so Cap is a true ceiling (absent a
//     server hint) and the expected wait stays predictable;
//   - no delay falls below half the nominal one, so even the first retry
//     after a restart (1012) gives the server at least Base/2, where "full
//     jitter" ([0, d)) would send some clients back at once.
//
// A server hint is a floor: when it is above the low end of the window,
// the window moves up to start at the hint and keeps its width, so clients
// that got the same hint still do not return together.
//
// The zero value is the default backoff (1 s base, 30 s cap, equal jitter).
type Backoff struct {
	// Base is the nominal delay before attempt 0. Zero or negative means
	// DefaultBase.
	Base time.Duration
	// Cap bounds the nominal delay. Zero or negative means DefaultCap; a Cap
	// below Base makes every nominal delay equal to Cap.
	Cap time.Duration
	// Jitter is the random share of each nominal delay, in (0, 1]. Zero,
	// negative or NaN means DefaultJitter; values above 1 count as 1 ("full
	// jitter"). There is deliberately no way to turn jitter off: a fleet of
	// clients without it turns every server restart into a reconnect storm.
	Jitter float64
}

func (b Backoff) base() time.Duration {
	if b.Base <= 0 {
		return DefaultBase
	}
	return b.Base
}

func (b Backoff) cap() time.Duration {
	if b.Cap <= 0 {
		return DefaultCap
	}
	return b.Cap
}

func (b Backoff) jitter() float64 {
	j := b.Jitter
	switch {
	case j <= 0 || math.IsNaN(j):
		return DefaultJitter
	case j > 1:
		return 1
	}
	return j
}

// Nominal returns min(Cap, Base·2^n), the delay before attempt n without
// jitter. A negative n counts as 0. It never overflows.
func (b Backoff) Nominal(n int) time.Duration {
	base, limit := b.base(), b.cap()
	if base >= limit {
		return limit
	}
	if n < 0 {
		n = 0
	}
	// base·2^n > limit ⇔ base > limit>>n; the shift cannot overflow.
	if n >= 62 || base > limit>>uint(n) {
		return limit
	}
	return base << uint(n)
}

// Window returns the range [lo, hi) the delay before attempt n falls in,
// given a server hint floor (0 when there is none). hi−lo is the jitter
// spread Jitter·Nominal(n); lo is never below floor.
func (b Backoff) Window(n int, floor time.Duration) (lo, hi time.Duration) {
	d := b.Nominal(n)
	spread := time.Duration(b.jitter() * float64(d))
	lo = d - spread
	if floor > lo {
		lo = floor
	}
	return lo, lo + spread
}

// Delay returns the jittered delay before attempt n (counting from 0),
// never shorter than floor (the server's retry hint; 0 for none). It draws
// one number from r; a nil r uses math/rand/v2's global source.
func (b Backoff) Delay(n int, floor time.Duration, r Rand) time.Duration {
	if r == nil {
		r = globalRand{}
	}
	u := r.Float64()
	if !(u >= 0) { // also catches NaN
		u = 0
	}
	if u >= 1 {
		u = math.Nextafter(1, 0)
	}
	lo, hi := b.Window(n, floor)
	d := lo + time.Duration(u*float64(hi-lo))
	if d >= hi && hi > lo {
		d = hi - 1
	}
	return d
}
