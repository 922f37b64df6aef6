package shed

import (
	"math"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Runtime metrics read for pressure. /gc/gomemlimit:bytes is the soft
// memory limit (GOMEMLIMIT or debug.SetMemoryLimit; math.MaxInt64 when
// unset).
const (
	metricHeapLive   = "/gc/heap/live:bytes"
	metricMemLimit   = "/gc/gomemlimit:bytes"
	metricSchedLat   = "/sched/latencies:seconds"
	schedQuantile    = 0.99
	noMemoryLimitSet = math.MaxInt64
)

// reading is one sample of runtime pressure.
type reading struct {
	heapLive uint64
	memLimit uint64 // 0 or noMemoryLimitSet: no limit
	schedP99 time.Duration
	user     float64
}

// ratio returns how far the reading is past the pressure limits of l, as
// a ratio (1 = at a limit), and the limit that is furthest past. A nil
// reading or no pressure limit gives 0.
func (rd *reading) ratio(l *Limits) (float64, Reason) {
	if rd == nil {
		return 0, 0
	}
	var best float64
	var why Reason
	if l.HeapFraction > 0 && rd.memLimit > 0 && rd.memLimit != noMemoryLimitSet {
		if r := float64(rd.heapLive) / (float64(rd.memLimit) * l.HeapFraction); r > best {
			best, why = r, ReasonMemory
		}
	}
	if l.SchedLatency > 0 {
		if r := float64(rd.schedP99) / float64(l.SchedLatency); r > best {
			best, why = r, ReasonSchedLatency
		}
	}
	if l.Pressure > 0 && !math.IsNaN(rd.user) {
		if r := rd.user / l.Pressure; r > best {
			best, why = r, ReasonPressure
		}
	}
	return best, why
}

// sampler reads runtime pressure at most once per interval. Admission uses
// the last reading; whoever finds it stale refreshes it, and concurrent
// callers meanwhile keep using the old one instead of waiting.
type sampler struct {
	user     func() float64
	interval time.Duration

	cur atomic.Pointer[reading]
	at  atomic.Int64 // unix nanoseconds of cur

	mu      sync.Mutex // held while sampling
	samples []metrics.Sample
	prev    []uint64 // scheduler latency histogram counts at the last sample
}

func (sm *sampler) init(user func() float64, interval time.Duration) {
	sm.user, sm.interval = user, interval
	sm.samples = []metrics.Sample{{Name: metricHeapLive}, {Name: metricMemLimit}, {Name: metricSchedLat}}
}

// read returns a reading no older than the interval (unless another
// goroutine is taking one right now).
func (sm *sampler) read(now time.Time) *reading {
	cur := sm.cur.Load()
	if cur != nil && now.UnixNano()-sm.at.Load() < int64(sm.interval) {
		return cur
	}
	if !sm.mu.TryLock() {
		if cur != nil {
			return cur
		}
		sm.mu.Lock() // first reading ever: wait for it
	}
	defer sm.mu.Unlock()
	if c := sm.cur.Load(); c != nil && now.UnixNano()-sm.at.Load() < int64(sm.interval) {
		return c
	}
	rd := sm.sample()
	sm.cur.Store(rd)
	sm.at.Store(now.UnixNano())
	return rd
}

func (sm *sampler) sample() *reading {
	metrics.Read(sm.samples)
	rd := &reading{}
	if v := sm.samples[0].Value; v.Kind() == metrics.KindUint64 {
		rd.heapLive = v.Uint64()
	}
	if v := sm.samples[1].Value; v.Kind() == metrics.KindUint64 {
		rd.memLimit = v.Uint64()
	}
	if v := sm.samples[2].Value; v.Kind() == metrics.KindFloat64Histogram {
		h := v.Float64Histogram()
		rd.schedP99 = quantileSince(h, sm.prev, schedQuantile)
		sm.prev = append(sm.prev[:0], h.Counts...)
	}
	if sm.user != nil {
		rd.user = sm.user()
	}
	return rd
}

// quantileSince returns the q-quantile of the events counted in h since
// prev (the counts of an earlier reading of the same histogram; nil means
// since the start). The result is the upper bound of the bucket the
// quantile falls in (its lower bound for the open last bucket), so it never
// understates latency.
func quantileSince(h *metrics.Float64Histogram, prev []uint64, q float64) time.Duration {
	var total uint64
	delta := func(i int) uint64 {
		c := h.Counts[i]
		if len(prev) == len(h.Counts) && prev[i] <= c {
			c -= prev[i]
		}
		return c
	}
	for i := range h.Counts {
		total += delta(i)
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i := range h.Counts {
		seen += delta(i)
		if seen >= rank {
			bound := h.Buckets[i+1]
			if math.IsInf(bound, 1) {
				bound = h.Buckets[i]
			}
			if math.IsInf(bound, 0) || bound < 0 {
				return 0
			}
			return time.Duration(bound * float64(time.Second))
		}
	}
	return 0
}

// PressureRatio returns the last sampled runtime pressure as a ratio to
// the pressure limits (1 = at a limit), sampling first if the last reading
// is stale. It is 0 when no pressure limit is set.
func (s *Shedder) PressureRatio() float64 {
	if !s.pressureOn.Load() {
		return 0
	}
	rd := s.sampler.read(s.now())
	s.mu.Lock()
	defer s.mu.Unlock()
	r, _ := rd.ratio(&s.limits)
	return r
}
