package reconnect

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// seqRand returns its values in turn, so a test knows every jitter draw.
type seqRand struct {
	vals []float64
	i    int
}

func (r *seqRand) Float64() float64 {
	v := r.vals[r.i%len(r.vals)]
	r.i++
	return v
}

func seeded(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0xeb)) }

func TestNominal(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name string
		b    Backoff
		n    int
		want time.Duration
	}{
		{"default attempt 0", Backoff{}, 0, 1 * s},
		{"default attempt 1", Backoff{}, 1, 2 * s},
		{"default attempt 2", Backoff{}, 2, 4 * s},
		{"default attempt 3", Backoff{}, 3, 8 * s},
		{"default attempt 4", Backoff{}, 4, 16 * s},
		{"default attempt 5 reaches the cap", Backoff{}, 5, 30 * s},
		{"default attempt 6 stays at the cap", Backoff{}, 6, 30 * s},
		{"huge attempt does not overflow", Backoff{}, 1 << 30, 30 * s},
		{"attempt 63 does not overflow", Backoff{}, 63, 30 * s},
		{"negative attempt counts as 0", Backoff{}, -3, 1 * s},
		{"custom base and cap", Backoff{Base: 10 * time.Millisecond, Cap: 80 * time.Millisecond}, 3, 80 * time.Millisecond},
		{"custom below the cap", Backoff{Base: 10 * time.Millisecond, Cap: 80 * time.Millisecond}, 2, 40 * time.Millisecond},
		{"cap below base", Backoff{Base: 5 * s, Cap: 2 * s}, 0, 2 * s},
		{"negative base and cap mean defaults", Backoff{Base: -1, Cap: -1}, 1, 2 * s},
		{"huge cap, huge attempt", Backoff{Cap: time.Duration(1<<63 - 1)}, 62, time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.b.Nominal(tt.n); got != tt.want {
				t.Errorf("Nominal(%d) = %v, want %v", tt.n, got, tt.want)
			}
		})
	}
}

// TestDelaySequence checks exact delays for known jitter draws:
// equal jitter puts the delay at d/2 + u·d/2.
func TestDelaySequence(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	r := &seqRand{vals: []float64{0, 0.5, 0.25, 0.75, 0, 0.5, 0.125}}
	want := []time.Duration{
		500 * ms,   // n=0: [0.5 s, 1 s), u=0
		1500 * ms,  // n=1: [1 s, 2 s), u=0.5
		2500 * ms,  // n=2: [2 s, 4 s), u=0.25
		7000 * ms,  // n=3: [4 s, 8 s), u=0.75
		8000 * ms,  // n=4: [8 s, 16 s), u=0
		22500 * ms, // n=5: capped [15 s, 30 s), u=0.5
		16875 * ms, // n=6: capped [15 s, 30 s), u=0.125
	}
	var b Backoff
	for n, w := range want {
		if got := b.Delay(n, 0, r); got != w {
			t.Errorf("Delay(%d) = %v, want %v", n, got, w)
		}
	}
}

func TestDelayJitterScheme(t *testing.T) {
	t.Parallel()
	ms := time.Millisecond
	tests := []struct {
		name   string
		jitter float64
		u      float64
		want   time.Duration
	}{
		{"full jitter, u=0", 1, 0, 0},
		{"full jitter, u=0.5", 1, 0.5, 4000 * ms},
		{"20% jitter, u=0", 0.2, 0, 6400 * ms},
		{"20% jitter, u=0.5", 0.2, 0.5, 7200 * ms},
		{"above 1 counts as full", 3, 0.5, 4000 * ms},
		{"NaN means default", nan(), 0, 4000 * ms},
		{"u=1 from a broken source stays below the window's end", 0.5, 1, 8000*ms - 1},
		{"negative u from a broken source counts as 0", 0.5, -2, 4000 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := Backoff{Jitter: tt.jitter}
			if got := b.Delay(3, 0, &seqRand{vals: []float64{tt.u}}); got != tt.want {
				t.Errorf("Delay(3) with jitter %v, u=%v = %v, want %v", tt.jitter, tt.u, got, tt.want)
			}
		})
	}
}

func nan() float64 { z := 0.0; return z / z }

