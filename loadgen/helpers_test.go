package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/internal/leakcheck"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }

// testServer is an ebb server built from websocket and shed, as `ebb
// serve` is: /echo (no compression), /deflate (echo with
// permessage-deflate), /slow (echo after a slow upgrade), /plain (an HTTP
// page, not a WebSocket endpoint) and /metrics with ebb's process gauges.
type testServer struct {
	sh     *shed.Shedder
	http   *http.Server
	ln     net.Listener
	served chan error
	once   sync.Once
	err    error
}

// slowUpgrade is how long /slow waits before it upgrades.
const slowUpgrade = 150 * time.Millisecond

func newTestServer(addr string, opts shed.Options) (*testServer, error) {
	sh, err := shed.New(&opts)
	if err != nil {
		return nil, err
	}
	var ln net.Listener
	// A restarted server's port may take a moment to be free again.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/echo", sh.Handler(nil, echo))
	mux.Handle("/deflate", sh.Handler(&websocket.AcceptOptions{Compression: &websocket.CompressionOptions{}}, echo))
	slow := sh.Handler(nil, echo)
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(slowUpgrade):
		case <-r.Context().Done():
			return
		}
		slow.ServeHTTP(w, r)
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "just a web page") })
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		writeTestGauges(w)
		_ = sh.WritePrometheus(w)
	})
	s := &testServer{sh: sh, http: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, ln: ln, served: make(chan error, 1)}
	go func() { s.served <- s.http.Serve(ln) }()
	return s, nil
}

// startTestServer runs a testServer on a free loopback port for the test.
func startTestServer(t *testing.T, limits shed.Limits) *testServer {
	t.Helper()
	s, err := newTestServer("127.0.0.1:0", shed.Options{Limits: limits, DrainWindow: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.stop(ctx)
	})
	return s
}

func (s *testServer) addr() string           { return s.ln.Addr().String() }
func (s *testServer) url(path string) string { return "ws://" + s.addr() + path }

// stop drains the WebSocket connections, then closes the listener and
// waits until the server no longer serves.
func (s *testServer) stop(ctx context.Context) error {
	s.once.Do(func() {
		s.err = s.sh.Shutdown(ctx)
		s.err = errors.Join(s.err, s.http.Close())
		<-s.served
	})
	return s.err
}

// echo sends every message back.
func echo(ctx context.Context, c *websocket.Conn) {
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return
		}
	}
}

// writeTestGauges writes this process's memory gauges as `ebb serve` does.
func writeTestGauges(w http.ResponseWriter) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	metrics.Read(s)
	fmt.Fprintf(w, "# TYPE %s gauge\n%s %d\n", MetricHeapBytes, MetricHeapBytes, s[0].Value.Uint64())
	fmt.Fprintf(w, "%s %d\n%s %d\n", MetricStacksBytes, s[1].Value.Uint64(), MetricGoroutines, runtime.NumGoroutine())
}

// restarter is a Restarter on testServers, all at the first one's address.
type restarter struct {
	addr string
	opts shed.Options
	cur  *testServer
}

func (r *restarter) Start(context.Context) (string, error) {
	s, err := newTestServer(r.addr, r.opts)
	if err != nil {
		return "", err
	}
	r.cur, r.addr = s, s.addr()
	return s.url("/echo"), nil
}

func (r *restarter) Stop(ctx context.Context) error { return r.cur.stop(ctx) }

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func codeCount(rr Run, code int, by string) uint64 {
	var n uint64
	for _, c := range rr.CloseCodes {
		if c.Code == code && (by == "" || c.By == by) {
			n += c.Count
		}
	}
	return n
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
