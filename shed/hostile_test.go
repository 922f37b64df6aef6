package shed

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// The attacks of issue 13, against a server set up as ebb serve sets its
// own: shed.Listener in front of net/http (ReadHeaderTimeout 10 s),
// Middleware in front of an echo handler at /ws, /metrics beside it. The
// attackers dial from 127.0.0.1; honest clients from 127.0.0.2 and up
// (Linux routes all of 127.0.0.0/8 to lo). These tests are not parallel:
// they measure goroutines and time.

// hostileServer is the server under attack. It returns the Listener and a
// gauge of the connections net/http holds (from ConnState), whose maximum
// it records.
func hostileServer(t *testing.T, s *Shedder, o *ListenerOptions) (*httptest.Server, *Listener, *connGauge) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", s.Middleware(http.HandlerFunc(echoHandler)))
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = s.WritePrometheus(w)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ReadHeaderTimeout = 10 * time.Second
	g := &connGauge{}
	srv.Config.ConnState = g.track
	ln := s.Listener(srv.Listener, o)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, ln, g
}

// connGauge counts the connections net/http is serving (not yet closed or
// hijacked) and keeps the maximum.
type connGauge struct {
	mu       sync.Mutex
	n, peak  int
	seen     map[net.Conn]bool
	observed int
}

func (g *connGauge) track(c net.Conn, st http.ConnState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen == nil {
		g.seen = make(map[net.Conn]bool)
	}
	switch st {
	case http.StateNew:
		g.seen[c] = true
		g.n++
		g.observed++
		g.peak = max(g.peak, g.n)
	case http.StateClosed, http.StateHijacked:
		if g.seen[c] {
			delete(g.seen, c)
			g.n--
		}
	}
}

func (g *connGauge) max() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak
}

// heldBy returns the pending connections from addr still sending their
// request.
func (l *Listener) heldBy(addr string) int {
	a := netip.MustParseAddr(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.addrs[a]; h != nil {
		return h.n
	}
	return 0
}

// watcher records, every 5 ms until stopped, the pending connections,
// those held by one address, and the goroutines.
type watcher struct {
	stop                                  chan struct{}
	done                                  chan struct{}
	maxPending, maxHeld, maxGor, maxProbe int
	sumHeld, samples                      int
}

func watch(l *Listener, addr string) *watcher {
	sm := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-sm.stop:
				return
			case <-tk.C:
			}
			held := l.heldBy(addr)
			sm.maxPending = max(sm.maxPending, l.Pending())
			sm.maxHeld = max(sm.maxHeld, held)
			sm.maxGor = max(sm.maxGor, runtime.NumGoroutine())
			l.mu.Lock()
			sm.maxProbe = max(sm.maxProbe, l.probe.n)
			l.mu.Unlock()
			sm.sumHeld += held
			sm.samples++
		}
	}()
	return sm
}

func (sm *watcher) finish() {
	close(sm.stop)
	<-sm.done
}

func (sm *watcher) meanHeld() float64 { return float64(sm.sumHeld) / float64(max(1, sm.samples)) }

// slowloris keeps n connections from local to addr, each sending an
// upgrade request one byte per second and never finishing it; a
// connection the server closes is replaced at once. One goroutine drives
// them all.
type slowloris struct {
	redials atomic.Int64
	stop    chan struct{}
	done    chan struct{}
}

const slowRequest = "GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Padding: "

func startSlowloris(t *testing.T, local, addr string, n int) *slowloris {
	t.Helper()
	a := &slowloris{stop: make(chan struct{}), done: make(chan struct{})}
	type conn struct {
		c    net.Conn
		sent int
	}
	conns := make([]conn, n)
	dial := func(i int) {
		if c, err := dialFrom(local, addr); err == nil {
			conns[i] = conn{c: c}
		} else {
			conns[i] = conn{}
		}
	}
	for i := range conns {
		dial(i)
	}
	go func() {
		defer close(a.done)
		defer func() {
			for _, c := range conns {
				if c.c != nil {
					c.c.Close()
				}
			}
		}()
		var buf [512]byte
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for tick := 0; ; tick++ {
			select {
			case <-a.stop:
				return
			case <-tk.C:
			}
			for i := range conns {
				c := &conns[i]
				dead := c.c == nil
				if !dead {
					// Has the server answered (503, 408) or closed?
					_ = c.c.SetReadDeadline(time.Now().Add(time.Microsecond))
					if n, err := c.c.Read(buf[:]); n > 0 || err != nil && !isTimeout(err) {
						dead = true
					}
				}
				if !dead && tick%10 == 0 {
					_ = c.c.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := c.c.Write([]byte{slowRequest[c.sent%len(slowRequest)]}); err != nil {
						dead = true
					}
					c.sent++
				}
				if dead {
					if c.c != nil {
						c.c.Close()
					}
					dial(i)
					a.redials.Add(1)
				}
			}
		}
	}()
	t.Cleanup(a.halt)
	return a
}

