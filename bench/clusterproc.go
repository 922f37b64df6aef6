package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ebb-ws/ebb/bench/fanout"
)

// CentrifugoModule is the Centrifugo the cluster measure builds, from the
// Go module proxy, with `go install` (nothing of it is committed).
const (
	CentrifugoModule  = "github.com/centrifugal/centrifugo/v6"
	CentrifugoVersion = "v6.9.1"
)

// nodeProc is one server process of a cluster measure, restartable with
// the same command line.
type nodeProc struct {
	name   string
	argv   []string
	env    []string
	log    string // file that collects the process's stdout and stderr
	health string // URL that answers 200 once the node serves
	cmd    *exec.Cmd
	done   chan struct{}
}

// start runs the process, pinned to core 0 with the other servers when the
// machine has two cores (the clients have core 1).
func (n *nodeProc) start() error {
	argv := append(core0(), n.argv...)
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "\n=== %s: %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), n.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("bench: starting %s: %w", n.name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(n.done) }()
	return nil
}

// waitReady polls the health URL until it answers 200.
func (n *nodeProc) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-n.done:
			return fmt.Errorf("bench: %s exited before it was ready (log: %s)", n.name, n.log)
		default:
		}
		resp, err := c.Get(n.health)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s did not answer %s with 200 within %v (last: %v; log: %s)", n.name, n.health, timeout, err, n.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// terminate sends SIGTERM (each system's own graceful shutdown) and waits
// up to grace for the exit, then kills. It returns how long the exit took.
func (n *nodeProc) terminate(grace time.Duration) (time.Duration, error) {
	if n.cmd == nil {
		return 0, nil
	}
	start := time.Now()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return time.Since(start), nil
	case <-time.After(grace):
		n.cmd.Process.Kill()
		<-n.done
		return time.Since(start), fmt.Errorf("bench: %s did not exit within %v of SIGTERM; killed", n.name, grace)
	}
}

// kill ends the process at once.
func (n *nodeProc) kill() {
	if n.cmd != nil && n.cmd.ProcessState == nil {
		n.cmd.Process.Kill()
		<-n.done
	}
}

// cpuNs returns the process's user+system CPU time from /proc.
func (n *nodeProc) cpuNs() int64 {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return procCPU(n.cmd.Process.Pid)
}

// procCPU reads utime+stime of pid (and of its exited children, which is
// where taskset's child accounts) in nanoseconds.
func procCPU(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state is f[0]; utime f[11], stime f[12].
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (u + st) * int64(time.Second) / 100 // USER_HZ is 100 on Linux
}

// freePorts picks n loopback ports that are free now; each node keeps its
// port across restarts, as behind a load balancer.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// helperProc is a process that prints "LISTEN <addr>" when ready and runs
// until its standard input closes (bench nats).
type helperProc struct {
	child
	addr string
}

func startHelper(args ...string) (*helperProc, error) {
	c, err := startSelf(core0(), true, args...)
	if err != nil {
		return nil, err
	}
	h := &helperProc{child: c}
	addrs, err := h.listen(args[0], 15*time.Second, "addr")
	if err != nil {
		h.stop()
		return nil, err
	}
	h.addr = addrs[0]
	return h, nil
}

func (h *helperProc) stop() { h.finish(10 * time.Second) }

// clusterSys is one system under the cluster measure: its nodes, how its
// clients reach them, and how its publisher publishes.
type clusterSys interface {
	Name() string
	Version() string
	// About says how the system is configured, for the report.
	About() string
	Start(env *clusterEnv) error
	Nodes() []*nodeProc
	Endpoints() []fanout.Endpoint
	Proto() fanout.Protocol
	NewPolicy(now time.Time) fanout.Policy
	Publisher(st *fanout.Stats, pad int) *fanout.Publisher
	Stop()
}

// clusterEnv is what every system's nodes share in one run.
type clusterEnv struct {
	dir  string // scratch directory: configs, logs, stores
	nats string // nats:// URL of the harness's NATS server
	bin  string // directory of built binaries
}

// centrifugoSys runs Centrifugo nodes. With redis set, the nodes use
// Centrifugo's Redis engine (PUB/SUB, history and recovery in one
// redis-server the harness starts) instead of its NATS broker.
type centrifugoSys struct {
	bin   string
	redis bool
	ports []int
	nodes []*nodeProc
	rproc *nodeProc
}

const (
	centChannel = "bench"
	centAPIKey  = "bench-api-key"
)

func (c *centrifugoSys) Name() string {
	if c.redis {
		return "centrifugo-redis"
	}
	return "centrifugo"
}

func (c *centrifugoSys) Version() string {
	s := CentrifugoModule + " " + CentrifugoVersion
	if c.redis {
		return s + ", Redis engine (" + redisVersion() + ")"
	}
	return s + ", NATS broker"
}

