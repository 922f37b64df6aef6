package shed

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// shedFixture is a Shedder with n registered fake connections, admitted
// oldest first, and a pressure knob.
type shedFixture struct {
	s       *Shedder
	clk     *fakeClock
	p       atomic.Uint64
	slots   []*slot
	closers []*fakeCloser
}

func newShedFixture(t *testing.T, n int, policy ShedPolicy, limits Limits) *shedFixture {
	t.Helper()
	f := &shedFixture{clk: newFakeClock()}
	limits.Pressure = 1
	s, err := New(&Options{
		Limits: limits, Now: f.clk.Now, Rand: rand.New(rand.NewPCG(3, 4)),
		Pressure: func() float64 { return math.Float64frombits(f.p.Load()) },
		Shed:     &policy,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	for i := range n {
		sl, d := s.admit(upgradeRequest("10.0.0." + strconv.Itoa(i) + ":1"))
		if sl == nil {
			t.Fatalf("fixture connection %d refused: %v", i, d.reason)
		}
		fc := newFakeCloser()
		sl.register(fc)
		f.slots = append(f.slots, sl)
		f.closers = append(f.closers, fc)
	}
	t.Cleanup(func() {
		for _, sl := range f.slots {
			sl.release()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return f
}

// pressure sets the pressure signal and moves the clock past the sample
// interval so that the next look sees it.
func (f *shedFixture) pressure(v float64) {
	f.p.Store(math.Float64bits(v))
	f.clk.Advance(time.Second)
}

// closed returns the indexes of the fixture connections asked to close.
func (f *shedFixture) closed() []int {
	f.s.closers.Wait()
	var out []int
	for i, fc := range f.closers {
		if _, _, n, _ := fc.get(); n > 0 {
			out = append(out, i)
		}
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestShedding(t *testing.T) {
	t.Parallel()
	// Interval is an hour so that the real-time loop never runs during
	// the test; the test drives shedStep with the fake clock.
	policy := ShedPolicy{Interval: time.Hour, Fraction: 0.25}
	t.Run("newest first, bounded, once per interval", func(t *testing.T) {
		t.Parallel()
		f := newShedFixture(t, 8, policy, Limits{})
		f.pressure(2)
		steps := []struct {
			advance time.Duration
			shed    int
			closed  []int
		}{
			{0, 0, nil},                        // pressure just went high
			{30 * time.Minute, 0, nil},         // not high for an interval yet
			{30 * time.Minute, 2, []int{6, 7}}, // a quarter of 8, newest first
			{time.Minute, 0, []int{6, 7}},      // at most once per interval
			{time.Hour, 2, []int{4, 5, 6, 7}},  // the next two, skipping those closing
		}
		for i, st := range steps {
			f.clk.Advance(st.advance)
			if n := f.s.shedStep(f.clk.Now()); n != st.shed {
				t.Fatalf("step %d: shed %d, want %d", i, n, st.shed)
			}
			if got := f.closed(); !equalInts(got, st.closed) {
				t.Fatalf("step %d: closed %v, want %v", i, got, st.closed)
			}
		}
		hints := map[time.Duration]bool{}
		for _, i := range []int{4, 5, 6, 7} {
			code, reason, calls, _ := f.closers[i].get()
			h, ok := closecode.ParseRetryHint(reason)
			if code != closecode.TryAgainLater || calls != 1 || !ok || h < DefaultRetryBase*2 {
				t.Fatalf("connection %d: code %v reason %q calls %d; want one 1013 with a hint ≥ 2×base", i, code, reason, calls)
			}
			hints[h] = true
		}
		if len(hints) < 3 {
			t.Fatalf("shed hints %v are not spread", hints)
		}
		// Pressure falls: no more shedding, and the clock starts over.
		f.pressure(0.5)
		f.clk.Advance(time.Hour)
		if n := f.s.shedStep(f.clk.Now()); n != 0 {
			t.Fatalf("shed %d at low pressure", n)
		}
		st := f.s.Stats()
		if st.Shed != 4 || st.CloseSent[closecode.TryAgainLater] != 4 {
			t.Fatalf("stats: shed %d, 1013 sent %d; want 4 and 4", st.Shed, st.CloseSent[closecode.TryAgainLater])
		}
	})
	t.Run("oldest first", func(t *testing.T) {
		t.Parallel()
		p := policy
		p.Oldest = true
		f := newShedFixture(t, 8, p, Limits{})
		f.pressure(3)
		f.s.shedStep(f.clk.Now())
		f.clk.Advance(time.Hour)
		if n := f.s.shedStep(f.clk.Now()); n != 2 {
			t.Fatalf("shed %d, want 2", n)
		}
		if got := f.closed(); !equalInts(got, []int{0, 1}) {
			t.Fatalf("closed %v, want the oldest [0 1]", got)
		}
	})
	t.Run("excess over a lowered MaxConns", func(t *testing.T) {
		t.Parallel()
		p := policy
		p.Fraction = 1
		f := newShedFixture(t, 8, p, Limits{})
		if err := f.s.SetLimits(Limits{Pressure: 1, MaxConns: 5}); err != nil {
			t.Fatal(err)
		}
		f.s.shedStep(f.clk.Now())
		f.clk.Advance(time.Hour)
		if n := f.s.shedStep(f.clk.Now()); n != 3 {
			t.Fatalf("shed %d, want the 3 over the limit", n)
		}
		if got := f.closed(); !equalInts(got, []int{5, 6, 7}) {
			t.Fatalf("closed %v, want [5 6 7]", got)
		}
		_, reason, _, _ := f.closers[7].get()
		if _, ok := closecode.ParseRetryHint(reason); !ok {
			t.Fatalf("reason %q has no hint", reason)
		}
	})
	t.Run("unregistered connections are skipped", func(t *testing.T) {
		t.Parallel()
		f := newShedFixture(t, 4, policy, Limits{})
		extra, _ := f.s.admit(upgradeRequest("10.9.9.9:1")) // newest, no Closer
		defer extra.release()
		f.pressure(2)
		f.s.shedStep(f.clk.Now())
		f.clk.Advance(time.Hour)
		if n := f.s.shedStep(f.clk.Now()); n != 1 {
			t.Fatalf("shed %d, want 1", n)
		}
		if got := f.closed(); !equalInts(got, []int{3}) {
			t.Fatalf("closed %v, want [3], the newest registered", got)
		}
	})
}

// blockingHandler registers a fake closer (unless register is false) and
// returns once it is closed.
type blockingHandler struct {
	register bool
	mu       sync.Mutex
	closers  []*fakeCloser
	ignore   bool
	gate     chan struct{} // if set, wait for it before registering
	stop     chan struct{} // for handlers that never register
}

func (h *blockingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.register {
		<-h.stop
		return
	}
	if h.gate != nil {
		<-h.gate
	}
	fc := newFakeCloser()
	fc.ignore = h.ignore
	h.mu.Lock()
	h.closers = append(h.closers, fc)
	h.mu.Unlock()
	Track(r, fc)
	<-fc.done
}

// registered reports how many handlers have registered their closers.
func (h *blockingHandler) registered() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.closers)
}

// serveN starts n admitted requests on h and waits until they hold slots.
func serveN(t *testing.T, s *Shedder, h http.Handler, n int) *sync.WaitGroup {
	t.Helper()
	mw := s.Middleware(h)
	base := s.Stats().Connections
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mw.ServeHTTP(httptest.NewRecorder(), upgradeRequest("10.1."+strconv.Itoa(i/250)+"."+strconv.Itoa(i%250)+":1"))
		})
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Connections < base+n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests admitted", s.Stats().Connections-base, n)
		}
		time.Sleep(time.Millisecond)
	}
	return &wg
}

func TestDrainSpreadsClosesOverTheWindow(t *testing.T) {
	t.Parallel()
	const n, window = 60, time.Second
	s := mustNew(t, &Options{DrainWindow: window, DrainHint: 10 * time.Second})
	h := &blockingHandler{register: true}
	wg := serveN(t, s, h, n)
	waitFor(t, "every handler to register its closer", func() bool { return h.registered() == n })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	// Times are checked with slack for a busy machine.
	firstHalf, hints := 0, map[time.Duration]bool{}
	for i, fc := range h.closers {
		code, reason, calls, forced := fc.get()
		hint, ok := closecode.ParseRetryHint(reason)
		if code != closecode.ServiceRestart || calls != 1 || forced || !ok || hint < 10*time.Second || hint > 15*time.Second {
			t.Fatalf("connection %d: code %v reason %q calls %d forced %v; want one 1012 with a hint in [10 s, 15 s]", i, code, reason, calls, forced)
		}
		hints[hint] = true
		at := fc.at.Sub(start)
		if at > window+2*time.Second {
			t.Fatalf("connection %d closed %v after Shutdown began, window %v", i, at, window)
		}
		if at < window/2 {
			firstHalf++
		}
	}
	if firstHalf < n/5 || firstHalf > n*4/5 {
		t.Fatalf("%d of %d closes in the first half of the window: not spread over it", firstHalf, n)
	}
	// Hints in [10 s, 15 s] at 0.1 s steps: 51 values for 60 clients.
	if len(hints) < 20 {
		t.Fatalf("only %d distinct drain hints for %d connections", len(hints), n)
	}
	st := s.Stats()
	if st.Drained != n || st.Connections != 0 || !st.Draining || st.CloseSent[closecode.ServiceRestart] != n {
		t.Fatalf("stats %+v: want %d drained with 1012, none left, draining", st, n)
	}
}

func TestDrainRefusesNewUpgrades(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{DrainMode: ModeHTTP})
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown with nothing to drain: %v", err)
	}
	rec := httptest.NewRecorder()
	s.Middleware(http.NotFoundHandler()).ServeHTTP(rec, upgradeRequest("192.0.2.1:1"))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("upgrade during drain: %d Retry-After %q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if n := s.Stats().Refused[Refusal{ReasonDraining, ModeHTTP}]; n != 1 {
		t.Fatalf("draining/http refusals %d, want 1", n)
	}
}

