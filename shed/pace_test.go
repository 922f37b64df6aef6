package shed

import (
	"runtime/metrics"
	"testing"
	"time"
)

func TestPacerTakeDetectsBursts(t *testing.T) {
	p := &pacer{batch: 4}
	t0 := time.Unix(1000, 0)
	// Four connections within a millisecond: a burst, pause after the 4th.
	for i := range 4 {
		if got := p.take(t0.Add(time.Duration(i) * 100 * time.Microsecond)); got != (i == 3) {
			t.Fatalf("fast connection %d: take = %v", i, got)
		}
	}
	// Four spread over 3 ms: no pause.
	t1 := t0.Add(time.Second)
	for i := range 4 {
		if p.take(t1.Add(time.Duration(i) * time.Millisecond)) {
			t.Fatalf("slow connection %d: take = true, want no pause", i)
		}
	}
}

func TestPacerStepAsideWaitsForAnEmptyRunQueue(t *testing.T) {
	for _, tc := range []struct {
		name     string
		runnable []uint64 // successive readings; the last repeats
		sleeps   int
	}{
		{"idle", []uint64{0}, 1},
		{"drains", []uint64{5, 3, 0}, 3},
		{"stays busy", []uint64{7}, int(paceMaxWait / paceSleep)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var slept []time.Duration
			reads := 0
			p := &pacer{
				sleep: func(d time.Duration) { slept = append(slept, d) },
				runnable: func() uint64 {
					v := tc.runnable[min(reads, len(tc.runnable)-1)]
					reads++
					return v
				},
			}
			p.stepAside()
			if len(slept) != tc.sleeps {
				t.Errorf("slept %d times, want %d", len(slept), tc.sleeps)
			}
			for _, d := range slept {
				if d != paceSleep {
					t.Errorf("slept %v, want %v", d, paceSleep)
				}
			}
		})
	}
}

func TestRunnableGoroutinesMetricExists(t *testing.T) {
	// runnableGoroutines reads 0 when the runtime does not know the
	// metric, which would turn pacing into a fixed sleep: make sure it
	// does.
	for _, d := range metrics.All() {
		if d.Name == runnableMetric {
			if d.Kind != metrics.KindUint64 {
				t.Fatalf("%s has kind %v, want uint64", runnableMetric, d.Kind)
			}
			return
		}
	}
	t.Fatalf("runtime/metrics has no %s", runnableMetric)
}
