package cluster

import (
	"math"
	"testing"
	"time"
)

// view builds a view of members "a", "b", … from loads; self is "a".
func view(loads ...Load) View {
	v := View{Cluster: "c", Self: "a", At: time.Unix(1000, 0)}
	for i, l := range loads {
		name := string(rune('a' + i))
		v.Members = append(v.Members, Member{Name: name, Load: l, Self: i == 0})
	}
	return v
}

func stale(v View, name string) View {
	for i := range v.Members {
		if v.Members[i].Name == name {
			v.Members[i].Stale = true
		}
	}
	return v
}

func TestTotals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		v    View
		want Totals
	}{
		{"three with room", view(Load{Conns: 10, Limit: 100, Rate: 50}, Load{Conns: 20, Limit: 100, Rate: 50}, Load{Conns: 30, Limit: 100}),
			Totals{Members: 3, Live: 3, Serving: 3, Conns: 60, Limit: 300, Headroom: 240, Demand: 60, Overload: 0.2, Rate: 100}},
		{"stale capacity does not count", stale(view(Load{Conns: 100, Limit: 100}, Load{Conns: 50, Limit: 100}), "b"),
			Totals{Members: 2, Live: 1, Serving: 1, Stale: 1, Conns: 100, Limit: 100, Headroom: 0, Demand: 100, Overload: 1}},
		{"draining conns count, its limit does not", view(Load{Conns: 50, Limit: 100}, Load{Conns: 80, Limit: 100, Draining: true}),
			Totals{Members: 2, Live: 2, Serving: 1, Draining: 1, Conns: 130, Limit: 100, Headroom: 0, Demand: 130, Overload: 1.3}},
		{"demand above conns", view(Load{Conns: 100, Limit: 100, Demand: 150}, Load{Conns: 100, Limit: 100, Demand: 250}),
			Totals{Members: 2, Live: 2, Serving: 2, Conns: 200, Limit: 200, Headroom: 0, Demand: 400, Overload: 2}},
		{"unlimited member", view(Load{Conns: 5, Limit: 10}, Load{Conns: 7}),
			Totals{Members: 2, Live: 2, Serving: 2, Conns: 12, Limit: 10, Unlimited: true, Headroom: math.MaxInt, Demand: 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.v.Totals(); got != tt.want {
				t.Errorf("Totals() = %+v\nwant       %+v", got, tt.want)
			}
		})
	}
}

func TestAdvise(t *testing.T) {
	t.Parallel()
	p := Policy{} // shed's defaults: base 2 s, max 60 s; short 500 ms
	tests := []struct {
		name     string
		v        View
		local    Load
		p        Policy
		verdict  Verdict
		hint     time.Duration
		reason   string
		headroom int
		overload float64
	}{
		{"room everywhere", view(Load{}, Load{Conns: 10, Limit: 100}), Load{Conns: 10, Limit: 100}, p, Admit, 0, "", 90, 0.1},
		{"local load replaces the stale report", view(Load{Conns: 0, Limit: 100}, Load{Conns: 100, Limit: 100}), Load{Conns: 100, Limit: 100}, p,
			ClusterFull, 2 * time.Second * 201 / 200, ReasonClusterFull, 0, 1},
		{"node full, others have room", view(Load{}, Load{Conns: 50, Limit: 100}, Load{Conns: 99, Limit: 100}), Load{Conns: 100, Limit: 100}, p,
			NodeFull, DefaultShortHint, ReasonNodeFull, 51, 249.0 / 300},
		{"node full, short hint set", view(Load{}, Load{Conns: 50, Limit: 100}), Load{Conns: 100, Limit: 100}, Policy{ShortHint: 200 * time.Millisecond},
			NodeFull, 200 * time.Millisecond, ReasonNodeFull, 50, 0.75},
		{"cluster full: hint grows with overload", view(Load{}, Load{Conns: 100, Limit: 100, Demand: 300}), Load{Conns: 100, Limit: 100, Demand: 199}, p,
			ClusterFull, 5 * time.Second, ReasonClusterFull, 0, 2.495},
		{"cluster full: hint capped", view(Load{}, Load{Conns: 100, Limit: 100, Demand: 10000}), Load{Conns: 100, Limit: 100}, p,
			ClusterFull, 60 * time.Second, ReasonClusterFull, 0, 50.5},
		{"other node stale: its room does not count", stale(view(Load{}, Load{Conns: 0, Limit: 100}), "b"), Load{Conns: 100, Limit: 100}, p,
			ClusterFull, 2 * time.Second * 101 / 100, ReasonClusterFull, 0, 1},
		{"other node draining: its room does not count", view(Load{}, Load{Conns: 10, Limit: 100, Draining: true}, Load{Conns: 100, Limit: 100}), Load{Conns: 100, Limit: 100}, p,
			ClusterFull, 2 * time.Second * 211 / 200, ReasonClusterFull, 0, 1.05},
		{"draining node's clients still fit", view(Load{}, Load{Conns: 10, Limit: 100, Draining: true}, Load{Conns: 50, Limit: 100}), Load{Conns: 100, Limit: 100}, p,
			NodeFull, DefaultShortHint, ReasonNodeFull, 50, 0.8},
		{"cluster-wide limit below the sum", view(Load{}, Load{Conns: 40, Limit: 100}), Load{Conns: 10, Limit: 100}, Policy{MaxConns: 50},
			ClusterFull, 2 * time.Second * 51 / 50, ReasonClusterFull, 60, 1},
		{"cluster-wide limit not reached", view(Load{}, Load{Conns: 30, Limit: 100}), Load{Conns: 10, Limit: 100}, Policy{MaxConns: 50},
			Admit, 0, "", 70, 0.8},
		{"unlimited other node", view(Load{}, Load{Conns: 30}), Load{Conns: 10, Limit: 10}, p,
			NodeFull, DefaultShortHint, ReasonNodeFull, math.MaxInt, 0},
		{"alone and full", view(Load{}), Load{Conns: 10, Limit: 10}, p,
			ClusterFull, 2 * time.Second * 11 / 10, ReasonClusterFull, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := Advise(tt.v, tt.local, tt.p)
			if a.Verdict != tt.verdict || a.Reason != tt.reason || a.OtherHeadroom != tt.headroom {
				t.Errorf("Advise() = %v %q headroom %d; want %v %q headroom %d", a.Verdict, a.Reason, a.OtherHeadroom, tt.verdict, tt.reason, tt.headroom)
			}
			if d := a.Hint - tt.hint; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("hint %v, want %v", a.Hint, tt.hint)
			}
			if math.Abs(a.Overload-tt.overload) > 1e-9 {
				t.Errorf("overload %v, want %v", a.Overload, tt.overload)
			}
		})
	}
}