func TestDrainForceClosesWhenContextEnds(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{DrainWindow: 50 * time.Millisecond})
	stuck := &blockingHandler{register: true, ignore: true}
	wgStuck := serveN(t, s, stuck, 3)
	silent := &blockingHandler{stop: make(chan struct{})} // never registers
	wgSilent := serveN(t, s, silent, 2)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := s.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	wgStuck.Wait() // CloseNow ended them
	for i, fc := range stuck.closers {
		if code, _, calls, forced := fc.get(); code != closecode.ServiceRestart || calls != 1 || !forced {
			t.Fatalf("stuck connection %d: code %v calls %d forced %v; want 1012 then forced", i, code, calls, forced)
		}
	}
	st := s.Stats()
	if st.ForceClosed != 3 || st.Connections != 2 {
		t.Fatalf("force-closed %d, left %d; want 3 force-closed and the 2 silent ones left", st.ForceClosed, st.Connections)
	}
	// A second Shutdown after the handlers returned succeeds.
	close(silent.stop)
	wgSilent.Wait()
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if st := s.Stats(); st.ForceClosed != 3 {
		t.Fatalf("force-closed count changed to %d", st.ForceClosed)
	}
}

func TestRegisterAfterDrainStartedClosesAtOnce(t *testing.T) {
	t.Parallel()
	closing := make(chan struct{})
	s := mustNew(t, &Options{
		DrainWindow: 10 * time.Millisecond,
		OnState: func(ev Event) {
			if ev.State == StateClosing {
				close(closing)
			}
		},
	})
	h := &blockingHandler{register: true, gate: make(chan struct{})}
	wg := serveN(t, s, h, 1)
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(t.Context()) }()
	<-closing // the drain asked for the close before Track
	close(h.gate)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	if code, _, calls, _ := h.closers[0].get(); code != closecode.ServiceRestart || calls != 1 {
		t.Fatalf("late registration: code %v calls %d, want one 1012", code, calls)
	}
}

