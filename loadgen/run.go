package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// errNothingConnects ends a run whose first attempts all failed.
var errNothingConnects = errors.New("nothing connects")

// bench is one run of one mode: its recorder, its context, its
// connections' common settings and its progress.
type bench struct {
	mode, name string
	o          Options
	url        string
	rec        *recorder
	wg         sync.WaitGroup
	started    time.Time
	phase      atomic.Value // string, for a restart storm's progress

	// ctx ends when the run's Duration passes, when the caller's context
	// ends, or with errNothingConnects.
	ctx    context.Context
	cancel context.CancelFunc
}

// newBench starts a run of mode against url, aiming at target connections.
// The caller must call b.cancel when the run is over.
func newBench(ctx context.Context, mode, name string, o Options, url string, target int) *bench {
	now := time.Now()
	b := &bench{mode: mode, name: name, o: o, url: url, rec: newRecorder(now, target), started: now}
	b.phase.Store("")
	tctx, tcancel := context.WithTimeout(ctx, o.Duration)
	cctx, ccancel := context.WithCancelCause(tctx)
	b.ctx = cctx
	b.cancel = func() { ccancel(nil); tcancel() }
	b.rec.onNothing = func() { ccancel(errNothingConnects) }
	return b
}

// startProgress calls Options.Progress every interval until the returned
// function is called; that function returns once no call is running.
func (b *bench) startProgress() (stop func()) {
	if b.o.Progress == nil {
		return func() {}
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(b.o.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				p := b.rec.progress()
				p.Mode, p.Run, p.Phase = b.mode, b.name, b.phase.Load().(string)
				p.Elapsed, p.Duration = time.Since(b.started), b.o.Duration
				b.o.Progress(p)
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(done)
		<-stopped
	})
}

// stoppedEarly says why the run ended by itself before its Duration, or "".
func (b *bench) stoppedEarly() string {
	if !errors.Is(context.Cause(b.ctx), errNothingConnects) {
		return ""
	}
	return fmt.Sprintf("the first %s failed with errors and none completed: nothing could connect", plural(b.rec.target, "attempt"))
}

// over reports whether the run has ended (see cutShort).
func (b *bench) over() bool { return cutShort(b.ctx, time.Now()) }

// elapsed is the run's length, at most its Duration.
func (b *bench) elapsed() time.Duration { return min(time.Since(b.started), b.o.Duration) }

// dialBounded is dial with at most cap(sem) dials in progress at once. It
// returns nil if the dial failed or the run ended while waiting its turn.
func (b *bench) dialBounded(sem chan struct{}) *websocket.Conn {
	select {
	case sem <- struct{}{}:
	case <-b.ctx.Done():
		return nil
	}
	defer func() { <-sem }()
	c, _, err := b.dial(b.ctx, false)
	if err != nil {
		return nil
	}
	return c
}

// dial opens one connection and records the attempt and its outcome. A
// dial that ctx's end cut short is recorded as cut off, not as a failure:
// the run, not the server, stopped it.
func (b *bench) dial(ctx context.Context, reconnect bool) (*websocket.Conn, *http.Response, error) {
	start := time.Now()
	if cutShort(ctx, start) {
		// The run is over, but ctx's timer has not fired yet: no attempt.
		return nil, nil, context.DeadlineExceeded
	}
	b.rec.attempt(start, reconnect)
	dctx, cancel := context.WithTimeoutCause(ctx, b.o.DialTimeout, errDialTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, b.url, b.o.Dial)
	now := time.Now()
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Remote {
		// Upgraded, then closed at once: a refusal such as 1013.
		b.rec.opened(now, now.Sub(start))
		b.rec.closed(now, ce.Code, "server")
		return nil, resp, err
	}
	if err != nil {
		if cutShort(ctx, now) {
			b.rec.cutOff(now)
			return nil, resp, context.DeadlineExceeded
		}
		if dctx.Err() != nil && !errors.Is(err, errDialTimeout) {
			err = fmt.Errorf("%w: %w", errDialTimeout, err)
		}
		b.rec.failed(now, err, resp)
		return nil, resp, err
	}
	b.rec.opened(now, now.Sub(start))
	b.rec.negotiated(c.Extensions())
	return c, resp, nil
}