// TestAdviseSameOnEveryNode: two nodes of the same cluster, each with its
// own fresh load and the other's report, give a refused client the same
// cluster-full hint.
func TestAdviseSameOnEveryNode(t *testing.T) {
	t.Parallel()
	la := Load{Conns: 100, Limit: 100, Demand: 180}
	lb := Load{Conns: 100, Limit: 100, Demand: 140}
	va := View{Self: "a", Members: []Member{{Name: "a", Load: la, Self: true}, {Name: "b", Load: lb}}}
	vb := View{Self: "b", Members: []Member{{Name: "a", Load: la}, {Name: "b", Load: lb, Self: true}}}
	a, b := Advise(va, la, Policy{}), Advise(vb, lb, Policy{})
	if a.Verdict != ClusterFull || a.Hint != b.Hint || a.Reason != b.Reason {
		t.Fatalf("node a says %v %v %q, node b says %v %v %q", a.Verdict, a.Hint, a.Reason, b.Verdict, b.Hint, b.Reason)
	}
	if want := time.Duration(float64(2*time.Second) * 321 / 200); a.Hint != want {
		t.Fatalf("hint %v, want %v (RetryBase × (demand+1)/capacity)", a.Hint, want)
	}
}

func TestPlanDrain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		v          View
		conns      int
		o          PlanOptions
		absorbable int
		shortfall  int
		safeRate   float64
		window     time.Duration
		batch      int
	}{
		{"even: smallest target limits", view(Load{Conns: 1000, Limit: 1000}, Load{Conns: 500, Limit: 1000, Rate: 100}, Load{Conns: 200, Limit: 1000, Rate: 200}), 1000, PlanOptions{},
			1000, 0, 100, 10 * time.Second, 10},
		{"least: headroom adds up, the slowest target takes every reconnect", view(Load{Conns: 1000, Limit: 1000}, Load{Conns: 500, Limit: 1000, Rate: 100}, Load{Conns: 200, Limit: 1000, Rate: 200}), 1000, PlanOptions{Balance: BalanceLeast},
			1300, 0, 50, 20 * time.Second, 5},
		{"shortfall reported", view(Load{Conns: 1000, Limit: 1000}, Load{Conns: 900, Limit: 1000, Rate: 100}, Load{Conns: 900, Limit: 1000, Rate: 100}), 1000, PlanOptions{},
			200, 800, 100, 10 * time.Second, 10},
		{"unknown rate assumed", view(Load{Conns: 300}, Load{Limit: 1000}, Load{Limit: 1000}), 300, PlanOptions{AssumedRate: 30, RateShare: 1},
			2000, 0, 60, 5 * time.Second, 6},
		{"clamped to MinWindow", view(Load{Conns: 10}, Load{Limit: 1000, Rate: 1000}), 10, PlanOptions{},
			1000, 0, 500, time.Second, 1},
		{"clamped to MaxWindow", view(Load{Conns: 10000}, Load{Rate: 1}), 10000, PlanOptions{MaxWindow: time.Minute},
			math.MaxInt, 0, 0.5, time.Minute, 17},
		{"draining and stale targets do not count", stale(view(Load{Conns: 100}, Load{Limit: 1000, Rate: 100}, Load{Limit: 1000, Rate: 100, Draining: true}, Load{Limit: 1000, Rate: 100}), "d"), 100, PlanOptions{},
			1000, 0, 50, 2 * time.Second, 5},
		{"no target at all", view(Load{Conns: 100}), 100, PlanOptions{},
			0, 100, 0, time.Second, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := PlanDrain(tt.v, tt.conns, tt.o)
			if p.Absorbable != tt.absorbable || p.Shortfall != tt.shortfall || math.Abs(p.SafeRate-tt.safeRate) > 1e-9 || p.Batch != tt.batch {
				t.Errorf("PlanDrain = absorbable %d shortfall %d safe rate %v batch %d; want %d %d %v %d", p.Absorbable, p.Shortfall, p.SafeRate, p.Batch, tt.absorbable, tt.shortfall, tt.safeRate, tt.batch)
			}
			if d := p.Window - tt.window; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("window %v, want %v", p.Window, tt.window)
			}
			// The schedule closes everything within the window, and
			// the arrival rate it implies stays at or under the safe
			// rate unless the window was clamped to MaxWindow.
			if p.Conns > 0 {
				last := p.CloseAt(p.Conns - 1)
				if last > p.Window {
					t.Errorf("last close at %v, after the window %v", last, p.Window)
				}
				if p.SafeRate > 0 && p.Window < max(tt.o.MaxWindow, DefaultMaxWindow) && p.Window > DefaultMinWindow && tt.o.MaxWindow == 0 && p.Rate > p.SafeRate*1.001 {
					t.Errorf("rate %v above the safe rate %v", p.Rate, p.SafeRate)
				}
			}
		})
	}
}