func (c *centrifugoSys) About() string {
	if c.redis {
		return "Centrifugo's Redis engine (PUB/SUB, history and presence in one redis-server, not restarted): channel history 10 000 messages / 300 s, force_recovery, force_positioning — the setup Centrifugo's documentation gives for recovery across nodes. Clients resubscribe with recover, offset and epoch."
	}
	return "Centrifugo's NATS broker (core NATS PUB/SUB through the harness's nats-server). Centrifugo's NATS broker keeps no history (its configuration documents it: \"NATS broker does not support history, recovery or cache\"), so a client that reconnects resubscribes from now: what was published while it was away is lost. The channel has no history options (with them, subscribing fails with error 108 'not available')."
}

func (c *centrifugoSys) Proto() fanout.Protocol { return fanout.Centrifugo }

func (c *centrifugoSys) NewPolicy(time.Time) fanout.Policy { return fanout.NewCentPolicy() }

func (c *centrifugoSys) Nodes() []*nodeProc { return c.nodes }

func (c *centrifugoSys) Endpoints() []fanout.Endpoint {
	var eps []fanout.Endpoint
	for _, p := range c.ports {
		eps = append(eps, fanout.Endpoint{Host: fmt.Sprintf("127.0.0.1:%d", p), Path: "/connection/websocket"})
	}
	return eps
}

func (c *centrifugoSys) Publisher(st *fanout.Stats, pad int) *fanout.Publisher {
	p := &fanout.Publisher{Proto: fanout.Centrifugo, Nodes: c.Endpoints(), APIKey: centAPIKey, Channel: centChannel, Pad: pad, Stats: st}
	for _, port := range c.ports {
		p.API = append(p.API, fmt.Sprintf("http://127.0.0.1:%d", port))
	}
	return p
}

