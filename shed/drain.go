package shed

import (
	"context"
	"log/slog"
	"math"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// requestClose asks the connection of sl to close. The close is sent now
// if the handler registered a Closer, or as soon as it does. It reports
// false if a close was already requested.
func (s *Shedder) requestClose(sl *slot, req *closeRequest) bool {
	sl.mu.Lock()
	if sl.req != nil {
		sl.mu.Unlock()
		return false
	}
	sl.req = req
	c, r := sl.closer, sl.r
	sl.mu.Unlock()
	s.emit(Event{State: StateClosing, Request: r, ClientIP: sl.ip, Reason: req.why, Code: req.code, Hint: req.hint})
	if c != nil {
		s.send(sl, c, req)
	}
	return true
}

// send runs c.Close in its own goroutine (a closing handshake waits for
// the peer) and counts it.
func (s *Shedder) send(sl *slot, c Closer, req *closeRequest) {
	s.stats.recordCode(req.code, Sent)
	if req.drain {
		s.stats.drained.Add(1)
	} else {
		s.stats.shed.Add(1)
	}
	s.closers.Add(1)
	go func() {
		defer s.closers.Done()
		if err := c.Close(req.code, req.reason); err != nil {
			if lg := s.log(); lg != nil {
				lg.Debug("shed: closing a connection failed", slog.Int("code", int(req.code)),
					slog.String("client", sl.ip.String()), slog.Any("err", err))
			}
		}
	}()
}

// shedLoop runs shedStep until Shutdown.
func (s *Shedder) shedLoop() {
	defer close(s.shedDone)
	t := time.NewTicker(max(s.shed.Interval/4, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stopShed:
			return
		case <-t.C:
			s.shedStep(s.now())
		}
	}
}

// shedStep is one look at pressure: it closes a bounded fraction of the
// registered connections once pressure has stayed at or above the
// threshold for an interval (and then at most once per interval), or the
// excess over a lowered MaxConns. It returns how many it asked to close.
func (s *Shedder) shedStep(now time.Time) int {
	var rd *reading
	if s.pressureOn.Load() {
		rd = s.sampler.read(now)
	}
	s.mu.Lock()
	ratio, why := rd.ratio(&s.limits)
	excess := 0
	if s.limits.MaxConns > 0 {
		excess = s.conns - s.limits.MaxConns
	}
	high := ratio >= s.shed.Threshold
	if s.draining || (!high && excess <= 0) {
		s.highSince = time.Time{}
		s.mu.Unlock()
		return 0
	}
	if s.highSince.IsZero() {
		s.highSince = now
	}
	if now.Sub(s.highSince) < s.shed.Interval || (!s.lastShed.IsZero() && now.Sub(s.lastShed) < s.shed.Interval) {
		s.mu.Unlock()
		return 0
	}
	s.lastShed = now
	n := max(1, int(math.Floor(s.shed.Fraction*float64(s.conns))))
	if !high {
		why, ratio = ReasonConns, overload(float64(s.conns), s.limits.MaxConns, 0)
		n = min(n, excess)
	}
	victims := make([]*slot, 0, n)
	pick := func(sl *slot) bool {
		sl.mu.Lock()
		ok := sl.closer != nil && sl.req == nil
		sl.mu.Unlock()
		if ok {
			victims = append(victims, sl)
		}
		return len(victims) < n
	}
	if s.shed.Oldest {
		for sl := s.head; sl != nil && pick(sl); sl = sl.next {
		}
	} else {
		for sl := s.tail; sl != nil && pick(sl); sl = sl.prev {
		}
	}
	reqs := make([]*closeRequest, len(victims))
	for i := range victims {
		hint := s.hintLocked(ratio)
		reqs[i] = &closeRequest{
			code:   closecode.TryAgainLater,
			reason: closecode.FormatRetryHint(why.Text(), hint),
			hint:   hint,
			why:    why,
		}
	}
	s.mu.Unlock()
	shed := 0
	for i, sl := range victims {
		if s.requestClose(sl, reqs[i]) {
			shed++
		}
	}
	if lg := s.log(); lg != nil && shed > 0 {
		lg.Info("shed: shedding connections", slog.Int("closing", shed),
			slog.String("reason", why.String()), slog.Float64("pressure", ratio))
	}
	return shed
}

// DrainPlan paces one drain: how long its closes are spread over, in what
// steps, and the retry hints they carry. A cluster computes one from what
// the other servers can absorb (so the clients a drain sends away are
// admitted elsewhere, not refused with 1013) and passes it to
// ShutdownWith. The zero value is the Options' drain; every field left at
// zero (or negative) takes its Options default.
type DrainPlan struct {
	// Window is how long the closes are spread over. Default
	// Options.DrainWindow. A context deadline sooner than the window
	// shortens it to three quarters of the time left.
	Window time.Duration
	// Interval is the time between batches of closes. Default: as many
	// batches as fit at one per 10 ms (one connection each, at most).
	Interval time.Duration
	// Hint is the smallest retry hint sent with a drain close (and with a
	// refusal during the drain). Default Options.DrainHint.
	Hint time.Duration
	// Spread, when positive, draws each hint uniformly from [Hint,
	// Hint+Spread]: with Spread equal to Interval, the reconnects of one
	// batch spread over one interval instead of landing at once, and
	// arrive elsewhere at the pace of the closes. Zero spreads the hint
	// upward by Options.Jitter, as Shutdown does.
	Spread time.Duration
}

// withDefaults fills in the plan from o.
func (p DrainPlan) withDefaults(o *Options) DrainPlan {
	if p.Window <= 0 {
		p.Window = o.DrainWindow
	}
	if p.Interval < 0 {
		p.Interval = 0
	}
	if p.Hint <= 0 {
		p.Hint = o.DrainHint
	}
	if p.Spread < 0 {
		p.Spread = 0
	}
	return p
}

// drainHintLocked draws a drain close's retry hint from the plan in
// force (the Options' before a drain starts).
func (s *Shedder) drainHintLocked() time.Duration {
	p := s.plan
	if p.Hint <= 0 {
		p = p.withDefaults(&s.opts)
	}
	if p.Spread <= 0 {
		return s.jitterLocked(p.Hint)
	}
	var u float64
	if s.rng != nil {
		u = s.rng.Float64()
	} else {
		u = randFloat64()
	}
	return p.Hint + time.Duration(u*float64(p.Spread))
}

// Shutdown drains the Shedder: it stops admitting (upgrades arriving from
// now on are refused with Options.DrainCode or 503, see
// Options.DrainMode), stops shedding, and closes every tracked connection
// with DrainCode and a jittered retry hint, in batches spread evenly over
// Options.DrainWindow (shortened to 3/4 of the time left when ctx has an
// earlier deadline). It then waits for every admitted handler to return.
//
// When ctx ends first, Shutdown force-closes what remains (ForceCloser, or
// the hijacked net.Conn) and returns ctx.Err(); a canceled ctx therefore
// means "close everything now". Connections whose handler never called
// Track get their close when they register, or are force-closed.
//
// net/http's Server.Shutdown neither closes nor waits for hijacked
// connections, so WebSockets need this call. Start it from
// RegisterOnShutdown and wait for it after Server.Shutdown returns:
//
//	drained := make(chan error, 1)
//	srv.RegisterOnShutdown(func() {
//		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//		defer cancel()
//		drained <- sh.Shutdown(ctx)
//	})
//	_ = srv.Shutdown(ctx) // stops listeners, waits for plain HTTP requests
//	err := <-drained      // waits for the WebSocket drain
//
// Shutdown may be called more than once and from several goroutines; every
// call waits as described. A Shedder that has been shut down stays
// draining: it refuses every upgrade from then on.
//
// Shutdown is ShutdownWith(ctx, DrainPlan{}).
func (s *Shedder) Shutdown(ctx context.Context) error {
	return s.ShutdownWith(ctx, DrainPlan{})
}

// ShutdownWith is Shutdown paced by plan instead of the Options' drain
// window and hint: the closes are spread over plan.Window in batches every
// plan.Interval, each with a hint drawn from [plan.Hint,
// plan.Hint+plan.Spread]; upgrades refused during the drain get hints
// drawn the same way. Only the call that starts the drain sets the plan;
// later calls (of either method) wait for that drain.
func (s *Shedder) ShutdownWith(ctx context.Context, plan DrainPlan) error {
	var victims []*slot
	s.shutdownMu.Do(func() {
		plan = plan.withDefaults(&s.opts)
		s.mu.Lock()
		s.draining = true
		s.plan = plan
		for sl := s.head; sl != nil; sl = sl.next {
			victims = append(victims, sl)
		}
		if s.conns == 0 {
			select {
			case <-s.idle:
			default:
				close(s.idle)
			}
		}
		s.mu.Unlock()
		if s.stopShed != nil {
			close(s.stopShed)
			<-s.shedDone
		}
		if lg := s.log(); lg != nil {
			lg.Info("shed: draining", slog.Int("connections", len(victims)),
				slog.Duration("window", plan.Window), slog.Duration("interval", plan.Interval),
				slog.Duration("hint", plan.Hint), slog.Duration("spread", plan.Spread),
				slog.Int("code", int(s.opts.DrainCode)))
		}
	})
	if len(victims) > 0 && !s.drain(ctx, victims, plan) {
		return s.force(ctx)
	}
	select {
	case <-s.idle:
		s.closers.Wait()
		return nil
	case <-ctx.Done():
		return s.force(ctx)
	}
}

// drain sends the drain close to victims in batches over the plan's
// window. It returns false if ctx ended first.
func (s *Shedder) drain(ctx context.Context, victims []*slot, plan DrainPlan) bool {
	window := plan.Window
	if dl, ok := ctx.Deadline(); ok {
		window = min(window, time.Until(dl)*3/4)
	}
	// One batch every 10 ms at most, unless the plan says otherwise:
	// finer steps buy no smoothness and cost timer wake-ups.
	step := 10 * time.Millisecond
	if plan.Interval > 0 {
		step = plan.Interval
	}
	batches := min(len(victims), max(1, int(window/step)))
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for b := range batches {
		at := start.Add(window * time.Duration(b) / time.Duration(batches))
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return false
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return false
		}
		lo, hi := len(victims)*b/batches, len(victims)*(b+1)/batches
		s.mu.Lock()
		reqs := make([]*closeRequest, hi-lo)
		for i := range reqs {
			hint := s.drainHintLocked()
			reqs[i] = &closeRequest{
				code:   s.opts.DrainCode,
				reason: closecode.FormatRetryHint(ReasonDraining.Text(), hint),
				hint:   hint,
				why:    ReasonDraining,
				drain:  true,
			}
		}
		s.mu.Unlock()
		for i, sl := range victims[lo:hi] {
			if !sl.released.Load() {
				s.requestClose(sl, reqs[i])
			}
		}
	}
	return true
}

// force drops every connection still tracked and returns ctx.Err().
func (s *Shedder) force(ctx context.Context) error {
	s.mu.Lock()
	var left []*slot
	for sl := s.head; sl != nil; sl = sl.next {
		left = append(left, sl)
	}
	s.mu.Unlock()
	forced := 0
	for _, sl := range left {
		sl.mu.Lock()
		c, nc, already := sl.closer, sl.netConn, sl.forced
		sl.forced = true
		sl.mu.Unlock()
		if already {
			continue
		}
		if fc, ok := c.(ForceCloser); ok {
			_ = fc.CloseNow()
		} else if nc != nil {
			_ = nc.Close()
		} else {
			continue
		}
		forced++
	}
	s.stats.forced.Add(uint64(forced))
	if lg := s.log(); lg != nil && len(left) > 0 {
		lg.Info("shed: drain deadline reached", slog.Int("force_closed", forced),
			slog.Int("unclosable", len(left)-forced))
	}
	return ctx.Err()
}
