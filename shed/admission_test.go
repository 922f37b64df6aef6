package shed

import (
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

func TestBucket(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	tests := []struct {
		name  string
		rate  float64
		burst int
		// steps: advance by the duration, then try; want says whether the
		// take succeeds.
		steps []struct {
			after time.Duration
			want  bool
		}
	}{
		{
			name: "burst then refill", rate: 2, burst: 3,
			steps: []struct {
				after time.Duration
				want  bool
			}{
				{0, true}, {0, true}, {0, true}, {0, false},
				{400 * time.Millisecond, false}, {100 * time.Millisecond, true}, {0, false},
				{10 * time.Second, true}, {0, true}, {0, true}, {0, false},
			},
		},
		{
			name: "default burst is ceil(rate)", rate: 1.5,
			steps: []struct {
				after time.Duration
				want  bool
			}{
				{0, true}, {0, true}, {0, false}, {time.Second, true}, {0, false},
			},
		},
		{
			name: "slow rate below one per second", rate: 0.5, burst: 1,
			steps: []struct {
				after time.Duration
				want  bool
			}{
				{0, true}, {time.Second, false}, {time.Second, true},
			},
		},
		{
			name: "off", rate: 0,
			steps: []struct {
				after time.Duration
				want  bool
			}{
				{0, true}, {0, true}, {0, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := clk.Now()
			var b bucket
			b.configure(tt.rate, tt.burst, now)
			for i, st := range tt.steps {
				now = now.Add(st.after)
				if got := b.take(now); got != st.want {
					t.Fatalf("step %d (after %v): take = %v, want %v (tokens %.3f)", i, st.after, got, st.want, b.tokens)
				}
			}
		})
	}
}

func TestBucketReconfigure(t *testing.T) {
	t.Parallel()
	now := newFakeClock().Now()
	var b bucket
	b.configure(10, 10, now)
	for range 8 {
		b.take(now)
	}
	// Shrinking keeps at most the new burst; growing keeps what was there.
	b.configure(10, 20, now)
	if b.tokens != 2 {
		t.Fatalf("after growing the burst: %v tokens, want the 2 left", b.tokens)
	}
	b.configure(10, 1, now)
	if b.tokens != 1 {
		t.Fatalf("after shrinking the burst to 1: %v tokens, want 1", b.tokens)
	}
}

func TestDemandWindow(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	var w demandWindow
	w.init(clk.Now(), 2*time.Second)
	for range 8 {
		w.add(clk.Now())
	}
	clk.Advance(time.Second)
	for range 4 {
		w.add(clk.Now())
	}
	if got := w.value(clk.Now()); got != 12 {
		t.Fatalf("value = %d, want 12", got)
	}
	// The first eight leave one window after their slot began; the
	// last four one window after theirs.
	clk.Advance(time.Second)
	if got := w.value(clk.Now()); got != 4 {
		t.Fatalf("value one window after the first refusals = %d, want 4", got)
	}
	if got := w.value(clk.Now().Add(-time.Minute)); got != 4 {
		t.Fatalf("value when the clock went back = %d, want 4", got)
	}
	clk.Advance(time.Second)
	if got := w.value(clk.Now()); got != 0 {
		t.Fatalf("value one window after the last refusal = %d, want 0", got)
	}
	clk.Advance(time.Hour)
	w.add(clk.Now())
	if got := w.value(clk.Now()); got != 1 {
		t.Fatalf("value after a long quiet = %d, want 1", got)
	}
}

// admitN admits n requests from remote and fails if any is refused.
func admitN(t *testing.T, s *Shedder, remote string, n int) []*slot {
	t.Helper()
	var out []*slot
	for i := range n {
		sl, d := s.admit(upgradeRequest(remote))
		if sl == nil {
			t.Fatalf("request %d from %s refused (%v), want admitted", i, remote, d.reason)
		}
		out = append(out, sl)
		t.Cleanup(sl.release) // before the Shedder's own cleanup drains it
	}
	return out
}

func TestAdmitEachLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		limits   Limits
		pressure float64
		fill     func(t *testing.T, s *Shedder)
		remote   string
		reason   Reason
		mode     Mode
	}{
		{
			name: "total connections", limits: Limits{MaxConns: 3},
			fill:   func(t *testing.T, s *Shedder) { admitN(t, s, "10.0.0.1:1", 2); admitN(t, s, "10.0.0.2:1", 1) },
			remote: "10.0.0.3:1", reason: ReasonConns, mode: ModeClose,
		},
		{
			name: "per IP", limits: Limits{MaxConnsPerIP: 2},
			fill:   func(t *testing.T, s *Shedder) { admitN(t, s, "10.0.0.1:1", 2); admitN(t, s, "10.0.0.2:1", 2) },
			remote: "10.0.0.1:2", reason: ReasonPerIP, mode: ModeClose,
		},
		{
			name: "handshakes in flight", limits: Limits{MaxInFlight: 2},
			fill:   func(t *testing.T, s *Shedder) { admitN(t, s, "10.0.0.1:1", 2) },
			remote: "10.0.0.2:1", reason: ReasonInFlight, mode: ModeClose,
		},
		{
			name: "rate", limits: Limits{Rate: 1, Burst: 2},
			fill:   func(t *testing.T, s *Shedder) { admitN(t, s, "10.0.0.1:1", 2) },
			remote: "10.0.0.2:1", reason: ReasonRate, mode: ModeClose,
		},
		{
			name: "user pressure", limits: Limits{Pressure: 0.8}, pressure: 0.9,
			remote: "10.0.0.1:1", reason: ReasonPressure, mode: ModeClose,
		},
		{
			name: "hard pressure gives 503", limits: Limits{Pressure: 0.5, HardPressure: 1.5}, pressure: 0.8,
			remote: "10.0.0.1:1", reason: ReasonPressure, mode: ModeHTTP,
		},
		{
			name: "hard demand gives 503", limits: Limits{MaxConns: 2, HardDemand: 4},
			fill: func(t *testing.T, s *Shedder) {
				admitN(t, s, "10.0.0.1:1", 2)
				for range 2 { // two refusals: demand 2 + 2 = HardDemand
					if sl, d := s.admit(upgradeRequest("10.0.0.9:1")); sl != nil || d.mode != ModeClose {
						t.Fatalf("filler refusal: slot %v mode %v, want a close refusal", sl, d.mode)
					}
				}
			},
			remote: "10.0.0.2:1", reason: ReasonConns, mode: ModeHTTP,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newFakeClock()
			s := mustNew(t, &Options{
				Limits: tt.limits, Now: clk.Now, Rand: rand.New(rand.NewPCG(1, 2)),
				Pressure: func() float64 { return tt.pressure },
			})
			if tt.fill != nil {
				tt.fill(t, s)
			}
			sl, d := s.admit(upgradeRequest(tt.remote))
			if sl != nil {
				t.Fatalf("admitted, want refused with %v", tt.reason)
			}
			if d.reason != tt.reason || d.mode != tt.mode || d.code != closecode.TryAgainLater {
				t.Fatalf("refused with %v/%v/%v, want %v/%v/1013", d.reason, d.mode, d.code, tt.reason, tt.mode)
			}
			if d.hint < DefaultRetryBase {
				t.Fatalf("hint %v is below RetryBase %v", d.hint, DefaultRetryBase)
			}
		})
	}
}

