package shed

import (
	"math"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

func TestQuantileSince(t *testing.T) {
	t.Parallel()
	h := &metrics.Float64Histogram{
		Buckets: []float64{math.Inf(-1), 0, 0.001, 0.01, 0.1, math.Inf(1)},
		Counts:  []uint64{0, 900, 90, 9, 1},
	}
	tests := []struct {
		name string
		prev []uint64
		q    float64
		want time.Duration
	}{
		{"p99 since start", nil, 0.99, 10 * time.Millisecond},
		{"p90 since start", nil, 0.90, time.Millisecond},
		{"p100 in the open bucket uses its lower bound", nil, 1, 100 * time.Millisecond},
		{"only the new events count", []uint64{0, 900, 90, 0, 0}, 0.5, 100 * time.Millisecond},
		{"nothing new", []uint64{0, 900, 90, 9, 1}, 0.99, 0},
		{"prev of another shape is ignored", []uint64{1}, 0.99, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := quantileSince(h, tt.prev, tt.q); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestReadingRatio(t *testing.T) {
	t.Parallel()
	rd := &reading{heapLive: 900, memLimit: 1000, schedP99: 5 * time.Millisecond, user: 0.3}
	tests := []struct {
		name   string
		limits Limits
		rd     *reading
		ratio  float64
		reason Reason
	}{
		{"no limits", Limits{}, rd, 0, 0},
		{"nil reading", Limits{HeapFraction: 0.5}, nil, 0, 0},
		{"heap over", Limits{HeapFraction: 0.6}, rd, 1.5, ReasonMemory},
		{"heap without GOMEMLIMIT", Limits{HeapFraction: 0.6}, &reading{heapLive: 900, memLimit: noMemoryLimitSet}, 0, 0},
		{"scheduler", Limits{SchedLatency: 2 * time.Millisecond}, rd, 2.5, ReasonSchedLatency},
		{"user", Limits{Pressure: 0.1}, rd, 3, ReasonPressure},
		{"worst wins", Limits{HeapFraction: 0.6, SchedLatency: 2 * time.Millisecond, Pressure: 0.15}, rd, 2.5, ReasonSchedLatency},
	}
	for _, tt := range tests {
		ratio, why := tt.rd.ratio(&tt.limits)
		if math.Abs(ratio-tt.ratio) > 1e-9 || why != tt.reason {
			t.Errorf("%s: %v %v, want %v %v", tt.name, ratio, why, tt.ratio, tt.reason)
		}
	}
}

func TestSamplerSamplesAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	clk := newFakeClock()
	s := mustNew(t, &Options{
		Limits: Limits{Pressure: 1, SchedLatency: time.Hour, HeapFraction: 0.99},
		Now:    clk.Now, SampleInterval: time.Second,
		Pressure: func() float64 { return float64(calls.Add(1)) },
	})
	for range 100 {
		s.admit(upgradeRequest("10.0.0.1:1"))
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("Pressure called %d times for 100 requests in one interval, want 1", n)
	}
	clk.Advance(time.Second)
	if got := s.PressureRatio(); got != 2 {
		t.Fatalf("PressureRatio after an interval = %v, want the new sample 2", got)
	}
}

func TestPressureRefusesAndRecovers(t *testing.T) {
	t.Parallel()
	var p atomic.Uint64
	p.Store(math.Float64bits(2))
	clk := newFakeClock()
	s := mustNew(t, &Options{
		Limits: Limits{Pressure: 1}, Now: clk.Now, SampleInterval: time.Second, Jitter: -1,
		Pressure: func() float64 { return math.Float64frombits(p.Load()) },
	})
	if sl, d := s.admit(upgradeRequest("10.0.0.1:1")); sl != nil || d.reason != ReasonPressure || d.hint != 2*DefaultRetryBase {
		t.Fatalf("at pressure 2: slot %v reason %v hint %v; want refused, pressure, 2×base", sl, d.reason, d.hint)
	}
	p.Store(math.Float64bits(0.5))
	clk.Advance(time.Second)
	admitN(t, s, "10.0.0.1:1", 1)
}

func TestSamplerReadsRuntimeMetrics(t *testing.T) {
	t.Parallel()
	var sm sampler
	sm.init(func() float64 { return 0.25 }, time.Second)
	first := sm.sample()
	if first.heapLive == 0 || first.memLimit == 0 || first.user != 0.25 {
		t.Fatalf("reading %+v: want a live heap, a memory limit (MaxInt64 when unset) and the user signal", first)
	}
	if len(sm.prev) == 0 {
		t.Fatal("scheduler latency histogram was not read")
	}
	// The second reading covers only what happened since the first.
	done := make(chan struct{})
	for range 100 {
		go func() { done <- struct{}{} }()
		<-done
	}
	if second := sm.sample(); second.schedP99 < 0 || second.schedP99 > time.Minute {
		t.Fatalf("scheduler p99 %v is not plausible", second.schedP99)
	}
}
