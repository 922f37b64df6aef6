package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// The load-balancer configurations docs/scaling.md documents.
const (
	documentedHAProxy = "../../../../docs/scaling/haproxy.cfg"
	documentedNginx   = "../../../../docs/scaling/nginx.conf"
)

// peerPath finds a load balancer's binary: on PATH, or in /usr/sbin where
// Debian's package puts it (not on every user's PATH). Without it the test
// skips with the install command, or fails under CI (CI=true), where every
// integration test must run (as interop/ does with its peers).
func peerPath(t *testing.T, bin string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/" + bin); serr == nil {
			p, err = "/usr/sbin/"+bin, nil
		}
	}
	if err != nil {
		msg := fmt.Sprintf("clustertest: %s is not installed (not on PATH or in /usr/sbin): install Debian's package with `apt-get update && apt-get install -y %s`", bin, bin)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// TestDocumentedConfigs checks that the HAProxy and nginx configurations
// docs/scaling.md shows are accepted by the balancers themselves.
func TestDocumentedConfigs(t *testing.T) {
	t.Run("haproxy", func(t *testing.T) {
		bin := peerPath(t, "haproxy")
		if out, err := exec.Command(bin, "-c", "-f", documentedHAProxy).CombinedOutput(); err != nil {
			t.Fatalf("haproxy -c rejects %s: %v\n%s", documentedHAProxy, err, out)
		}
	})
	t.Run("nginx", func(t *testing.T) {
		bin := peerPath(t, "nginx")
		abs, err := filepath.Abs(documentedNginx)
		if err != nil {
			t.Fatal(err)
		}
		prefix := nginxPrefix(t)
		if out, err := exec.Command(bin, "-t", "-c", abs, "-p", prefix, "-g", nginxGlobals(prefix)).CombinedOutput(); err != nil {
			t.Fatalf("nginx -t rejects %s: %v\n%s", documentedNginx, err, out)
		}
	})
}

// nginxPrefix is a prefix directory for a test's nginx (its logs and temp
// files), readable by the workers nginx runs as.
func nginxPrefix(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// nginxGlobals are the main-context directives a test adds: its own pid
// file, errors on stderr, and one process in the foreground, so that
// killing it leaves no worker behind.
func nginxGlobals(prefix string) string {
	return "pid " + filepath.Join(prefix, "nginx.pid") + "; error_log stderr; daemon off; master_process off;"
}

var (
	nginxListen   = regexp.MustCompile(`(?m)^(\s*)listen 80;$`)
	nginxUpstream = regexp.MustCompile(`(?m)^(\s*)server 10\.0\.0\.\d+:8080 (.*);\n`)
)

// renderNginx is the documented nginx.conf with the test's frontend address
// and its nodes in place of the example's.
func renderNginx(t *testing.T, frontend string, nodes []string) []byte {
	t.Helper()
	doc, err := os.ReadFile(documentedNginx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nginxListen.FindAll(doc, -1)) != 1 || len(nginxUpstream.FindAll(doc, -1)) == 0 {
		t.Fatalf("%s no longer has one `listen 80;` and `server 10.0.0.x:8080 …;` lines: update renderNginx", documentedNginx)
	}
	doc = nginxListen.ReplaceAll(doc, []byte("${1}listen "+frontend+";"))
	first := nginxUpstream.FindSubmatch(doc)
	indent, params := string(first[1]), string(first[2])
	var servers strings.Builder
	for _, addr := range nodes {
		fmt.Fprintf(&servers, "%sserver %s %s;\n", indent, addr, params)
	}
	replaced := false // the first server line becomes the test's; the others go
	return nginxUpstream.ReplaceAllFunc(doc, func([]byte) []byte {
		if replaced {
			return nil
		}
		replaced = true
		return []byte(servers.String())
	})
}

// startNginx runs nginx in the foreground with conf until the test ends.
func startNginx(t *testing.T, conf []byte) {
	t.Helper()
	bin := peerPath(t, "nginx")
	prefix := nginxPrefix(t)
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	cmd := exec.Command(bin, "-c", path, "-p", prefix, "-g", nginxGlobals(prefix))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("nginx's log:\n%s", out.String())
		}
	})
}

