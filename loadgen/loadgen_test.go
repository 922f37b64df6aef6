package loadgen

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

func TestModes(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	limited := startTestServer(t, shed.Limits{MaxConns: 3})
	tests := []struct {
		name  string
		run   func(ctx context.Context) (*Report, error)
		check func(t *testing.T, rep *Report)
	}{
		{
			name: "echo closed loop",
			run: func(ctx context.Context) (*Report, error) {
				return Echo(ctx, EchoOptions{Options: Options{URL: srv.url("/echo"), Conns: 4, Duration: 500 * time.Millisecond}, Size: 256})
			},
			check: func(t *testing.T, rep *Report) {
				rr := rep.Runs[0]
				if m := rr.Messages; m == nil || m.Received == 0 || m.Received != m.Sent || m.PerSecond <= 0 || m.Size != 256 || m.Compression {
					t.Fatalf("messages = %+v, want every one of many 256 B messages echoed, compression off", rr.Messages)
				}
				if rr.Latency == nil || rr.Latency.P50 <= 0 || rr.Latency.Max < rr.Latency.P99 {
					t.Errorf("latency = %+v", rr.Latency)
				}
				if n := codeCount(rr, 1000, "client"); n != 4 {
					t.Errorf("1000 by client = %d, want 4 (the run closes every connection)", n)
				}
				if rr.Compression != nil {
					t.Errorf("compression = %+v, want none when it was not offered", rr.Compression)
				}
			},
		},
		{
			name: "echo at a rate, compression negotiated",
			run: func(ctx context.Context) (*Report, error) {
				return Echo(ctx, EchoOptions{
					Options: Options{URL: srv.url("/deflate"), Conns: 2, Duration: 500 * time.Millisecond, Dial: &websocket.DialOptions{Compression: &websocket.CompressionOptions{}}},
					Rate:    200,
				})
			},
			check: func(t *testing.T, rep *Report) {
				rr := rep.Runs[0]
				if m := rr.Messages; m == nil || m.Received < 50 || m.Received > 110 || m.Rate != 200 || !m.Compression {
					t.Errorf("messages = %+v, want about 100 echoes at 200/s for 0.5 s, compression offered", m)
				}
				c := rr.Compression
				if c == nil || c.Negotiated != 2 || c.Declined != 0 || len(c.Parameters) != 1 || !strings.HasPrefix(c.Parameters[0].Extensions, "permessage-deflate") {
					t.Errorf("compression = %+v, want permessage-deflate on both connections", c)
				}
			},
		},
		{
			name: "echo, compression declined",
			run: func(ctx context.Context) (*Report, error) {
				return Echo(ctx, EchoOptions{Options: Options{URL: srv.url("/echo"), Conns: 3, Duration: 300 * time.Millisecond, Dial: &websocket.DialOptions{Compression: &websocket.CompressionOptions{}}}})
			},
			check: func(t *testing.T, rep *Report) {
				c := rep.Runs[0].Compression
				if c == nil || c.Negotiated != 0 || c.Declined != 3 || len(c.Parameters) != 0 {
					t.Errorf("compression = %+v, want declined on all 3 connections", c)
				}
				var text bytes.Buffer
				if err := rep.WriteText(&text); err != nil {
					t.Fatal(err)
				}
				if !contains(text.String(), "declined by the server on all 3 connections") || !contains(text.String(), "compression offered, declined") {
					t.Errorf("text does not say compression was declined:\n%s", text.String())
				}
			},
		},
		{
			name: "connect",
			run: func(ctx context.Context) (*Report, error) {
				return Connect(ctx, ConnectOptions{Options: Options{URL: srv.url("/echo"), Conns: 3, Duration: 400 * time.Millisecond}})
			},
			check: func(t *testing.T, rep *Report) {
				h := rep.Runs[0].Handshakes
				if h.Completed < 3 || h.Latency == nil || h.PerSecond <= 0 || h.Failed != 0 || h.Errors != 0 {
					t.Errorf("handshakes = %+v, want several completed and none failed", h)
				}
				if h.Attempts != h.Completed+h.Failed+h.CutOff {
					t.Errorf("handshakes = %+v: attempts are not completed + failed + cut off", h)
				}
			},
		},
		{
			name: "storm against a limit sees 1013",
			run: func(ctx context.Context) (*Report, error) {
				return Storm(ctx, StormOptions{
					Options:  Options{URL: limited.url("/echo"), Conns: 8, Duration: 600 * time.Millisecond},
					Policies: []Policy{PolicyBackoff},
					Backoff:  reconnect.Backoff{Base: 100 * time.Millisecond, Cap: 200 * time.Millisecond},
				})
			},
			check: func(t *testing.T, rep *Report) {
				rr := rep.Runs[0]
				if n := codeCount(rr, 1013, "server"); n == 0 {
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
				if rr.Handshakes.Errors != 0 {
					t.Errorf("handshake errors = %d, want 0: refusals are the server's answer, not errors", rr.Handshakes.Errors)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := tt.run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Schema != Schema || len(rep.Runs) != 1 || rep.Interrupted || rep.Runs[0].StoppedEarly != "" {
				t.Fatalf("report = schema %q, %d runs, interrupted %v, stopped early %q", rep.Schema, len(rep.Runs), rep.Interrupted, rep.Runs[0].StoppedEarly)
			}
			if err := rep.Check(0); err != nil {
				t.Errorf("Check(0) = %v, want nil for a healthy run", err)
			}
			tt.check(t, rep)
		})
	}
}

// TestConnectCutOff: dials still in progress when the run ends are cut
// off by the run, not failed by the server. Every upgrade at /slow takes
// 150 ms, so each worker has one in flight at the end of a 400 ms run.
func TestConnectCutOff(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	rep, err := Connect(context.Background(), ConnectOptions{Options: Options{URL: srv.url("/slow"), Conns: 4, Duration: 400 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	h := rep.Runs[0].Handshakes
	if h.Failed != 0 || h.Errors != 0 || len(rep.Runs[0].Errors) != 0 {
		t.Errorf("handshakes = %+v, errors %+v: want no failure from a healthy server", h, rep.Runs[0].Errors)
	}
	if h.CutOff == 0 || h.Completed == 0 || h.Attempts != h.Completed+h.CutOff {
		t.Errorf("handshakes = %+v, want completed ones and the in-flight ones cut off", h)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !contains(text.String(), "cut off by the end of the run") {
		t.Errorf("text does not report the cut-off dials:\n%s", text.String())
	}
}

// TestNothingConnects: against an address where nothing listens, a plain
// HTTP page, or a TLS dial to a server without TLS, every mode stops as
// soon as its first attempts have failed, long before its 30 s, and Check
// says that nothing was measured and why.
func TestNothingConnects(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	closed := "ws://" + closedPort(t) + "/echo"
	targets := []struct {
		name, url, cause string
	}{
		{"unreachable", closed, "connection refused"},
		{"plain HTTP", srv.url("/plain"), "HTTP 200 OK"},
		{"wss to ws", "wss://" + srv.addr() + "/echo", "TLS handshake failed"},
	}
	modes := map[string]func(ctx context.Context, o Options) (*Report, error){
		"echo":    func(ctx context.Context, o Options) (*Report, error) { return Echo(ctx, EchoOptions{Options: o}) },
		"connect": func(ctx context.Context, o Options) (*Report, error) { return Connect(ctx, ConnectOptions{Options: o}) },
		"idle":    func(ctx context.Context, o Options) (*Report, error) { return Idle(ctx, IdleOptions{Options: o}) },
		"storm": func(ctx context.Context, o Options) (*Report, error) {
			return Storm(ctx, StormOptions{Options: o, Policies: []Policy{PolicyImmediate}})
		},
	}
	for _, tg := range targets {
		for mode, run := range modes {
			t.Run(tg.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				rep, err := run(context.Background(), Options{URL: tg.url, Conns: 5, Duration: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if took := time.Since(start); took > 5*time.Second {
					t.Errorf("took %v to give up on %s", took, tg.url)
				}
				rr := rep.Runs[0]
				if rr.StoppedEarly == "" && mode != "echo" { // echo ends by itself once every connection failed
					t.Errorf("run not marked as stopped early: %+v", rr.Handshakes)
				}
				err = rep.Check(0.5)
				var ce *CheckError
				if !errors.As(err, &ce) || !ce.Nothing || !contains(err.Error(), tg.cause) || !contains(err.Error(), "nothing measured") {
					t.Errorf("Check = %v, want nothing measured because of %q", err, tg.cause)
				}
				if rr.Handshakes.Errors < 5 || rr.Handshakes.Completed != 0 {
					t.Errorf("handshakes = %+v, want at least 5 errors and nothing completed", rr.Handshakes)
				}
			})
		}
	}
}

func TestCheckThreshold(t *testing.T) {
	t.Parallel()
	run := func(attempts, errs, cutOff uint64) *Report {
		return &Report{Mode: "connect", Runs: []Run{{
			Name:         "connect",
			Handshakes:   Handshakes{Attempts: attempts, Completed: attempts - errs - cutOff, Failed: errs, Errors: errs, CutOff: cutOff},
			Errors:       []ErrorCount{{Kind: "connection reset", Count: errs}},
			HTTPStatuses: []StatusCount{{Status: 101, Text: "Switching Protocols", Count: attempts - errs - cutOff}},
		}}}
	}
	tests := []struct {
		name string
		rep  *Report
		max  float64
		want string // "" for no error
	}{
		{"below", run(100, 5, 0), 0.1, ""},
		{"at the threshold", run(100, 10, 0), 0.1, ""},
		{"above", run(100, 11, 0), 0.1, "11 of 100 handshakes failed (11% of the attempts, more than the 10% allowed): connection reset"},
		{"cut-offs are not attempts that finished", run(110, 10, 10), 0.1, ""},
		{"zero tolerance", run(100, 1, 0), 0, "1 of 100 handshakes failed"},
		{"refusals are not errors", &Report{Mode: "connect", Runs: []Run{{Handshakes: Handshakes{Attempts: 10, Completed: 2, Failed: 8}}}}, 0, ""},
		{"one handshake", &Report{Mode: "connect", Runs: []Run{{Handshakes: Handshakes{Attempts: 1, Failed: 1, Errors: 1}, Errors: []ErrorCount{{Kind: "timeout", Count: 1}}}}}, 0.1, "1 of 1 handshake failed (timeout): nothing measured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.rep.Check(tt.max)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Check(%v) = %v, want nil", tt.max, err)
			case tt.want != "" && (err == nil || !contains(err.Error(), tt.want)):
				t.Errorf("Check(%v) = %v, want %q", tt.max, err, tt.want)
			}
		})
	}
}

// idleUntilMeasured runs Idle and ends it as soon as the figures are
// taken (Progress phase "holding"), however long connecting took on a
// busy machine.
func idleUntilMeasured(t *testing.T, o IdleOptions) *Report {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o.Duration = 30 * time.Second
	o.ProgressInterval = 10 * time.Millisecond
	o.Progress = func(p Progress) {
		if p.Phase == "holding" {
			cancel()
		}
	}
	rep, err := Idle(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestIdle(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	t.Run("this process, 100 connections", func(t *testing.T) {
		// No metrics URL: the figures are this process's, which holds both
		// ends of every connection; after a collection they are right at
		// 100 connections (the case that printed −6.9 KiB).
		rep := idleUntilMeasured(t, IdleOptions{Options: Options{URL: srv.url("/echo"), Conns: 100}, Settle: 50 * time.Millisecond})
		m := rep.Runs[0].Memory
		if m == nil || m.Source != "client" || m.Connections != 100 {
			t.Fatalf("memory = %+v, want this process's figures for 100 connections", m)
		}
		if m.PerConnection == nil {
			t.Fatalf("per connection withheld: %s", m.Withheld)
		}
		// Both ends of a connection: two goroutines with their stacks, two
		// Conns with their buffers; a few KiB to a few tens of KiB, never
		// negative.
		if per := *m.PerConnection; per < 1024 || per > 256<<10 || m.PerConnectionNoise*2 > per {
			t.Errorf("per connection = %.0f ± %.0f B, want 1 KiB to 256 KiB, and twice the noise below it", per, m.PerConnectionNoise)
		}
		if err := rep.Check(0); err != nil {
			t.Error(err)
		}
	})
	t.Run("the run ends before the connections settle", func(t *testing.T) {
		rep, err := Idle(context.Background(), IdleOptions{Options: Options{URL: srv.url("/echo"), Conns: 5, Duration: 300 * time.Millisecond}, Settle: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if m := rep.Runs[0].Memory; m.PerConnection != nil || !contains(m.Withheld, "before every connection was open and had settled") {
			t.Errorf("memory = %+v, want no figure from connections that were closing", m)
		}
	})
	t.Run("the server, too few connections for its noise", func(t *testing.T) {
		rep := idleUntilMeasured(t, IdleOptions{
			Options:    Options{URL: srv.url("/echo"), Conns: 20},
			MetricsURL: "http://" + srv.addr() + "/metrics",
			Settle:     50 * time.Millisecond,
		})
		m := rep.Runs[0].Memory
		if m == nil || m.Source != "server" || m.Connections != 20 || m.ServerConnections == nil || *m.ServerConnections != 20 {
			t.Fatalf("memory = %+v, want the server's figures for 20 connections", m)
		}
		if m.GoroutinesAfter < m.GoroutinesBefore+20 {
			t.Errorf("memory = %+v, want goroutines to grow by 20 connections", m)
		}
		// 20 connections of a few KiB are far below the 4 MiB a heap gauge
		// may count as garbage: no figure, and a reason.
		if m.PerConnection != nil || !contains(m.Withheld, "noise") {
			t.Errorf("per connection = %v, withheld %q: want no figure and the reason", m.PerConnection, m.Withheld)
		}
		var text bytes.Buffer
		if err := rep.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		if !contains(text.String(), "not reported: heap and stacks grew by") || !contains(text.String(), "20 connections") {
			t.Errorf("text does not say why there is no figure:\n%s", text.String())
		}
	})
}

// TestInterrupted is Ctrl-C: the context ends long before Duration, and
// the report still holds what was measured and says it was interrupted.
func TestInterrupted(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(400*time.Millisecond, cancel)
	start := time.Now()
	rep, err := Echo(ctx, EchoOptions{Options: Options{URL: srv.url("/echo"), Conns: 3, Duration: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("interrupted run took %v to stop", took)
	}
	rr := rep.Runs[0]
	if !rep.Interrupted || rr.Messages == nil || rr.Messages.Received == 0 || rr.StoppedEarly != "" {
		t.Errorf("report = interrupted %v, messages %+v, stopped early %q; want the partial measurements", rep.Interrupted, rr.Messages, rr.StoppedEarly)
	}
	if n := codeCount(rr, 1000, "client"); n != 3 {
		t.Errorf("1000 by client = %d, want 3: every connection closed cleanly", n)
	}
}

// TestProgress: the callback sees the run going on and is never called
// once the mode has returned.
func TestProgress(t *testing.T) {
	srv := startTestServer(t, shed.Limits{})
	var calls, late atomic.Int64
	var returned atomic.Bool
	var last atomic.Value
	var maxOpen atomic.Int64
	rep, err := Echo(context.Background(), EchoOptions{Options: Options{
		URL: srv.url("/echo"), Conns: 2, Duration: 300 * time.Millisecond, ProgressInterval: 20 * time.Millisecond,
		Progress: func(p Progress) {
			calls.Add(1)
			if returned.Load() {
				late.Add(1)
			}
			last.Store(p)
			if int64(p.Open) > maxOpen.Load() {
				maxOpen.Store(int64(p.Open))
			}
		},
	}})
	returned.Store(true)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	if calls.Load() < 3 || late.Load() != 0 {
		t.Errorf("progress called %d times, %d after the return; want several, none late", calls.Load(), late.Load())
	}
	p := last.Load().(Progress)
	if p.Mode != "echo" || p.Target != 2 || p.Messages == 0 || !contains(p.String(), "/2  handshakes 2") || maxOpen.Load() != 2 {
		t.Errorf("last progress = %+v (%s), at most %d open; want 2 connections open at some point", p, p, maxOpen.Load())
	}
	_ = rep
}

// TestStormRestart is the storm across a server restart at a small scale:
// 300 clients on an in-test ebb server that closes them all with 1012 and
// comes back on the same address. ebb's jittered backoff must offer a
// lower peak rate of connection attempts than clients that reconnect at
// once and than clients with backoff but no jitter, and every client must
// come back. The assertion is on attempts, which the clients' policy
// alone decides: completed handshakes also depend on how fast the server
// (sharing two cores with 300 clients, and slowed tenfold under -race)
// gets through them, so their peak is only logged.
func TestStormRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("300 clients across a server restart, three times")
	}
	const clients = 300
	rs := &restarter{addr: "127.0.0.1:0", opts: shed.Options{DrainWindow: time.Millisecond, DrainHint: time.Millisecond}}
	rep, err := Storm(context.Background(), StormOptions{
		Options:  Options{Conns: clients, Duration: 15 * time.Second, DialTimeout: 5 * time.Second},
		Policies: []Policy{PolicyBackoff, PolicyImmediate, PolicyNoJitter},
		Backoff:  reconnect.Backoff{Base: 2 * time.Second, Cap: 4 * time.Second},
		Restart:  &RestartOptions{Server: rs, Settle: 100 * time.Millisecond, Gap: 200 * time.Millisecond, InProcess: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Client.InProcessServer || rep.URL != "ws://"+rs.addr+"/echo" {
		t.Errorf("report URL %q, in-process %v; want the restarter's URL and an in-process server", rep.URL, rep.Client.InProcessServer)
	}
	peaks := map[string]float64{}
	for _, rr := range rep.Runs {
		rst := rr.Restart
		if rst == nil {
			t.Fatalf("%s: no restart report (the clients never all connected?)", rr.Name)
		}
		if rst.FullReconnect == nil {
			t.Errorf("%s: not every client came back within 15 s", rr.Name)
		}
		if n := codeCount(rr, 1012, "server"); n < clients {
			t.Errorf("%s: %d closes with 1012 from the server, want at least %d", rr.Name, n, clients)
		}
		if rr.Handshakes.Errors != 0 {
			t.Errorf("%s: %d handshake errors, want none: failures during the restart are the storm's, not errors", rr.Name, rr.Handshakes.Errors)
		}
		peaks[rr.Name] = rst.PeakAttemptsPerSecond
		t.Logf("%-9s peak %5.0f attempts/s, %5.0f handshakes/s, all back %s after the drain, %d reconnect attempts",
			rr.Name, rst.PeakAttemptsPerSecond, rst.PeakPerSecond, optSeconds(rst.FullReconnect), rr.Reconnect.Attempts)
	}
	for _, other := range []string{string(PolicyImmediate), string(PolicyNoJitter)} {
		if peaks[string(PolicyBackoff)] >= peaks[other] {
			t.Errorf("peak attempt rate: backoff %.0f/s, %s %.0f/s; want backoff lower", peaks[string(PolicyBackoff)], other, peaks[other])
		}
	}
	if err := rep.Check(0); err != nil {
		t.Error(err)
	}
}

func TestOptionsErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"no URL", func() error { _, err := Echo(ctx, EchoOptions{}); return err }, `scheme ""`},
		{"http URL", func() error { _, err := Connect(ctx, ConnectOptions{Options: Options{URL: "http://x/"}}); return err }, "want ws:// or wss://"},
		{"negative conns", func() error {
			_, err := Idle(ctx, IdleOptions{Options: Options{URL: "ws://x/", Conns: -1}})
			return err
		}, "Conns -1"},
		{"size for a rate", func() error {
			_, err := Echo(ctx, EchoOptions{Options: Options{URL: "ws://x/"}, Rate: 10, Size: 4})
			return err
		}, "carry the send time"},
		{"unknown policy", func() error {
			_, err := Storm(ctx, StormOptions{Options: Options{URL: "ws://x/"}, Policies: []Policy{"sometimes"}})
			return err
		}, `policy "sometimes"`},
		{"restart without a server", func() error { _, err := Storm(ctx, StormOptions{Restart: &RestartOptions{}}); return err }, "Server is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.run(); err == nil || !contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestEchoAgainstHTTPTest: the package works against any server, here
// httptest with websocket.Handler, as the Example shows.
func TestEchoAgainstHTTPTest(t *testing.T) {
	hs := httptest.NewServer(websocket.Handler(nil, echo))
	defer hs.Close()
	rep, err := Echo(context.Background(), EchoOptions{Options: Options{URL: "ws" + strings.TrimPrefix(hs.URL, "http"), Conns: 1, Duration: 200 * time.Millisecond}, Binary: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Check(0); err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !contains(text.String(), "target 1, peak 1 open") || contains(text.String(), "1 connections") {
		t.Errorf("text:\n%s", text.String())
	}
}
