package hostile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Attacks that already held when the issue was filed: they stay in the
// suite so that they keep holding.

// Figures of TestHostileBadHandshakes.
const (
	badHandshakeWorkers = 2 // per kind of bad request, each sending one after another
	badHandshakeWindow  = 3 * time.Second
	// badHandshakeAnswer bounds how long the server takes to answer a bad
	// request: it has all of it, so at once; a second leaves room for a
	// loaded machine.
	badHandshakeAnswer = time.Second
	badHandshakeGrowth = 32 * mib
)

// TestHostileBadHandshakes: requests that are not valid upgrades (garbage,
// oversized headers, a wrong version, a missing or malformed key, another
// method, a foreign origin), sent one after another by several
// connections per kind for a few seconds, each get their HTTP error at
// once, and honest clients are not disturbed. A 503 from the overload
// guard is a correct answer too: net/http holds a connection whose
// request was too large for half a second before closing it (to avoid a
// reset), so a flood from one address can fill that address's pending
// places.
func TestHostileBadHandshakes(t *testing.T) {
	heavy(t)
	f := report(t, fmt.Sprintf("bad handshakes: 9 kinds × %d connections sending them back to back", badHandshakeWorkers),
		fmt.Sprintf("each answered with its 4xx (or the guard's 503) within %s; RSS +%s; honest echoes 100 %%", badHandshakeAnswer, mb(badHandshakeGrowth)))
	srv := startServer(t)
	a := begin(t, srv, f)
	valid := func(drop, add string) string {
		var b strings.Builder
		for _, line := range strings.SplitAfter(upgradeRequest(srv.addr, "/echo"), "\r\n") {
			if drop == "" || !strings.HasPrefix(line, drop) {
				b.WriteString(line)
			}
		}
		s := b.String()
		return s[:len(s)-2] + add + "\r\n"
	}
	kinds := []struct {
		name    string
		request string
		status  int
	}{
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", http.StatusBadRequest},
		{"request line without end", "GET /" + strings.Repeat("a", 128*kib), http.StatusRequestHeaderFieldsTooLarge},
		{"128 KiB header", valid("", "X-Pad: "+strings.Repeat("a", 128*kib)+"\r\n"), http.StatusRequestHeaderFieldsTooLarge},
		{"version 8", valid("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8\r\n"), http.StatusUpgradeRequired},
		{"no key", valid("Sec-WebSocket-Key", ""), http.StatusBadRequest},
		{"short key", valid("Sec-WebSocket-Key", "Sec-WebSocket-Key: c2hvcnQ=\r\n"), http.StatusBadRequest},
		{"no Upgrade header", valid("Upgrade", ""), http.StatusUpgradeRequired},
		{"POST", strings.Replace(valid("", ""), "GET", "POST", 1), http.StatusMethodNotAllowed},
		{"foreign origin", valid("", "Origin: http://evil.example\r\n"), http.StatusForbidden},
	}
	type tally struct {
		mu       sync.Mutex
		byStatus map[int]int
		slow     int
		first    string // the first wrong answer
	}
	tallies := make([]tally, len(kinds))
	ctx, cancel := context.WithTimeout(a.ctx, badHandshakeWindow)
	defer cancel()
	var wg sync.WaitGroup
	for i, k := range kinds {
		tl := &tallies[i]
		tl.byStatus = map[int]int{}
		for range badHandshakeWorkers {
			wg.Go(func() {
				for ctx.Err() == nil {
					start := time.Now()
					status, err := badRequest(a.ctx, srv.addr, k.request)
					took := time.Since(start)
					tl.mu.Lock()
					tl.byStatus[status]++
					if took > badHandshakeAnswer {
						tl.slow++
					}
					if tl.first == "" && status != k.status && status != http.StatusServiceUnavailable {
						tl.first = fmt.Sprintf("HTTP %d (error %v) after %s", status, err, round(took))
					}
					tl.mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	a.end()
	var counts []string
	for i, k := range kinds {
		tl := &tallies[i]
		counts = append(counts, fmt.Sprintf("%s %v", k.name, tl.byStatus))
		switch {
		case tl.first != "":
			t.Errorf("%s: %s; want HTTP %d (or the guard's 503) within %s", k.name, tl.first, k.status, badHandshakeAnswer)
		case tl.byStatus[k.status] == 0:
			t.Errorf("%s: never answered HTTP %d (answers by status: %v)", k.name, k.status, tl.byStatus)
		case tl.slow > 0:
			t.Errorf("%s: %d answers took longer than %s", k.name, tl.slow, badHandshakeAnswer)
		}
	}
	f.note(t, "answers by status: %s", strings.Join(counts, "; "))
	a.checkHonest(honestMin)
	a.checkGrowth(badHandshakeGrowth, "a bad request is answered and forgotten")
}

// badRequest sends raw bytes from 127.0.0.1 and returns the HTTP status of
// the answer.
func badRequest(ctx context.Context, addr, request string) (int, error) {
	c, err := dialFrom(ctx, "", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * badHandshakeAnswer))
	// The server may answer and close before it has read all of a
	// long request: write on the side.
	go io.WriteString(c, request)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// framingAnswer bounds how long the server takes to fail a connection
// after a framing violation: the frame says it all, so at once.
const framingAnswer = time.Second

// TestHostileFramingViolations: frames that break RFC 6455 each end the
// connection at once with the close code the RFC gives for them (1002
// Protocol Error, 1007 for bad UTF-8, 1009 for a message over the read
// limit), and the TCP connection with it.
func TestHostileFramingViolations(t *testing.T) {
	heavy(t)
	f := report(t, "framing violations (18 kinds)",
		fmt.Sprintf("Close with the RFC's code within %s, then TCP closed; honest echoes 100 %%", framingAnswer))
	srv := startServer(t)
	a := begin(t, srv, f)
	text := func(fin bool, p string) []byte { return clientFrame(fin, 0, opText, []byte(p)) }
	closeWith := func(p []byte) []byte { return clientFrame(true, 0, opClose, p) }
	t.Run("cases", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			frames [][]byte
			code   int
		}{
			{"unmasked frame", [][]byte{append(frameHeader(true, 0, opText, 2, nil), "hi"...)}, 1002},
			{"RSV1 without an extension", [][]byte{clientFrame(true, rsv1, opText, []byte("hi"))}, 1002},
			{"RSV2", [][]byte{clientFrame(true, rsv2, opText, []byte("hi"))}, 1002},
			{"RSV3", [][]byte{clientFrame(true, rsv3, opBinary, []byte("hi"))}, 1002},
			{"reserved data opcode 0x3", [][]byte{clientFrame(true, 0, 0x3, []byte("hi"))}, 1002},
			{"reserved control opcode 0xB", [][]byte{clientFrame(true, 0, 0xB, nil)}, 1002},
			{"ping of 126 bytes", [][]byte{clientFrame(true, 0, opPing, make([]byte, 126))}, 1002},
			{"fragmented ping", [][]byte{clientFrame(false, 0, opPing, []byte("a")), clientFrame(true, 0, opContinuation, []byte("b"))}, 1002},
			{"continuation without a message", [][]byte{clientFrame(true, 0, opContinuation, []byte("hi"))}, 1002},
			{"new message inside a fragmented one", [][]byte{text(false, "a"), text(true, "b")}, 1002},
			{"invalid UTF-8", [][]byte{text(true, "a\xffb")}, 1007},
			{"invalid UTF-8 in the first fragment", [][]byte{text(false, "ok \xc0\xaf")}, 1007},
			{"close with 1 byte", [][]byte{closeWith([]byte{3})}, 1002},
			{"close with code 1005", [][]byte{closeWith(closePayload(1005, ""))}, 1002},
			{"close with code 999", [][]byte{closeWith(closePayload(999, ""))}, 1002},
			{"close with invalid UTF-8 reason", [][]byte{closeWith(closePayload(1000, "\xff"))}, 1007},
			{"length with its top bit set", [][]byte{append(frameHeader(true, 0, opBinary, 1<<63, &mask), 1, 2, 3)}, 1002},
			{"message over the read limit", [][]byte{frameHeader(true, 0, opBinary, 32*mib+1, &mask)}, 1009},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// The server lingers after failing a connection; the cases
				// wait for that side by side.
				t.Parallel()
				c, err := upgrade(a.ctx, srv.addr, "/echo", "127.0.0.1", false)
				if err != nil {
					srv.fatalf(t, "attacker's handshake: %v", err)
				}
				defer c.Close()
				c.Write(bytes.Join(tc.frames, nil))
				cf, err := c.awaitClose(2 * framingAnswer)
				switch {
				case cf.code != tc.code:
					t.Errorf("server answered Close %d %q (read error %v); want %d", cf.code, cf.reason, err, tc.code)
				case cf.after > framingAnswer:
					t.Errorf("Close %d came after %s; want within %s", cf.code, round(cf.after), framingAnswer)
				case !cf.eof:
					t.Errorf("Close %d came, but the server did not close the TCP connection within %s", cf.code, 2*framingAnswer)
				}
			})
		}
	})
	a.end()
	a.checkHonest(honestMin)
}

// Figures of TestHostilePingFlood.
const (
	pingFlooders = 4
	pingWindow   = 3 * time.Second
	// pingGrowth bounds the RSS growth: a pong is answered from a
	// connection's fixed 125-byte control buffer, and a flooder that does
	// not read its pongs is slowed down by TCP, not buffered.
	pingGrowth = 32 * mib
)

// TestHostilePingFlood: connections send 125-byte pings as fast as they
// can, reading their pongs or never reading them.
func TestHostilePingFlood(t *testing.T) {
	heavy(t)
	for _, reads := range []bool{true, false} {
		name := map[bool]string{true: "pongs read", false: "pongs never read"}[reads]
		t.Run(name, func(t *testing.T) {
			f := report(t, fmt.Sprintf("ping flood: %d connections, 125-byte pings, %s", pingFlooders, name),
				fmt.Sprintf("RSS +%s; honest echoes 100 %%", mb(pingGrowth)))
			srv := startServer(t)
			a := begin(t, srv, f)
			ping := bytes.Repeat(clientFrame(true, 0, opPing, make([]byte, 125)), 256)
			var sent atomic.Int64
			var wg sync.WaitGroup
			for _, c := range a.echoConns(pingFlooders) {
				if reads {
					wg.Go(func() { io.Copy(io.Discard, c) })
				}
				wg.Go(func() {
					for a.ctx.Err() == nil {
						n, err := c.Write(ping)
						sent.Add(int64(n))
						if err != nil {
							return
						}
					}
				})
			}
			a.hold(pingWindow)
			a.end()
			a.cancel()
			wg.Wait()
			f.note(t, "%d pings sent", sent.Load()/int64(len(ping)/256))
			a.checkHonest(honestMin)
			a.checkGrowth(pingGrowth, "pongs come from a fixed buffer; TCP slows a flooder down")
		})
	}
}

// Figures of TestHostileSlowReader.
const (
	slowReaders       = 16
	slowReaderMessage = 64 * kib
	slowReaderWindow  = 3 * time.Second
	// slowReaderGrowth bounds the RSS growth: an echo connection whose
	// peer does not read blocks in its write and stops reading, so TCP
	// holds the rest; each keeps at most its 64 KiB echo buffer and the
	// message being written.
	slowReaderGrowth = 32 * mib
)

// TestHostileSlowReader: connections send 64 KiB messages to /echo as
// fast as they can and never read the echoes.
func TestHostileSlowReader(t *testing.T) {
	heavy(t)
	f := report(t, fmt.Sprintf("slow readers: %d connections sending 64 KiB messages to /echo, never reading", slowReaders),
		fmt.Sprintf("RSS +%s; honest echoes 100 %%", mb(slowReaderGrowth)))
	srv := startServer(t)
	a := begin(t, srv, f)
	msg := append(frameHeader(true, 0, opBinary, slowReaderMessage, &[4]byte{}), make([]byte, slowReaderMessage)...)
	var sent atomic.Int64
	var wg sync.WaitGroup
	for _, c := range a.echoConns(slowReaders) {
		wg.Go(func() {
			for a.ctx.Err() == nil {
				if _, err := c.Write(msg); err != nil {
					return
				}
				sent.Add(1)
			}
		})
	}
	a.hold(slowReaderWindow)
	a.end()
	a.cancel()
	wg.Wait()
	f.note(t, "%d messages sent before TCP stopped the writers", sent.Load())
	a.checkHonest(honestMin)
	a.checkGrowth(slowReaderGrowth, "an echo whose peer does not read stops reading; TCP holds the rest")
}

// Figures of TestHostileBombPerMessage.
const (
	bombPerMessageCount = 4
	// bombRefusal bounds how long inflating to the read limit takes
	// before the server refuses the message with 1009.
	bombRefusal = 3 * time.Second
	// bombPerMessageGrowth bounds the RSS growth for one bomb at a time:
	// the message's buffer grows to the 32 MiB read limit before the
	// message is refused, and each doubling leaves the previous buffer to
	// the collector (as much again); plus 32 MiB of slack.
	bombPerMessageGrowth = 2*32*mib + 32*mib
)

// TestHostileBombPerMessage: one compressed message of 64 KiB that would
// inflate to 64 MiB, twice the read limit, is refused with 1009 as the
// inflated size passes the limit; the attackers come one after another.
func TestHostileBombPerMessage(t *testing.T) {
	heavy(t)
	f := report(t, fmt.Sprintf("%d deflate bombs one after another, each inflating to 64 MiB (read limit 32 MiB)", bombPerMessageCount),
		fmt.Sprintf("Close 1009 within %s; RSS +%s; honest echoes 100 %%", bombRefusal, mb(bombPerMessageGrowth)))
	srv := startServer(t, "--compress")
	a := begin(t, srv, f)
	bomb := compressedMessage(opBinary, deflateBomb(64))
	var worst time.Duration
	for i := range bombPerMessageCount {
		c, err := upgrade(a.ctx, srv.addr, "/echo", "127.0.0.1", true)
		if err != nil {
			srv.fatalf(t, "attacker's handshake: %v", err)
		}
		c.Write(bomb)
		cf, err := c.awaitClose(2 * bombRefusal)
		c.Close()
		if cf.code != 1009 || cf.after > bombRefusal {
			t.Errorf("bomb %d: Close %d %q after %s (read error %v); want 1009 within %s", i, cf.code, cf.reason, round(cf.after), err, bombRefusal)
		}
		worst = max(worst, cf.after)
	}
	a.end()
	f.note(t, "slowest 1009: %s", round(worst))
	a.checkHonest(honestMin)
	a.checkGrowth(bombPerMessageGrowth, "a message is refused as its inflated size passes the read limit")
}
