package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/websocket"
)

// dialConcurrency bounds dials in progress for modes that only need their
// connections up (echo, idle): a run should load the server with traffic,
// not with its own connection burst. Storm dials all at once on purpose.
const dialConcurrency = 256

// Echo opens o.Conns connections to an echo endpoint (any server that
// sends every message back) and sends o.Size-byte messages for o.Duration,
// in a closed loop or at o.Rate. The report has messages and bytes per
// second (of echoes received), echo latency percentiles, and how the
// connections ended. Every connection is closed with 1000 at the end.
//
// It returns an error only for invalid options; a server that cannot be
// reached gives a report that says so (see Report.Check).
func Echo(ctx context.Context, o EchoOptions) (*Report, error) {
	if err := o.normalize(true); err != nil {
		return nil, err
	}
	if o.Size == 0 {
		o.Size = DefaultSize
	}
	switch {
	case o.Size < 0 || o.Size > MaxSize:
		return nil, fmt.Errorf("loadgen: Size %d: want 1 to %d bytes", o.Size, MaxSize)
	case o.Rate < 0:
		return nil, fmt.Errorf("loadgen: Rate %v: want messages per second, or 0 for a closed loop", o.Rate)
	case o.Rate > 0 && o.Size < StampSize:
		return nil, fmt.Errorf("loadgen: Size %d with a Rate: want at least %d bytes to carry the send time", o.Size, StampSize)
	}
	cpu := startCPU()
	b := newBench(ctx, "echo", "echo", o.Options, o.URL, o.Conns)
	defer b.cancel()
	stopProgress := b.startProgress()
	typ := websocket.MessageText
	if o.Binary {
		typ = websocket.MessageBinary
	}
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(o.Conns) / o.Rate * float64(time.Second))
	}
	sem := make(chan struct{}, dialConcurrency)
	for i := range o.Conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			c := b.dialBounded(sem)
			if c == nil {
				return
			}
			m := newMsgStats(b.rec.start, &b.rec.liveMsgs)
			msg := payload(o.Size, o.Binary)
			if interval > 0 {
				// Spread the connections' schedules over one interval.
				offset := interval * time.Duration(i) / time.Duration(o.Conns)
				b.session(b.ctx, c, func(ctx context.Context, bc *benchConn) error {
					return echoAtRate(ctx, bc, typ, msg, m, interval, offset)
				})
			} else {
				b.session(b.ctx, c, func(ctx context.Context, bc *benchConn) error {
					return echoClosedLoop(ctx, bc, typ, msg, m)
				})
			}
			b.rec.merge(m)
		}()
	}
	b.wg.Wait()
	stopProgress()
	run := b.rec.report("echo", b.elapsed())
	if run.Messages == nil {
		run.Messages = &Messages{}
	}
	run.Messages.Size, run.Messages.Compression, run.Messages.Rate = o.Size, o.Dial.Compression != nil, roundRate(o.Rate)
	return b.finish(ctx, cpu, run), nil
}

// payload returns a message of n bytes: text that compresses roughly like
// JSON, or bytes that do not compress at all.
func payload(n int, binaryData bool) []byte {
	p := make([]byte, n)
	if binaryData {
		x := uint64(0x9E3779B97F4A7C15)
		for i := range p {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			p[i] = byte(x)
		}
		return p
	}
	const text = `{"id":12345,"user":"ebb","event":"tick","price":101.25,"tags":["a","b"]} `
	for i := range p {
		p[i] = text[i%len(text)]
	}
	return p
}

// echoClosedLoop sends msg and waits for its echo, again and again, until
// the connection or ctx ends.
func echoClosedLoop(ctx context.Context, bc *benchConn, typ websocket.MessageType, msg []byte, m *msgStats) error {
	bg := context.Background()
	for {
		if ctx.Err() != nil {
			bc.end()
			return nil
		}
		t0 := time.Now()
		if err := bc.Write(bg, typ, msg); err != nil {
			_, _, rerr := bc.Read(bg)
			return errors.Join(rerr, err)
		}
		m.sentMsg(len(msg))
		_, p, err := bc.Read(bg)
		if err != nil {
			return err
		}
		now := time.Now()
		m.received(now, len(p), now.Sub(t0))
	}
}

// echoAtRate sends msg every interval (starting after offset), each
// stamped with the time it was due, while another goroutine reads the
// echoes and measures from the stamp. When ctx ends it waits briefly for
// the echoes in flight, then closes.
func echoAtRate(ctx context.Context, bc *benchConn, typ websocket.MessageType, msg []byte, m *msgStats, interval, offset time.Duration) error {
	base := m.start
	readErr := make(chan error, 1)
	recv := newMsgStats(base, m.liveMsgs)
	var got atomic.Uint64
	go func() {
		bg := context.Background()
		for {
			_, p, err := bc.Read(bg)
			if err != nil {
				readErr <- err
				return
			}
			now := time.Now()
			due, ok := parseStamp(p)
			if !ok {
				bc.CloseNow()
				readErr <- fmt.Errorf("the server answered a message that does not start with the send time this client wrote: %s is not an echo endpoint", bc.RemoteAddr())
				return
			}
			recv.received(now, len(p), now.Sub(base.Add(due)))
			got.Add(1)
		}
	}()
	buf := append([]byte(nil), msg...)
	next := time.Now().Add(offset)
	bg := context.Background()
	var err error
	for {
		if d := time.Until(next); d > 0 && !sleepCtx(ctx, d) {
			break
		}
		if ctx.Err() != nil {
			break
		}
		putStamp(buf, next.Sub(base))
		if werr := bc.Write(bg, typ, buf); werr != nil {
			break
		}
		m.sentMsg(len(buf))
		next = next.Add(interval)
		select {
		case err = <-readErr:
			m.mergeFrom(recv)
			return err
		default:
		}
	}
	// Let the echoes in flight arrive, then close; the reader sees the
	// answer to the Close.
	deadline := time.Now().Add(time.Second)
	for got.Load() < m.sent && time.Now().Before(deadline) && bc.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	if ctx.Err() != nil {
		bc.end()
	}
	err = <-readErr
	m.mergeFrom(recv)
	return err
}

// putStamp writes d at the front of p as 16 hex digits, valid in a text
// message too.
func putStamp(p []byte, d time.Duration) {
	const hexDigits = "0123456789abcdef"
	v := uint64(d)
	for i := StampSize - 1; i >= 0; i-- {
		p[i] = hexDigits[v&15]
		v >>= 4
	}
}

// parseStamp reads what putStamp wrote.
func parseStamp(p []byte) (time.Duration, bool) {
	if len(p) < StampSize {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p[:StampSize]), 16, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(v), true
}
