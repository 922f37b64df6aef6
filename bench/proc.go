package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serverProc is one library's echo server running in its own process.
type serverProc struct {
	lib string
	child
	ws    string // host:port of the WebSocket listener
	stats string // host:port of the stats/pprof listener
}

// pinned reports whether the machine has two cores to split between the
// server (core 0) and the client (core 1).
func pinned() bool { return !pinDisabled && runtime.NumCPU() >= 2 }

// pinDisabled is set by --no-pin.
var pinDisabled bool

// core0 is the command prefix that pins a server process to core 0
// (`taskset -c 0`) when the run is pinned and taskset is installed, and
// nil otherwise.
func core0() []string {
	if pinned() {
		if ts, err := exec.LookPath("taskset"); err == nil {
			return []string{ts, "-c", "0"}
		}
	}
	return nil
}

// child is this binary re-executed as a subcommand (bench serve, bench
// nats, bench storm). It dies with the driver, even when the driver is
// killed, writes its diagnostics to the driver's stderr and speaks to the
// driver on its stdout.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser // nil unless started withStdin; closing it asks the child to finish
	out   *bufio.Reader  // the child's stdout
}

// startSelf runs this binary with args behind prefix (core0(), nice...).
// withStdin gives the child a pipe on its stdin (else it reads /dev/null).
func startSelf(prefix []string, withStdin bool, args ...string) (child, error) {
	exe, err := os.Executable()
	if err != nil {
		return child{}, err
	}
	argv := slices.Concat(prefix, []string{exe}, args)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := child{cmd: cmd}
	if withStdin {
		if c.stdin, err = cmd.StdinPipe(); err != nil {
			return child{}, err
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return child{}, err
	}
	if err := cmd.Start(); err != nil {
		return child{}, err
	}
	c.out = bufio.NewReader(out)
	return c, nil
}

// listen waits up to timeout for the child's first line, "LISTEN" followed
// by one address per name, and returns the addresses. what names the child
// in errors. On an error the child still runs: the caller stops it.
func (c *child) listen(what string, timeout time.Duration, names ...string) ([]string, error) {
	line := make(chan string, 1)
	go func() {
		s, _ := c.out.ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		f := strings.Fields(s)
		if len(f) != 1+len(names) || f[0] != "LISTEN" {
			want := "LISTEN"
			for _, n := range names {
				want += " <" + n + ">"
			}
			return nil, fmt.Errorf("bench: %s printed %q, want %q", what, s, want)
		}
		return f[1:], nil
	case <-time.After(timeout):
		return nil, fmt.Errorf("bench: %s did not start within %d s", what, int(timeout/time.Second))
	}
}

// kill ends the child at once and reaps it.
func (c *child) kill() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// finish closes the child's stdin, which asks it to finish, and waits for
// it; after grace it kills it. The child must have been started withStdin.
func (c *child) finish(grace time.Duration) {
	c.stdin.Close()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-done
	}
}

// startServer re-executes this binary as `bench serve`, pinned to core 0
// with taskset when there are two cores (so its GOMAXPROCS is 1).
func startServer(lib string, args ...string) (*serverProc, error) {
	c, err := startSelf(core0(), false, append([]string{"serve", "--lib", lib}, args...)...)
	if err != nil {
		return nil, err
	}
	p := &serverProc{lib: lib, child: c}
	addrs, err := p.listen("server "+lib, 10*time.Second, "ws", "stats")
	if err != nil {
		p.stop()
		return nil, err
	}
	p.ws, p.stats = addrs[0], addrs[1]
	return p, nil
}

func (p *serverProc) stop() { p.kill() }

var statsClient = &http.Client{Timeout: 30 * time.Second}

// Stats reads the server's own runtime figures; gc first runs a collection
// so heap figures count live memory only.
func (p *serverProc) Stats(gc bool) (ServerStats, error) {
	u := "http://" + p.stats + "/stats"
	if gc {
		u += "?gc=1"
	}
	var s ServerStats
	resp, err := statsClient.Get(u)
	if err != nil {
		return s, fmt.Errorf("bench: reading %s server stats: %w", p.lib, err)
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// Profile saves a CPU profile of the server taken over d while load runs.
func (p *serverProc) Profile(ctx context.Context, d time.Duration, path string) error {
	u := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.stats, int(d.Seconds()))
	// No client timeout: the server answers only after d.
	return download(ctx, &http.Client{}, u, path)
}

// pinSelf moves every thread of this (driver) process to core 1; threads
// created later inherit the mask.
func pinSelf() {
	if !pinned() {
		return
	}
	var set unix.CPUSet
	set.Set(1)
	tasks, _ := filepath.Glob("/proc/self/task/*")
	for _, t := range tasks {
		tid, err := strconv.Atoi(filepath.Base(t))
		if err == nil {
			unix.SchedSetaffinity(tid, &set)
		}
	}
	runtime.GOMAXPROCS(1)
}

// fetch saves the body of a GET on the stats listener to path.
func (p *serverProc) fetch(route, path string) error {
	return download(context.Background(), statsClient, "http://"+p.stats+route, path)
}

// download saves the body of a GET of url to path.
func download(ctx context.Context, client *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadFrom(resp.Body)
	return err
}
