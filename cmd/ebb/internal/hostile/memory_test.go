package hostile

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The rows of the issue where a peer made the server hold memory it never
// sent: announced sizes, an overflowing length check, inflate buffers kept
// by idle connections, deflate bombs with no process-wide budget, and a
// broadcast member that never reads.

// Figures of TestHostileAnnouncedFrames.
const (
	announcedConns = 64
	announcedHold  = 3 * time.Second
	// announcedGrowth bounds the RSS growth: memory grows with bytes
	// received, never bytes announced, and a Conn allocates at most
	// websocket.BudgetFreeBytes (16 KiB) before payload arrives: 64 × 16
	// KiB is 1 MiB; the rest is slack for 64 connections' goroutines and
	// buffers and the runtime.
	announcedGrowth = 48 * mib
)

// keptSlack is what the heap may hold after an attack beyond what it held
// before, once churn has made the collector run: garbage of the last cycle
// and the runtime's own growth.
const keptSlack = 24 * mib

// TestHostileAnnouncedFrames: connections send only a frame header
// announcing a large payload, then nothing. Before the fix the read path
// allocated by announcement: 64 headers announcing 32 MiB took the RSS to
// 2.1 GB (still 2.1 GB 20 s after they closed), and with --read-limit -1
// the process died (makeslice, or out of memory).
func TestHostileAnnouncedFrames(t *testing.T) {
	heavy(t)
	for _, tc := range []struct {
		name     string
		announce uint64
		args     []string
	}{
		{"32 MiB", 32 * mib, nil},
		{"32 MiB with --read-limit -1", 32 * mib, []string{"--read-limit", "-1"}},
		{"2^63-1 with --read-limit -1", 1<<63 - 1, []string{"--read-limit", "-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := report(t, fmt.Sprintf("%d connections each sending only a frame header announcing %s%s", announcedConns, sizeName(tc.announce), flagNote(tc.args)),
				fmt.Sprintf("RSS and heap +%s; honest echoes 100 %%", mb(announcedGrowth)))
			srv := startServer(t, tc.args...)
			f.heapBase = srv.settledHeap(t)
			a := begin(t, srv, f)
			var conns []*rawConn
			for range announcedConns {
				c, err := upgrade(a.ctx, srv.addr, "/echo", "127.0.0.1", false)
				if err != nil {
					srv.fatalf(t, "attacker's handshake: %v", err)
				}
				defer c.Close()
				conns = append(conns, c)
				if _, err := c.Write(frameHeader(true, 0, opBinary, tc.announce, &mask)); err != nil {
					srv.fatalf(t, "attacker's frame header: %v", err)
				}
			}
			a.hold(announcedHold)
			f.heapUnder = srv.heap()
			a.end()
			for _, c := range conns {
				c.Close()
			}
			time.Sleep(500 * time.Millisecond)
			f.rssAfter, _ = srv.rss()
			a.checkHonest(honestMin)
			a.checkGrowth(announcedGrowth, "memory grows with bytes received, never bytes announced")
			// Pages the kernel has not handed out yet do not count in the
			// RSS: the heap is what shows a buffer allocated by
			// announcement.
			if f.heapUnder < 0 || f.heapUnder-f.heapBase > announcedGrowth {
				t.Errorf("server heap under attack: %s (before: %s); want at most %s more: memory must grow with bytes received, never bytes announced", size(f.heapUnder), size(f.heapBase), size(announcedGrowth))
			}
		})
	}
}

// continuationRefusal bounds how long the server may take to refuse a
// message whose announced length alone is over the read limit: it knows
// from the header, so "at once" — one second leaves room for a loaded CI
// machine.
const continuationRefusal = time.Second

