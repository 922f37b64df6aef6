package loadgen

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// within reports whether got is want within HDR's 0.1% precision (plus one
// microsecond for rounding to whole microseconds).
func within(got, want float64) bool {
	return math.Abs(got-want) <= want*0.001+0.001
}

func TestSummarizePercentiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		values func(record func(time.Duration))
		want   Latency // milliseconds
	}{
		{
			name: "uniform 1..10000 µs",
			values: func(rec func(time.Duration)) {
				for i := 1; i <= 10000; i++ {
					rec(time.Duration(i) * time.Microsecond)
				}
			},
			want: Latency{Count: 10000, Min: 0.001, Mean: 5.0005, P50: 5, P90: 9, P99: 9.9, P999: 9.99, Max: 10},
		},
		{
			name: "constant 2 ms",
			values: func(rec func(time.Duration)) {
				for range 500 {
					rec(2 * time.Millisecond)
				}
			},
			want: Latency{Count: 500, Min: 2, Mean: 2, P50: 2, P90: 2, P99: 2, P999: 2, Max: 2},
		},
		{
			name: "tail: 990 × 1 ms, 10 × 1 s",
			values: func(rec func(time.Duration)) {
				for range 990 {
					rec(time.Millisecond)
				}
				for range 10 {
					rec(time.Second)
				}
			},
			want: Latency{Count: 1000, Min: 1, Mean: 10.99, P50: 1, P90: 1, P99: 1, P999: 1000, Max: 1000},
		},
		{
			name: "outliers are clamped into range, not dropped",
			values: func(rec func(time.Duration)) {
				rec(0)
				rec(time.Hour)
			},
			want: Latency{Count: 2, Min: 0.001, Mean: 300000, P50: 0.001, P90: 600000, P99: 600000, P999: 600000, Max: 600000},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHist()
			tt.values(func(d time.Duration) { recordDur(h, d) })
			got := summarize(h)
			if got == nil {
				t.Fatal("summarize returned nil for a histogram with values")
			}
			if got.Count != tt.want.Count {
				t.Errorf("count = %d, want %d", got.Count, tt.want.Count)
			}
			for _, f := range []struct {
				name      string
				got, want float64
			}{
				{"min", got.Min, tt.want.Min}, {"mean", got.Mean, tt.want.Mean}, {"p50", got.P50, tt.want.P50},
				{"p90", got.P90, tt.want.P90}, {"p99", got.P99, tt.want.P99}, {"p99.9", got.P999, tt.want.P999},
				{"max", got.Max, tt.want.Max},
			} {
				if !within(f.got, f.want) {
					t.Errorf("%s = %v ms, want %v ms (±0.1%%)", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestSummarizeEmpty(t *testing.T) {
	t.Parallel()
	if got := summarize(newHist()); got != nil {
		t.Errorf("summarize(empty) = %+v, want nil so that JSON leaves it out", got)
	}
}

func TestPeakWindow(t *testing.T) {
	t.Parallel()
	burst := func(n int, at ...int) []uint32 {
		p := make([]uint32, n)
		for _, ms := range at {
			p[ms]++
		}
		return p
	}
	spread := make([]int, 0, 300)
	for i := range 300 {
		spread = append(spread, i*10) // one every 10 ms: 10 per 100 ms
	}
	tests := []struct {
		name     string
		perMs    []uint32
		from     time.Duration
		wantRate float64
		wantAt   time.Duration
	}{
		{"empty", nil, 0, 0, 0},
		{"burst straddling a bucket boundary counts whole", burst(300, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104), 0, 100, 5 * time.Millisecond},
		{"steady rate", burst(3000, spread...), 0, 100, 0},
		{"before from is ignored", burst(1000, 10, 11, 12, 500), 200 * time.Millisecond, 10, 401 * time.Millisecond},
		{"from past the end", burst(10, 1), time.Second, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rate, at := peakWindow(tt.perMs, tt.from)
			if rate != tt.wantRate || at != tt.wantAt {
				t.Errorf("peakWindow = %v/s at %v, want %v/s at %v", rate, at, tt.wantRate, tt.wantAt)
			}
		})
	}
}

func TestRecorderTimeline(t *testing.T) {
	t.Parallel()
	start := time.Unix(1000, 0)
	r := newRecorder(start, 3)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	for i := range 3 {
		r.attempt(at(10*i), i > 0)
		r.opened(at(10*i+5), 5*time.Millisecond)
	}
	r.attempt(at(50), true)
	r.failed(at(60), fmt.Errorf("dial: %w", syscall.ECONNREFUSED), nil)
	r.closed(at(250), closecode.ServiceRestart, "server")
	r.closed(at(260), closecode.ServiceRestart, "server")
	r.watchFull(at(300))
	r.opened(at(450), time.Millisecond)
	r.opened(at(460), time.Millisecond)
	rep := r.report("test", 600*time.Millisecond)

	if got := len(rep.Timeline); got != 6 {
		t.Fatalf("timeline has %d points, want 6 (600 ms in 100 ms slots)", got)
	}
	wantOpen := []int{3, 3, 1, 1, 3, 3}
	for i, p := range rep.Timeline {
		if p.Open != wantOpen[i] {
			t.Errorf("slot %d: open = %d, want %d", i, p.Open, wantOpen[i])
		}
	}
	if got := rep.Timeline[2].Closes["1012"]; got != 2 {
		t.Errorf("slot 2: closes[1012] = %d, want 2", got)
	}
	if rep.Timeline[0].Handshakes != 3 || rep.Timeline[0].HandshakesPerSec != 30 || rep.Timeline[0].Failures != 1 {
		t.Errorf("slot 0 = %+v, want 3 handshakes (30/s) and 1 failure", rep.Timeline[0])
	}
	if rep.Handshakes.Attempts != 4 || rep.Handshakes.Completed != 5 || rep.Handshakes.Failed != 1 {
		t.Errorf("handshakes = %+v, want 4 attempts, 5 completed, 1 failed", rep.Handshakes)
	}
	if rep.Handshakes.PeakPerSecond != 30 {
		t.Errorf("peak = %v/s, want 30/s", rep.Handshakes.PeakPerSecond)
	}
	if at, ok := r.full(); !ok || at != 460*time.Millisecond {
		t.Errorf("full() = %v, %v; want 460ms, true", at, ok)
	}
	if len(rep.CloseCodes) != 1 || rep.CloseCodes[0] != (CloseCount{Code: 1012, Name: "Service Restart", By: "server", Retry: closecode.Lookup(1012).Retry.String(), Count: 2}) {
		t.Errorf("close codes = %+v", rep.CloseCodes)
	}
	if len(rep.Errors) != 1 || rep.Errors[0].Kind != "connection refused" || rep.Errors[0].Count != 1 {
		t.Errorf("errors = %+v, want one connection refused", rep.Errors)
	}
	if len(rep.HTTPStatuses) != 1 || rep.HTTPStatuses[0].Status != 101 || rep.HTTPStatuses[0].Count != 5 {
		t.Errorf("statuses = %+v, want 5 × 101", rep.HTTPStatuses)
	}
}

func TestErrorKind(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, errKindNoPorts},
		{fmt.Errorf("x: %w", syscall.EMFILE), errKindNoFiles},
		{fmt.Errorf("x: %w", syscall.ECONNREFUSED), "connection refused"},
		{fmt.Errorf("%w: context deadline exceeded", errDialTimeout), "timeout"},
		{errors.New("something else"), "other"},
	}
	for _, tt := range tests {
		if got := errorKind(tt.err); got != tt.want {
			t.Errorf("errorKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestClientReportBottleneck(t *testing.T) {
	t.Parallel()
	runs := []Run{{Errors: []ErrorCount{{Kind: errKindNoPorts, Count: 7}}}}
	c := startCPU().client(runs, false)
	if !c.Bottleneck {
		t.Fatalf("client report with EADDRNOTAVAIL errors: Bottleneck = false, want true")
	}
	found := false
	for _, n := range c.Notes {
		found = found || (contains(n, "EADDRNOTAVAIL") && contains(n, "7 dials"))
	}
	if !found {
		t.Errorf("notes %q do not explain the 7 EADDRNOTAVAIL dials", c.Notes)
	}
	if c.FileLimit == 0 {
		t.Errorf("file limit = 0, want RLIMIT_NOFILE's soft limit")
	}
}