func TestSlotFreedWhenHandlerReturnsWithoutTrack(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1, MaxInFlight: 1}})
	h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusBadRequest)
	}))
	for i := range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, upgradeRequest("192.0.2.1:1"))
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("request %d: %d, want the handler's 400 (the slot of the previous one was not freed?)", i, rec.Code)
		}
	}
	if st := s.Stats(); st.Connections != 0 || st.InFlight != 0 || st.Admitted != 3 {
		t.Fatalf("stats %+v, want 3 admitted and nothing held", st)
	}
}

func TestTrackAndRecordCloseOutsideMiddleware(t *testing.T) {
	t.Parallel()
	r := upgradeRequest("192.0.2.1:1")
	fc := newFakeCloser()
	release := Track(r, fc)
	release()
	RecordClose(r, closecode.NormalClosure, Received)
	if _, _, calls, _ := fc.get(); calls != 0 {
		t.Fatal("Track outside a shed request touched the closer")
	}
}

func TestStateEvents(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	s := mustNew(t, &Options{
		Limits: Limits{MaxConns: 1}, DrainWindow: 10 * time.Millisecond,
		OnState: func(ev Event) {
			mu.Lock()
			got = append(got, ev.State.String()+":"+ev.ClientIP.String())
			if ev.State == StateRefused {
				got[len(got)-1] += ":" + ev.Mode.String()
			}
			if ev.State == StateRefused || ev.State == StateClosing {
				got[len(got)-1] += ":" + ev.Reason.String() + ":" + strconv.Itoa(int(ev.Code))
			}
			mu.Unlock()
		},
	})
	h := &blockingHandler{register: true}
	wg := serveN(t, s, h, 1)
	// A recorder cannot be hijacked: the refusal falls back to 503, and
	// the event says so (no close code sent).
	rec := httptest.NewRecorder()
	s.Middleware(h).ServeHTTP(rec, upgradeRequest("192.0.2.7:1"))
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	want := []string{"admitted:10.1.0.0", "open:10.1.0.0", "refused:192.0.2.7:http:conns:0", "closing:10.1.0.0:draining:1012", "closed:10.1.0.0"}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("events %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("events %q, want %q", got, want)
		}
	}
}