// TestHostileContinuationOverflow: a fragmented message's first frame
// carries 10 bytes, its continuation announces 2^63−1. Before the fix the
// limit check added the two and overflowed, so the message was not refused
// at once. The "over the limit" case is the control: the same check
// without overflow, which already held.
func TestHostileContinuationOverflow(t *testing.T) {
	heavy(t)
	for _, tc := range []struct {
		name     string
		announce uint64
	}{
		{"2^63-1", 1<<63 - 1},
		{"over the limit", 32*mib - 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := report(t, fmt.Sprintf("a 10 B fragment, then a continuation announcing %s", sizeName(tc.announce)),
				fmt.Sprintf("Close 1009 within %s; honest echoes 100 %%", continuationRefusal))
			srv := startServer(t)
			a := begin(t, srv, f)
			c, err := upgrade(a.ctx, srv.addr, "/echo", "127.0.0.1", false)
			if err != nil {
				srv.fatalf(t, "attacker's handshake: %v", err)
			}
			defer c.Close()
			c.Write(clientFrame(false, 0, opBinary, []byte("0123456789")))
			c.Write(frameHeader(true, 0, opContinuation, tc.announce, &mask))
			cf, err := c.awaitClose(2 * continuationRefusal)
			// Let the honest clients see the server after the attack too.
			a.hold(time.Second)
			a.end()
			switch {
			case err != nil && cf.code == 0:
				t.Errorf("no Close frame within %s: %v; want 1009 Message Too Big at once", 2*continuationRefusal, err)
				f.note(t, "no Close within %s", 2*continuationRefusal)
			case cf.code != 1009:
				t.Errorf("server answered Close %d %q (connection ended: %v); want 1009 within %s", cf.code, cf.reason, cf.eof, continuationRefusal)
				f.note(t, "Close %d", cf.code)
			default:
				f.note(t, "Close 1009 after %s", round(cf.after))
				if cf.after > continuationRefusal {
					t.Errorf("Close 1009 came after %s; want within %s", round(cf.after), continuationRefusal)
				}
			}
			a.checkHonest(honestMin)
		})
	}
}

// Figures of TestHostileInflateIdle.
const (
	inflateConns = 10
	// inflateKeptPerConn bounds what an idle connection keeps after one
	// message that inflated to 32 MiB: its compression windows (32 KiB
	// each way) and bookkeeping, with room to spare; before the fix it
	// kept the 64 MiB the inflate buffer had doubled to.
	inflateKeptPerConn = 1 * mib
)

