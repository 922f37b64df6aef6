package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/shed"
)

// startBenchServer runs an in-process ebb server on a free loopback port
// and returns its echo URL; it is drained when the test ends.
func startBenchServer(t *testing.T, limits shed.Limits) (string, *server.Server) {
	t.Helper()
	s, err := server.New(server.Config{Addr: "127.0.0.1:0", Shed: shed.Options{Limits: limits, DrainWindow: 10 * time.Millisecond}})
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
	return "ws://" + s.Addr() + "/echo", s
}

// benchRun runs "ebb bench ARGS" as the root command would and returns the
// report it printed with --json, stderr, and the command's error.
func benchRun(t *testing.T, ctx context.Context, args ...string) (*benchReport, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb}
	cmd := newBenchCmd(e)
	cmd.SetArgs(append(args, "--json"))
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	if out.Len() == 0 {
		return nil, errb.String(), err
	}
	var rep benchReport
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", jerr, out.String())
	}
	return &rep, errb.String(), err
}

func codeCountOf(rr runReport, code int, by string) uint64 {
	var n uint64
	for _, c := range rr.CloseCodes {
		if c.Code == code && (by == "" || c.By == by) {
			n += c.Count
		}
	}
	return n
}

func TestBenchModes(t *testing.T) {
	url, _ := startBenchServer(t, shed.Limits{})
	limitedURL, _ := startBenchServer(t, shed.Limits{MaxConns: 3})
	plot := filepath.Join(t.TempDir(), "echo.png")
	tests := []struct {
		name  string
		args  []string
		check func(t *testing.T, rep *benchReport)
	}{
		{
			name: "echo closed loop with plot",
			args: []string{"echo", "-c", "4", "-d", "500ms", "--size", "256", "--plot", plot, url},
			check: func(t *testing.T, rep *benchReport) {
				rr := rep.Runs[0]
				if rr.Messages == nil || rr.Messages.Received == 0 || rr.Messages.PerSecond <= 0 || rr.Messages.Size != 256 {
					t.Fatalf("messages = %+v, want echoes of 256 B", rr.Messages)
				}
				if rr.Latency == nil || rr.Latency.P50 <= 0 || rr.Latency.Max < rr.Latency.P99 {
					t.Errorf("latency = %+v", rr.Latency)
				}
				if n := codeCountOf(rr, 1000, "client"); n != 4 {
					t.Errorf("1000 by client = %d, want 4 (the bench closes every connection)", n)
				}
				png, err := os.ReadFile(plot)
				if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
					t.Errorf("plot %s is not a PNG (err %v)", plot, err)
				}
			},
		},
		{
			name: "echo at a rate with compression",
			args: []string{"echo", "-c", "2", "-d", "500ms", "--rate", "200", "--compress", url},
			check: func(t *testing.T, rep *benchReport) {
				m := rep.Runs[0].Messages
				if m == nil || m.Received < 50 || m.Received > 110 || m.Rate != 200 || !m.Compression {
					t.Errorf("messages = %+v, want about 100 echoes at 200/s for 0.5 s", m)
				}
			},
		},
		{
			name: "connect",
			args: []string{"connect", "-c", "3", "-d", "400ms", url},
			check: func(t *testing.T, rep *benchReport) {
				h := rep.Runs[0].Handshakes
				if h.Completed < 3 || h.Latency == nil || h.PerSecond <= 0 {
					t.Errorf("handshakes = %+v, want several completed", h)
				}
			},
		},
		{
			name: "idle reads the server's memory",
			args: []string{"idle", "-c", "20", "-d", "600ms", "--settle", "50ms", url},
			check: func(t *testing.T, rep *benchReport) {
				m := rep.Runs[0].Memory
				if m == nil || m.Source != "server" || m.Connections != 20 || m.ServerConnections == nil || *m.ServerConnections != 20 {
					t.Fatalf("memory = %+v, want the server's figures for 20 connections", m)
				}
				// The server shares this test process, so its heap and
				// stacks also move with the client's and other tests'
				// garbage; its goroutines must grow by the 20 handlers.
				if m.GoroutinesAfter < m.GoroutinesBefore+20 {
					t.Errorf("memory = %+v, want goroutines to grow by 20 connections", m)
				}
			},
		},
		{
			name: "storm against a limit sees 1013",
			args: []string{"storm", "-c", "8", "-d", "600ms", "--policy", "backoff", "--base", "100ms", "--cap", "200ms", limitedURL},
			check: func(t *testing.T, rep *benchReport) {
				rr := rep.Runs[0]
				if n := codeCountOf(rr, 1013, "server"); n == 0 {
					t.Errorf("no 1013 from a server limited to 3 connections: %+v", rr.CloseCodes)
				}
				// Refused clients wait at least the server's hint, whatever
				// their own backoff (100 ms) says.
				if rr.Reconnect == nil || rr.Reconnect.Delays == nil || rr.Reconnect.Delays.Min < float64(shed.DefaultRetryBase.Milliseconds()) {
					t.Errorf("reconnect = %+v, want delays of at least the server's %v hint", rr.Reconnect, shed.DefaultRetryBase)
				}
				for _, c := range rr.CloseCodes {
					if c.Code == 1013 && c.Name != "Try Again Later" {
						t.Errorf("1013 named %q, want the registry's name", c.Name)
					}
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, stderr, err := benchRun(t, context.Background(), tt.args...)
			if err != nil {
				t.Fatalf("bench %v: %v\n%s", tt.args, err, stderr)
			}
			if rep.Schema != benchSchema || len(rep.Runs) != 1 || rep.Interrupted {
				t.Fatalf("report = schema %q, %d runs, interrupted %v", rep.Schema, len(rep.Runs), rep.Interrupted)
			}
			tt.check(t, rep)
		})
	}
}

