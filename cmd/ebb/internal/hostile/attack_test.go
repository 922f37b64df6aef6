package hostile

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// abortGrowth is how far past its starting RSS an attacked server may go
// before the attack is cut short: far above every bound in the suite, so a
// test never passes because of it, and far below what the machine running
// the suite has, so a defence that does not work yet cannot take it down.
const abortGrowth = 1 << 30

// honestMin is the share of honest sessions that must succeed within
// sessionDeadline under an attack: all of them. DESIGN.md promises that
// honest clients are served within 2 s under every attack, and a session
// is a single message.
const honestMin = 1.0

// attack is an attack in progress against srv: the honest clients and the
// RSS watch run from begin to end.
type attack struct {
	t   *testing.T
	srv *server
	f   *finding
	// ctx ends when the RSS passes abortGrowth or the attack ends;
	// attackers stop with it.
	ctx    context.Context
	cancel context.CancelFunc

	stopWatch  func() int64
	stopHonest func() *availability
	aborted    atomic.Bool
	ended      bool
}

// begin takes the server's RSS as the base and starts the honest clients
// and the RSS watch. The test's attackers run on a.ctx.
func begin(t *testing.T, srv *server, f *finding) *attack {
	t.Helper()
	warm(t, srv)
	a := &attack{t: t, srv: srv, f: f}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	t.Cleanup(a.cancel)
	f.rssBase, _ = srv.rss()
	a.stopWatch = srv.watch(f.rssBase+abortGrowth, func() {
		a.aborted.Store(true)
		a.cancel()
	})
	a.stopHonest = honest(srv.addr)
	t.Cleanup(func() { a.end() })
	return a
}

// warm checks that the server echoes before the attack starts, so that a
// failure later is the attack's doing.
func warm(t *testing.T, srv *server) {
	t.Helper()
	for i := range 3 {
		if _, err := echoSession(context.Background(), srv.addr, honestFrom[0], -i); err != nil {
			t.Fatalf("the server does not echo before the attack: %v\n%s", err, srv.log.last(2000))
		}
	}
}

// hold lets the attack run for d, or until it is cut short.
func (a *attack) hold(d time.Duration) {
	select {
	case <-a.ctx.Done():
	case <-time.After(d):
	}
}

// end stops the honest clients and the watch, and records what they saw.
// The attackers are the test's to stop (cancel a.ctx, wait for them).
func (a *attack) end() {
	if a.ended {
		return
	}
	a.ended = true
	a.f.honest = a.stopHonest()
	a.f.rssPeak = a.stopWatch()
	a.t.Logf("honest clients: %s; server RSS %s → peak %s", a.f.honest, mb(a.f.rssBase), mb(a.f.rssPeak))
	if a.aborted.Load() {
		a.f.note(a.t, "attack cut short: RSS past +%s", mb(abortGrowth))
	}
	if !a.srv.alive() {
		a.f.note(a.t, "server died (%v): %s", a.srv.waitErr, a.srv.panicLine())
	}
	a.srv.mustBeAlive()
}

// checkHonest fails the test if fewer than min of the honest sessions
// succeeded within sessionDeadline.
func (a *attack) checkHonest(min float64) {
	a.t.Helper()
	h := a.f.honest
	if h.Sessions == 0 || h.ratio() < min {
		a.t.Errorf("honest clients under attack: %s; want at least %.0f %% (first failure: %s)", h, 100*min, h.First)
	}
}

// checkGrowth fails the test if the server's RSS grew by more than bound
// during the attack.
func (a *attack) checkGrowth(bound int64, why string) {
	a.t.Helper()
	growth := a.f.rssPeak - a.f.rssBase
	switch {
	case a.aborted.Load():
		a.t.Errorf("server RSS grew past %s (from %s) and the attack was cut short; want growth under %s (%s)", mb(abortGrowth), mb(a.f.rssBase), mb(bound), why)
	case growth > bound:
		a.t.Errorf("server RSS grew by %s (%s → %s); want under %s (%s)", mb(growth), mb(a.f.rssBase), mb(a.f.rssPeak), mb(bound), why)
	}
}

// echoConns opens n WebSocket connections to /echo from 127.0.0.1 for the
// test's attackers. Ending a.ctx ends their blocked reads and writes; they
// close when the test ends.
func (a *attack) echoConns(n int) []*rawConn {
	a.t.Helper()
	conns := make([]*rawConn, n)
	for i := range conns {
		c, err := upgrade(a.ctx, a.srv.addr, "/echo", "127.0.0.1", false)
		if err != nil {
			a.srv.fatalf(a.t, "attacker's handshake: %v", err)
		}
		stop := context.AfterFunc(a.ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
		a.t.Cleanup(func() {
			stop()
			c.Close()
		})
		conns[i] = c
	}
	return conns
}
