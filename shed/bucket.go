package shed

import (
	"math"
	"time"
)

// bucket is a token bucket: it holds up to burst tokens, refills at rate
// tokens per second, and an admission takes one. The clock is passed in so
// that tests can drive it. It is not safe for concurrent use; the Shedder
// guards it with its lock.
type bucket struct {
	rate   float64 // tokens per second; 0 means no limit
	burst  float64
	tokens float64
	last   time.Time
}

// configure sets the rate and burst. A new bucket starts full; a bucket
// that shrinks keeps at most its new burst, one that grows keeps its
// tokens, so a live change neither forgives nor punishes past traffic.
func (b *bucket) configure(rate float64, burst int, now time.Time) {
	if rate <= 0 {
		*b = bucket{}
		return
	}
	nb := float64(burst)
	if burst <= 0 {
		nb = max(1, math.Ceil(rate))
	}
	if b.rate == 0 {
		b.tokens = nb
	} else {
		b.refill(now)
		b.tokens = min(b.tokens, nb)
	}
	b.rate, b.burst, b.last = rate, nb, now
}

func (b *bucket) refill(now time.Time) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt.Seconds()*b.rate)
		b.last = now
	}
}

// take takes a token if one is available.
func (b *bucket) take(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	b.refill(now)
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}
