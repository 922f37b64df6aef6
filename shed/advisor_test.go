package shed

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// recordingAdvisor answers with a fixed advice and records what it was
// asked.
type recordingAdvisor struct {
	mu     sync.Mutex
	advice Advice
	asked  []AdviceRequest
}

func (a *recordingAdvisor) Advise(r AdviceRequest) Advice {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.asked = append(a.asked, r)
	return a.advice
}

func (a *recordingAdvisor) calls() []AdviceRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]AdviceRequest(nil), a.asked...)
}

func TestAdvisorDecides(t *testing.T) {
	t.Parallel()
	const hint = 7 * time.Second
	tests := []struct {
		name   string
		limits Limits
		advice Advice
		fill   int // connections from 10.0.0.1 before the request
		remote string
		// want: reason 0 means admitted.
		reason   Reason
		wantHint time.Duration // 0: do not check
		wantText string
		counts   bool // the refusal counts toward demand
		asked    bool
	}{
		{
			name: "node full, cluster has room: short hint", limits: Limits{MaxConns: 2}, fill: 2,
			advice: Advice{Verdict: VerdictNodeFull, Hint: 500 * time.Millisecond, Text: "node at capacity, cluster has room"},
			remote: "10.0.0.2:1", reason: ReasonNodeFull, wantHint: 500 * time.Millisecond,
			wantText: "node at capacity, cluster has room", counts: true, asked: true,
		},
		{
			name: "node full, cluster full: the cluster's hint", limits: Limits{MaxConns: 2}, fill: 2,
			advice: Advice{Verdict: VerdictClusterFull, Hint: hint},
			remote: "10.0.0.2:1", reason: ReasonClusterFull, wantHint: hint, counts: true, asked: true,
		},
		{
			name: "room here, cluster-wide limit reached", limits: Limits{MaxConns: 10}, fill: 2,
			advice: Advice{Verdict: VerdictClusterFull, Hint: hint},
			remote: "10.0.0.2:1", reason: ReasonClusterFull, wantHint: hint, counts: true, asked: true,
		},
		{
			name: "no local limit, cluster-wide limit reached", fill: 2,
			advice: Advice{Verdict: VerdictClusterFull},
			remote: "10.0.0.2:1", reason: ReasonClusterFull, wantHint: DefaultRetryBase, counts: true, asked: true,
		},
		{
			name: "admit advice never lifts the local limit", limits: Limits{MaxConns: 2}, fill: 2,
			advice: Advice{Verdict: VerdictAdmit},
			remote: "10.0.0.2:1", reason: ReasonConns, counts: true, asked: true,
		},
		{
			name: "no opinion: shed alone", limits: Limits{MaxConns: 2}, fill: 2,
			remote: "10.0.0.2:1", reason: ReasonConns, counts: true, asked: true,
		},
		{
			name: "room everywhere", limits: Limits{MaxConns: 10}, fill: 2,
			advice: Advice{Verdict: VerdictAdmit},
			remote: "10.0.0.2:1", asked: true,
		},
		{
			name: "address full across the cluster", limits: Limits{MaxConnsPerIP: 5}, fill: 2,
			advice: Advice{Verdict: VerdictAddrFull, Hint: 3 * time.Second},
			remote: "10.0.0.1:2", reason: ReasonPerIP, wantHint: 3 * time.Second, asked: true,
		},
		{
			name: "address full here: not asked", limits: Limits{MaxConnsPerIP: 2}, fill: 2,
			advice: Advice{Verdict: VerdictClusterFull},
			remote: "10.0.0.1:2", reason: ReasonPerIP, asked: false,
		},
		{
			name: "hint capped at RetryMax", limits: Limits{MaxConns: 2}, fill: 2,
			advice: Advice{Verdict: VerdictClusterFull, Hint: time.Hour},
			remote: "10.0.0.2:1", reason: ReasonClusterFull, wantHint: DefaultRetryMax, counts: true, asked: true,
		},
		{
			name: "unknown verdict ignored", limits: Limits{MaxConns: 10}, fill: 2,
			advice: Advice{Verdict: 42},
			remote: "10.0.0.2:1", asked: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			adv := &recordingAdvisor{advice: tt.advice}
			// No advice while filling.
			s := mustNew(t, &Options{Limits: tt.limits, Jitter: -1, Now: newFakeClock().Now, Advisor: AdvisorFunc(func(AdviceRequest) Advice { return Advice{} })})
			for _, sl := range admitN(t, s, "10.0.0.1:1", tt.fill) {
				_ = sl
			}
			s.opts.Advisor = adv
			before, _ := s.demandLocked(s.now())
			sl, d := s.admit(upgradeRequest(tt.remote))
			if sl != nil {
				t.Cleanup(sl.release)
			}
			if d.reason != tt.reason {
				t.Fatalf("reason %v, want %v", d.reason, tt.reason)
			}
			if tt.reason != 0 && (d.code != closecode.TryAgainLater || d.mode != ModeClose) {
				t.Fatalf("refusal %v/%v, want 1013 with a close", d.code, d.mode)
			}
			if tt.wantHint != 0 && d.hint != tt.wantHint {
				t.Fatalf("hint %v, want %v", d.hint, tt.wantHint)
			}
			if d.text != tt.wantText {
				t.Fatalf("text %q, want %q", d.text, tt.wantText)
			}
			s.mu.Lock()
			after, _ := s.demandLocked(s.now())
			s.mu.Unlock()
			if counted := after > before+float64(boolInt(sl != nil)); counted != tt.counts {
				t.Fatalf("demand %v → %v: counted %v, want %v", before, after, counted, tt.counts)
			}
			calls := adv.calls()
			if len(calls) != boolInt(tt.asked) {
				t.Fatalf("advisor asked %d times, want %d", len(calls), boolInt(tt.asked))
			}
			if tt.asked {
				r := calls[0]
				ip := netip.MustParseAddrPort(tt.remote).Addr()
				wantIP := 0
				if ip == netip.MustParseAddr("10.0.0.1") {
					wantIP = tt.fill
				}
				if r.Conns != tt.fill || r.MaxConns != tt.limits.MaxConns || r.ClientIP != ip || r.IPConns != wantIP ||
					r.MaxConnsPerIP != tt.limits.MaxConnsPerIP || r.Demand < float64(tt.fill) {
					t.Fatalf("advisor asked %+v: want the local state (%d conns, limit %d, %d from %v)", r, tt.fill, tt.limits.MaxConns, wantIP, ip)
				}
			}
		})
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestAdvisorNotAskedWhenDraining: a drain refuses before anyone is asked.
func TestAdvisorNotAskedWhenDraining(t *testing.T) {
	t.Parallel()
	adv := &recordingAdvisor{advice: Advice{Verdict: VerdictClusterFull}}
	s := mustNew(t, &Options{Advisor: adv})
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, d := s.admit(upgradeRequest("10.0.0.1:1")); d.reason != ReasonDraining || len(adv.calls()) != 0 {
		t.Fatalf("during a drain: reason %v, advisor asked %d times; want draining, not asked", d.reason, len(adv.calls()))
	}
}

// TestAdvisedRefusalOnTheWire: the advice's text and hint reach the
// client in the Close frame, and Stats and /metrics count the refusal
// under its reason.
func TestAdvisedRefusalOnTheWire(t *testing.T) {
	t.Parallel()
	adv := &recordingAdvisor{}
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}, Jitter: -1, Advisor: adv})
	admitN(t, s, "10.0.0.1:1", 1)
	adv.mu.Lock()
	adv.advice = Advice{Verdict: VerdictNodeFull, Hint: 500 * time.Millisecond, Text: "node at capacity, cluster has room"}
	adv.mu.Unlock()
	srv := httptest.NewServer(s.Middleware(http.NotFoundHandler()))
	defer srv.Close()
	rc, resp, err := dialRaw(srv.Listener.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101 then a Close frame", resp.StatusCode)
	}
	code, reason, err := rc.readClose()
	if err != nil {
		t.Fatal(err)
	}
	if code != closecode.TryAgainLater || reason != "node at capacity, cluster has room; retry-after=0.5" {
		t.Fatalf("close %v %q, want 1013 \"node at capacity, cluster has room; retry-after=0.5\"", code, reason)
	}
	adv.mu.Lock()
	adv.advice = Advice{Verdict: VerdictClusterFull, Hint: 4 * time.Second}
	adv.mu.Unlock()
	rc2, _, err := dialRaw(srv.Listener.Addr().String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc2.Close()
	if code, reason, err := rc2.readClose(); err != nil || code != closecode.TryAgainLater || reason != "cluster at capacity; retry-after=4" {
		t.Fatalf("close %v %q %v, want 1013 \"cluster at capacity; retry-after=4\"", code, reason, err)
	}
	st := s.Stats()
	if st.Refused[Refusal{ReasonNodeFull, ModeClose}] != 1 || st.Refused[Refusal{ReasonClusterFull, ModeClose}] != 1 {
		t.Fatalf("refused %v, want one node_full and one cluster_full", st.Refused)
	}
	var buf bytes.Buffer
	if err := s.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`ebb_refused_total{reason="node_full",mode="close"} 1`,
		`ebb_refused_total{reason="cluster_full",mode="close"} 1`,
		`ebb_refused_total{reason="cluster_full",mode="http"} 0`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestStatsLimitsAndHeavyAddrs(t *testing.T) {
	t.Parallel()
	l := Limits{MaxConns: 100, Rate: 50, MaxConnsPerIP: 10}
	s := mustNew(t, &Options{Limits: l})
	admitN(t, s, "10.0.0.1:1", 5)
	admitN(t, s, "10.0.0.2:1", 3)
	admitN(t, s, "10.0.0.3:1", 1)
	if st := s.Stats(); st.Limits != l {
		t.Fatalf("Stats.Limits = %+v, want %+v", st.Limits, l)
	}
	got := s.HeavyAddrs(3, 10)
	if len(got) != 2 || got[netip.MustParseAddr("10.0.0.1")] != 5 || got[netip.MustParseAddr("10.0.0.2")] != 3 {
		t.Fatalf("HeavyAddrs(3, 10) = %v, want 10.0.0.1:5 and 10.0.0.2:3", got)
	}
	if got := s.HeavyAddrs(1, 1); len(got) != 1 || got[netip.MustParseAddr("10.0.0.1")] != 5 {
		t.Fatalf("HeavyAddrs(1, 1) = %v, want the heaviest only", got)
	}
	if got := s.HeavyAddrs(6, 10); got != nil {
		t.Fatalf("HeavyAddrs(6, 10) = %v, want nil", got)
	}
}

// TestShutdownWithPlan: the plan's window, interval and hints pace the
// drain, and refusals during the drain get the plan's hints too.
func TestShutdownWithPlan(t *testing.T) {
	t.Parallel()
	const n = 30
	plan := DrainPlan{Window: 600 * time.Millisecond, Interval: 100 * time.Millisecond, Hint: 3 * time.Second, Spread: 100 * time.Millisecond}
	// Options that the plan must override.
	s := mustNew(t, &Options{DrainWindow: 10 * time.Second, DrainHint: 20 * time.Second})
	h := &blockingHandler{register: true}
	wg := serveN(t, s, h, n)
	waitFor(t, "every handler to register its closer", func() bool { return h.registered() == n })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.ShutdownWith(ctx, plan) }()
	// A refusal during the drain carries the plan's hint.
	time.Sleep(50 * time.Millisecond)
	_, d := s.admit(upgradeRequest("10.9.9.9:1"))
	if d.reason != ReasonDraining || d.hint < plan.Hint || d.hint > plan.Hint+plan.Spread {
		t.Errorf("refusal during the drain: %v hint %v, want draining with a hint in [%v, %v]", d.reason, d.hint, plan.Hint, plan.Hint+plan.Spread)
	}
	if err := <-done; err != nil {
		t.Fatalf("ShutdownWith: %v", err)
	}
	wg.Wait()
	batches := map[time.Duration]int{}
	for i, fc := range h.closers {
		code, reason, calls, _ := fc.get()
		hint, ok := closecode.ParseRetryHint(reason)
		// Formatted hints round up to tenths: [3 s, 3.1 s].
		if code != closecode.ServiceRestart || calls != 1 || !ok || hint < plan.Hint || hint > plan.Hint+plan.Spread {
			t.Fatalf("connection %d: %v %q, want 1012 with a hint in [%v, %v]", i, code, reason, plan.Hint, plan.Hint+plan.Spread)
		}
		at := fc.at.Sub(start)
		if at > plan.Window+time.Second {
			t.Fatalf("connection %d closed %v after the drain began, window %v", i, at, plan.Window)
		}
		batches[at.Round(plan.Interval)]++
	}
	// 6 batches of 5, 100 ms apart (with slack for a busy machine: at
	// least 4 distinct instants, none holding more than half).
	if len(batches) < 4 {
		t.Fatalf("closes at %v: want them in batches every %v over %v", batches, plan.Interval, plan.Window)
	}
	for at, k := range batches {
		if k > n/2 {
			t.Fatalf("%d of %d closes at %v: not spread", k, n, at)
		}
	}
}
