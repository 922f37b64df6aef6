package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/loadgen"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// startBenchServer runs an in-process ebb server on a free loopback port
// and returns its echo URL; it is drained when the test ends.
func startBenchServer(t *testing.T, cfg server.Config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Shed.DrainWindow = 10 * time.Millisecond
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-served
	})
	return "ws://" + s.Addr() + "/echo"
}

// benchJSON runs "ebb ARGS --json" and returns the exit status, the report
// it printed (nil if none) and stderr.
func benchJSON(t *testing.T, ctx context.Context, args ...string) (int, *loadgen.Report, string) {
	t.Helper()
	r := runCmd(t, ctx, nil, append(append([]string{"bench"}, args...), "--json")...)
	if r.stdout == "" {
		return r.code, nil, r.stderr
	}
	var rep loadgen.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, r.stdout)
	}
	return r.code, &rep, r.stderr
}

func TestBenchModes(t *testing.T) {
	url := startBenchServer(t, server.Config{})
	limitedURL := startBenchServer(t, server.Config{Shed: shed.Options{Limits: shed.Limits{MaxConns: 3}}})
	plot := filepath.Join(t.TempDir(), "echo.png")
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, rep *loadgen.Report, stderr string)
	}{
		{
			name: "echo closed loop with plot",
			args: []string{"echo", "-c", "4", "-d", "500ms", "--size", "256", "--plot", plot, url},
			check: func(t *testing.T, rep *loadgen.Report, stderr string) {
				m := rep.Runs[0].Messages
				if m == nil || m.Received == 0 || m.Size != 256 || m.Compression {
					t.Fatalf("messages = %+v, want echoes of 256 B without compression", m)
				}
				png, err := os.ReadFile(plot)
				if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
					t.Errorf("plot %s is not a PNG (err %v)", plot, err)
				}
				if !strings.Contains(stderr, "ebb bench echo: plot written to "+plot) {
					t.Errorf("stderr does not name the plot:\n%s", stderr)
				}
			},
		},
		{
			name: "echo at a rate",
			args: []string{"echo", "-c", "2", "-d", "500ms", "--rate", "200", url},
			check: func(t *testing.T, rep *loadgen.Report, _ string) {
				if m := rep.Runs[0].Messages; m == nil || m.Received < 50 || m.Received > 110 || m.Rate != 200 {
					t.Errorf("messages = %+v, want about 100 echoes at 200/s for 0.5 s", m)
				}
			},
		},
		{
			name: "idle reads the server's memory",
			args: []string{"idle", "-c", "20", "-d", "3s", "--settle", "50ms", url},
			check: func(t *testing.T, rep *loadgen.Report, _ string) {
				m := rep.Runs[0].Memory
				if m == nil || m.Source != "server" || m.Connections != 20 || m.ServerConnections == nil || *m.ServerConnections != 20 {
					t.Fatalf("memory = %+v, want the server's figures for 20 connections", m)
				}
				// 20 connections are within the server heap gauge's noise.
				if m.PerConnection != nil || m.Withheld == "" {
					t.Errorf("memory = %+v: want no per-connection figure, and the reason", m)
				}
			},
		},
		{
			name: "storm against a limit sees 1013 and succeeds",
			args: []string{"storm", "-c", "8", "-d", "600ms", "--policy", "backoff", "--base", "100ms", "--cap", "200ms", limitedURL},
			check: func(t *testing.T, rep *loadgen.Report, _ string) {
				var n uint64
				for _, c := range rep.Runs[0].CloseCodes {
					if c.Code == 1013 && c.By == "server" {
						n += c.Count
					}
				}
				if n == 0 {
					t.Errorf("no 1013 from a server limited to 3 connections: %+v", rep.Runs[0].CloseCodes)
				}
			},
		},
		{
			name: "storm across a restart of the in-process server",
			args: []string{"storm", "--restart", "-c", "20", "-d", "10s", "--policy", "backoff,immediate", "--base", "200ms", "--cap", "400ms", "--settle", "50ms", "--gap", "100ms"},
			check: func(t *testing.T, rep *loadgen.Report, _ string) {
				if len(rep.Runs) != 2 || !rep.Client.InProcessServer || !strings.HasPrefix(rep.URL, "ws://127.0.0.1:") {
					t.Fatalf("report: %d runs, in-process %v, URL %q; want 2 runs on the in-process server", len(rep.Runs), rep.Client.InProcessServer, rep.URL)
				}
				for _, rr := range rep.Runs {
					if rr.Restart == nil || rr.Restart.FullReconnect == nil || rr.Restart.DrainCode != 1012 {
						t.Errorf("%s: restart = %+v, want every client back after a 1012 drain", rr.Name, rr.Restart)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, rep, stderr := benchJSON(t, context.Background(), tt.args...)
			if code != exitOK || rep == nil {
				t.Fatalf("bench %v: exit %d, want 0\n%s", tt.args, code, stderr)
			}
			if rep.Schema != loadgen.Schema || rep.Interrupted {
				t.Fatalf("report = schema %q, interrupted %v", rep.Schema, rep.Interrupted)
			}
			tt.check(t, rep, stderr)
		})
	}
}