// TestJitterBounds draws many delays at attempt 0 and at the cap and
// checks that they stay in the window and actually spread over it.
func TestJitterBounds(t *testing.T) {
	t.Parallel()
	s := time.Second
	tests := []struct {
		name   string
		n      int
		floor  time.Duration
		lo, hi time.Duration
	}{
		{"attempt 0", 0, 0, s / 2, s},
		{"at the cap", 5, 0, 15 * s, 30 * s},
		{"far past the cap", 40, 0, 15 * s, 30 * s},
		{"attempt 0 under a 4.5 s hint", 0, 4500 * time.Millisecond, 4500 * time.Millisecond, 5 * s},
		{"at the cap under a 40 s hint", 9, 40 * s, 40 * s, 55 * s},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b Backoff
			lo, hi := b.Window(tt.n, tt.floor)
			if lo != tt.lo || hi != tt.hi {
				t.Fatalf("Window(%d, %v) = [%v, %v), want [%v, %v)", tt.n, tt.floor, lo, hi, tt.lo, tt.hi)
			}
			r := seeded(42)
			minD, maxD := hi, lo
			seen := map[time.Duration]bool{}
			for range 10000 {
				d := b.Delay(tt.n, tt.floor, r)
				if d < lo || d >= hi {
					t.Fatalf("Delay(%d, %v) = %v, outside [%v, %v)", tt.n, tt.floor, d, lo, hi)
				}
				minD, maxD = min(minD, d), max(maxD, d)
				seen[d] = true
			}
			spread := hi - lo
			if minD > lo+spread/50 || maxD < hi-spread/50 {
				t.Errorf("10000 delays span only [%v, %v] of [%v, %v): jitter does not cover its window", minD, maxD, lo, hi)
			}
			if len(seen) < 9000 {
				t.Errorf("only %d distinct delays in 10000 draws: clients would return in step", len(seen))
			}
		})
	}
}

func TestDelayNilRand(t *testing.T) {
	t.Parallel()
	var b Backoff
	for range 100 {
		if d := b.Delay(0, 0, nil); d < time.Second/2 || d >= time.Second {
			t.Fatalf("Delay(0) with the global source = %v, want in [500ms, 1s)", d)
		}
	}
}

