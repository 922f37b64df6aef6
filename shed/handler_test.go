package shed

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// TestHandlerKeepsSlotUntilConnEnds checks that a connection served off
// the HTTP handler still holds its slot, counts against MaxConns, and is
// drained with 1012.
func TestHandlerKeepsSlotUntilConnEnds(t *testing.T) {
	t.Parallel()
	sh, err := New(&Options{Limits: Limits{MaxConns: 1}, DrainWindow: 100 * time.Millisecond, Jitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	srv := httptest.NewServer(sh.Handler(nil, func(ctx context.Context, c *websocket.Conn) {
		defer close(served)
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			c.Write(ctx, typ, p)
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Write(ctx, websocket.MessageText, []byte("x"))
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sh.Stats().Connections; n != 1 {
		t.Fatalf("%d connections counted while one is served off the handler, want 1", n)
	}
	// The slot is held: a second client is refused with 1013.
	c2, _, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		_, _, err = c2.Read(ctx)
	}
	if websocket.CloseStatus(err) != closecode.TryAgainLater {
		t.Fatalf("second client got %v, want 1013", err)
	}
	done := make(chan error, 1)
	go func() { done <- sh.Shutdown(ctx) }()
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != closecode.ServiceRestart {
		t.Fatalf("drained client got %v, want 1012", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-served
	if st := sh.Stats(); st.Connections != 0 || st.Drained != 1 {
		t.Fatalf("after drain: %d connections, %d drained; want 0 and 1", st.Connections, st.Drained)
	}
}
