package hostile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/websocket"
)

// The rows of the issue about ebb's own clients (`ebb connect`, `ebb
// probe`) facing a hostile server: one that never answers, one that sends
// headers without end, one that floods a client whose output nobody reads,
// and retry hints meant to confuse.

// rawServer listens on a loopback port and runs handle on every
// connection, in a goroutine of its own, until the test ends; then it
// closes the listener and the connections and waits for the handlers.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest reads an upgrade request's head from c and returns the
// Sec-WebSocket-Accept value that answers it.
func readRequest(c net.Conn) (*bufio.Reader, string, error) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, "", err
	}
	return br, websocket.AcceptKey(req.Header.Get("Sec-WebSocket-Key")), nil
}

// switching is a 101 response head without its final empty line.
func switching(accept string) string {
	return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + "\r\n"
}

// client is an ebb process run against a hostile server.
type client struct {
	cmd    *exec.Cmd
	stdout *tail // when the caller gives no stdout of its own
	stderr *tail
	start  time.Time
	done   chan struct{} // closed when it has ended
	took   time.Duration
	err    error
}

// startClient runs ebb with args; stdin and stdout are the caller's (nil:
// empty input, output kept in c.stdout). The process is killed when the
// test ends.
func startClient(t *testing.T, stdin io.Reader, stdout io.Writer, args ...string) *client {
	t.Helper()
	c := &client{stderr: newTail(16 * kib), done: make(chan struct{})}
	c.cmd = exec.Command(ebbBinary(t), args...)
	c.cmd.Stdin = stdin
	c.cmd.Stdout = stdout
	if stdout == nil {
		c.stdout = newTail(16 * kib)
		c.cmd.Stdout = c.stdout
	}
	c.cmd.Stderr = c.stderr
	c.start = time.Now()
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting ebb %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		c.err = c.cmd.Wait()
		c.took = time.Since(c.start)
		close(c.done)
	}()
	t.Cleanup(func() { c.kill() })
	return c
}

// wait waits up to d for the client to end on its own, and kills it
// after; it reports whether it ended on its own.
func (c *client) wait(d time.Duration) bool {
	select {
	case <-c.done:
		return true
	case <-time.After(d):
		c.kill()
		return false
	}
}

