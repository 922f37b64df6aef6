package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// serverProc is one library's echo server running in its own process.
type serverProc struct {
	lib   string
	cmd   *exec.Cmd
	ws    string // host:port of the WebSocket listener
	stats string // host:port of the stats/pprof listener
}

// pinned reports whether the machine has two cores to split between the
// server (core 0) and the client (core 1).
func pinned() bool { return !pinDisabled && runtime.NumCPU() >= 2 }

// pinDisabled is set by --no-pin.
var pinDisabled bool

// startServer re-executes this binary as `bench serve`, pinned to core 0
// with taskset when there are two cores (so its GOMAXPROCS is 1).
func startServer(lib string, args ...string) (*serverProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	argv := append([]string{exe, "serve", "--lib", lib}, args...)
	if pinned() {
		if ts, err := exec.LookPath("taskset"); err == nil {
			argv = append([]string{ts, "-c", "0"}, argv...)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	// The server dies with the driver, even when the driver is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serverProc{lib: lib, cmd: cmd}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- s
	}()
	select {
	case s := <-line:
		f := strings.Fields(s)
		if len(f) != 3 || f[0] != "LISTEN" {
			p.stop()
			return nil, fmt.Errorf("bench: server %s printed %q, want \"LISTEN <ws> <stats>\"", lib, s)
		}
		p.ws, p.stats = f[1], f[2]
	case <-time.After(10 * time.Second):
		p.stop()
		return nil, fmt.Errorf("bench: server %s did not start within 10 s", lib)
	}
	return p, nil
}

func (p *serverProc) stop() {
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

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