// isTimeout reports whether err is a deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (a *slowloris) halt() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	<-a.done
}

// honestEcho dials from local, upgrades, echoes once and closes, within
// deadline; it returns how long that took.
func honestEcho(local, addr string, deadline time.Duration) (time.Duration, error) {
	start := time.Now()
	rc, resp, err := dialRawFrom(local, addr, nil)
	if err != nil {
		return time.Since(start), err
	}
	defer rc.Close()
	_ = rc.c.SetDeadline(start.Add(deadline))
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return time.Since(start), fmt.Errorf("status %d, want 101", resp.StatusCode)
	}
	if err := rc.echo("honest"); err != nil {
		return time.Since(start), err
	}
	_ = rc.writeClose(closecode.NormalClosure, "")
	return time.Since(start), nil
}

// honestGet fetches /metrics from local on a new connection within
// deadline.
func honestGet(local, addr string, deadline time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := dialFrom(local, addr)
	if err != nil {
		return time.Since(start), err
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(deadline))
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
		return time.Since(start), err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return time.Since(start), err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d, want 200", resp.StatusCode)
	}
	return time.Since(start), err
}

func TestHostileSlowloris(t *testing.T) {
	const attackers, maxPending, rounds = 300, 8, 8
	const deadline = 2 * time.Second
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 100, HardDemand: 200}})
	srv, ln, g := hostileServer(t, s, &ListenerOptions{MaxPending: maxPending})
	addr := addrOf(srv)
	base := runtime.NumGoroutine()

	sm := watch(ln, "127.0.0.1")
	atk := startSlowloris(t, "127.0.0.1", addr, attackers)
	time.Sleep(1200 * time.Millisecond) // past the first header time at full use
	var lat []time.Duration
	for i := range rounds {
		d, err := honestEcho("127.0.0.2", addr, deadline)
		if err != nil {
			t.Fatalf("honest client, round %d, under %d slowloris connections: %v after %v", i, attackers, err, d)
		}
		lat = append(lat, d)
		time.Sleep(100 * time.Millisecond)
	}
	sm.finish()
	atk.halt()
	st := s.Stats()
	slices.Sort(lat)
	t.Logf("%d/%d honest echoes, each within %v: fastest %v, median %v, slowest %v", rounds, rounds, deadline, lat[0], lat[len(lat)/2], lat[len(lat)-1])
	t.Logf("attacker places: max %d, mean %.1f of %d; pending max %d; net/http conns max %d; goroutines max %d (base %d); attacker redials %d",
		sm.maxHeld, sm.meanHeld(), maxPending, sm.maxPending, g.max(), sm.maxGor, base, atk.redials.Load())
	t.Logf("header timeouts %d, evicted %d, pending_per_ip refusals %d, in_flight refusals %d",
		st.HeaderTimeouts, st.Evicted, st.Refused[Refusal{ReasonPendingPerIP, ModeHTTP}], st.Refused[Refusal{ReasonInFlight, ModeHTTP}])
	if sm.maxPending > maxPending || sm.maxHeld > maxPending {
		t.Errorf("pending reached %d (attackers %d), want at most MaxPending %d", sm.maxPending, sm.maxHeld, maxPending)
	}
	// net/http has a goroutine per connection it serves: the places and
	// the probation slots (MaxPending each), plus those cut and still
	// closing (how many depends on the scheduler; the bound is loose).
	if sm.maxProbe > maxPending || g.max() > 4*maxPending+8 {
		t.Errorf("on probation up to %d, net/http served up to %d connections at once; want at most %d and %d", sm.maxProbe, g.max(), maxPending, 4*maxPending+8)
	}
	if st.HeaderTimeouts+st.Evicted == 0 || st.Refused[Refusal{ReasonPendingPerIP, ModeHTTP}] == 0 {
		t.Errorf("no slow connection was cut or refused: %+v", st)
	}
	if st.HardModeEntered != 0 {
		t.Errorf("hard mode entered %d times: pending refusals must not count as demand", st.HardModeEntered)
	}
}