// TestBenchFailures: a bench that measured nothing, or whose attempts
// failed too often, exits 1 with one line that says which condition
// failed, after printing its report; one whose URL cannot work gives up
// after its first attempts instead of waiting out --duration.
func TestBenchFailures(t *testing.T) {
	url := startBenchServer(t, server.Config{})
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "a web page") }))
	t.Cleanup(plain.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "ws://" + ln.Addr().String() + "/"
	ln.Close()
	// Every other request is a 404, the others upgrade: half the
	// handshakes fail with errors. Each test gets a server of its own, so
	// that parallel tests do not take each other's upgrades.
	flakyURL := func() string {
		var n atomic.Int64
		ws := websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) { _, _, _ = c.Read(ctx) })
		flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1)%2 == 0 {
				http.NotFound(w, r)
				return
			}
			ws.ServeHTTP(w, r)
		}))
		t.Cleanup(flaky.Close)
		return "ws" + strings.TrimPrefix(flaky.URL, "http") + "/"
	}

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string // the error line, after "ebb bench MODE: "
	}{
		{"echo, unreachable", []string{"echo", "-c", "5", closed}, exitFailure, "5 of 5 handshakes failed (connection refused): nothing measured"},
		{"connect, unreachable", []string{"connect", "-c", "5", closed}, exitFailure, "handshakes failed (connection refused): nothing measured"},
		{"idle, unreachable", []string{"idle", "-c", "5", closed}, exitFailure, "handshakes failed (connection refused): nothing measured"},
		{"storm, unreachable", []string{"storm", "-c", "5", "--policy", "immediate", closed}, exitFailure, "policy immediate: "},
		{"echo, plain HTTP server", []string{"echo", "-c", "3", "ws" + strings.TrimPrefix(plain.URL, "http") + "/"}, exitFailure, "3 of 3 handshakes failed (HTTP 200 OK: not a WebSocket endpoint?): nothing measured"},
		{"connect, plain HTTP server", []string{"connect", "-c", "3", "ws" + strings.TrimPrefix(plain.URL, "http") + "/"}, exitFailure, "(HTTP 200 OK: not a WebSocket endpoint?): nothing measured"},
		{"echo, wss to a ws server", []string{"echo", "-c", "3", "wss" + strings.TrimPrefix(url, "ws")}, exitFailure, "3 of 3 handshakes failed (TLS handshake failed: "},
		{"connect, too many errors", []string{"connect", "-c", "2", "-d", "400ms", flakyURL()}, exitFailure, "more than the 10% allowed): HTTP 404 Not Found: not a WebSocket endpoint? (--max-errors 0.1)"},
		{"connect, errors allowed", []string{"connect", "-c", "2", "-d", "400ms", "--max-errors", "0.6", flakyURL()}, exitOK, ""},
		{"healthy", []string{"echo", "-c", "2", "-d", "300ms", "--max-errors", "0", url}, exitOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			args := append([]string{"bench"}, tt.args...)
			if !strings.Contains(strings.Join(tt.args, " "), " -d ") {
				args = append(args, "-d", "30s")
			}
			r := runCmd(t, context.Background(), nil, args...)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %v: want a bench that cannot connect to give up at once", took)
			}
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if !strings.HasPrefix(r.stdout, "ebb bench ") {
				t.Errorf("no report on stdout:\n%s", r.stdout)
			}
			if tt.want == "" {
				return
			}
			mode := tt.args[0]
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "ebb bench "+mode+": ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr = %q, want one line \"ebb bench %s: …%s…\"", r.stderr, mode, tt.want)
			}
		})
	}
}

// TestBenchConnectCutOff: the dials in flight when --duration ends are
// cut off by the bench, not timeouts of a healthy server. Every upgrade
// takes 150 ms here, so each worker has one in flight at the end.
func TestBenchConnectCutOff(t *testing.T) {
	ws := websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) { _, _, _ = c.Read(ctx) })
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(150 * time.Millisecond):
			ws.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	code, rep, stderr := benchJSON(t, context.Background(), "connect", "-c", "4", "-d", "500ms", "--max-errors", "0", "ws"+strings.TrimPrefix(slow.URL, "http")+"/")
	if code != exitOK || rep == nil {
		t.Fatalf("exit %d, want 0\n%s", code, stderr)
	}
	h := rep.Runs[0].Handshakes
	if h.Failed != 0 || len(rep.Runs[0].Errors) != 0 || h.CutOff == 0 || h.Attempts != h.Completed+h.CutOff {
		t.Errorf("handshakes = %+v, errors %+v: want no failure and the in-flight dials cut off", h, rep.Runs[0].Errors)
	}
	for _, p := range rep.Runs[0].Timeline {
		if p.Failures != 0 {
			t.Errorf("timeline slot at %vs has %d failures", p.T, p.Failures)
		}
	}
}