// TestBenchInterrupted is Ctrl-C: the context ends long before
// --duration, and the bench still prints what it measured and exits 130.
func TestBenchInterrupted(t *testing.T) {
	url, _ := startBenchServer(t, shed.Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(400*time.Millisecond, cancel)
	start := time.Now()
	rep, stderr, err := benchRun(t, ctx, "echo", "-c", "3", "-d", "30s", url)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("interrupted bench took %v to stop", took)
	}
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitInterrupted {
		t.Fatalf("error = %v, want exit status %d", err, exitInterrupted)
	}
	if rep == nil {
		t.Fatalf("no report after the interrupt; stderr:\n%s", stderr)
	}
	if !rep.Interrupted || rep.Runs[0].Messages == nil || rep.Runs[0].Messages.Received == 0 {
		t.Errorf("report = interrupted %v, messages %+v; want the partial measurements", rep.Interrupted, rep.Runs[0].Messages)
	}
	if n := codeCountOf(rep.Runs[0], 1000, "client"); n != 3 {
		t.Errorf("1000 by client = %d, want 3: every connection closed cleanly", n)
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
		{[]string{"storm", "--policy", "sometimes", "ws://127.0.0.1:1/"}, `--policy "sometimes"`},
		{[]string{"storm", "--restart", "ws://127.0.0.1:1/"}, "give no URL"},
		{[]string{"echo", "--plot", "x.svg", "ws://127.0.0.1:1/"}, ".png"},
		{[]string{"echo", "-c", "100000000", "ws://127.0.0.1:1/"}, "file descriptors"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			_, _, err := benchRun(t, context.Background(), tt.args...)
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want a usage error containing %q", err, tt.want)
			}
		})
	}
}

// TestBenchJSONSchema pins the JSON field names: a consumer of --json
// breaks when one changes without a new schema version.
func TestBenchJSONSchema(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := newRecorder(start, 1)
	r.attempt(start, false)
	r.opened(start.Add(time.Millisecond), time.Millisecond)
	m := newMsgStats(start, &r.liveMsgs)
	m.sentMsg(10)
	m.received(start.Add(2*time.Millisecond), 10, time.Millisecond)
	r.merge(m)
	r.closed(start.Add(3*time.Millisecond), 1000, "client")
	rr := r.report("echo", 200*time.Millisecond)
	rr.Reconnect = &reconnectReport{Policy: "backoff", Delays: summarize(r.handshake)}
	full := 1.5
	rr.Restart = &restartReport{FullReconnect: &full}
	rr.Memory = &memoryReport{Source: "client"}
	rep := &benchReport{Schema: benchSchema, Mode: "echo", Runs: []runReport{rr}}
	var buf bytes.Buffer
	if err := rep.writeJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	keysOf := func(v any) []string {
		var k []string
		for key := range v.(map[string]any) {
			k = append(k, key)
		}
		sort.Strings(k)
		return k
	}
	run := doc["runs"].([]any)[0].(map[string]any)
	want := map[string][]string{
		"report":     {"client", "interrupted", "mode", "runs", "schema", "seconds", "started", "url"},
		"client":     {"client_bottleneck", "cpu_cores_used", "cpus", "file_limit", "file_limit_hard", "gomaxprocs", "in_process_server"},
		"run":        {"close_codes", "connections", "errors", "handshakes", "http_statuses", "latency_ms", "memory", "messages", "name", "reconnect", "restart", "seconds", "timeline"},
		"handshakes": {"attempts", "completed", "failed", "latency_ms", "peak_at_seconds", "peak_per_second", "per_second"},
		"latency":    {"count", "max", "mean", "min", "p50", "p90", "p99", "p99_9"},
		"messages":   {"bytes_per_second", "compression", "per_second", "rate", "received", "sent", "size"},
		"close_code": {"by", "code", "count", "name", "retry"},
		"restart":    {"drain_at", "drain_code", "drain_window_seconds", "back_at", "full_after_back_seconds", "full_reconnect_seconds", "gap_seconds", "peak_at", "peak_attempts_per_second", "peak_per_second"},
		"timeline":   {"attempts", "failures", "handshakes", "handshakes_per_second", "messages", "open", "open_max", "t"},
	}
	got := map[string][]string{
		"report":     keysOf(doc),
		"client":     keysOf(doc["client"]),
		"run":        keysOf(run),
		"handshakes": keysOf(run["handshakes"]),
		"latency":    keysOf(run["latency_ms"]),
		"messages":   keysOf(run["messages"]),
		"close_code": keysOf(run["close_codes"].([]any)[0]),
		"restart":    keysOf(run["restart"]),
		"timeline":   keysOf(run["timeline"].([]any)[1]), // a slot without closes or latency
	}
	for k, w := range want {
		sort.Strings(w)
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s keys = %v, want %v", k, got[k], w)
		}
	}
	if doc["schema"] != "ebb-bench/1" {
		t.Errorf("schema = %v", doc["schema"])
	}
	if rs := run["restart"].(map[string]any); rs["full_after_back_seconds"] != nil || rs["full_reconnect_seconds"] != 1.5 {
		t.Errorf("restart = %v: want null for a time never reached and 1.5 for a reached one", rs)
	}
	var back benchReport
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Runs[0].Latency, rr.Latency) || back.Runs[0].Messages.Received != 1 {
		t.Errorf("round trip lost data: %+v", back.Runs[0])
	}
}
