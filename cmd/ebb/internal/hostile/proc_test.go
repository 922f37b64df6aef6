package hostile

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

// server is an `ebb serve` process under attack.
type server struct {
	t       *testing.T
	cmd     *exec.Cmd
	addr    string // the attacked listener
	monitor string // --metrics-addr: /metrics outside admission control
	log     *tail
	exited  chan struct{} // closed when the process has ended
	waitErr error         // set before exited is closed
}

var (
	listenRE  = regexp.MustCompile(`listening on (\S+)`)
	metricsRE = regexp.MustCompile(`metrics\s+http://(\S+)/metrics`)
)

// startServer runs `ebb serve` on a free loopback port with a separate
// monitoring listener, plus args, and kills it when the test ends.
func startServer(t *testing.T, args ...string) *server {
	t.Helper()
	return startServerEnv(t, nil, args...)
}

// startServerEnv is startServer with extra environment variables for the
// server process (GOMEMLIMIT, say).
func startServerEnv(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	all := append([]string{"serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--log-level", "error"}, args...)
	s := &server{t: t, log: newTail(64 * kib), exited: make(chan struct{})}
	s.cmd = exec.Command(ebbBinary(t), all...)
	if env != nil {
		s.cmd.Env = append(os.Environ(), env...)
	}
	s.cmd.Stderr = s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting ebb %s: %v", strings.Join(all, " "), err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)
	deadline := time.After(20 * time.Second)
	for s.addr == "" || s.monitor == "" {
		select {
		case <-s.log.changed:
		case <-s.exited:
			t.Fatalf("ebb serve exited before listening (%v):\n%s", s.waitErr, s.log)
		case <-deadline:
			t.Fatalf("ebb serve did not say where it listens within 20 s:\n%s", s.log)
		}
		out := s.log.String()
		if m := listenRE.FindStringSubmatch(out); m != nil {
			s.addr = m[1]
		}
		if m := metricsRE.FindStringSubmatch(out); m != nil {
			s.monitor = m[1]
		}
	}
	return s
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop kills the process if it still runs and waits for it.
func (s *server) stop() {
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// alive reports whether the process is still running.
func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// mustBeAlive fails the test if the server died, quoting the end of its
// stderr (a panic, an out-of-memory kill).
func (s *server) mustBeAlive() {
	s.t.Helper()
	if !s.alive() {
		s.t.Errorf("ebb serve died during the attack (%v); end of its stderr:\n%s", s.waitErr, s.log.last(3000))
	}
}

// fatalf fails the test at once. When the server ends within a second
// (an attacker's failure is often the first sign of its death), the
// message says so, with its panic.
func (s *server) fatalf(t *testing.T, format string, args ...any) {
	t.Helper()
	select {
	case <-s.exited:
		t.Fatalf(format+"; the server died (%v): %s", append(args, s.waitErr, s.panicLine())...)
	case <-time.After(time.Second):
		t.Fatalf(format, args...)
	}
}

// panicLine is the first line of a panic in the server's stderr, or its
// last line.
func (s *server) panicLine() string {
	out := strings.TrimSpace(s.log.String())
	if i := strings.Index(out, "panic: "); i >= 0 {
		line, _, _ := strings.Cut(out[i:], "\n")
		return line
	}
	return out[strings.LastIndex(out, "\n")+1:]
}

// rss returns the process's resident set size now and its peak (VmRSS and
// VmHWM from /proc/PID/status), in bytes; zeros once it has exited.
func (s *server) rss() (now, peak int64) { return procRSS(s.pid()) }

func procRSS(pid int) (now, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			now = v * kib
		case "VmHWM:":
			peak = v * kib
		}
	}
	return now, peak
}

// metric reads one gauge from the server's monitoring listener, or -1.
func (s *server) metric(name string) int64 {
	return getMetric(s.monitor, name)
}

func getMetric(addr, name string) int64 {
	cl := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4*mib))
	sc.Buffer(nil, 64*kib)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return int64(v)
			}
		}
	}
	return -1
}

