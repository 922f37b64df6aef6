package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// Connect runs o.Conns workers for o.Duration; each opens a connection,
// closes it at once with 1000 (a full close handshake), and opens the
// next. A refused attempt is followed by the next one at once: Connect
// measures the server, not a polite client (see Storm). The report gives
// completed handshakes per second, the busiest 100 ms, handshake latency,
// and what refused handshakes answered (HTTP status, or the close code of
// an upgrade-then-close refusal such as 1013). Dials still in progress
// when the run ends are counted as Handshakes.CutOff, not as failures.
//
// It returns an error only for invalid options.
func Connect(ctx context.Context, o ConnectOptions) (*Report, error) {
	if err := o.normalize(true); err != nil {
		return nil, err
	}
	if o.Rate < 0 {
		return nil, fmt.Errorf("loadgen: Rate %v: want handshakes per second, or 0 for no cap", o.Rate)
	}
	cpu := startCPU()
	b := newBench(ctx, "connect", "connect", o.Options, o.URL, o.Conns)
	defer b.cancel()
	stopProgress := b.startProgress()
	var tokens <-chan time.Time
	if o.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / o.Rate))
		defer t.Stop()
		tokens = t.C
	}
	for range o.Conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			again := false
			for !b.over() {
				if tokens != nil {
					select {
					case <-tokens:
					case <-b.ctx.Done():
						return
					}
				}
				c, _, err := b.dial(b.ctx, again)
				again = true
				if err != nil {
					continue
				}
				b.session(b.ctx, c, closeAtOnce)
			}
		}()
	}
	b.wg.Wait()
	stopProgress()
	return b.finish(ctx, cpu, b.rec.report("connect", b.elapsed())), nil
}

// closeAtOnce ends a connection with 1000 right after the handshake. A
// server that closed first (a refusal with 1013) is read and reported as
// such.
func closeAtOnce(_ context.Context, bc *benchConn) error {
	err := bc.Close(closecode.NormalClosure, "")
	if ce := bc.CloseReceived(); ce != nil && ce.Code != closecode.NormalClosure {
		return ce
	}
	if err != nil {
		return err
	}
	return &websocket.CloseError{Code: closecode.NormalClosure}
}