// TestNginxDrain runs the documented nginx configuration in front of three
// nodes started as docs/scaling.md says for nginx (--drain-503
// --drain-delay 0) and drains one: nginx has no health checks, so it keeps
// choosing the draining node (least_conn: it has the fewest connections
// once its 1012s start), and every new client must still get in, nginx
// retrying the node's 503 on another one.
func TestNginxDrain(t *testing.T) {
	heavy(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ns := newNodeSet(t, "nginx", 3, nodeParams{MaxConns: 200, MinServing: 3})
	ns.startAll(ctx, 3, func(cfg *server.Config) {
		cfg.Shed.DrainMode = shed.ModeHTTP // --drain-503
		cfg.Shed.DrainWindow = 3 * time.Second
	})
	var addrs []string
	for i := range 3 {
		addrs = append(addrs, ns.node(i).srv.Addr())
	}
	frontend := freeAddr(t)
	startNginx(t, renderNginx(t, frontend, addrs))
	url := "ws://" + frontend + "/echo"
	waitHealth(ctx, t, "http://"+frontend+"/healthz", http.StatusOK) // nginx forwards to a node

	// 30 clients spread over the nodes, each reading until its close.
	var wg sync.WaitGroup
	codes := make(chan closecode.Code, 30)
	var clients []*websocket.Conn
	for range 30 {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatalf("dial through nginx: %v", err)
		}
		wg.Go(func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						codes <- ce.Code
					} else {
						codes <- 0
					}
					return
				}
			}
		})
		clients = append(clients, c)
	}

	drained := make(chan error, 1)
	drainer := ns.node(0)
	go func() { drained <- drainer.srv.Shutdown(ctx) }()
	waitHealth(ctx, t, "http://"+drainer.srv.Addr()+"/healthz", http.StatusServiceUnavailable)

	// New clients while n0 drains: every one gets in and echoes.
	var failed []string
	start := time.Now()
	dials := 0
	for time.Since(start) < 2500*time.Millisecond {
		dials++
		if err := echoOnce(ctx, url); err != nil {
			failed = append(failed, err.Error())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := <-drained; err != nil {
		t.Fatalf("n0: Shutdown: %v", err)
	}
	refusedByDrain := drainer.srv.Shedder().Stats().Refused[shed.Refusal{Reason: shed.ReasonDraining, Mode: shed.ModeHTTP}]
	t.Logf("%d new clients during the drain, %d failed; n0 answered %d upgrades with 503 (nginx retried them elsewhere)", dials, len(failed), refusedByDrain)
	if len(failed) > 0 {
		t.Errorf("%d of %d clients dialled through nginx during the drain failed, e.g. %s", len(failed), dials, failed[0])
	}
	if refusedByDrain == 0 {
		t.Errorf("nginx never sent a client to the draining node: the test did not exercise proxy_next_upstream http_503")
	}
	for _, c := range clients { // the other nodes' clients are still open
		c.CloseNow()
	}
	wg.Wait()
	close(codes)
	seen := map[closecode.Code]int{}
	for c := range codes {
		seen[c]++
	}
	if seen[closecode.ServiceRestart] == 0 {
		t.Errorf("no client of the draining node saw 1012; closes seen: %v", seen)
	}
}

// echoOnce dials url, echoes one message and closes.
func echoOnce(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
		return err
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, []byte("hi")) {
		return fmt.Errorf("echo: got %q", got)
	}
	return c.Close(closecode.NormalClosure, "")
}

// waitHealth polls url until it answers with status.
func waitHealth(ctx context.Context, t *testing.T, url string, status int) {
	t.Helper()
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s did not answer %d: %v", url, status, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