// TestHostileSlowlorisManyAddresses spreads the slowloris over 100
// addresses, so that no per-address rule applies: the header time,
// probation and the eviction of slow requests protect the honest client,
// which waits behind the slow connections queued ahead of it in the
// listen queue. MaxPending is 16, ebb serve's default on one core.
func TestHostileSlowlorisManyAddresses(t *testing.T) {
	const addrs, perAddr, maxPending, rounds = 100, 2, 16, 3
	const deadline = 2 * time.Second
	s := mustNew(t, nil)
	srv, ln, g := hostileServer(t, s, &ListenerOptions{MaxPending: maxPending})
	addr := addrOf(srv)
	sm := watch(ln, "127.0.1.1")
	for i := range addrs {
		startSlowloris(t, fmt.Sprintf("127.0.1.%d", i+1), addr, perAddr)
	}
	time.Sleep(1200 * time.Millisecond)
	var lat []time.Duration
	for i := range rounds {
		d, err := honestEcho("127.0.0.2", addr, deadline)
		if err != nil {
			t.Fatalf("honest client, round %d, under %d slowloris connections from %d addresses: %v after %v; pending %d; %+v", i, addrs*perAddr, addrs, err, d, ln.Pending(), s.Stats())
		}
		lat = append(lat, d)
		time.Sleep(100 * time.Millisecond)
	}
	sm.finish()
	st := s.Stats()
	slices.Sort(lat)
	t.Logf("%d/%d honest echoes, each within %v: fastest %v, median %v, slowest %v", rounds, rounds, deadline, lat[0], lat[len(lat)/2], lat[len(lat)-1])
	t.Logf("pending max %d; on probation max %d; net/http conns max %d; header timeouts %d, evicted %d, on probation %d (timed out %d), in_flight refusals %d",
		sm.maxPending, sm.maxProbe, g.max(), st.HeaderTimeouts, st.Evicted, st.Probation, st.ProbationTimeouts, st.Refused[Refusal{ReasonInFlight, ModeHTTP}])
	// Up to MaxPending more are on probation, with a goroutine each, and
	// those cut are still closing (a loose bound: it depends on the
	// scheduler).
	if sm.maxPending > maxPending || sm.maxProbe > maxPending || g.max() > 4*maxPending+8 {
		t.Errorf("pending max %d, on probation max %d, net/http conns max %d: want at most %d, %d and %d", sm.maxPending, sm.maxProbe, g.max(), maxPending, maxPending, 4*maxPending+8)
	}
}