// TestBenchCompression: the report says what the server negotiated, and
// stderr warns when --compress was asked but declined.
func TestBenchCompression(t *testing.T) {
	deflate := startBenchServer(t, server.Config{Compression: &websocket.CompressionOptions{}})
	plain := startBenchServer(t, server.Config{})
	t.Run("negotiated", func(t *testing.T) {
		r := runCmd(t, context.Background(), nil, "bench", "echo", "-c", "3", "-d", "300ms", "--compress", deflate)
		if r.code != exitOK || r.stderr != "" {
			t.Fatalf("exit %d, stderr %q; want 0 and nothing on stderr", r.code, r.stderr)
		}
		if !strings.Contains(r.stdout, `compression        negotiated on 3 of 3 connections ("permessage-deflate`) || !strings.Contains(r.stdout, "compression on)") {
			t.Errorf("stdout does not show the negotiation:\n%s", r.stdout)
		}
	})
	t.Run("declined", func(t *testing.T) {
		r := runCmd(t, context.Background(), nil, "bench", "echo", "-c", "3", "-d", "300ms", "--compress", plain)
		if r.code != exitOK {
			t.Fatalf("exit %d, want 0: a declined offer is a fact to report, not a failure\n%s", r.code, r.stderr)
		}
		if want := "ebb bench echo: warning: --compress: the server declined permessage-deflate on 3 of 3 connections"; !strings.HasPrefix(r.stderr, want) {
			t.Errorf("stderr = %q, want it to start with %q", r.stderr, want)
		}
		if !strings.Contains(r.stdout, "declined by the server on all 3 connections") || !strings.Contains(r.stdout, "compression offered, declined)") {
			t.Errorf("stdout does not say compression was declined:\n%s", r.stdout)
		}
	})
}

// TestBenchJSON: no float noise (0.30000000000000004), no HTML escaping.
func TestBenchJSON(t *testing.T) {
	url := startBenchServer(t, server.Config{})
	r := runCmd(t, context.Background(), nil, "bench", "echo", "-c", "3", "-d", "700ms", "--rate", "333.3", "--json", url+"?a=1&b=2")
	if r.code != exitOK {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if m := regexp.MustCompile(`[:\[,]\s*-?\d+\.\d{4,}`).FindAllString(r.stdout, 5); m != nil {
		t.Errorf("JSON has numbers with more than 3 decimals: %q", m)
	}
	if !strings.Contains(r.stdout, `"url": "`+url+`?a=1&b=2"`) {
		t.Errorf("JSON escapes the URL's &:\n%.400s", r.stdout)
	}
}

// TestBenchInterrupted is Ctrl-C: the context ends long before
// --duration, and the bench still prints what it measured and exits 130.
func TestBenchInterrupted(t *testing.T) {
	url := startBenchServer(t, server.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(400*time.Millisecond, cancel)
	start := time.Now()
	code, rep, stderr := benchJSON(t, ctx, "echo", "-c", "3", "-d", "30s", url)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("interrupted bench took %v to stop", took)
	}
	if code != exitInterrupted || rep == nil {
		t.Fatalf("exit %d, report %v; want %d and the partial report\n%s", code, rep != nil, exitInterrupted, stderr)
	}
	if !rep.Interrupted || rep.Runs[0].Messages == nil || rep.Runs[0].Messages.Received == 0 {
		t.Errorf("report = interrupted %v, messages %+v; want the partial measurements", rep.Interrupted, rep.Runs[0].Messages)
	}
	if !strings.HasPrefix(stderr, "ebb bench echo: interrupted") {
		t.Errorf("stderr = %q", stderr)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{}, "name a mode"},
		{[]string{"echo"}, "exactly one URL"},
		{[]string{"echo", "http://x/"}, "want ws:// or wss://"},
		{[]string{"echo", "-c", "0", "ws://127.0.0.1:1/"}, "--conns 0"},
		{[]string{"echo", "--rate", "10", "--size", "4", "ws://127.0.0.1:1/"}, "carry the send time"},
		{[]string{"echo", "--max-errors", "1.5", "ws://127.0.0.1:1/"}, "--max-errors 1.5: want a share"},
		{[]string{"storm", "--policy", "sometimes", "ws://127.0.0.1:1/"}, `--policy "sometimes"`},
		{[]string{"storm", "--restart", "ws://127.0.0.1:1/"}, "give no URL"},
		{[]string{"echo", "--plot", "x.svg", "ws://127.0.0.1:1/"}, ".png"},
		{[]string{"echo", "-c", "100000000", "ws://127.0.0.1:1/"}, "file descriptors"},
		{[]string{"idle", "--metrics", "ftp://x/", "ws://127.0.0.1:1/"}, "--metrics"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, append([]string{"bench"}, tt.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.stderr, exitUsage, tt.want)
			}
		})
	}
}
