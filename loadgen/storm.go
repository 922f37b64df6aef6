package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// Storm starts o.Conns clients at the same moment. Each keeps its
// connection up for o.Duration and, when the server ends or refuses it,
// reconnects by the policy. Each of o.Policies runs in turn, for
// o.Duration each, and is one run of the report, so that they compare side
// by side.
//
// With o.Restart, each run starts the Restarter's server, waits until
// every client is connected and Settle has passed, drains the server, and
// starts it again after Gap. The run's Restart section then gives the
// peak rates of connection attempts and completed handshakes after the
// drain, and the time until every client was connected again.
//
// It returns an error for invalid options and when the Restarter fails.
func Storm(ctx context.Context, o StormOptions) (*Report, error) {
	if err := o.normalize(o.Restart == nil); err != nil {
		return nil, err
	}
	if rs := o.Restart; rs != nil {
		if rs.Server == nil {
			return nil, errors.New("loadgen: RestartOptions.Server is nil: a restart storm needs a server to restart")
		}
		if rs.Settle < 0 || rs.Gap < 0 || rs.DrainWindow < 0 {
			return nil, fmt.Errorf("loadgen: RestartOptions Settle %v, Gap %v, DrainWindow %v: want durations of zero or more", rs.Settle, rs.Gap, rs.DrainWindow)
		}
	}
	policies := o.Policies
	if len(policies) == 0 {
		policies = []Policy{PolicyBackoff}
	}
	for _, p := range policies {
		if q, err := ParsePolicy(string(p)); err != nil || q != p {
			return nil, fmt.Errorf("loadgen: policy %q: want one of none, immediate, nojitter, backoff", p)
		}
	}
	cpu := startCPU()
	started := time.Now()
	var runs []Run
	url := o.URL
	for _, p := range policies {
		if ctx.Err() != nil {
			break
		}
		rr, u, err := stormRun(ctx, o, p)
		if err != nil {
			return nil, err
		}
		runs = append(runs, rr)
		url = u
	}
	return &Report{
		Schema:      Schema,
		Mode:        "storm",
		URL:         url,
		Started:     started.UTC().Round(time.Millisecond),
		Seconds:     roundSeconds(time.Since(started).Seconds()),
		Interrupted: ctx.Err() != nil,
		Client:      cpu.client(runs, o.Restart != nil && o.Restart.InProcess),
		Runs:        runs,
	}, nil
}

// stormRun runs one storm with one policy and returns its run and the URL
// it stormed.
func stormRun(ctx context.Context, o StormOptions, policy Policy) (Run, string, error) {
	url, rs := o.URL, o.Restart
	running := false
	if rs != nil {
		u, err := rs.Server.Start(ctx)
		if err != nil {
			return Run{}, "", fmt.Errorf("loadgen: cannot start the restart storm's server: %w", err)
		}
		running = true
		if err := checkURL(u); err != nil {
			stopServer(ctx, rs.Server)
			return Run{}, "", fmt.Errorf("loadgen: the Restarter's Start returned a bad URL: %w", err)
		}
		url = u
	}
	b := newBench(ctx, "storm", string(policy), o.Options, url, o.Conns)
	defer b.cancel()
	clientCtx, stopClients := context.WithCancel(b.ctx)
	defer stopClients()
	var active atomic.Int64
	b.phase.Store("connecting")
	stopProgress := b.startProgress()
	active.Add(int64(o.Conns))
	for range o.Conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer active.Add(-1)
			b.stormClient(clientCtx, policy, o.Backoff)
		}()
	}
	var restart *Restart
	var err error
	if rs != nil {
		restart, running, err = b.restart(rs, &active)
	} else {
		<-b.ctx.Done()
	}
	b.phase.Store("closing")
	stopClients()
	b.wg.Wait()
	elapsed := time.Since(b.started)
	stopProgress()
	if running {
		stopServer(ctx, rs.Server)
	}
	if err != nil {
		return Run{}, "", err
	}
	rr := b.rec.report(string(policy), elapsed)
	rr.StoppedEarly = b.stoppedEarly()
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	if o.Dial.Compression != nil {
		rr.Compression = b.rec.compressionLocked()
	}
	rr.Reconnect = &Reconnect{Policy: string(policy), Attempts: b.rec.reconnects, GaveUp: b.rec.gaveUp, Delays: summarize(b.rec.delays)}
	if restart != nil {
		from := time.Duration(restart.DrainAt * float64(time.Second))
		rate, at := peakWindow(b.rec.hsPerMs, from)
		attempts, _ := peakWindow(b.rec.atPerMs, from)
		restart.PeakPerSecond, restart.PeakAt = roundRate(rate), roundSeconds(at.Seconds())
		restart.PeakAttemptsPerSecond = roundRate(attempts)
		rr.Restart = restart
	}
	return rr, url, nil
}

// stopServer stops a restart storm's server once its clients are gone.
func stopServer(ctx context.Context, s Restarter) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_ = s.Stop(sctx)
}