func TestHostileIdleKeepAlives(t *testing.T) {
	const idlers, maxPending, maxIdle, rounds = 64, 8, 32, 8
	const deadline = 2 * time.Second
	s := mustNew(t, nil)
	srv, ln, g := hostileServer(t, s, &ListenerOptions{MaxPending: maxPending, MaxIdle: maxIdle})
	addr := addrOf(srv)

	// 64 clients GET /metrics once on a keep-alive connection, then idle.
	var idle []net.Conn
	for i := range idlers {
		c, err := dialFrom("127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: example.com\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("idler %d: %v %v, want a kept-alive 200", i, resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		idle = append(idle, c)
	}
	waitFor(t, "the idle connections to settle", func() bool {
		return ln.Idle() == maxIdle && ln.Pending() == 0 && s.Stats().IdleEvicted == idlers-maxIdle
	})
	st := s.Stats()
	t.Logf("after %d keep-alive GETs: pending %d, idle %d (MaxIdle %d), idle closed for the bound %d", idlers, ln.Pending(), ln.Idle(), maxIdle, st.IdleEvicted)
	if st.IdleEvicted != idlers-maxIdle {
		t.Errorf("IdleEvicted = %d, want %d", st.IdleEvicted, idlers-maxIdle)
	}

	check := func(phase string) {
		t.Helper()
		var worst time.Duration
		for i := range rounds {
			d, err := honestEcho("127.0.0.2", addr, deadline)
			if err != nil {
				t.Fatalf("%s: honest echo %d: %v after %v", phase, i, err, d)
			}
			worst = max(worst, d)
			if d, err = honestGet("127.0.0.3", addr, deadline); err != nil {
				t.Fatalf("%s: honest GET /metrics %d: %v after %v", phase, i, err, d)
			}
			worst = max(worst, d)
		}
		t.Logf("%s: %d/%d honest echoes and %d/%d GETs, slowest %v; pending %d, idle %d, net/http conns max %d",
			phase, rounds, rounds, rounds, rounds, worst, ln.Pending(), ln.Idle(), g.max())
	}
	check("idle keep-alives")

	// Every idler starts its next request and stalls after one byte: they
	// need places now, and are slow with them.
	for _, c := range idle {
		_, _ = c.Write([]byte("G"))
	}
	sm := watch(ln, "127.0.0.1")
	time.Sleep(300 * time.Millisecond)
	check("keep-alives turned slowloris")
	sm.finish()
	st = s.Stats()
	t.Logf("stalled next requests: pending max %d, header timeouts %d, evicted %d, closed without a place %d, waits %d",
		sm.maxPending, st.HeaderTimeouts, st.Evicted, st.NoPlace, st.PendingWaits)
	if sm.maxPending > maxPending || g.max() > maxIdle+maxPending+4 {
		t.Errorf("pending max %d, net/http conns max %d: want at most %d and %d", sm.maxPending, g.max(), maxPending, maxIdle+maxPending+4)
	}
}

func TestHostileOneAddressAtItsLimit(t *testing.T) {
	// One address holds its MaxConnsPerIP and hammers for more; the
	// others must still be admitted (1013 below the ceiling, never a 503
	// because of it).
	const honest = 8
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 100, MaxConnsPerIP: 2, HardDemand: 20}, RefusalLinger: 50 * time.Millisecond})
	srv, _, _ := hostileServer(t, s, &ListenerOptions{MaxPending: 8})
	addr := addrOf(srv)
	for range 2 {
		rc, resp, err := dialRawFrom("127.0.0.1", addr, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("attacker's own connections: %v %v", resp, err)
		}
		t.Cleanup(func() { rc.Close() })
	}
	stop := make(chan struct{})
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rc, _, err := dialRawFrom("127.0.0.1", addr, nil)
				attempts.Add(1)
				if err == nil {
					rc.Close()
				}
			}
		})
	}
	var peak float64
	start := time.Now()
	for time.Since(start) < 1500*time.Millisecond {
		peak = max(peak, s.Stats().Demand)
		time.Sleep(10 * time.Millisecond)
	}
	var worst time.Duration
	for i := range honest {
		d, err := honestEcho(fmt.Sprintf("127.0.0.%d", i+2), addr, 2*time.Second)
		if err != nil {
			t.Fatalf("honest client %d while one address hammers: %v", i, err)
		}
		worst = max(worst, d)
	}
	close(stop)
	wg.Wait()
	st := s.Stats()
	rate := float64(attempts.Load()) / time.Since(start).Seconds()
	t.Logf("one address at its limit: %d attempts (%.0f/s), per_ip refusals %d; demand peak %.0f (HardDemand 20); hard mode entered %d; %d/%d honest clients admitted, slowest %v",
		attempts.Load(), rate, st.Refused[Refusal{ReasonPerIP, ModeClose}], peak, st.HardModeEntered, honest, honest, worst)
	if st.HardModeEntered != 0 || peak >= 20 {
		t.Errorf("demand peaked at %.0f, hard mode entered %d times: per-IP refusals must not count", peak, st.HardModeEntered)
	}
	if st.Refused[Refusal{ReasonPerIP, ModeClose}] < 100 {
		t.Errorf("only %d per-IP refusals: the attack did not run", st.Refused[Refusal{ReasonPerIP, ModeClose}])
	}
}

func TestDemandCapPerAddress(t *testing.T) {
	t.Parallel()
	// The server is full; one address below its per-IP limit retries a
	// thousand times: it counts as the 5 connections it could still get,
	// not as 1,000.
	clk := newFakeClock()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 2, MaxConnsPerIP: 5, HardDemand: 20}, Now: clk.Now})
	admitN(t, s, "10.0.0.1:1", 2)
	for range 1000 {
		if sl, d := s.admit(upgradeRequest("10.0.0.2:1")); sl != nil || d.reason != ReasonConns || d.mode != ModeClose {
			t.Fatalf("retry: slot %v %v/%v, want a conns refusal with a Close frame", sl, d.reason, d.mode)
		}
		clk.Advance(time.Millisecond)
	}
	if st := s.Stats(); st.Demand != 2+5 || st.HardMode {
		t.Fatalf("demand %v hard %v, want 2 connections + 5 and no hard mode", st.Demand, st.HardMode)
	}
	// Fifteen other addresses, once each: a crowd, counted in full.
	for i := range 15 {
		s.admit(upgradeRequest(fmt.Sprintf("10.0.1.%d:1", i)))
	}
	if st := s.Stats(); st.Demand != 2+5+15 || !st.HardMode {
		t.Fatalf("demand %v hard %v, want 22 and hard mode", st.Demand, st.HardMode)
	}
}