// cutShort reports whether ctx is over at now: it has ended, or its
// deadline has passed. The second case matters: ctx's own timer marks it
// done a moment after the deadline (longer on a busy machine), while the
// socket deadline Dial derives from ctx fires at the deadline itself. A
// dial that fails then was stopped by the run's end, not by the server,
// and a worker that looped on ctx.Err() alone would meanwhile start dial
// after dial that fails at once, each counted as a server timeout.
func cutShort(ctx context.Context, now time.Time) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !now.Before(d)
}

// ending is how a connection ended.
type ending struct {
	code   closecode.Code
	reason string
	by     string // "server", "client" (the run closed it) or "local"
}

// benchConn is an open connection of a run. The goroutine that drives it
// also ends it (see end): closing from another goroutine while the driver
// may be between two reads would leave nobody to read the peer's answer.
type benchConn struct {
	*websocket.Conn
	closing atomic.Bool
}

// end closes the connection with 1000 as the run's own choice.
func (bc *benchConn) end() {
	bc.closing.Store(true)
	_ = bc.Close(closecode.NormalClosure, "ebb bench finished")
}

// closeGrace bounds how long a driver may take to notice that the run
// ended (an echo that never comes back) before the connection is dropped.
const closeGrace = 2 * time.Second

// session runs work on an open connection until the connection ends, and
// records how it ended. work must return once ctx ends, after calling end;
// if it has not returned closeGrace later, the connection is dropped.
func (b *bench) session(ctx context.Context, c *websocket.Conn, work func(ctx context.Context, bc *benchConn) error) ending {
	bc := &benchConn{Conn: c}
	guard := context.AfterFunc(ctx, func() {
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		select {
		case <-c.Done():
		case <-t.C:
			_ = c.CloseNow()
		}
	})
	err := work(ctx, bc)
	guard()
	_ = c.CloseNow()
	end := ending{code: closecode.AbnormalClosure, by: "local"}
	var ce *websocket.CloseError
	switch {
	case bc.closing.Load():
		end = ending{code: closecode.NormalClosure, by: "client"}
	case errors.As(err, &ce):
		end.code, end.reason = ce.Code, ce.Reason
		switch {
		case ce.Remote:
			end.by = "server"
		case ce.Code != closecode.AbnormalClosure:
			end.by = "client"
		}
	}
	b.rec.closed(time.Now(), end.code, end.by)
	return end
}

// readAll reads and drops messages until the connection ends, answering
// pings and the close handshake; when ctx ends it closes the connection.
// Nothing else reads meanwhile, so Close's answer reaches this reader.
func readAll(ctx context.Context, bc *benchConn) error {
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		bc.end()
	})
	var err error
	for {
		if _, _, err = bc.Read(context.Background()); err != nil {
			break
		}
	}
	if !stop() {
		<-closed
	}
	return err
}

// finish builds the report of a single-run mode.
func (b *bench) finish(ctx context.Context, cpu cpuMeter, run Run) *Report {
	run.StoppedEarly = b.stoppedEarly()
	if b.o.Dial.Compression != nil {
		b.rec.mu.Lock()
		run.Compression = b.rec.compressionLocked()
		b.rec.mu.Unlock()
	}
	return &Report{
		Schema:      Schema,
		Mode:        b.mode,
		URL:         b.url,
		Started:     b.started.UTC().Round(time.Millisecond),
		Seconds:     roundSeconds(time.Since(b.started).Seconds()),
		Interrupted: ctx.Err() != nil,
		Client:      cpu.client([]Run{run}, false),
		Runs:        []Run{run},
	}
}

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
