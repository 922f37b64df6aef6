package probe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/probe"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
	"github.com/ebb-ws/ebb/internal/leakcheck"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

func ebbServer(t *testing.T, comp *websocket.CompressionOptions, limit int) string {
	t.Helper()
	s, err := server.New(server.Config{Addr: "127.0.0.1:0", Compression: comp, Shed: shed.Options{Limits: shed.Limits{MaxConns: limit}}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return "ws://" + s.Addr() + "/echo"
}

func httpServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// texts returns the report as text and as JSON (decoded again).
func texts(t *testing.T, rep *probe.Report) (text, js string, back probe.Report) {
	t.Helper()
	var tb, jb bytes.Buffer
	if err := rep.WriteText(&tb); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&jb); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(jb.Bytes(), &back); err != nil {
		t.Fatalf("the JSON report does not decode: %v\n%s", err, jb.String())
	}
	return tb.String(), jb.String(), back
}

// noFloatNoise matches a JSON number with more decimals than the report
// promises (0.1 ms, 1 ms for seconds).
var noFloatNoise = regexp.MustCompile(`_ms": -?[0-9]+\.[0-9]{2,}|_s": -?[0-9]+\.[0-9]{4,}`)

func TestRequired(t *testing.T) {
	t.Parallel()
	plain := ebbServer(t, nil, 0)
	deflate := ebbServer(t, &websocket.CompressionOptions{ServerMaxWindowBits: 12}, 0)
	req := []websocket.Requirement{{Extension: "permessage-deflate"}}
	ctx := context.Background()

	rep, err := probe.Run(ctx, plain, &probe.Options{Require: req})
	if err != nil {
		t.Fatal(err)
	}
	text, js, back := texts(t, rep)
	if rep.OK || rep.Status != 101 || len(rep.Required) != 1 || !rep.Required[0].Would1010 || !strings.Contains(rep.Verdict, "1010") || back.Verdict != rep.Verdict {
		t.Fatalf("against compression off: %+v", rep)
	}
	if !strings.Contains(text, "Fix for 1010: "+closecode.Lookup(1010).Fix) || !strings.Contains(text, "declined") {
		t.Errorf("text lacks the declined extension or the fix:\n%s", text)
	}
	if m := noFloatNoise.FindString(js); m != "" {
		t.Errorf("float noise %q in\n%s", m, js)
	}

	rep, err = probe.Run(ctx, deflate, &probe.Options{Require: req})
	if err != nil {
		t.Fatal(err)
	}
	text, _, _ = texts(t, rep)
	if !rep.OK || !strings.Contains(text, "accepted") || !strings.Contains(text, "server_max_window_bits=12") || rep.Verdict != "handshake succeeded" {
		t.Fatalf("against compression on: %+v\n%s", rep, text)
	}
	if _, err := probe.Run(ctx, deflate, &probe.Options{Require: req, NoCompress: true}); err == nil {
		t.Error("Require with NoCompress: no error")
	}
}

// TestNoResponse: when no handshake response arrived, the report says
// what happened and judges no extension ("declined" would be a lie).
func TestNoResponse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		url     string
		timeout time.Duration
		verdict string
	}{
		{name: "refused", url: wstest.Refused(t), verdict: "no handshake response: connection refused by 127.0.0.1:"},
		{name: "silent", url: wstest.Silent(t), timeout: 200 * time.Millisecond, verdict: "no handshake response: the handshake with 127.0.0.1:"},
		{name: "not found", url: httpServer(t, http.NotFoundHandler()), verdict: "not upgraded: HTTP 404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rep, err := probe.Run(context.Background(), tt.url, &probe.Options{Timeout: tt.timeout})
			if err != nil {
				t.Fatal(err)
			}
			text, js, back := texts(t, rep)
			if rep.OK || !strings.HasPrefix(rep.Verdict, tt.verdict) || back.Verdict != rep.Verdict {
				t.Fatalf("verdict %q, want %q…", rep.Verdict, tt.verdict)
			}
			if len(rep.Extensions) != 0 || rep.Accepted != "" || strings.Contains(text, "declined") || strings.Contains(text, "answered (none)") || strings.Contains(js, "declined") || strings.Contains(js, "accepted_extensions") {
				t.Errorf("an extension verdict without a 101:\n%s\n%s", text, js)
			}
			if !strings.Contains(text, "offered permessage-deflate") || !strings.Contains(text, "(no upgrade, so no answer)") {
				t.Errorf("text does not say what was offered and that nothing answered:\n%s", text)
			}
			if tt.timeout > 0 && !strings.Contains(rep.Verdict, "did not finish within 200ms: the server accepted the TCP connection but did not answer the upgrade request") {
				t.Errorf("verdict %q does not explain the timeout", rep.Verdict)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	full := ebbServer(t, nil, 1)
	ctx := context.Background()
	// Hold the only slot.
	c, _, err := websocket.Dial(ctx, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	rep, err := probe.Run(ctx, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	text, js, back := texts(t, rep)
	ic := rep.ImmediateClose
	if rep.OK || ic == nil || ic.Code != 1013 || ic.RetryAfterS == nil || *ic.RetryAfterS <= 0 || back.ImmediateClose == nil || !strings.Contains(rep.Verdict, "1013 Try Again Later: retry after") {
		t.Fatalf("probe of a full server: %+v", rep)
	}
	if !strings.Contains(text, "means") || !strings.Contains(text, closecode.Lookup(1013).Fix) || !strings.Contains(js, `"retry_after_s": `) {
		t.Errorf("report lacks the meaning, the fix or the hint:\n%s\n%s", text, js)
	}
	if m := noFloatNoise.FindString(js); m != "" {
		t.Errorf("float noise %q in\n%s", m, js)
	}

	// A close that comes in a write of its own, after Dial returned, is
	// caught by the listen window.
	late := wstest.Refuser(t, false, closecode.TryAgainLater, "full; retry-after=2")
	rep, _ = probe.Run(ctx, late, &probe.Options{Listen: -1})
	if rep.ImmediateClose != nil {
		t.Errorf("Listen -1 waited for a close: %+v", rep.ImmediateClose)
	}
	same := wstest.Refuser(t, true, closecode.TryAgainLater, "full; retry-after=2")
	rep, _ = probe.Run(ctx, same, nil)
	if ic := rep.ImmediateClose; ic == nil || ic.Code != 1013 || *ic.RetryAfterS != 2 {
		t.Errorf("a 1013 with the 101: %+v", rep)
	}

	busy := httpServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		http.Error(w, "<overloaded>", http.StatusServiceUnavailable)
	}))
	rep, _ = probe.Run(ctx, busy, nil)
	text, js, _ = texts(t, rep)
	if rep.OK || rep.Status != 503 || !strings.Contains(rep.Verdict, "HTTP 503") || !strings.Contains(rep.Verdict, "Retry-After 30s") || !strings.Contains(rep.Verdict, "1006") {
		t.Fatalf("probe of a 503: %+v", rep)
	}
	if !strings.Contains(js, `"body": "<overloaded>"`) {
		t.Errorf("JSON body is HTML-escaped or missing:\n%s", js)
	}
	if strings.Contains(text, "declined") {
		t.Errorf("an extension verdict on a 503:\n%s", text)
	}
}