func (c *client) kill() {
	select {
	case <-c.done:
	default:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// stderrLine is the client's first line of error output, or else the
// last line of its kept output, for messages.
func (c *client) stderrLine() string {
	s, _, _ := strings.Cut(strings.TrimSpace(c.stderr.String()), "\n")
	if s == "" && c.stdout != nil {
		out := strings.TrimSpace(c.stdout.String())
		s = strings.TrimSpace(out[strings.LastIndex(out, "\n")+1:])
	}
	return s
}

// Bounds of TestHostileClientBlackHole.
const (
	// blackHoleTimeout is the --timeout the test gives; the client must
	// have given up within it plus blackHoleSlack.
	blackHoleTimeout = 2 * time.Second
	blackHoleSlack   = 2 * time.Second
	// blackHoleDefault bounds a client run without --timeout: a handshake
	// the user did not bound must still end. The default handshake
	// timeout of probe (and of connect, with the fix) is 10 s; 5 s of
	// slack.
	blackHoleDefault = 15 * time.Second
)

// TestHostileClientBlackHole: a server accepts the TCP connection and
// never answers. Before the fix `ebb connect` had no handshake deadline
// and hung until killed. `ebb probe`, bounded by its --timeout, is the
// control.
func TestHostileClientBlackHole(t *testing.T) {
	heavy(t)
	addr := rawServer(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	url := "ws://" + addr + "/echo"
	for _, tc := range []struct {
		name  string
		args  []string
		bound time.Duration
	}{
		{"connect --timeout", []string{"connect", "--timeout", blackHoleTimeout.String(), url}, blackHoleTimeout + blackHoleSlack},
		{"connect", []string{"connect", url}, blackHoleDefault},
		{"probe --timeout", []string{"probe", "--timeout", blackHoleTimeout.String(), url}, blackHoleTimeout + blackHoleSlack},
		{"probe", []string{"probe", url}, blackHoleDefault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := report(t, "server that accepts TCP and never answers: ebb "+strings.Join(tc.args[:len(tc.args)-1], " "),
				fmt.Sprintf("exits with status 1 within %s", tc.bound))
			t.Parallel()
			c := startClient(t, strings.NewReader("hello\n"), nil, tc.args...)
			if !c.wait(tc.bound) {
				f.note(t, "still waiting after %s (killed)", tc.bound)
				t.Fatalf("ebb %s was still waiting for the handshake after %s; want it to give up within %s", strings.Join(tc.args, " "), tc.bound, tc.bound)
			}
			f.note(t, "%s after %s: %s", exitStatus(c.cmd.ProcessState), round(c.took), c.stderrLine())
			if code := c.cmd.ProcessState.ExitCode(); code != 1 {
				t.Errorf("ebb %s: %s (%s); want exit status 1 (a failure, not a usage error)", strings.Join(tc.args, " "), exitStatus(c.cmd.ProcessState), c.stderrLine())
			}
		})
	}
}

// Figures of TestHostileClientHugeHeaders.
const (
	hugeHeaderBytes = 300 << 20
	// hugeHeaderRSS bounds the client's peak RSS: the websocket package
	// reads at most 1 MiB of response headers
	// (DefaultMaxResponseHeaderBytes); the rest is the ebb binary's own
	// footprint, about 20 MiB.
	hugeHeaderRSS = 48 * mib
	// hugeHeaderTime bounds how long the client may take to give up.
	hugeHeaderTime = 5 * time.Second
)

// TestHostileClientHugeHeaders: a server answers 101 and then sends 300
// MB of headers. Before the fix Dial's http.ReadResponse read them all:
// the client's RSS reached 339 MB.
func TestHostileClientHugeHeaders(t *testing.T) {
	heavy(t)
	addr := rawServer(t, func(c net.Conn) {
		defer c.Close()
		_, accept, err := readRequest(c)
		if err != nil {
			return
		}
		line := "X-Pad: " + strings.Repeat("a", 1016) + "\r\n" // 1 KiB
		chunk := []byte(strings.Repeat(line, 64))
		c.SetWriteDeadline(time.Now().Add(2 * hugeHeaderTime))
		if _, err := io.WriteString(c, switching(accept)); err != nil {
			return
		}
		for sent := 0; sent < hugeHeaderBytes; sent += len(chunk) {
			if _, err := c.Write(chunk); err != nil {
				return
			}
		}
		io.WriteString(c, "\r\n")
		io.Copy(io.Discard, c)
	})
	url := "ws://" + addr + "/echo"
	for _, cmd := range []string{"connect", "probe"} {
		t.Run(cmd, func(t *testing.T) {
			f := report(t, fmt.Sprintf("server answering 101 and then %d MB of headers: ebb %s", hugeHeaderBytes>>20, cmd),
				fmt.Sprintf("client fails within %s, peak RSS ≤ %s", hugeHeaderTime, mb(hugeHeaderRSS)))
			c := startClient(t, strings.NewReader("hello\n"), nil, cmd, url)
			ended := c.wait(4 * hugeHeaderTime)
			rss := maxRSS(c.cmd.ProcessState)
			f.note(t, "%s after %s, peak RSS %s: %s", exitStatus(c.cmd.ProcessState), round(c.took), mb(rss), c.stderrLine())
			switch {
			case !ended:
				t.Errorf("ebb %s still reading headers after %s (killed); want it to give up within %s", cmd, 4*hugeHeaderTime, hugeHeaderTime)
			case c.took > hugeHeaderTime:
				t.Errorf("ebb %s gave up after %s; want within %s", cmd, round(c.took), hugeHeaderTime)
			case c.cmd.ProcessState.ExitCode() != 1:
				t.Errorf("ebb %s: %s; want exit status 1 (handshake failed)", cmd, exitStatus(c.cmd.ProcessState))
			}
			if rss > hugeHeaderRSS {
				t.Errorf("ebb %s peaked at %s of RSS reading the headers; want at most %s (response headers are bounded)", cmd, mb(rss), mb(hugeHeaderRSS))
			}
		})
	}
}

// Figures of TestHostileClientSlowStdout.
const (
	slowStdoutMessage = 4 << 20
	slowStdoutWindow  = 4 * time.Second
	// slowStdoutRSS bounds the client's RSS while its output is not read:
	// one message being read (4 MiB), a bounded output queue and the
	// binary's own 20 MiB; before the fix connect queued every message
	// (1.08 GB).
	slowStdoutRSS = 96 * mib
)

// TestHostileClientSlowStdout: `ebb connect`'s standard output is a pipe
// nobody reads, and the server sends 4 MiB text messages as fast as it
// can. Before the fix connect queued every message it could not print:
// 1.08 GB.
func TestHostileClientSlowStdout(t *testing.T) {
	heavy(t)
	frame := append(frameHeader(true, 0, opText, slowStdoutMessage, nil), bytes.Repeat([]byte("a"), slowStdoutMessage)...)
	addr := rawServer(t, func(c net.Conn) {
		defer c.Close()
		_, accept, err := readRequest(c)
		if err != nil {
			return
		}
		if _, err := io.WriteString(c, switching(accept)+"\r\n"); err != nil {
			return
		}
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, c)
		}()
		// 300 messages are 1.2 GB: more than the window lets through
		// when the client holds on to everything.
		for range 300 {
			c.SetWriteDeadline(time.Now().Add(2 * slowStdoutWindow))
			if _, err := c.Write(frame); err != nil {
				break
			}
		}
		c.Close()
		<-drained
	})
	f := report(t, "ebb connect whose stdout is not read; the server sends 4 MiB messages",
		fmt.Sprintf("client RSS ≤ %s", mb(slowStdoutRSS)))
	stdinR, stdinW, err := os.Pipe() // input that never ends
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	defer stdinR.Close()
	stdoutR, stdoutW, err := os.Pipe() // output nobody reads
	if err != nil {
		t.Fatal(err)
	}
	defer stdoutR.Close()
	defer stdoutW.Close()
	c := startClient(t, stdinR, stdoutW, "connect", "ws://"+addr+"/echo")
	stop := watchPID(c.cmd.Process.Pid, 2*abortGrowth, c.kill)
	select {
	case <-c.done:
	case <-time.After(slowStdoutWindow):
	}
	peak := stop()
	c.kill()
	peak = max(peak, maxRSS(c.cmd.ProcessState))
	f.note(t, "client peak RSS %s over %s", mb(peak), slowStdoutWindow)
	if peak > slowStdoutRSS {
		t.Errorf("ebb connect with unread stdout peaked at %s of RSS in %s; want at most %s (output is bounded; a full pipe must slow the socket down)", mb(peak), slowStdoutWindow, mb(slowStdoutRSS))
	}
}

