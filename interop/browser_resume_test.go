package interop

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// TestBrowserClientResume: ebb.js in Chromium follows a broadcast from a Go
// server that speaks ebb.resume.v1 (framed with package reconnect's codec)
// across a 1012 and a 1013. Each reconnection asks from= the message after
// the last one delivered; the browser gets the missed messages once and in
// order (a replayed duplicate is dropped), text as strings and binary as
// ArrayBuffers without the envelope, and the gap the history could not
// fill is reported in its place.
func TestBrowserClientResume(t *testing.T) {
	t.Parallel()
	browser := startBrowser(t)
	s := newSite(t)
	var conns atomic.Int32
	froms := make(chan string, 8)
	step := make(chan struct{})
	res := s.serveWS("/broadcast", &websocket.AcceptOptions{Subprotocols: []string{reconnect.ResumeSubprotocol}},
		func(ctx context.Context, r *http.Request, c *websocket.Conn) error {
			froms <- r.URL.Query().Get(reconnect.ResumeFromParam)
			if c.Subprotocol() != reconnect.ResumeSubprotocol {
				return fmt.Errorf("Chromium offered %q, want %s", r.Header.Get("Sec-WebSocket-Protocol"), reconnect.ResumeSubprotocol)
			}
			text := func(p []byte) error { return c.Write(ctx, websocket.MessageText, p) }
			data := func(typ websocket.MessageType, seq uint64, p string) error {
				return c.Write(ctx, typ, reconnect.AppendResumeData(nil, seq, []byte(p)))
			}
			var err error
			switch conns.Add(1) {
			case 1:
				err = firstErr(
					text(reconnect.AppendResumeLive(nil, 1)),
					data(websocket.MessageText, 1, "alpha"),
					data(websocket.MessageBinary, 2, strings.Repeat("\x00\xff", 150)),
				)
				<-step
				return firstErr(err, c.Close(closecode.ServiceRestart, closecode.FormatRetryHint("restarting", 50*time.Millisecond)))
			case 2:
				err = firstErr(
					data(websocket.MessageText, 2, "duplicate"), // an at-least-once replay
					data(websocket.MessageText, 3, "charlie €"),
					data(websocket.MessageBinary, 4, strings.Repeat("b", 400)),
					text(reconnect.AppendResumeLive(nil, 5)),
					data(websocket.MessageText, 5, "echo"),
				)
				<-step
				return firstErr(err, c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("fell behind", 50*time.Millisecond)))
			default:
				err = firstErr(
					text(reconnect.AppendResumeGap(nil, 6, 9)),
					data(websocket.MessageText, 9, "india"),
					text(reconnect.AppendResumeLive(nil, 10)),
				)
				c.Read(ctx) // until the page closes
				return err
			}
		})

	page := openPage(t, browser, s)
	call(t, page, nil, "startClient", "/broadcast", map[string]any{"resume": true, "base": 100, "cap": 400})
	waitFor(t, page, "window.received.length >= 2", 15*time.Second)
	step <- struct{}{}
	waitFor(t, page, "window.received.length >= 5", 15*time.Second)
	step <- struct{}{}
	waitFor(t, page, "window.received.length >= 7 && window.client.live", 15*time.Second)

	var got []string
	call(t, page, &got, "(async () => window.received)")
	want := []string{"alpha", "binary 300 B", "charlie €", "binary 400 B", "echo", "gap too-old 6 9", "india"}
	if !slices.Equal(got, want) {
		t.Errorf("interop: ebb.js delivered %q, want %q", got, want)
	}
	var last int
	call(t, page, &last, "(async () => window.client.lastSeq)")
	if last != 9 {
		t.Errorf("interop: ebb.js lastSeq = %d, want 9", last)
	}
	var asked []string
	for range 3 {
		asked = append(asked, <-froms)
	}
	if !slices.Equal(asked, []string{"", "3", "6"}) {
		t.Errorf("interop: the server saw from= %q, want \"\", 3, 6", asked)
	}
	var opens []jsEvent
	for _, e := range pageEvents(t, page) {
		if e.State == "open" {
			opens = append(opens, e)
		}
	}
	if len(opens) != 3 {
		t.Fatalf("interop: %d open events, want 3", len(opens))
	}
	for i, e := range opens {
		if e.Resume != "accepted" || e.Protocol != reconnect.ResumeSubprotocol || e.From != []int{0, 3, 6}[i] {
			t.Errorf("interop: open event %d: resume %q protocol %q from %d, want accepted, %s, %d", i, e.Resume, e.Protocol, e.From, reconnect.ResumeSubprotocol, []int{0, 3, 6}[i])
		}
	}
	call(t, page, nil, "(async () => window.client.close())")
	waitState(t, page, "stopped", 10*time.Second)
	for range 3 {
		select {
		case err := <-res:
			if err != nil {
				t.Errorf("interop: server side: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("interop: a server connection did not end")
		}
	}
}

// firstErr returns the first non-nil error: in a sequence of writes the
// first failure explains the rest.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