func TestLimitsAreLive(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}, Now: clk.Now})
	slots := admitN(t, s, "10.0.0.1:1", 1)
	if sl, _ := s.admit(upgradeRequest("10.0.0.1:1")); sl != nil {
		t.Fatal("second connection admitted at MaxConns 1")
	}
	if err := s.SetLimits(Limits{MaxConns: 2}); err != nil {
		t.Fatal(err)
	}
	slots = append(slots, admitN(t, s, "10.0.0.1:1", 1)...)
	// Releasing frees the slot for the next request, and per-IP state goes.
	if err := s.SetLimits(Limits{MaxConns: 2, MaxConnsPerIP: 2}); err != nil {
		t.Fatal(err)
	}
	if sl, d := s.admit(upgradeRequest("10.0.0.2:1")); sl != nil || d.reason != ReasonConns {
		t.Fatalf("third connection: slot %v reason %v, want refused for conns", sl, d.reason)
	}
	for _, sl := range slots {
		sl.release()
	}
	if got := s.Stats(); got.Connections != 0 || got.InFlight != 0 || len(s.perIP) != 0 {
		t.Fatalf("after release: %d connections, %d in flight, %d IPs; want all 0", got.Connections, got.InFlight, len(s.perIP))
	}
	if err := s.SetLimits(Limits{MaxConns: -1}); err == nil || !strings.HasPrefix(err.Error(), "shed: ") {
		t.Fatalf("SetLimits(MaxConns: -1) = %v, want a shed: error", err)
	}
	if got := s.Limits().MaxConns; got != 2 {
		t.Fatalf("a rejected SetLimits changed MaxConns to %d", got)
	}
}