// TestHostileClientRetryHint: a server refuses with 1013 and a retry hint
// meant to confuse. Before the fix the hint parser read the digits it
// could and stopped: retry-after=1e308 came out as 1 s, 4.5abc as 4.5 s.
// A hint that is not plain decimal seconds within 24 h is no hint at all;
// "4.5" is the control that a real hint is seen.
func TestHostileClientRetryHint(t *testing.T) {
	heavy(t)
	for _, tc := range []struct {
		hint string
		want float64 // seconds; 0: no hint
	}{
		{"4.5", 4.5},
		{"1e308", 0},
		{"1e3", 0},
		{"4.5abc", 0},
		{"86401", 0},
		{"-1", 0},
		{"inf", 0},
		{"NaN", 0},
	} {
		t.Run(tc.hint, func(t *testing.T) {
			reason := "server busy; retry-after=" + tc.hint
			want := "no hint"
			if tc.want > 0 {
				want = fmt.Sprintf("hint %gs", tc.want)
			}
			f := report(t, fmt.Sprintf("1013 with %q: ebb connect", reason), want)
			t.Parallel()
			addr := rawServer(t, func(c net.Conn) {
				defer c.Close()
				br, accept, err := readRequest(c)
				if err != nil {
					return
				}
				// The Close comes with the 101, as from a server that
				// upgrades only to refuse (package shed does).
				refusal := switching(accept) + "\r\n" + string(frameHeader(true, 0, opClose, uint64(2+len(reason)), nil)) + string(closePayload(1013, reason))
				io.WriteString(c, refusal)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, br)
			})
			var out bytes.Buffer
			c := startClient(t, strings.NewReader(""), &out, "connect", "--json", "ws://"+addr+"/echo")
			if !c.wait(10 * time.Second) {
				t.Fatalf("ebb connect did not end within 10 s after a 1013")
			}
			var closed map[string]any
			for _, line := range strings.Split(out.String(), "\n") {
				var ev map[string]any
				if json.Unmarshal([]byte(line), &ev) == nil && ev["event"] == "closed" {
					closed = ev
				}
			}
			if closed == nil {
				t.Fatalf("no closed event in ebb connect --json's output:\n%s\nstderr: %s", out.String(), c.stderr)
			}
			got, has := closed["retry_after_s"].(float64)
			f.note(t, "closed %v, retry_after_s %v", closed["code"], closed["retry_after_s"])
			switch {
			case tc.want == 0 && has:
				t.Errorf("reason %q read as a hint of %gs; want no hint (not plain decimal seconds within 24 h)", reason, got)
			case tc.want > 0 && (!has || got != tc.want):
				t.Errorf("reason %q: hint %v; want %gs", reason, closed["retry_after_s"], tc.want)
			}
		})
	}
}