func TestHardModeEndsSoonAfterTheStorm(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	const maxConns, hardDemand = 100, 200
	s := mustNew(t, &Options{Limits: Limits{MaxConns: maxConns, HardDemand: hardDemand}, Now: clk.Now, Jitter: -1})
	for i := range maxConns {
		admitN(t, s, fmt.Sprintf("10.1.%d.%d:1", i/200, i%200), 1)
	}
	refuse := func(i int) Mode {
		sl, d := s.admit(upgradeRequest(fmt.Sprintf("10.2.%d.%d:1", i/250%250, i%250)))
		if sl != nil {
			t.Fatal("admitted past MaxConns")
		}
		return d.mode
	}
	i := 0
	storm := func(n int) {
		t.Helper()
		entered, exits := false, 0
		for range n {
			m := refuse(i)
			i++
			if m == ModeHTTP {
				entered = true
			} else if entered {
				exits++
			}
			clk.Advance(500 * time.Microsecond)
		}
		if !entered || exits != 0 {
			t.Fatalf("during the storm: hard mode entered %v, left %d times; want entered and kept", entered, exits)
		}
	}
	// untilOff returns how long after now hard mode ends with no more
	// connects at all.
	untilOff := func() time.Duration {
		t.Helper()
		end := clk.Now()
		for s.Stats().HardMode {
			clk.Advance(10 * time.Millisecond)
			if clk.Now().Sub(end) > time.Minute {
				t.Fatal("hard mode still on a minute after the storm")
			}
		}
		return clk.Now().Sub(end)
	}

	// A storm of 2,000 connects/s for 5 s (a refusal every 0.5 ms), then
	// nothing.
	storm(10_000)
	after := untilOff()
	t.Logf("hard mode ended %v after a 5 s storm of 2,000 connects/s (DemandWindow %v)", after, DefaultDemandWindow)
	if after > DefaultDemandWindow {
		t.Fatalf("hard mode ended %v after the storm, want within DemandWindow %v", after, DefaultDemandWindow)
	}
	if m := refuse(i); m != ModeClose {
		t.Fatalf("first refusal after the storm: mode %v, want close (1013)", m)
	}
	i++

	// Another storm, then a lull at a rate that keeps demand between
	// three quarters of HardDemand and HardDemand: hysteresis keeps hard
	// mode (no flapping).
	storm(2_000)
	for range 160 { // 4 s at 40 refusals/s: demand 100 + 70…80
		refuse(i)
		i++
		clk.Advance(25 * time.Millisecond)
		if st := s.Stats(); !st.HardMode {
			t.Fatalf("hard mode ended at demand %v, above three quarters of HardDemand %d", st.Demand, hardDemand)
		}
	}
	after = untilOff()
	t.Logf("hard mode ended %v after the lull (demand fell below %v)", after, hardExit*hardDemand)
	if after > DefaultDemandWindow {
		t.Fatalf("hard mode ended %v after the lull, want within DemandWindow %v", after, DefaultDemandWindow)
	}
	if n := s.Stats().HardModeEntered; n != 2 {
		t.Fatalf("hard mode entered %d times, want twice (once per storm)", n)
	}
}