// centrifugoConfig is one node's configuration (Centrifugo v6 JSON).
func centrifugoConfig(port int, natsURL, redisAddr string) map[string]any {
	ch := map[string]any{"allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}
	cfg := map[string]any{
		"http_server": map[string]any{"address": "127.0.0.1", "port": port},
		"log":         map[string]any{"level": "warn"},
		"client": map[string]any{
			"allow_anonymous_connect_without_token": true,
			"allowed_origins":                       []string{"*"},
		},
		"http_api":    map[string]any{"key": centAPIKey},
		"health":      map[string]any{"enabled": true},
		"usage_stats": map[string]any{"disabled": true},
		"channel":     map[string]any{"without_namespace": ch},
	}
	if redisAddr != "" {
		ch["history_size"] = 10000
		ch["history_ttl"] = "300s"
		ch["force_recovery"] = true
		ch["force_positioning"] = true
		cfg["engine"] = map[string]any{"type": "redis", "redis": map[string]any{"address": []string{redisAddr}}}
	} else {
		cfg["broker"] = map[string]any{"enabled": true, "type": "nats", "nats": map[string]any{"url": natsURL}}
	}
	return cfg
}

func (c *centrifugoSys) Start(env *clusterEnv) error {
	c.nodes, c.rproc = nil, nil // a system runs once per repetition
	var err error
	if c.ports, err = freePorts(3); err != nil {
		return err
	}
	redisAddr := ""
	if c.redis {
		rp, err := freePorts(1)
		if err != nil {
			return err
		}
		redisAddr = fmt.Sprintf("127.0.0.1:%d", rp[0])
		c.rproc = &nodeProc{name: "redis-server", log: filepath.Join(env.dir, "redis.log"),
			argv: []string{"redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(rp[0]), "--save", "", "--appendonly", "no", "--protected-mode", "no"}}
		if err := c.rproc.start(); err != nil {
			return err
		}
		if err := waitTCP(redisAddr, 10*time.Second); err != nil {
			return err
		}
	}
	for i, port := range c.ports {
		cfgPath := filepath.Join(env.dir, fmt.Sprintf("%s-%d.json", c.Name(), i))
		b, _ := json.MarshalIndent(centrifugoConfig(port, env.nats, redisAddr), "", "  ")
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			return err
		}
		n := &nodeProc{name: fmt.Sprintf("%s node %d", c.Name(), i+1), argv: []string{c.bin, "--config", cfgPath},
			log: filepath.Join(env.dir, fmt.Sprintf("%s-%d.log", c.Name(), i)), health: fmt.Sprintf("http://127.0.0.1:%d/health", port),
			env: []string{"GOMAXPROCS=1"}}
		if err := n.start(); err != nil {
			return err
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		if err := n.waitReady(30 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

func (c *centrifugoSys) Stop() {
	for _, n := range c.nodes {
		n.kill()
	}
	if c.rproc != nil {
		c.rproc.kill()
	}
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: nothing listens on %s after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "redis-server not found"
	}
	for _, f := range strings.Fields(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return "redis-server " + v
		}
	}
	return strings.TrimSpace(string(out))
}

// ebbSys runs `ebb serve` nodes of one cluster on the harness's NATS
// (--cluster NAME --nats URL), clients on /broadcast with the resume
// protocol.
type ebbSys struct {
	bin   string
	lib   bool // clients are reconnect.Client with Resume, not the neutral client
	ports []int
	nodes []*nodeProc
}

func (e *ebbSys) Name() string { return "ebb" }

func (e *ebbSys) Version() string { return "working tree, ebb serve --cluster" }

func (e *ebbSys) Proto() fanout.Protocol {
	if e.lib {
		return fanout.EbbLib
	}
	return fanout.Ebb
}

// clients says which client the ebb row used.
func (e *ebbSys) clients() string {
	if e.lib {
		return " Clients: ebb's own Go client, reconnect.Client with Options.Resume (ebb.resume.v1, ?from=, duplicates dropped by the client, so 'dup by seq' is not counted) and the default policy of a persistent link; each attempt routed to a node through DialOptions.NetDialContext."
	}
	return " Clients: bench's neutral hand-framed client speaking ebb.resume.v1, with ebb's reconnect policy (reconnect.Schedule, persistent link)."
}
func (e *ebbSys) NewPolicy(now time.Time) fanout.Policy { return fanout.NewEbbPolicy(now) }
func (e *ebbSys) Nodes() []*nodeProc                    { return e.nodes }

func (e *ebbSys) About() string {
	return "`ebb serve --cluster NAME --nats URL --node nK` nodes on the harness's nats-server (the broadcast history lives in its JetStream, which is not restarted), every other setting ebb serve's default: no admission limits; on SIGTERM the node takes its drain turn, then closes its connections with 1012 paced by the cluster's plan to what the other nodes can admit (at most --drain-window), refusing new clients meanwhile." + e.clients()
}

func (e *ebbSys) Endpoints() []fanout.Endpoint {
	var eps []fanout.Endpoint
	for _, p := range e.ports {
		eps = append(eps, fanout.Endpoint{Host: fmt.Sprintf("127.0.0.1:%d", p), Path: "/broadcast"})
	}
	return eps
}

func (e *ebbSys) Publisher(st *fanout.Stats, pad int) *fanout.Publisher {
	return &fanout.Publisher{Proto: fanout.Ebb, Nodes: e.Endpoints(), Pad: pad, Stats: st}
}

func (e *ebbSys) Start(env *clusterEnv) error {
	e.nodes = nil // a system runs once per repetition
	var err error
	if e.ports, err = freePorts(3); err != nil {
		return err
	}
	cluster := fmt.Sprintf("bench%d", os.Getpid())
	for i, port := range e.ports {
		argv := []string{e.bin, "serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port),
			"--cluster", cluster, "--nats", env.nats, "--node", fmt.Sprintf("n%d", i+1)}
		n := &nodeProc{name: fmt.Sprintf("ebb node %d", i+1), argv: argv,
			log: filepath.Join(env.dir, fmt.Sprintf("ebb-%d.log", i)), health: fmt.Sprintf("http://127.0.0.1:%d/healthz", port),
			env: []string{"GOMAXPROCS=1"}}
		if err := n.start(); err != nil {
			return err
		}
		e.nodes = append(e.nodes, n)
	}
	for _, n := range e.nodes {
		if err := n.waitReady(60 * time.Second); err != nil {
			return err
		}
	}
	return nil
}

func (e *ebbSys) Stop() {
	for _, n := range e.nodes {
		n.kill()
	}
}

// errSkip is a system that cannot run here; the measure goes on without it.
type errSkip struct{ error }

// buildCentrifugo returns the path of Centrifugo's binary in dir, building
// it with `go install module@version` (from the Go module proxy, outside
// any workspace) when it is not there yet.
func buildCentrifugo(ctx context.Context, dir string) (string, error) {
	dir, err := filepath.Abs(dir) // go install wants an absolute GOBIN
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "centrifugo-"+CentrifugoVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(dir, "gobin")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	progress("cluster: building Centrifugo %s with go install (a few minutes the first time; cached in %s)", CentrifugoVersion, dir)
	cmd := exec.CommandContext(ctx, "go", "install", CentrifugoModule+"@"+CentrifugoVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOWORK=off", "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: go install %s@%s: %w\n%s", CentrifugoModule, CentrifugoVersion, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "centrifugo"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// buildEbb builds the working tree's ebb command into dir.
func buildEbb(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "ebb")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/ebb-ws/ebb/cmd/ebb")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: building ebb: %w\n%s", err, out)
	}
	return bin, nil
}
