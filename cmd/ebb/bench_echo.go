package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/websocket"
)

// echoOptions holds the flags of "ebb bench echo".
type echoOptions struct {
	size     int
	rate     float64
	compress bool
	binary   bool
}

// maxEchoSize bounds --size: larger messages measure memory copies, not a
// WebSocket server.
const maxEchoSize = 64 << 20

// stampSize is the length of the send time stamped at the front of each
// message in rate mode (16 hex digits), so that latency is measured from
// when the message should have left (no coordinated omission).
const stampSize = 16

func newBenchEchoCmd(e *env, o *benchOptions) *cobra.Command {
	var eo echoOptions
	cmd := &cobra.Command{
		Use:   "echo URL",
		Short: "Measure echo throughput and latency over N connections",
		Long: `Echo opens --conns connections to an echo endpoint (any server that sends
every message back) and sends --size byte messages for --duration.

Without --rate each connection runs a closed loop: it sends the next
message when the echo of the last one arrived, which measures the most
the server (and client) can do. With --rate the connections together send
that many messages per second on a fixed schedule, and latency counts from
when each message was due, so a stalled server shows up in the
percentiles instead of being hidden by the client waiting for it.

The payload is text-like (it compresses) unless --binary; --compress
offers permessage-deflate.`,
		Example: `  ebb bench echo -c 100 -d 10s --size 1024 ws://localhost:8080/echo
  ebb bench echo -c 10 --rate 5000 --size 16384 --compress ws://localhost:8080/echo`,
		Args: benchURLArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(1); err != nil {
				return err
			}
			if eo.size < 1 || eo.size > maxEchoSize {
				return usagef("bench echo: --size %d: want 1 to %d bytes", eo.size, maxEchoSize)
			}
			if eo.rate < 0 {
				return usagef("bench echo: --rate %v: want messages per second, or 0 for a closed loop", eo.rate)
			}
			if eo.rate > 0 && eo.size < stampSize {
				return usagef("bench echo: --size %d with --rate: want at least %d bytes to carry the send time", eo.size, stampSize)
			}
			dopts, err := o.dialOptions(eo.compress)
			if err != nil {
				return err
			}
			rep := runEcho(cmd.Context(), e, o, &eo, args[0], dopts)
			return o.output(e, rep)
		},
	}
	f := cmd.Flags()
	f.IntVar(&eo.size, "size", 1024, "message size in bytes")
	f.Float64Var(&eo.rate, "rate", 0, "messages per second over all connections (0: closed loop, as fast as echoes return)")
	f.BoolVar(&eo.compress, "compress", false, "offer permessage-deflate compression")
	f.BoolVar(&eo.binary, "binary", false, "send binary messages of random-looking bytes instead of text")
	return cmd
}

// benchURLArgs accepts exactly one ws:// or wss:// URL.
func benchURLArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("want exactly one URL, got %d arguments", len(args))
	}
	return checkBenchURL(args[0])
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

// runEcho runs the echo mode until --duration passes or ctx ends.
func runEcho(ctx context.Context, e *env, o *benchOptions, eo *echoOptions, rawURL string, dopts *websocket.DialOptions) *benchReport {
	cpu := startCPU()
	b := newBench(e, o, rawURL, dopts, o.conns)
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	prog := startProgress(e, func(el time.Duration) string { return b.rec.liveLine(el, o.duration) })
	typ := websocket.MessageText
	if eo.binary {
		typ = websocket.MessageBinary
	}
	var interval time.Duration
	if eo.rate > 0 {
		interval = time.Duration(float64(o.conns) / eo.rate * float64(time.Second))
	}
	sem := make(chan struct{}, dialConcurrency)
	for i := range o.conns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			c := b.dialBounded(runCtx, sem)
			if c == nil {
				return
			}
			m := newMsgStats(b.rec.start, &b.rec.liveMsgs)
			msg := payload(eo.size, eo.binary)
			if interval > 0 {
				// Spread the connections' schedules over one interval.
				offset := interval * time.Duration(i) / time.Duration(o.conns)
				b.session(runCtx, c, func(ctx context.Context, bc *benchConn) error {
					return echoAtRate(ctx, bc, typ, msg, m, interval, offset)
				})
			} else {
				b.session(runCtx, c, func(ctx context.Context, bc *benchConn) error {
					return echoClosedLoop(ctx, bc, typ, msg, m)
				})
			}
			b.rec.merge(m)
		}()
	}
	b.wg.Wait()
	elapsed := min(time.Since(b.started), o.duration)
	prog.end()
	run := b.rec.report("echo", elapsed)
	if run.Messages == nil {
		run.Messages = &messageReport{}
	}
	run.Messages.Size, run.Messages.Compression, run.Messages.Rate = eo.size, eo.compress, eo.rate
	return b.finish(ctx, "echo", []runReport{run}, cpu.clientReport([]runReport{run}, false))
}

// dialConcurrency bounds dials in progress for modes that only need their
// connections up (echo, idle): a bench should load the server with
// traffic, not with its own connection burst. Storm dials all at once on
// purpose.
const dialConcurrency = 256

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
				readErr <- fmt.Errorf("the server answered a message that does not start with the send time the bench wrote: %s is not an echo endpoint", bc.RemoteAddr())
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
			mergeRecv(m, recv)
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
	mergeRecv(m, recv)
	return err
}

// putStamp writes d at the front of p as 16 hex digits, valid in a text
// message too.
func putStamp(p []byte, d time.Duration) {
	const hexDigits = "0123456789abcdef"
	v := uint64(d)
	for i := stampSize - 1; i >= 0; i-- {
		p[i] = hexDigits[v&15]
		v >>= 4
	}
}

// parseStamp reads what putStamp wrote.
func parseStamp(p []byte) (time.Duration, bool) {
	if len(p) < stampSize {
		return 0, false
	}
	v, err := strconv.ParseUint(string(p[:stampSize]), 16, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(v), true
}

// mergeRecv folds the reader's half of a connection's stats into the
// writer's; the reader goroutine has stopped.
func mergeRecv(m, recv *msgStats) {
	m.lat.Merge(recv.lat)
	m.recv += recv.recv
	m.recvB += recv.recvB
	for len(m.buckets) < len(recv.buckets) {
		m.buckets = append(m.buckets, msgBucket{})
	}
	for i, rb := range recv.buckets {
		b := &m.buckets[i]
		b.msgs += rb.msgs
		b.bytes += rb.bytes
		b.latSum += rb.latSum
		b.latN += rb.latN
		b.latMax = max(b.latMax, rb.latMax)
	}
}