func TestHintFloor(t *testing.T) {
	t.Parallel()
	var p Policy
	d := p.Decide(closecode.TryAgainLater, "server at capacity; retry-after=4.5")
	if !d.Retry || d.Hint != 4500*time.Millisecond {
		t.Fatalf("Decide(1013, retry-after=4.5) = retry %v hint %v, want retry with hint 4.5s", d.Retry, d.Hint)
	}
	r := seeded(7)
	for n := range 8 {
		for range 2000 {
			if got := p.Backoff.Delay(n, d.Hint, r); got < d.Hint {
				t.Fatalf("Delay(%d) under hint %v = %v: below the server's floor", n, d.Hint, got)
			}
		}
	}
	// Exact values: at attempt 0 the window moves up to start at the hint
	// and keeps its 0.5 s width; at attempt 4 ([8 s, 16 s)) the hint is
	// below the window and changes nothing.
	exact := []struct {
		n    int
		u    float64
		want time.Duration
	}{
		{0, 0, 4500 * time.Millisecond},
		{0, 0.5, 4750 * time.Millisecond},
		{3, 0.5, 6500 * time.Millisecond},
		{4, 0.5, 12 * time.Second},
	}
	for _, e := range exact {
		if got := p.Backoff.Delay(e.n, d.Hint, &seqRand{vals: []float64{e.u}}); got != e.want {
			t.Errorf("Delay(%d, 4.5s) with u=%v = %v, want %v", e.n, e.u, got, e.want)
		}
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	// Expected verdicts written out from ebb's close-code table, not derived
	// from closecode, so that a change in either shows up here.
	type want struct{ plain, persistent, withRule bool }
	tests := []struct {
		code closecode.Code
		want want
	}{
		{1000, want{false, true, false}},
		{1001, want{true, true, true}},
		{1002, want{false, false, false}},
		{1003, want{false, false, false}},
		{1004, want{false, false, false}},
		{1005, want{false, true, false}},
		{1006, want{true, true, true}},
		{1007, want{false, false, false}},
		{1008, want{false, false, false}},
		{1009, want{false, false, false}},
		{1010, want{false, false, false}},
		{1011, want{true, true, true}},
		{1012, want{true, true, true}},
		{1013, want{true, true, true}},
		{1014, want{true, true, true}},
		{1015, want{false, false, false}},
		{3000, want{false, false, false}},
		{3003, want{false, false, false}},
		{3008, want{true, true, true}},
		{3500, want{false, false, true}},
		{4000, want{false, false, true}},
		{4499, want{false, false, true}},
		{4500, want{false, false, false}},
		{4999, want{false, false, false}},
		{0, want{false, false, false}},
		{999, want{false, false, false}},
		{1016, want{false, false, false}},
		{2999, want{false, false, false}},
		{5000, want{false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			t.Parallel()
			var ruleCalls []closecode.Code
			rule := func(c closecode.Code, reason string) bool {
				ruleCalls = append(ruleCalls, c)
				return c < 4500
			}
			policies := []struct {
				name string
				p    Policy
				want bool
			}{
				{"default", Policy{}, tt.want.plain},
				{"persistent", Policy{Persistent: true}, tt.want.persistent},
				{"application rule", Policy{Application: rule}, tt.want.withRule},
			}
			for _, pc := range policies {
				d := pc.p.Decide(tt.code, "bye")
				if d.Retry != pc.want {
					t.Errorf("%s policy: Decide(%v).Retry = %v, want %v (%s)", pc.name, tt.code, d.Retry, pc.want, d.Why)
				}
				if d.Code != tt.code || d.Reason != "bye" {
					t.Errorf("%s policy: Decision carries code %v reason %q, want %v %q", pc.name, d.Code, d.Reason, tt.code, "bye")
				}
				if !strings.HasPrefix(d.Why, tt.code.String()) {
					t.Errorf("%s policy: Why %q does not start with the code", pc.name, d.Why)
				}
				if d.Hint != 0 {
					t.Errorf("%s policy: Hint %v without a hint in the reason", pc.name, d.Hint)
				}
			}
			isApp := tt.code >= 3000 && tt.code <= 4999 && !closecode.Known(tt.code)
			if isApp != (len(ruleCalls) == 1) {
				t.Errorf("Application rule called %d times for %v; want it called once exactly for private and unregistered codes", len(ruleCalls), tt.code)
			}
		})
	}
}

func TestDecideHintOnlyWhenRetrying(t *testing.T) {
	t.Parallel()
	var p Policy
	tests := []struct {
		code   closecode.Code
		reason string
		hint   time.Duration
	}{
		{1013, "server at capacity; retry-after=4.5", 4500 * time.Millisecond},
		{1012, "restarting; retry-after=2", 2 * time.Second},
		{1001, "going away; retry-after=0.2", 200 * time.Millisecond},
		{1013, "server at capacity", 0},
		{1013, "retry-after=-1", 0},
		{1013, "retry-after=nope", 0},
		{1008, "banned; retry-after=5", 0},
		{1000, "done; retry-after=5", 0},
	}
	for _, tt := range tests {
		if d := p.Decide(tt.code, tt.reason); d.Hint != tt.hint {
			t.Errorf("Decide(%v, %q).Hint = %v, want %v", tt.code, tt.reason, d.Hint, tt.hint)
		}
	}
}

func TestDecideHTTP(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	date := now.Add(90 * time.Second).Format(http.TimeFormat)
	tests := []struct {
		name       string
		status     int
		retryAfter string
		retry      bool
		hint       time.Duration
	}{
		{"429 with seconds", 429, "7", true, 7 * time.Second},
		{"503 with a date", 503, date, true, 90 * time.Second},
		{"503 without Retry-After", 503, "", true, 0},
		{"503 with garbage", 503, "soon", true, 0},
		{"500", 500, "", true, 0},
		{"502 with seconds", 502, "3", true, 3 * time.Second},
		{"403", 403, "", false, 0},
		{"403 with Retry-After is still refused", 403, "5", false, 0},
		{"401", 401, "", false, 0},
		{"404", 404, "", false, 0},
		{"408", 408, "", false, 0},
		{"426", 426, "", false, 0},
		{"200", 200, "", false, 0},
		{"302", 302, "", false, 0},
	}
	var p Policy
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{}
			if tt.retryAfter != "" {
				h.Set("Retry-After", tt.retryAfter)
			}
			d := p.DecideHTTP(tt.status, h, now)
			if d.Retry != tt.retry || d.Hint != tt.hint || d.Status != tt.status || d.Code != 0 {
				t.Errorf("DecideHTTP(%d, Retry-After %q) = retry %v hint %v status %d code %d, want retry %v hint %v (%s)",
					tt.status, tt.retryAfter, d.Retry, d.Hint, d.Status, d.Code, tt.retry, tt.hint, d.Why)
			}
			if !strings.Contains(d.Why, "HTTP") {
				t.Errorf("Why %q does not name the HTTP answer", d.Why)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true},
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"86400", 24 * time.Hour, true},
		{"86401", 0, false},
		{"99999999999999999999999", 0, false},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"", 0, false},
		{"later", 0, false},
		{now.Add(time.Minute).Format(http.TimeFormat), time.Minute, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), 0, false},
		{"Wed, 26 Nov 2026 12:00:30 GMT", 30 * time.Second, true},
	}
	for _, tt := range tests {
		got, ok := ParseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestScheduleSequenceAndCaps(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lost := Policy{}.Decide(closecode.AbnormalClosure, "")
	t.Run("lower edge of every window", func(t *testing.T) {
		t.Parallel()
		s := NewSchedule(Policy{}, &seqRand{vals: []float64{0}}, t0)
		want := []time.Duration{500 * time.Millisecond, 1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 15 * time.Second, 15 * time.Second}
		now := t0
		for i, w := range want {
			got, err := s.Next(now, lost)
			if err != nil {
				t.Fatalf("Next #%d: %v", i+1, err)
			}
			if got.Attempt != i+1 || got.Delay != w || got.Nominal != (Backoff{}).Nominal(i) || got.Hinted {
				t.Fatalf("Next #%d = %+v, want attempt %d delay %v", i+1, got, i+1, w)
			}
			now = now.Add(got.Delay)
		}
	})
	t.Run("MaxAttempts", func(t *testing.T) {
		t.Parallel()
		s := NewSchedule(Policy{MaxAttempts: 3}, seeded(1), t0)
		for i := range 3 {
			if _, err := s.Next(t0, lost); err != nil {
				t.Fatalf("Next #%d: %v", i+1, err)
			}
		}
		lost := lost
		lost.Err = errors.New("dial tcp: connection refused")
		_, err := s.Next(t0, lost)
		var ge *GaveUpError
		if !errors.As(err, &ge) || !errors.Is(err, ErrMaxAttempts) || ge.Attempts != 3 {
			t.Fatalf("4th Next = %v, want *GaveUpError with ErrMaxAttempts after 3 attempts", err)
		}
		if !errors.Is(err, lost.Err) || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("GaveUpError %q does not carry the last error", err)
		}
	})
	t.Run("MaxElapsed gives up before a wait that would end past it", func(t *testing.T) {
		t.Parallel()
		s := NewSchedule(Policy{MaxElapsed: 10 * time.Second}, &seqRand{vals: []float64{0}}, t0)
		now := t0
		// Waits 0.5, 1, 2, 4 end at 7.5 s; the next (8 s) would end at 15.5 s.
		for i := range 4 {
			w, err := s.Next(now, lost)
			if err != nil {
				t.Fatalf("Next #%d at %v: %v", i+1, now.Sub(t0), err)
			}
			now = now.Add(w.Delay)
		}
		_, err := s.Next(now, lost)
		var ge *GaveUpError
		if !errors.Is(err, ErrMaxElapsed) || !errors.As(err, &ge) || ge.Elapsed != 7500*time.Millisecond {
			t.Fatalf("Next at 7.5 s = %v, want ErrMaxElapsed after 7.5s", err)
		}
	})
	t.Run("a stop verdict gives up at once", func(t *testing.T) {
		t.Parallel()
		s := NewSchedule(Policy{}, seeded(1), t0)
		d := Policy{}.Decide(closecode.PolicyViolation, "banned")
		_, err := s.Next(t0, d)
		var ge *GaveUpError
		if !errors.As(err, &ge) || ge.Limit != nil || ge.Decision.Code != closecode.PolicyViolation {
			t.Fatalf("Next after 1008 = %v, want *GaveUpError without a Limit", err)
		}
		if !strings.Contains(err.Error(), "1008 Policy Violation is permanent") {
			t.Errorf("error %q does not explain the verdict", err)
		}
	})
	t.Run("hint sets Hinted", func(t *testing.T) {
		t.Parallel()
		s := NewSchedule(Policy{}, &seqRand{vals: []float64{0}}, t0)
		w, err := s.Next(t0, Policy{}.Decide(closecode.TryAgainLater, "full; retry-after=4.5"))
		if err != nil || w.Delay != 4500*time.Millisecond || !w.Hinted {
			t.Fatalf("Next after 1013 retry-after=4.5 = %+v, %v; want 4.5s, hinted", w, err)
		}
	})
}

