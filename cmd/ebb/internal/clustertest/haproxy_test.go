package clustertest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// backendServer is one node in HAProxy's backend.
type backendServer struct {
	Name string
	Addr string // host:port of the node's HTTP listener
}

// lbConfig is what the test's HAProxy configuration says. The template
// (haproxyTemplate) explains every setting; docs/scaling.md shows the same
// configuration for production.
type lbConfig struct {
	Frontend string // host:port HAProxy listens on
	Servers  []backendServer
	// Balance is HAProxy's balance algorithm: "leastconn" or "roundrobin".
	Balance string
	// Inter is the health check's interval; Fall and Rise the failed and
	// passed checks that take a server out and bring it back.
	Inter      time.Duration
	Fall, Rise int
	// MaxConn bounds HAProxy's connections (each client holds two: its
	// own and the one to the node).
	MaxConn int
	// Socket is the path of the stats socket the test reads servers'
	// states from.
	Socket string
}

// haproxyTemplate is the test's HAProxy configuration, the one
// docs/scaling.md explains, with the check timing shortened for a test.
var haproxyTemplate = template.Must(template.New("haproxy.cfg").Funcs(template.FuncMap{
	"ms": func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) + "ms" },
}).Parse(`# Written by ebb's cluster integration test (cmd/ebb/internal/clustertest).
global
    maxconn {{.MaxConn}}
    stats socket {{.Socket}} mode 600 level admin
    # No log section: the test reads states from the stats socket.

defaults
    mode http
    # Connecting to a node on loopback takes microseconds; a node that
    # does not accept within 1 s is down or overloaded: try another.
    timeout connect 1s
    retries 2
    option redispatch
    # Before the upgrade: how long a client may take to send its request,
    # and how long the node may take to answer it.
    timeout http-request 5s
    timeout client 30s
    timeout server 30s
    # After the 101, the connection is a tunnel: a broadcast client may be
    # quiet for long; ebb's own bounds (broadcast write timeout, ping)
    # police it, not the balancer.
    timeout tunnel 1h
    # A side that has closed (the node after its 1012, or the client)
    # gets this long for the other side to finish the close handshake.
    timeout client-fin 5s
    timeout server-fin 5s
    # The node's address of the client, for its per-address limits
    # (ebb serve --trusted-proxy).
    option forwardfor

frontend ws
    bind {{.Frontend}}
    default_backend ebb

backend ebb
    # leastconn: each new connection goes to the node with the fewest;
    # roundrobin: in turn. See docs/scaling.md for which drain plan each
    # suits.
    balance {{.Balance}}
    # Health: /healthz answers 503 from the moment a node starts draining
    # (ebb serve --drain-delay keeps it serving meanwhile); {{.Fall}} failed
    # checks take the node out of rotation, {{.Rise}} passed ones bring it
    # back. Connections already open stay: ebb closes them itself (1012).
    option httpchk
    http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host ebb
    http-check expect status 200
    timeout check 1s
    default-server check inter {{ms .Inter}} fastinter {{ms .Inter}} downinter {{ms .Inter}} fall {{.Fall}} rise {{.Rise}}
{{- range .Servers}}
    server {{.Name}} {{.Addr}}
{{- end}}
`))

// haproxy is a running HAProxy child process.
type haproxy struct {
	cfg    lbConfig
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	err    error // Wait's, once exited is closed
}