func TestInFlightEndsOnRegister(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{MaxInFlight: 1}, Now: newFakeClock().Now})
	sl := admitN(t, s, "10.0.0.1:1", 1)[0]
	if got, _ := s.admit(upgradeRequest("10.0.0.2:1")); got != nil {
		t.Fatal("admitted a second handshake at MaxInFlight 1")
	}
	sl.register(newFakeCloser())
	other := admitN(t, s, "10.0.0.2:1", 1)
	if st := s.Stats(); st.InFlight != 1 || st.Connections != 2 {
		t.Fatalf("in flight %d connections %d, want 1 and 2", st.InFlight, st.Connections)
	}
	sl.release()
	other[0].release()
}

func TestClientIP(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name   string
		trust  []netip.Prefix
		v6bits int
		remote string
		xff    []string
		want   string
	}{
		{name: "remote addr", remote: "192.0.2.1:5000", want: "192.0.2.1"},
		{name: "XFF ignored without trusted proxies", remote: "192.0.2.1:5000", xff: []string{"198.51.100.7"}, want: "192.0.2.1"},
		{name: "XFF ignored from an untrusted peer", trust: trusted, remote: "192.0.2.1:5000", xff: []string{"198.51.100.7"}, want: "192.0.2.1"},
		{name: "XFF from a trusted proxy", trust: trusted, remote: "10.1.2.3:5000", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "rightmost untrusted wins over a forged left entry", trust: trusted, remote: "10.1.2.3:5000", xff: []string{"6.6.6.6, 198.51.100.7, 10.9.9.9"}, want: "198.51.100.7"},
		{name: "several header lines", trust: trusted, remote: "10.1.2.3:5000", xff: []string{"6.6.6.6", "198.51.100.7", "10.9.9.9"}, want: "198.51.100.7"},
		{name: "all trusted: leftmost", trust: trusted, remote: "10.1.2.3:5000", xff: []string{"10.4.4.4, 10.5.5.5"}, want: "10.4.4.4"},
		{name: "garbage stops the walk", trust: trusted, remote: "10.1.2.3:5000", xff: []string{"junk, 10.5.5.5"}, want: "10.5.5.5"},
		{name: "XFF entry with port", trust: trusted, remote: "10.1.2.3:5000", xff: []string{"198.51.100.7:4444"}, want: "198.51.100.7"},
		{name: "IPv6 trusted proxy", trust: trusted, remote: "[fd00::1]:5000", xff: []string{"2001:db8::1"}, want: "2001:db8::1"},
		{name: "IPv4-mapped counts as IPv4", remote: "[::ffff:192.0.2.1]:5000", want: "192.0.2.1"},
		{name: "IPv6 grouped by /64", v6bits: 64, remote: "[2001:db8:1:2:3:4:5:6]:5000", want: "2001:db8:1:2::"},
		{name: "IPv6 whole address by default", remote: "[2001:db8:1:2:3:4:5:6]:5000", want: "2001:db8:1:2:3:4:5:6"},
		{name: "zone dropped", remote: "[fe80::1%eth0]:5000", want: "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := mustNew(t, &Options{TrustedProxies: tt.trust, IPv6PrefixBits: tt.v6bits})
			r := upgradeRequest(tt.remote)
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientIP(r); got.String() != tt.want {
				t.Fatalf("clientIP = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPerIPWithTrustedProxy(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{
		Limits:         Limits{MaxConnsPerIP: 1},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
	})
	req := func(xff string) *http.Request {
		r := upgradeRequest("127.0.0.1:4000")
		r.Header.Set("X-Forwarded-For", xff)
		return r
	}
	a, _ := s.admit(req("198.51.100.1"))
	b, _ := s.admit(req("198.51.100.2"))
	if a == nil || b == nil {
		t.Fatal("two clients behind one trusted proxy were not both admitted")
	}
	if sl, d := s.admit(req("198.51.100.1")); sl != nil || d.reason != ReasonPerIP {
		t.Fatalf("second connection of 198.51.100.1: slot %v reason %v, want per-IP refusal", sl, d.reason)
	}
	a.release()
	b.release()
}

func TestHintGrowsWithOverloadAndIsCapped(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	s := mustNew(t, &Options{
		Limits: Limits{MaxConns: 10}, Now: clk.Now, Jitter: -1,
		RetryBase: time.Second, RetryMax: 5 * time.Second,
	})
	slots := admitN(t, s, "10.0.0.1:1", 10)
	var hints []time.Duration
	for range 60 {
		_, d := s.admit(upgradeRequest("10.0.0.2:1"))
		hints = append(hints, d.hint)
	}
	// Demand before refusal i is 10 connections + i refusals, so the hint
	// is min(5 s, 1 s × (11+i)/10).
	for i, h := range hints {
		want := time.Duration(min(5, float64(11+i)/10) * float64(time.Second))
		if d := h - want; d < -time.Microsecond || d > time.Microsecond {
			t.Fatalf("hint %d = %v, want %v", i, h, want)
		}
	}
	// Refusals are forgotten: one demand window later the hint is back
	// near the base.
	clk.Advance(DefaultDemandWindow)
	if _, d := s.admit(upgradeRequest("10.0.0.2:1")); d.hint > 1200*time.Millisecond {
		t.Fatalf("hint after the storm passed = %v, want about 1.1 s", d.hint)
	}
	for _, sl := range slots {
		sl.release()
	}
}

func TestHintJitterSpreadsClients(t *testing.T) {
	t.Parallel()
	hintsFor := func(seed uint64) []time.Duration {
		s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}, Now: newFakeClock().Now, Rand: rand.New(rand.NewPCG(seed, 7)), RetryMax: time.Hour})
		defer admitN(t, s, "10.0.0.1:1", 1)[0].release()
		var out []time.Duration
		for range 200 {
			_, d := s.admit(upgradeRequest("10.0.0.2:1"))
			// Unjittered hint for this refusal, from its overload ratio.
			out = append(out, d.hint)
		}
		return out
	}
	a, b := hintsFor(1), hintsFor(1)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("hint %d differs between two runs with one seed: %v vs %v", i, a[i], b[i])
		}
	}
	// Every hint is between the unjittered value and 1.5 times it; the
	// formatted hints (tenths of seconds) are mostly distinct.
	seen := map[string]bool{}
	for i, h := range a {
		base := time.Duration(float64(DefaultRetryBase) * float64(2+i))
		if h < base || h >= base*3/2 {
			t.Fatalf("hint %d = %v, want in [%v, %v)", i, h, base, base*3/2)
		}
		seen[closecode.FormatRetryHint("", h)] = true
	}
	if len(seen) < 150 {
		t.Fatalf("only %d distinct hints among 200 refusals: jitter does not spread them", len(seen))
	}
	if c := hintsFor(2); c[0] == a[0] && c[1] == a[1] {
		t.Fatal("different seeds gave the same hints")
	}
}