// restart runs the drain and restart of a restart storm once the clients
// are started. It returns when every client is back on the new server, or
// the run ended, and reports whether a server is running then (the caller
// stops it after the clients).
func (b *bench) restart(ro *RestartOptions, active *atomic.Int64) (*Restart, bool, error) {
	ctx := b.ctx
	// Every client connected, then settle.
	b.rec.watchFull(time.Now())
	pollUntil(ctx, func() bool { _, ok := b.rec.full(); return ok || active.Load() == 0 })
	if _, ok := b.rec.full(); !ok {
		return nil, true, nil
	}
	b.phase.Store("connected")
	if !sleepCtx(ctx, ro.Settle) {
		return nil, true, nil
	}
	code := ro.DrainCode
	if code == 0 {
		code = int(closecode.ServiceRestart)
	}
	rep := &Restart{DrainCode: code, DrainWindow: roundSeconds(ro.DrainWindow.Seconds()), Gap: roundSeconds(ro.Gap.Seconds())}
	drainAt := time.Now()
	rep.DrainAt = roundSeconds(drainAt.Sub(b.started).Seconds())
	b.phase.Store("draining")
	b.rec.setDown(true)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ro.DrainWindow+5*time.Second)
	_ = ro.Server.Stop(sctx) // a drain cut short by sctx still stops the server
	cancel()
	b.phase.Store("down")
	if !sleepCtx(ctx, ro.Gap) {
		return rep, false, nil
	}
	url, err := ro.Server.Start(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("loadgen: cannot start the restart storm's server again: %w", err)
	}
	if url != b.url {
		return nil, true, fmt.Errorf("loadgen: the restarted server listens at %q, the first one at %q: a restart storm needs the same URL, since its clients keep dialing it", url, b.url)
	}
	backAt := time.Now()
	rep.BackAt = roundSeconds(backAt.Sub(b.started).Seconds())
	b.phase.Store("back")
	b.rec.watchFull(backAt)
	pollUntil(ctx, func() bool { _, ok := b.rec.full(); return ok || active.Load() == 0 })
	if at, ok := b.rec.full(); ok {
		b.rec.setDown(false)
		full := roundSeconds((at - drainAt.Sub(b.started)).Seconds())
		afterBack := roundSeconds((at - backAt.Sub(b.started)).Seconds())
		rep.FullReconnect, rep.FullAfterBack = &full, &afterBack
	}
	return rep, true, nil
}

// pollUntil polls cond until it holds or ctx ends, and reports whether it
// held.
func pollUntil(ctx context.Context, cond func() bool) bool {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
	return true
}

// stormClient is one client of a storm: it connects, reads until the
// connection ends, and reconnects as its policy says, until ctx ends.
func (b *bench) stormClient(ctx context.Context, policy Policy, backoff reconnect.Backoff) {
	pol := reconnect.Policy{Backoff: backoff, Persistent: true}
	sched := reconnect.NewSchedule(pol, nil, time.Now())
	again := false
	for !cutShort(ctx, time.Now()) {
		c, resp, err := b.dial(ctx, again)
		again = true
		var d reconnect.Decision
		if err != nil {
			if cutShort(ctx, time.Now()) {
				return
			}
			d = decideDialError(pol, err, resp, time.Now())
		} else {
			sched.Opened(time.Now())
			end := b.session(ctx, c, readAll)
			if ctx.Err() != nil {
				return
			}
			d = pol.Decide(end.code, end.reason)
		}
		var delay time.Duration
		switch policy {
		case PolicyNone:
			return
		case PolicyImmediate:
			delay = 0
		case PolicyBackoff, PolicyNoJitter:
			w, err := sched.Next(time.Now(), d)
			if err != nil {
				b.rec.gaveUpOne()
				return
			}
			delay = w.Delay
			if policy == PolicyNoJitter {
				delay = max(w.Nominal, d.Hint)
			}
		}
		b.rec.waited(delay)
		if !sleepCtx(ctx, delay) {
			return
		}
	}
}

// decideDialError turns a failed dial into the policy's verdict: an HTTP
// refusal by its status and Retry-After, a server that closed right after
// the upgrade by its close code and hint, a missing mandatory extension by
// 1010, anything else (refused, reset, timeout) as a lost connection
// (1006), which retries with backoff.
func decideDialError(pol reconnect.Policy, err error, resp *http.Response, now time.Time) reconnect.Decision {
	var he *websocket.HandshakeError
	if errors.As(err, &he) && he.StatusCode != 0 {
		h := http.Header{}
		if resp != nil {
			h = resp.Header
		} else if he.RetryAfter > 0 {
			h.Set("Retry-After", strconv.FormatInt(int64(math.Ceil(he.RetryAfter.Seconds())), 10))
		}
		d := pol.DecideHTTP(he.StatusCode, h, now)
		d.Err = err
		return d
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Remote {
		// Upgraded, then refused at once (1013 with its hint).
		d := pol.Decide(ce.Code, ce.Reason)
		d.Err = err
		return d
	}
	code := closecode.AbnormalClosure
	var me *websocket.MandatoryExtensionError
	if errors.As(err, &me) {
		code = closecode.MandatoryExtension
	}
	d := pol.Decide(code, "")
	d.Err = err
	return d
}
