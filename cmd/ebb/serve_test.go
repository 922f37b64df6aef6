package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

var (
	buildOnce sync.Once
	ebbBinary string
	buildErr  error
)

// binary builds ebb once per test run, for tests that need a real process
// (signals, exit status).
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ebb-test-bin")
		if err != nil {
			buildErr = err
			return
		}
		ebbBinary = filepath.Join(dir, "ebb")
		out, err := exec.Command("go", "build", "-o", ebbBinary, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ebbBinary
}

// startServe runs `ebb serve` on a free port and returns its address and
// the process; the process is killed when the test ends if still running.
func startServe(t *testing.T, args ...string) (string, *exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	log := &lockedBuffer{}
	br := bufio.NewReader(stderr)
	addrRE := regexp.MustCompile(`listening on (\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		line, err := br.ReadString('\n')
		log.WriteString(line)
		if m := addrRE.FindStringSubmatch(line); m != nil {
			go io.Copy(log, br)
			return m[1], cmd, log
		}
		if err != nil {
			t.Fatalf("ebb serve exited before listening: %v\n%s", err, log.String())
		}
	}
	t.Fatalf("ebb serve did not say where it listens:\n%s", log.String())
	return "", nil, nil
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) WriteString(s string) { l.Write([]byte(s)) }
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeAdmission is issue 5's integration test: a limit of 50, 200
// clients at once: exactly 150 get 1013 with a parsable, spread hint, the
// 50 admitted keep echoing, and nothing is left after they leave.
func TestServeAdmission(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process and 200 clients")
	}
	addr, _, log := startServe(t, "--max-conns", "50")
	const clients = 200
	type outcome struct {
		conn *websocket.Conn
		code closecode.Code
		hint time.Duration
		err  error
	}
	results := make(chan outcome, clients)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", nil)
			var refused *websocket.CloseError
			if errors.As(err, &refused) {
				// Upgraded and closed at once: Dial reports the refusal.
				hint, _ := closecode.ParseRetryHint(refused.Reason)
				results <- outcome{code: refused.Code, hint: hint}
				return
			}
			if err != nil {
				results <- outcome{err: err}
				return
			}
			// An admitted client's first echo proves it is in; a refused one
			// whose Close frame came later reads the 1013 instead.
			if err := c.Write(ctx, websocket.MessageText, []byte("first")); err != nil {
				var ce *websocket.CloseError
				if !errors.As(c.Err(), &ce) {
					results <- outcome{err: err}
					return
				}
			}
			_, _, err = c.Read(ctx)
			if err == nil {
				results <- outcome{conn: c}
				return
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				results <- outcome{err: err}
				return
			}
			hint, _ := closecode.ParseRetryHint(ce.Reason)
			results <- outcome{code: ce.Code, hint: hint}
		})
	}
	close(start)
	wg.Wait()
	close(results)
	var admitted []*websocket.Conn
	hints := map[time.Duration]int{}
	refused := 0
	for r := range results {
		switch {
		case r.err != nil:
			t.Errorf("client failed: %v", r.err)
		case r.conn != nil:
			admitted = append(admitted, r.conn)
		case r.code == closecode.TryAgainLater && r.hint > 0:
			refused++
			hints[r.hint]++
		default:
			t.Errorf("client closed with %v, want 1013 with a retry-after hint", r.code)
		}
	}
	if len(admitted) != 50 || refused != 150 {
		t.Fatalf("%d admitted and %d refused with 1013, want 50 and 150\n%s", len(admitted), refused, log.String())
	}
	if len(hints) < 10 {
		t.Errorf("only %d distinct hints among 150 refusals: a refused crowd would return in step", len(hints))
	}
	// The admitted keep echoing.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for round := range 5 {
		for i, c := range admitted {
			msg := fmt.Sprintf("round %d client %d", round, i)
			if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			if _, p, err := c.Read(ctx); err != nil || string(p) != msg {
				t.Fatalf("echo %q: %q %v", msg, p, err)
			}
		}
	}
	for _, c := range admitted {
		c.Close(closecode.NormalClosure, "")
	}
	// Nothing leaks: the server counts no connection left.
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(scrape(t, addr), "\nebb_connections 0\n")
	}, "server still counts connections after every client left")
}

// TestServeDrainOnSIGTERM is issue 5's drain test: 500 connected clients,
// SIGTERM: every client receives 1012 within the window, spread over it,
// and the process exits cleanly.
func TestServeDrainOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process and 500 clients")
	}
	const clients = 500
	window := 3 * time.Second
	addr, cmd, log := startServe(t, "--drain-window", window.String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := make([]*websocket.Conn, clients)
	var wg sync.WaitGroup
	// At most 16 handshakes at a time: 500 at once from one address is
	// what the accept loop's per-address share of pending places refuses
	// (503) on a busy machine, and this test is about the drain.
	sem := make(chan struct{}, 16)
	for i := range conns {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", nil)
			if err != nil {
				t.Errorf("dial: %v", err)
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	waitFor(t, 10*time.Second, func() bool {
		return strings.Contains(scrape(t, addr), fmt.Sprintf("\nebb_connections %d\n", clients))
	}, "server does not count every client")
	type got struct {
		code closecode.Code
		at   time.Duration
	}
	gots := make(chan got, clients)
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		wg.Go(func() {
			_, _, err := c.Read(ctx)
			gots <- got{websocket.CloseStatus(err), time.Since(sent)}
		})
	}
	wg.Wait()
	close(gots)
	var first, last time.Duration = time.Hour, 0
	for g := range gots {
		if g.code != closecode.ServiceRestart {
			t.Fatalf("client got %v, want 1012", g.code)
		}
		first, last = min(first, g.at), max(last, g.at)
	}
	if last > window+2*time.Second {
		t.Errorf("last 1012 after %v, want within the %v window", last, window)
	}
	if last-first < window/2 {
		t.Errorf("1012s spread over %v only (%v–%v), want them spread over the %v window", last-first, first, last, window)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ebb serve exited with %v after SIGTERM\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), fmt.Sprintf("%d drained", clients)) {
		t.Errorf("exit report does not count %d drained:\n%s", clients, log.String())
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestServeCompressionFlags checks that the compression flags reach the
// handshake: --no-context-takeover and --window-bits must show in what the
// server answers.
func TestServeCompressionFlags(t *testing.T) {
	t.Parallel()
	cfg, err := (&serveOptions{compress: true, noTakeover: true, windowBits: 10, compressLevel: 3, readLimit: 1, drainCode: 1012, shedFraction: 0.5, broadcastQueue: 1, logLevel: "info"}).config(&env{stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Compression
	if c == nil || c.Level != 3 || !c.ServerNoContextTakeover || !c.ClientNoContextTakeover || c.ServerMaxWindowBits != 10 {
		t.Fatalf("compression options = %+v, want level 3, no context takeover both ways, 10 window bits", c)
	}
}

// TestServeClusterFlagMistakes: a wrong combination of the cluster flags
// is a usage error, told in one line as every command's are.
func TestServeClusterFlagMistakes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--join", "nats-route://127.0.0.1:6222"}, "--join needs --cluster NAME"},
		{[]string{"--nats", "nats://127.0.0.1:4222"}, "--nats needs --cluster NAME"},
		{[]string{"--node", "a"}, "--node needs --cluster NAME"},
		{[]string{"--cluster-max-conns", "10"}, "--cluster-max-conns needs --cluster NAME"},
		{[]string{"--cluster", "a", "--nats", "nats://127.0.0.1:4222", "--join", "127.0.0.1:6222"}, "--join configures the embedded NATS, and --nats uses an existing one"},
		{[]string{"--cluster", "a", "--nats", "nats://127.0.0.1:4222", "--store", "/tmp/x"}, "--store configures the embedded NATS"},
		{[]string{"--cluster", "a b"}, `--cluster "a b": want 1 to 64 letters`},
		{[]string{"--cluster", "a", "--node", "n.1"}, `--node "n.1": want 1 to 64 letters`},
		{[]string{"--cluster", "a", "--cluster-per-ip"}, "--cluster-per-ip needs --max-conns-per-ip N"},
		{[]string{"--cluster", "a", "--join", "10.1.2.3:6222"}, "--join 10.1.2.3:6222 is on another host: give --cluster-addr HOST:PORT"},
		{[]string{"--cluster", "a", "--join", "nats-route://nohost"}, "want a route URL such as nats-route://10.0.0.1:6222"},
		{[]string{"--cluster", "a", "--cluster-addr", "6222"}, `--cluster-addr "6222": want host:port`},
		{[]string{"--cluster", "a", "--cluster-max-conns", "-1"}, "--cluster-max-conns -1: want 0"},
		{[]string{"--cluster", "a", "--cluster-size", "-2"}, "--cluster-size -2: want 0"},
		{[]string{"--balancer", "least-conn"}, "--balancer needs --cluster NAME"},
		{[]string{"--cluster", "a", "--balancer", "leastconn"}, `--balancer "leastconn": want even or least-conn`},
		{[]string{"--drain-delay", "-1s"}, "--drain-delay -1s: want 0 or a positive duration"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, append([]string{"serve", "--addr", "127.0.0.1:0"}, tt.args...)...)
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if r.code != exitUsage || len(lines) != 2 || lines[0] != "ebb serve: "+lines[0][len("ebb serve: "):] ||
				!strings.Contains(lines[0], tt.want) || lines[1] != "Run 'ebb serve --help' for usage." || r.stdout != "" {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 2 and one line with %q, then the --help pointer", r.code, r.stderr, tt.want)
			}
		})
	}
}

// TestServeClusterJoin runs `ebb serve --cluster` twice in-process: the
// first prints the route URL to --join, the second joins it, each sees
// the other, and both drain and exit 0 on interrupt.
func TestServeClusterJoin(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two cluster nodes")
	}
	type proc struct {
		stderr *lockedBuffer
		done   chan int
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	startProc := func(args ...string) *proc {
		p := &proc{stderr: &lockedBuffer{}, done: make(chan int, 1)}
		go func() {
			var out bytes.Buffer
			p.done <- run(ctx, append([]string{"serve", "--addr", "127.0.0.1:0", "--log-level", "warn"}, args...), strings.NewReader(""), &out, p.stderr)
		}()
		return p
	}
	waitLine := func(p *proc, re *regexp.Regexp) []string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
				return m
			}
			select {
			case code := <-p.done:
				t.Fatalf("ebb serve exited with %d:\n%s", code, p.stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		t.Fatalf("no line matching %v:\n%s", re, p.stderr.String())
		return nil
	}
	seed := startProc("--cluster", "cli", "--node", "seed", "--cluster-addr", "127.0.0.1:0", "--store", t.TempDir())
	m := waitLine(seed, regexp.MustCompile(`join\s+further nodes: --cluster cli --join (nats-route://\S+)`))
	route := m[1]
	seedAddr := waitLine(seed, regexp.MustCompile(`listening on (\S+)`))[1]
	if !strings.Contains(seed.stderr.String(), "cluster    cli, node seed, embedded NATS nats://") {
		t.Errorf("the seed does not describe its node:\n%s", seed.stderr.String())
	}
	other := startProc("--cluster", "cli", "--node", "second", "--join", route)
	waitLine(other, regexp.MustCompile(`cluster\s+cli, node second`))
	otherAddr := waitLine(other, regexp.MustCompile(`listening on (\S+)`))[1]
	for _, addr := range []string{seedAddr, otherAddr} {
		waitFor(t, 15*time.Second, func() bool {
			return strings.Contains(scrape(t, addr), "\nebb_cluster_members{state=\"serving\"} 2\n")
		}, "the nodes do not see each other serving")
	}
	// Both are interrupted at once: one takes the drain turn, the other
	// sees it draining and, with no node left to take its clients, does
	// not wait for a turn.
	cancel()
	turns := 0
	for _, p := range []*proc{other, seed} {
		select {
		case code := <-p.done:
			if code != exitOK {
				t.Errorf("exit %d after the interrupt, want 0:\n%s", code, p.stderr.String())
			}
			if !strings.Contains(p.stderr.String(), "ebb serve: draining: closing 0 connections") || !strings.Contains(p.stderr.String(), "ebb serve: stopped:") {
				t.Errorf("the drain's progress is missing:\n%s", p.stderr.String())
			}
			if strings.Contains(p.stderr.String(), "ebb serve: draining: took the drain turn") {
				turns++
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("ebb serve did not stop after the interrupt:\n%s", p.stderr.String())
		}
	}
	if turns != 1 {
		t.Errorf("%d nodes took the drain turn, want 1:\n%s\n%s", turns, seed.stderr.String(), other.stderr.String())
	}
}