func TestHeavyIPsAndIPConns(t *testing.T) {
	t.Parallel()
	counts := map[string]int{"10.0.0.1": 50, "10.0.0.2": 3, "10.0.0.3": 20, "10.0.0.4": 10}
	got := HeavyIPs(counts, 10, 2)
	if len(got) != 2 || got["10.0.0.1"] != 50 || got["10.0.0.3"] != 20 {
		t.Fatalf("HeavyIPs = %v, want the two heaviest at or above 10", got)
	}
	if got := HeavyIPs(counts, 100, 10); got != nil {
		t.Fatalf("HeavyIPs above every count = %v, want nil", got)
	}
	v := view(Load{HeavyIPs: map[string]int{"x": 1000}}, Load{HeavyIPs: map[string]int{"x": 5}}, Load{HeavyIPs: map[string]int{"x": 7, "y": 1}})
	if n := v.IPConns("x"); n != 12 {
		t.Fatalf("IPConns(x) = %d, want 12 (others only)", n)
	}
	if n := stale(v, "c").IPConns("x"); n != 5 {
		t.Fatalf("IPConns(x) with c stale = %d, want 5", n)
	}
}

func TestReportValidate(t *testing.T) {
	t.Parallel()
	big := map[string]int{}
	for i := range maxHeavyIPs + 1 {
		big[string(rune(0x4e00+i))] = 1
	}
	tests := []struct {
		name string
		r    report
		subj string
		ok   bool
	}{
		{"fine", report{V: 1, Node: "b", Load: Load{Conns: 3}}, "ebb.c.load.b", true},
		{"subject mismatch", report{V: 1, Node: "b"}, "ebb.c.load.x", false},
		{"bad name", report{V: 1, Node: "b.c"}, "ebb.c.load.b.c", false},
		{"version", report{V: 2, Node: "b"}, "ebb.c.load.b", false},
		{"negative", report{V: 1, Node: "b", Load: Load{Conns: -1}}, "ebb.c.load.b", false},
		{"NaN", report{V: 1, Node: "b", Load: Load{Rate: math.NaN()}}, "ebb.c.load.b", false},
		{"too many heavy addresses", report{V: 1, Node: "b", Load: Load{HeavyIPs: big}}, "ebb.c.load.b", false},
	}
	for _, tt := range tests {
		if err := tt.r.validate(tt.subj, "ebb.c.load"); (err == nil) != tt.ok {
			t.Errorf("%s: validate = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestRing(t *testing.T) {
	t.Parallel()
	var r ring
	r.init(100, 1000)
	r.reset(1)
	for s := uint64(1); s <= 300; s++ {
		r.add(Message{Seq: s, Data: make([]byte, 5)})
	}
	if r.has(200) || !r.has(201) || !r.has(300) || r.has(301) {
		t.Fatalf("cache holds [%d, %d), want [201, 301)", r.first, r.first+uint64(r.n))
	}
	got := r.sliceLocked(250, 300, 10)
	if len(got) != 10 || got[0].Seq != 250 || got[9].Seq != 259 {
		t.Fatalf("slice = %d messages from %d", len(got), firstSeq(got))
	}
	r.add(Message{Seq: 400, Data: make([]byte, 5)}) // a gap resets it
	if r.has(300) || !r.has(400) {
		t.Fatal("a gap must reset the cache")
	}
	for s := uint64(401); s <= 500; s++ {
		r.add(Message{Seq: s, Data: make([]byte, 50)}) // bytes bound: 20 fit
	}
	if r.n != 20 || r.bytes != 1000 {
		t.Fatalf("cache holds %d messages, %d bytes; want 20, 1000", r.n, r.bytes)
	}
}