func TestHardCeilingAnswers503(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{
		Limits: Limits{Pressure: 1, HardPressure: 2}, Jitter: -1,
		Pressure: func() float64 { return 3 }, RetryBase: 1500 * time.Millisecond,
	})
	called := false
	h := s.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, upgradeRequest("192.0.2.1:1"))
	if called {
		t.Fatal("the handler ran for a refused request")
	}
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	// Pressure 3 against a limit of 1: hint 1.5 s × 3 = 4.5 s, Retry-After
	// rounded up to whole seconds.
	if got := rec.Header().Get("Retry-After"); got != "5" {
		t.Fatalf("Retry-After %q, want \"5\"", got)
	}
	if _, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil {
		t.Fatalf("Retry-After is not whole seconds: %v", err)
	}
	body := rec.Body.String()
	if hint, ok := closecode.ParseRetryHint(body); !ok || hint != 4500*time.Millisecond {
		t.Fatalf("body %q: hint %v %v, want 4.5 s", body, hint, ok)
	}
	if !strings.HasPrefix(body, "server overloaded") {
		t.Fatalf("body %q does not say why", body)
	}
	st := s.Stats()
	if st.Refused[Refusal{ReasonPressure, ModeHTTP}] != 1 || st.RefusedTotal != 1 {
		t.Fatalf("refused counts %v, want one pressure/http", st.Refused)
	}
}