func TestScheduleStablePeriod(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lost := Policy{}.Decide(closecode.AbnormalClosure, "")
	restart := Policy{}.Decide(closecode.ServiceRestart, "")
	tests := []struct {
		name        string
		stable      time.Duration // Policy.StablePeriod
		up          time.Duration // how long the connection stayed up
		end         Decision      // how it ended
		wantAttempt int
	}{
		{"default period reached resets", 0, 10 * time.Second, lost, 1},
		{"just short of the default period keeps counting", 0, 10*time.Second - time.Millisecond, lost, 4},
		{"flapping server keeps counting", 0, 50 * time.Millisecond, lost, 4},
		{"custom period reached resets", time.Second, time.Second, lost, 1},
		{"custom period not reached", time.Minute, 30 * time.Second, lost, 4},
		// A rolling restart: the next node drains a client it has served
		// for a few seconds; 1012 after RestartStable (1 s) resets.
		{"1012 after serving for a while resets", 0, 3 * time.Second, restart, 1},
		{"1012 right after accepting keeps counting", 0, 500 * time.Millisecond, restart, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := NewSchedule(Policy{StablePeriod: tt.stable, MaxElapsed: 100 * time.Second}, &seqRand{vals: []float64{0}}, t0)
			now := t0
			for range 3 {
				w, err := s.Next(now, lost)
				if err != nil {
					t.Fatal(err)
				}
				now = now.Add(w.Delay)
			}
			// Waits 0.5+1+2 s; now the connection opens and lasts tt.up.
			s.Opened(now)
			now = now.Add(tt.up)
			w, err := s.Next(now, tt.end)
			if err != nil {
				t.Fatal(err)
			}
			if w.Attempt != tt.wantAttempt || w.Nominal != (Backoff{}).Nominal(tt.wantAttempt-1) {
				t.Fatalf("after %v up: attempt %d nominal %v, want attempt %d", tt.up, w.Attempt, w.Nominal, tt.wantAttempt)
			}
			if s.Attempts() != tt.wantAttempt {
				t.Errorf("Attempts() = %d, want %d", s.Attempts(), tt.wantAttempt)
			}
		})
	}
	t.Run("flapping does not reset the elapsed time either", func(t *testing.T) {
		t.Parallel()
		s := NewSchedule(Policy{MaxElapsed: 5 * time.Second}, &seqRand{vals: []float64{0}}, t0)
		now := t0
		for i := range 10 {
			w, err := s.Next(now, lost)
			if err != nil {
				if !errors.Is(err, ErrMaxElapsed) || i < 2 {
					t.Fatalf("Next #%d: %v, want ErrMaxElapsed after a few flaps", i+1, err)
				}
				return
			}
			now = now.Add(w.Delay)
			s.Opened(now)
			now = now.Add(100 * time.Millisecond)
		}
		t.Fatal("a server that drops every connection after 100 ms kept the client going past MaxElapsed")
	})
}