// heap returns the server's heap objects bytes (live and not yet swept).
func (s *server) heap() int64 { return s.metric("ebb_process_heap_objects_bytes") }

// watch samples the server's RSS every 20 ms until stop is called, and
// calls abort once (from its goroutine) if the RSS passes ceiling: an
// attack that works is cut short before it can hurt the machine running
// the suite. stop returns the highest RSS seen, VmHWM included.
func (s *server) watch(ceiling int64, abort func()) (stop func() int64) {
	return watchPID(s.pid(), ceiling, abort)
}

func watchPID(pid int, ceiling int64, abort func()) (stop func() int64) {
	var peak atomic.Int64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		aborted := false
		for {
			now, hwm := procRSS(pid)
			peak.Store(max(peak.Load(), now, hwm))
			if !aborted && ceiling > 0 && now > ceiling {
				aborted = true
				abort()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() int64 {
		once.Do(func() { close(done); <-finished })
		now, hwm := procRSS(pid)
		return max(peak.Load(), now, hwm)
	}
}

// churn makes the server allocate and drop about total bytes by echoing
// 1 MiB messages on one raw connection (unmasked by a zero key, so the
// test spends no CPU on them), which runs its garbage collector: the heap
// measured after it is what the server really keeps, not garbage waiting
// for a collection that an idle server may not start for minutes.
func (s *server) churn(ctx context.Context, total int) error {
	c, err := upgrade(ctx, s.addr, "/echo", "127.0.0.9", false)
	if err != nil {
		return fmt.Errorf("churn: %w", err)
	}
	defer c.Close()
	msg := append(frameHeader(true, 0, opBinary, mib, &[4]byte{}), make([]byte, mib)...)
	n := total / mib
	read := make(chan error, 1)
	go func() {
		// Each echo is a header (4 or 10 bytes) and 1 MiB of payload.
		want := int64(n) * mib
		var got int64
		for got < want {
			f, err := c.readFrame(0)
			if err != nil {
				read <- err
				return
			}
			got += int64(f.n)
		}
		read <- nil
	}()
	for range n {
		if ctx.Err() != nil {
			break
		}
		if _, err := c.Write(msg); err != nil {
			break
		}
	}
	select {
	case err := <-read:
		return err
	case <-ctx.Done():
		c.Close()
		<-read
		return ctx.Err()
	}
}

// settledHeap churns then reads the heap: the memory the server holds.
func (s *server) settledHeap(t *testing.T) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.churn(ctx, 256*mib); err != nil {
		t.Logf("churning the server's heap: %v", err)
	}
	return s.heap()
}

// tail is an io.Writer that keeps the last max bytes written to it and
// signals every write on changed (for the address lines at start-up).
type tail struct {
	mu      sync.Mutex
	b       []byte
	max     int
	changed chan struct{}
}

func newTail(max int) *tail { return &tail{max: max, changed: make(chan struct{}, 1)} }

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = append(w.b[:0], w.b[len(w.b)-w.max:]...)
	}
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

func (w *tail) last(n int) string {
	s := w.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// exitStatus describes how a process ended, for messages.
func exitStatus(ps *os.ProcessState) string {
	if ps == nil {
		return "still running"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ps.ExitCode())
}

// maxRSS is a finished process's peak resident set (getrusage), in bytes.
func maxRSS(ps *os.ProcessState) int64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * kib // kilobytes on Linux
	}
	return 0
}

// mb formats a byte count in MiB for messages and the report.
func mb(n int64) string {
	if n < 0 {
		return "−" + mb(-n)
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/mib)
}

// size formats a byte count in KiB below 10 MiB, in MiB above.
func size(n int64) string {
	switch {
	case n < 0:
		return "−" + size(-n)
	case n < 10*mib:
		return fmt.Sprintf("%.0f KiB", float64(n)/kib)
	}
	return mb(n)
}