// startHAProxy writes cfg (free port for the frontend and the socket in a
// temporary directory, when not set), checks it with haproxy -c, and starts
// HAProxy in the foreground (-db). It is killed when the test ends.
func startHAProxy(t *testing.T, cfg lbConfig) *haproxy {
	t.Helper()
	bin := peerPath(t, "haproxy")
	dir := t.TempDir()
	if cfg.Frontend == "" {
		cfg.Frontend = freeAddr(t)
	}
	if cfg.Socket == "" {
		cfg.Socket = filepath.Join(dir, "stats.sock")
	}
	var text bytes.Buffer
	if err := haproxyTemplate.Execute(&text, cfg); err != nil {
		t.Fatalf("haproxy configuration: %v", err)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, text.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c rejects the test's configuration: %v\n%s\n%s", err, out, text.String())
	}
	h := &haproxy{cfg: cfg, stderr: &syncBuffer{}, exited: make(chan struct{})}
	h.cmd = exec.Command(bin, "-db", "-f", path)
	h.cmd.Stdout = h.stderr
	h.cmd.Stderr = h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	go func() {
		h.err = h.cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(h.stop)
	// Ready once the stats socket answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.stats(); err == nil {
			break
		}
		select {
		case <-h.exited:
			t.Fatalf("haproxy exited at start: %v\n%s", h.err, h.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy's stats socket did not answer within 10 s:\n%s", h.stderr.String())
		}
	}
	return h
}

// stop kills HAProxy and waits for it.
func (h *haproxy) stop() {
	select {
	case <-h.exited:
		return
	default:
	}
	_ = h.cmd.Process.Kill()
	<-h.exited
}

// url is the WebSocket URL of path through HAProxy.
func (h *haproxy) url(path string) string { return "ws://" + h.cfg.Frontend + path }

// serverStat is one backend server's line of HAProxy's "show stat".
type serverStat struct {
	Name   string
	Status string // "UP", "DOWN", "UP 1/2" (going down), "DOWN 1/2" (going up), "MAINT", …
	Cur    int    // current sessions
	Total  int    // cumulative sessions
}

// up reports whether HAProxy sends new connections to the server.
func (s serverStat) up() bool { return strings.HasPrefix(s.Status, "UP") }

// stats reads the backend servers' states from the stats socket.
func (h *haproxy) stats() (map[string]serverStat, error) {
	c, err := net.DialTimeout("unix", h.cfg.Socket, time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimPrefix(bytes.TrimSpace(b), []byte("# "))
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 1 {
		return nil, fmt.Errorf("haproxy show stat: cannot parse %q: %v", b, err)
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[name] = i
	}
	for _, name := range []string{"pxname", "svname", "status", "scur", "stot"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("haproxy show stat: no column %q in %q", name, rows[0])
		}
	}
	out := map[string]serverStat{}
	for _, row := range rows[1:] {
		if len(row) < len(rows[0]) || row[col["pxname"]] != "ebb" {
			continue
		}
		name := row[col["svname"]]
		if name == "BACKEND" || name == "FRONTEND" {
			continue
		}
		cur, _ := strconv.Atoi(row[col["scur"]])
		tot, _ := strconv.Atoi(row[col["stot"]])
		out[name] = serverStat{Name: name, Status: row[col["status"]], Cur: cur, Total: tot}
	}
	return out, nil
}

// waitServers waits until HAProxy's view of the servers satisfies cond.
func (h *haproxy) waitServers(ctx context.Context, what string, cond func(map[string]serverStat) bool) error {
	var last map[string]serverStat
	var lastErr error
	for {
		st, err := h.stats()
		if err == nil && cond(st) {
			return nil
		}
		last, lastErr = st, err
		select {
		case <-ctx.Done():
			return fmt.Errorf("haproxy: waiting for %s: %w (last states %v, error %v)", what, ctx.Err(), last, lastErr)
		case <-h.exited:
			return fmt.Errorf("haproxy exited while waiting for %s: %v\n%s", what, h.err, h.stderr.String())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// lbMaxConn is HAProxy's maxconn for a crowd of clients: room for each
// client and its reconnection overlapping, within the file descriptors
// HAProxy may open (two per connection: the client's and the node's).
func lbMaxConn(clients int) int {
	n := 2*clients + 500
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil && rl.Max > 0 && rl.Max < 1<<30 {
		n = min(n, int(rl.Max-200)/2)
	}
	return n
}

// freeAddr returns a loopback address with a port free right now. Another
// process could take it before it is used; the window is short.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil // enough to say what went wrong
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