func TestCloseRefusalFallsBackTo503(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{Pressure: 1}, Pressure: func() float64 { return 2 }})
	h := s.Middleware(http.NotFoundHandler())
	tests := []struct {
		name string
		edit func(r *http.Request)
	}{
		{"no hijack (recorder)", func(*http.Request) {}},
		{"bad key", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Key", "short") }},
		{"wrong version", func(r *http.Request) { r.Header.Set("Sec-WebSocket-Version", "8") }},
	}
	for _, tt := range tests {
		r := upgradeRequest("192.0.2.1:1")
		tt.edit(r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Errorf("%s: status %d Retry-After %q, want 503 with Retry-After", tt.name, rec.Code, rec.Header().Get("Retry-After"))
		}
	}
	if n := s.Stats().Refused[Refusal{ReasonPressure, ModeHTTP}]; n != 3 {
		t.Fatalf("counted %d pressure/http refusals, want 3 (the mode actually used)", n)
	}
}

func TestNonUpgradePassesThrough(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{Pressure: 1}, Pressure: func() float64 { return 5 }})
	h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(*slot); ok {
			t.Error("a plain request got shed's ResponseWriter")
		}
		w.WriteHeader(http.StatusTeapot)
	}))
	for _, r := range []*http.Request{
		httptest.NewRequest(http.MethodGet, "/", nil),
		func() *http.Request { r := upgradeRequest("192.0.2.1:1"); r.Method = http.MethodPost; return r }(),
		func() *http.Request { r := upgradeRequest("192.0.2.1:1"); r.Header.Set("Upgrade", "h2c"); return r }(),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusTeapot {
			t.Fatalf("%s %s Upgrade=%q: status %d, want the handler's 418", r.Method, r.URL, r.Header.Get("Upgrade"), rec.Code)
		}
	}
	if st := s.Stats(); st.Admitted != 0 || st.RefusedTotal != 0 {
		t.Fatalf("plain requests were counted: %+v", st)
	}
}

func TestIsUpgradeTokens(t *testing.T) {
	t.Parallel()
	tests := []struct {
		conn, upgrade string
		want          bool
	}{
		{"Upgrade", "websocket", true},
		{"keep-alive, Upgrade", "WebSocket", true},
		{"keep-alive,upgrade", "h2c, websocket", true},
		{"keep-alive", "websocket", false},
		{"Upgrade", "websockets", false},
		{"", "", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Connection", tt.conn)
		r.Header.Set("Upgrade", tt.upgrade)
		if got := isUpgrade(r); got != tt.want {
			t.Errorf("Connection %q Upgrade %q: isUpgrade = %v, want %v", tt.conn, tt.upgrade, got, tt.want)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	bad := []Options{
		{RetryBase: -time.Second},
		{RetryBase: time.Minute, RetryMax: time.Second},
		{Jitter: 11},
		{IPv6PrefixBits: 129},
		{TrustedProxies: []netip.Prefix{{}}},
		{DrainCode: closecode.TryAgainLater},
		{DrainMode: 7},
		{Shed: &ShedPolicy{Fraction: 2}},
		{Limits: Limits{Rate: math.NaN()}},
		{Limits: Limits{HardPressure: 0.5}},
		{Limits: Limits{SchedLatency: -1}},
	}
	for i, o := range bad {
		if s, err := New(&o); err == nil {
			_ = s.Shutdown(t.Context())
			t.Errorf("case %d: New(%+v) succeeded, want an error", i, o)
		} else if !strings.HasPrefix(err.Error(), "shed: ") {
			t.Errorf("case %d: error %q lacks the shed: prefix", i, err)
		}
	}
}