// TestJitterSpreadsACrowd is the point of the jitter: 1000 clients that lost
// their server at the same instant must not come back in the same instant,
// neither on their first attempt nor once they all sit at the cap.
func TestJitterSpreadsACrowd(t *testing.T) {
	t.Parallel()
	const clients = 1000
	tests := []struct {
		name    string
		n       int
		floor   time.Duration
		bucket  time.Duration
		maxPeak int // most clients allowed in one bucket
	}{
		// Window [0.5 s, 1 s): five 100 ms buckets, 200 each on average.
		{"first attempt", 0, 0, 100 * time.Millisecond, 260},
		// Window [15 s, 30 s): fifteen 1 s buckets, 67 each on average.
		{"at the cap", 12, 0, time.Second, 100},
		// Everyone got the same 4.5 s hint: window [4.5 s, 5 s).
		{"same hint for all", 0, 4500 * time.Millisecond, 100 * time.Millisecond, 260},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := seeded(2026)
			var b Backoff
			buckets := map[time.Duration]int{}
			for range clients {
				buckets[b.Delay(tt.n, tt.floor, r)/tt.bucket]++
			}
			peak := 0
			for _, n := range buckets {
				peak = max(peak, n)
			}
			if peak > tt.maxPeak {
				t.Errorf("%d of %d clients return within the same %v; want at most %d", peak, clients, tt.bucket, tt.maxPeak)
			}
			// Without jitter every client would land in one bucket.
			if nominal := b.Nominal(tt.n); len(buckets) < int((nominal/2)/tt.bucket) {
				t.Errorf("clients spread over %d buckets of %v, want at least %d", len(buckets), tt.bucket, (nominal/2)/tt.bucket)
			}
		})
	}
}