func TestPendingFairShare(t *testing.T) {
	const maxPending = 8 // share max(2, 8/4) = 2
	s := mustNew(t, &Options{Jitter: -1})
	srv, ln, _ := hostileServer(t, s, &ListenerOptions{MaxPending: maxPending, PendingWait: 2 * time.Second})
	addr := addrOf(srv)
	// One address takes every place with requests it never finishes.
	var held []net.Conn
	for range maxPending {
		c, err := dialFrom("127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\n")
		held = append(held, c)
	}
	waitFor(t, "every place held", func() bool { return ln.heldBy("127.0.0.1") == maxPending })

	// Another address is taken on probation, and its complete request
	// takes the place of the oldest slow connection (at the latest after
	// the grace time, without probation).
	d, err := honestEcho("127.0.0.2", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("other address with every place held: %v", err)
	}
	t.Logf("other address admitted after %v (probation 100ms, grace %v)", d, DefaultMinHeaderTimeout/4)
	if d > DefaultMinHeaderTimeout {
		t.Errorf("other address waited %v, want at most the grace time", d)
	}
	if got := ln.heldBy("127.0.0.1"); got != maxPending-1 {
		t.Errorf("attacker holds %d places after one was taken, want %d", got, maxPending-1)
	}
	// The evicted connection was told to come back.
	var told int
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
			told++
		}
	}
	if told != 1 {
		t.Errorf("%d held connections got a 503, want the 1 evicted", told)
	}

	// The attacker takes the freed place again; its next connection is
	// refused at once, not held up for PendingWait (2 s here).
	c, err := dialFrom("127.0.0.1", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, _ = io.WriteString(c, "GET /ws HTTP/1.1\r\n")
	waitFor(t, "every place held again", func() bool { return ln.heldBy("127.0.0.1") == maxPending })
	start := time.Now()
	rc, resp, err := dialRawFrom("127.0.0.1", addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	body := ""
	if b, err := io.ReadAll(resp.Body); err == nil {
		body = string(b)
	}
	t.Logf("attacker's next connection: %d %q after %v", resp.StatusCode, body, time.Since(start))
	if resp.StatusCode != http.StatusServiceUnavailable || time.Since(start) > time.Second {
		t.Fatalf("attacker's next connection: %d after %v, want a 503 at once", resp.StatusCode, time.Since(start))
	}
	if _, ok := closecode.ParseRetryHint(body); !ok || body[:len(ReasonPendingPerIP.Text())] != ReasonPendingPerIP.Text() {
		t.Errorf("503 body %q, want %q with a hint", body, ReasonPendingPerIP.Text())
	}
	st := s.Stats()
	if st.Evicted != 1 || st.Refused[Refusal{ReasonPendingPerIP, ModeHTTP}] != 1 {
		t.Errorf("evicted %d, pending_per_ip refusals %d; want 1 and 1", st.Evicted, st.Refused[Refusal{ReasonPendingPerIP, ModeHTTP}])
	}
}

func TestListenerHardModePerIP(t *testing.T) {
	t.Parallel()
	// Past the hard ceiling, the Listener refuses an address over its
	// MaxConnsPerIP for per_ip, and that refusal does not keep hard mode
	// on.
	clk := newFakeClock()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 2, MaxConnsPerIP: 1, HardDemand: 3}, Now: clk.Now})
	admitN(t, s, "10.0.0.1:1", 1)
	admitN(t, s, "10.0.0.2:1", 1)
	if sl, d := s.admit(upgradeRequest("10.0.0.3:1")); sl != nil || d.reason != ReasonConns || d.mode != ModeClose {
		t.Fatalf("third client: %v/%v, want conns/close", d.reason, d.mode)
	}
	if st := s.Stats(); st.Demand != 3 || !st.HardMode {
		t.Fatalf("demand %v hard %v, want 3 and hard mode", st.Demand, st.HardMode)
	}
	a := netip.MustParseAddr("10.0.0.1")
	for range 100 {
		d, refused := s.admitConn(a, false)
		if !refused || d.reason != ReasonPerIP || d.mode != ModeHTTP {
			t.Fatalf("address at its limit: refused %v with %v/%v, want per_ip/http", refused, d.reason, d.mode)
		}
	}
	if st := s.Stats(); st.Demand != 3 {
		t.Fatalf("demand %v after 100 per-IP refusals, want still 3", st.Demand)
	}
	// Behind a trusted proxy the address stands for many clients: no
	// per-IP refusal at the Listener, and the refusal counts.
	if d, refused := s.admitConn(a, true); !refused || d.reason != ReasonConns {
		t.Fatalf("trusted proxy: refused %v with %v, want conns", refused, d.reason)
	}
	if st := s.Stats(); st.Demand != 4 {
		t.Fatalf("demand %v, want 4", st.Demand)
	}
	// One window later hard mode is over, and the Listener lets
	// connections through to Middleware.
	clk.Advance(DefaultDemandWindow)
	if _, refused := s.admitConn(netip.MustParseAddr("10.0.0.9"), false); refused {
		t.Fatal("refused at the Listener a window after the last refusal")
	}
}
