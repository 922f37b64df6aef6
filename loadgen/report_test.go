package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// TestJSONSchema pins the JSON field names: a consumer of the JSON breaks
// when one changes without a new schema version.
func TestJSONSchema(t *testing.T) {
	t.Parallel()
	start := time.Now()
	r := newRecorder(start, 1)
	r.attempt(start, false)
	r.opened(start.Add(time.Millisecond), time.Millisecond)
	r.negotiated("permessage-deflate")
	m := newMsgStats(start, &r.liveMsgs)
	m.sentMsg(10)
	m.received(start.Add(2*time.Millisecond), 10, time.Millisecond)
	r.merge(m)
	r.closed(start.Add(3*time.Millisecond), 1000, "client")
	rr := r.report("echo", 200*time.Millisecond)
	rr.Reconnect = &Reconnect{Policy: "backoff", Delays: summarize(r.handshake)}
	full := 1.5
	rr.Restart = &Restart{FullReconnect: &full}
	rr.Memory = &Memory{Source: "client", Withheld: "because"}
	rr.Compression = r.compressionLocked()
	rr.StoppedEarly = "because"
	rep := &Report{Schema: Schema, Mode: "echo", Runs: []Run{rr}}
	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
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
		"report":      {"client", "interrupted", "mode", "runs", "schema", "seconds", "started", "url"},
		"client":      {"client_bottleneck", "cpu_cores_used", "cpus", "file_limit", "file_limit_hard", "gomaxprocs", "in_process_server"},
		"run":         {"close_codes", "compression", "connections", "errors", "handshakes", "http_statuses", "latency_ms", "memory", "messages", "name", "reconnect", "restart", "seconds", "stopped_early", "timeline"},
		"handshakes":  {"attempts", "completed", "cut_off", "errors", "failed", "latency_ms", "peak_at_seconds", "peak_per_second", "per_second"},
		"latency":     {"count", "max", "mean", "min", "p50", "p90", "p99", "p99_9"},
		"messages":    {"bytes_per_second", "compression", "per_second", "rate", "received", "sent", "size"},
		"compression": {"declined", "negotiated", "parameters"},
		"close_code":  {"by", "code", "count", "name", "retry"},
		"restart":     {"drain_at", "drain_code", "drain_window_seconds", "back_at", "full_after_back_seconds", "full_reconnect_seconds", "gap_seconds", "peak_at", "peak_attempts_per_second", "peak_per_second"},
		"memory":      {"bytes_per_connection", "bytes_per_connection_noise", "connections", "goroutines_after", "goroutines_before", "heap_bytes_after", "heap_bytes_before", "samples", "source", "stacks_bytes_after", "stacks_bytes_before", "withheld"},
		"timeline":    {"attempts", "failures", "handshakes", "handshakes_per_second", "messages", "open", "open_max", "t"},
	}
	got := map[string][]string{
		"report":      keysOf(doc),
		"client":      keysOf(doc["client"]),
		"run":         keysOf(run),
		"handshakes":  keysOf(run["handshakes"]),
		"latency":     keysOf(run["latency_ms"]),
		"messages":    keysOf(run["messages"]),
		"compression": keysOf(run["compression"]),
		"close_code":  keysOf(run["close_codes"].([]any)[0]),
		"restart":     keysOf(run["restart"]),
		"memory":      keysOf(run["memory"]),
		"timeline":    keysOf(run["timeline"].([]any)[1]), // a slot without closes or latency
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
	if mem := run["memory"].(map[string]any); mem["bytes_per_connection"] != nil {
		t.Errorf("memory = %v: want null bytes_per_connection when withheld", mem)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Runs[0].Latency, rr.Latency) || back.Runs[0].Messages.Received != 1 {
		t.Errorf("round trip lost data: %+v", back.Runs[0])
	}
}

// longDecimals finds JSON numbers with more than 3 decimals, such as
// 0.30000000000000004.
var longDecimals = regexp.MustCompile(`[:\[,]\s*-?\d+\.\d{4,}`)

// TestJSONNoFloatNoise runs every kind of section a report can hold and
// checks that no number in the JSON carries binary noise or false
// precision, and that nothing is HTML-escaped.
func TestJSONNoFloatNoise(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	ctx := context.Background()
	o := Options{URL: srv.url("/deflate"), Conns: 3, Duration: 700 * time.Millisecond, Dial: &websocket.DialOptions{Compression: &websocket.CompressionOptions{}}}
	echoRate, err := Echo(ctx, EchoOptions{Options: o, Rate: 333.3})
	if err != nil {
		t.Fatal(err)
	}
	echoLoop, err := Echo(ctx, EchoOptions{Options: o, Size: 77})
	if err != nil {
		t.Fatal(err)
	}
	o.URL = srv.url("/echo")
	idle, err := Idle(ctx, IdleOptions{Options: o, MetricsURL: "http://" + srv.addr() + "/metrics", Settle: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, rep := range []*Report{echoRate, echoLoop, idle} {
		var buf bytes.Buffer
		if err := rep.WriteJSON(&buf); err != nil {
			t.Fatal(err)
		}
		if m := longDecimals.FindAllString(buf.String(), 5); m != nil {
			t.Errorf("%s JSON has numbers with more than 3 decimals: %q", rep.Mode, m)
		}
		if bytes.Contains(buf.Bytes(), []byte(`\u003c`)) || bytes.Contains(buf.Bytes(), []byte(`\u0026`)) {
			t.Errorf("%s JSON is HTML-escaped", rep.Mode)
		}
	}
	// A URL with & and < stays as it is.
	var buf bytes.Buffer
	if err := (&Report{URL: "ws://h/?a=1&b=<2>"}).WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(buf.Bytes(), []byte(`"ws://h/?a=1&b=<2>"`)) {
		t.Errorf("URL is escaped: %s", buf.String())
	}
}

func TestRounding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		got, want float64
	}{
		{roundSeconds(3 * 0.1), 0.3},
		{roundMs(1.23456), 1.235},
		{roundRate(3332.2999999), 3332.3},
		{roundBytes(6912.6), 6913},
		{roundMs(-0.0004), 0},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %v, want %v", tt.got, tt.want)
		}
	}
}