// TestHostileInflateIdle: each connection sends one compressed message
// that inflates to 32 MiB (the read limit), reads the echo, then stays
// idle. Before the fix every idle connection kept about 64 MiB: the
// inflate buffer doubled past the message and echo kept it (10
// connections: 643 MB live heap after GC).
func TestHostileInflateIdle(t *testing.T) {
	heavy(t)
	f := report(t, fmt.Sprintf("%d connections each sending one compressed message inflating to 32 MiB, then idle", inflateConns),
		fmt.Sprintf("heap kept ≤ %s per idle connection + %s", mb(inflateKeptPerConn), mb(keptSlack)))
	srv := startServer(t, "--compress")
	f.heapBase = srv.settledHeap(t)
	a := begin(t, srv, f)
	bomb := compressedMessage(opBinary, deflateBomb(32))
	for i := range inflateConns {
		c, err := upgrade(a.ctx, srv.addr, "/echo", "127.0.0.1", true)
		if err != nil {
			srv.fatalf(t, "attacker %d's handshake: %v", i, err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(bomb); err != nil {
			srv.fatalf(t, "attacker %d's message: %v", i, err)
		}
		if code, err := c.awaitMessage(); err != nil || code != 0 {
			srv.fatalf(t, "attacker %d's 32 MiB message was not echoed (close %d, %v): the test did not attack what it should", i, code, err)
		}
		c.SetDeadline(time.Time{})
	}
	a.end()
	f.heapAfter = srv.settledHeap(t)
	f.rssAfter, _ = srv.rss()
	kept := f.heapAfter - f.heapBase
	f.note(t, "heap kept per idle connection: %s", size(kept/inflateConns))
	if bound := int64(inflateConns*inflateKeptPerConn + keptSlack); kept > bound {
		t.Errorf("%d idle connections keep %s of heap after one 32 MiB message each (%s → %s); want at most %s", inflateConns, mb(kept), mb(f.heapBase), mb(f.heapAfter), mb(bound))
	}
	a.checkHonest(honestMin)
}

// Figures of TestHostileDeflateBombs.
const (
	// defaultBudget is the websocket package's process-wide budget for
	// messages in flight when GOMEMLIMIT is not set.
	defaultBudget = 256 * mib
	// bombGrowth bounds the RSS growth under concurrent bombs with the
	// default budget and no GOMEMLIMIT. The budget bounds the live memory
	// of messages (256 MiB, plus one message when all wait, plus chunks
	// waiting in pools); Go's collector, at the default GOGC=100, lets the
	// heap reach twice its live size before it runs, so RSS peaks at 2.5–3
	// × the budget (measured 600–810 MiB), depending on when the collector
	// runs: 3.5 × the budget plus 64 MiB of slack for the echoes'
	// compression and the runtime. What matters is that it no longer grows
	// with the number of bombs (before the fix 20 bombs peaked at 1.9 GB
	// and 50 at 3.3 GB), and that GOMEMLIMIT caps it (the next case).
	bombGrowth = 7*defaultBudget/2 + 64*mib
	// bombMemLimit is the GOMEMLIMIT of the capped run: the budget is then a
	// quarter of it, and the collector keeps the heap under it, so RSS
	// stays under the limit plus the runtime's own (64 MiB).
	bombMemLimit = 512 * mib
	// bombWindow bounds how long the attack runs: every bomb is answered
	// (echoed, or refused with 1013 once it waited the budget's 5 s) well
	// within it.
	bombWindow = 10 * time.Second
)

// TestHostileDeflateBombs: many connections each send, at the same
// moment, a compressed message of about 32 KiB that inflates to 32 MiB
// (the read limit). Before the fix there was no process-wide budget: 20
// bombs (1.3 MB on the wire) peaked at 1.9 GB of RSS, 50 (2 MB) at 3.3 GB.
func TestHostileDeflateBombs(t *testing.T) {
	heavy(t)
	bomb := compressedMessage(opBinary, deflateBomb(32))
	for _, tc := range []struct {
		n      int
		env    []string // the server's
		growth int64
		bound  string
	}{
		{20, nil, bombGrowth, "3.5 × the 256 MiB budget + 64 MiB"},
		{50, nil, bombGrowth, "3.5 × the 256 MiB budget + 64 MiB"},
		{50, []string{fmt.Sprintf("GOMEMLIMIT=%dMiB", bombMemLimit/mib)}, bombMemLimit + 64*mib, "GOMEMLIMIT=512MiB (budget 128 MiB) + 64 MiB"},
	} {
		n := tc.n
		name := fmt.Sprintf("%d bombs", n)
		if tc.env != nil {
			name += " " + strings.Join(tc.env, " ")
		}
		t.Run(name, func(t *testing.T) {
			f := report(t, fmt.Sprintf("%d concurrent deflate bombs (%d KiB each on the wire, 32 MiB inflated)%s", n, len(bomb)/kib, envNote(tc.env)),
				fmt.Sprintf("RSS +%s (%s); honest echoes 100 %%", mb(tc.growth), tc.bound))
			srv := startServerEnv(t, tc.env, "--compress")
			a := begin(t, srv, f)
			var conns []*rawConn
			for i := range n {
				c, err := upgrade(a.ctx, srv.addr, "/echo", "127.0.0.1", true)
				if err != nil {
					srv.fatalf(t, "attacker %d's handshake: %v", i, err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
			var echoed, refused atomic.Int64
			codes := make(chan int, n)
			var wg sync.WaitGroup
			ctx, cancel := context.WithTimeout(a.ctx, bombWindow)
			defer cancel()
			start := make(chan struct{})
			for _, c := range conns {
				wg.Go(func() {
					stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
					defer stop()
					<-start
					if _, err := c.Write(bomb); err != nil {
						return
					}
					code, err := c.awaitMessage()
					switch {
					case err != nil:
					case code == 0:
						echoed.Add(1)
					default:
						refused.Add(1)
						codes <- code
					}
				})
			}
			close(start)
			wg.Wait()
			a.end()
			close(codes)
			seen := map[int]int{}
			for c := range codes {
				seen[c]++
			}
			f.note(t, "%d echoed, %d refused %v, %d unanswered within %s", echoed.Load(), refused.Load(), seen, int64(n)-echoed.Load()-refused.Load(), bombWindow)
			a.checkHonest(honestMin)
			a.checkGrowth(tc.growth, "the process-wide message budget bounds what bombs can inflate at once")
		})
	}
}

// Figures of TestHostileBroadcastLaggard.
const (
	laggardMessages = 40
	laggardInflated = 16 // MiB each message inflates to (16 KiB on the wire)
	// laggardDrop bounds how long after the first message the member that
	// never reads is dropped: the 1 MiB queue bound trips on the third
	// 16 MiB message, so the drop must come from the byte bound (reason
	// queue_bytes), before the 5 s write timeout could have dropped it.
	laggardDrop = 5 * time.Second
	// laggardGrowth bounds the RSS growth: the laggard holds at most one
	// message being written and one queued (32 MiB, shared with the other
	// member), the message being read inflates to 16 MiB (32 MiB with its
	// buffer's doubling), and the collector lets the heap reach twice
	// what is live. Before the fix the laggard's queue of 256 messages of
	// any size took the RSS to 1.74 GB.
	laggardGrowth = 256 * mib
)

// TestHostileBroadcastLaggard: one /broadcast member never reads while
// another sends 40 compressed messages of 16 KiB, each inflating to 16
// MiB. Before the fix each member's queue held 256 messages of any size:
// 1.74 GB of RSS until the 10 s write timeout dropped the laggard.
func TestHostileBroadcastLaggard(t *testing.T) {
	heavy(t)
	f := report(t, fmt.Sprintf("/broadcast member that never reads; %d compressed 16 KiB messages inflating to %d MiB", laggardMessages, laggardInflated),
		fmt.Sprintf("laggard closed with 1013 within %s; RSS +%s; honest echoes 100 %%", laggardDrop, mb(laggardGrowth)))
	srv := startServer(t, "--compress")
	a := begin(t, srv, f)
	laggard, err := upgrade(a.ctx, srv.addr, "/broadcast", "127.0.0.1", false)
	if err != nil {
		srv.fatalf(t, "attacker's handshake: %v", err)
	}
	defer laggard.Close()
	sender, err := upgrade(a.ctx, srv.addr, "/broadcast", "127.0.0.1", true)
	if err != nil {
		srv.fatalf(t, "attacker's handshake: %v", err)
	}
	defer sender.Close()
	// The sender is a member too, and reads everything.
	sunk := make(chan struct{})
	go func() {
		defer close(sunk)
		io.Copy(io.Discard, sender)
	}()
	msg := compressedMessage(opBinary, deflateBomb(laggardInflated))
	start := time.Now()
	for range laggardMessages {
		if _, err := sender.Write(msg); err != nil {
			t.Errorf("sender: %v", err)
			break
		}
	}
	var dropped time.Duration
	reason := ""
	for time.Since(start) < 2*laggardDrop && reason == "" {
		switch {
		case srv.metric(`ebb_broadcast_dropped_total{reason="queue_bytes"}`) > 0:
			dropped, reason = time.Since(start), "queue_bytes"
		case srv.metric(`ebb_broadcast_dropped_total{reason="write_timeout"}`) > 0:
			dropped, reason = time.Since(start), "write_timeout"
		default:
			time.Sleep(50 * time.Millisecond)
		}
	}
	// The laggard reads now: what is left of the message being written
	// to it, then the Close frame.
	cf, err := laggard.awaitClose(10 * time.Second)
	a.end()
	sender.Close()
	<-sunk
	switch {
	case reason == "":
		t.Errorf("the laggard was not dropped within %s of the first message (ebb_broadcast_dropped_total stayed 0); want within %s, by the queue's byte bound", 2*laggardDrop, laggardDrop)
	case reason != "queue_bytes":
		t.Errorf("the laggard was dropped %s after the first message for %s; want within %s, by the queue's byte bound (queue_bytes)", round(dropped), reason, laggardDrop)
	case dropped > laggardDrop:
		t.Errorf("the laggard was dropped %s after the first message; want within %s", round(dropped), laggardDrop)
	}
	if cf.code != 1013 {
		t.Errorf("the laggard got Close %d %q (read error %v); want 1013 Try Again Later", cf.code, cf.reason, err)
	}
	f.note(t, "laggard dropped (%s) %s after the first message, closed with %d", reason, round(dropped), cf.code)
	a.checkHonest(honestMin)
	a.checkGrowth(laggardGrowth, "a member's queue is bounded in bytes")
}

// sizeName writes an announced length for humans.
func sizeName(n uint64) string {
	switch {
	case n == 1<<63-1:
		return "2^63−1 B"
	case n%mib == 0:
		return fmt.Sprintf("%d MiB", n/mib)
	}
	return fmt.Sprintf("%d B", n)
}

// flagNote names the extra server flags of a row.
func flagNote(args []string) string {
	if len(args) == 0 {
		return ""
	}
	s := " ("
	for i, a := range args {
		if i > 0 {
			s += " "
		}
		s += a
	}
	return s + ")"
}

// envNote names a server's extra environment in a report row.
func envNote(env []string) string {
	if len(env) == 0 {
		return ""
	}
	return ", server with " + strings.Join(env, " ")
}
