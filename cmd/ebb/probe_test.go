package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

func probeServer(t *testing.T, comp *websocket.CompressionOptions, limit int) string {
	t.Helper()
	s, err := server.New(server.Config{Addr: "127.0.0.1:0", Compression: comp, Shed: shed.Options{Limits: shed.Limits{MaxConns: limit}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return "ws://" + s.Addr() + "/echo"
}

func TestProbe(t *testing.T) {
	t.Parallel()
	plain := probeServer(t, nil, 0)
	deflate := probeServer(t, &websocket.CompressionOptions{ServerMaxWindowBits: 12}, 0)
	ctx := context.Background()

	r := runCmd(t, ctx, nil, "probe", "--json", "--require", "permessage-deflate", plain)
	var rep probeReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("probe --json output is not JSON: %v\n%s", err, r.stdout)
	}
	if r.code != exitFailure || rep.Status != 101 || len(rep.Required) != 1 || !rep.Required[0].Would1010 || !strings.Contains(rep.Verdict, "1010") {
		t.Fatalf("probe against compression off: exit %d, %+v", r.code, rep)
	}

	r = runCmd(t, ctx, nil, "probe", "--require", "permessage-deflate", deflate)
	if r.code != exitOK || !strings.Contains(r.stdout, "accepted") || !strings.Contains(r.stdout, "server_max_window_bits=12") {
		t.Fatalf("probe against compression on: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func TestProbeReportsRefusals(t *testing.T) {
	t.Parallel()
	full := probeServer(t, nil, 1)
	ctx := context.Background()
	// Hold the only slot.
	c, _, err := websocket.Dial(ctx, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	r := runCmd(t, ctx, nil, "probe", full)
	if r.code != exitFailure || !strings.Contains(r.stdout, "1013 Try Again Later") || !strings.Contains(r.stdout, "retry after") {
		t.Fatalf("probe of a full server: exit %d\n%s", r.code, r.stdout)
	}

	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
	}))
	defer busy.Close()
	r = runCmd(t, ctx, nil, "probe", "ws"+strings.TrimPrefix(busy.URL, "http"))
	if r.code != exitFailure || !strings.Contains(r.stdout, "HTTP 503") || !strings.Contains(r.stdout, "Retry-After 30s") || !strings.Contains(r.stdout, "1006") {
		t.Fatalf("probe of a 503: exit %d\n%s", r.code, r.stdout)
	}
	if r := runCmd(t, ctx, nil, "probe", "http://x"); r.code != exitUsage {
		t.Fatalf("probe of an http:// URL: exit %d, want usage error", r.code)
	}
}
