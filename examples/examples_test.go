package examples

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/internal/leakcheck"
	"github.com/ebb-ws/ebb/shed"
	gorilla "github.com/gorilla/websocket"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// client is what the test needs from either library's client.
type client struct {
	echo  func(ctx context.Context, msg string) error
	leave func() error // closing handshake with 1000
	// next waits for the connection to end and returns the close code and
	// reason the server sent.
	next func(ctx context.Context) (closecode.Code, string, error)
	drop func()
}

func dialGorilla(ctx context.Context, url string) (*client, error) {
	c, _, err := gorilla.DefaultDialer.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	return &client{
		echo: func(_ context.Context, msg string) error {
			if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
				return err
			}
			_, p, err := c.ReadMessage()
			if err == nil && string(p) != msg {
				err = errors.New("echo mismatch: " + string(p))
			}
			return err
		},
		leave: func() error {
			if err := c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, ""), time.Now().Add(time.Second)); err != nil {
				return err
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for { // until the server's answering Close
				if _, _, err := c.ReadMessage(); err != nil {
					if gorilla.IsCloseError(err, gorilla.CloseNormalClosure) {
						return nil
					}
					return err
				}
			}
		},
		next: func(context.Context) (closecode.Code, string, error) {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				_, _, err := c.ReadMessage()
				var ce *gorilla.CloseError
				if errors.As(err, &ce) {
					return closecode.Code(ce.Code), ce.Text, nil
				}
				if err != nil {
					return 0, "", err
				}
			}
		},
		drop: func() { _ = c.Close() },
	}, nil
}

func dialCoder(ctx context.Context, url string) (*client, error) {
	c, _, err := coder.Dial(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	return &client{
		echo: func(ctx context.Context, msg string) error {
			if err := c.Write(ctx, coder.MessageText, []byte(msg)); err != nil {
				return err
			}
			_, p, err := c.Read(ctx)
			if err == nil && string(p) != msg {
				err = errors.New("echo mismatch: " + string(p))
			}
			return err
		},
		leave: func() error { return c.Close(coder.StatusNormalClosure, "") },
		next: func(ctx context.Context) (closecode.Code, string, error) {
			for {
				_, _, err := c.Read(ctx)
				var ce coder.CloseError
				if errors.As(err, &ce) {
					return closecode.Code(ce.Code), ce.Reason, nil
				}
				if err != nil {
					return 0, "", err
				}
			}
		},
		drop: func() { _ = c.CloseNow() },
	}, nil
}

func TestShedInFrontOfOtherLibraries(t *testing.T) {
	up := &gorilla.Upgrader{}
	libs := []struct {
		name    string
		handler http.Handler
		dial    func(ctx context.Context, url string) (*client, error)
	}{
		{"gorilla", GorillaEcho(up), dialGorilla},
		{"coder", CoderEcho(nil), dialCoder},
		{"gorilla server, coder client", GorillaEcho(up), dialCoder},
		{"coder server, gorilla client", CoderEcho(nil), dialGorilla},
	}
	for _, lib := range libs {
		t.Run(lib.name, func(t *testing.T) {
			t.Parallel()
			sh, err := shed.New(&shed.Options{Limits: shed.Limits{MaxConns: 2}, DrainWindow: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(sh.Middleware(lib.handler)) // the one line
			// The accept loop's guard works for any library too. With one
			// pending place, every client after the first would wait and
			// get a 503 unless the library's hijack freed the place.
			srv.Listener = sh.Listener(srv.Listener, &shed.ListenerOptions{MaxPending: 1, PendingWait: -1})
			srv.Start()
			defer srv.Close()
			url := "ws" + strings.TrimPrefix(srv.URL, "http")
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()

			// Two clients fit.
			var in []*client
			for i := range 2 {
				c, err := lib.dial(ctx, url)
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				defer c.drop()
				if err := c.echo(ctx, "hello"); err != nil {
					t.Fatalf("client %d echo: %v", i, err)
				}
				in = append(in, c)
			}

			// The third is upgraded and closed with 1013 and a hint.
			third, err := lib.dial(ctx, url)
			if err != nil {
				t.Fatalf("refused client: the handshake must succeed, got %v", err)
			}
			defer third.drop()
			code, reason, err := third.next(ctx)
			hint, ok := closecode.ParseRetryHint(reason)
			if err != nil || code != closecode.TryAgainLater || !ok || hint < shed.DefaultRetryBase {
				t.Fatalf("refused client saw %v %q %v: want 1013 with a retry hint", code, reason, err)
			}

			// One admitted client leaves normally; its slot is freed.
			if err := in[1].leave(); err != nil {
				t.Fatalf("normal close: %v", err)
			}
			waitFor(t, func() bool { return sh.Stats().Connections == 1 })

			// Shutdown drains the other one with 1012 through the adapter.
			done := make(chan error, 1)
			go func() { done <- sh.Shutdown(ctx) }()
			code, reason, err = in[0].next(ctx)
			if _, ok := closecode.ParseRetryHint(reason); err != nil || code != closecode.ServiceRestart || !ok {
				t.Fatalf("drained client saw %v %q %v: want 1012 with a hint", code, reason, err)
			}
			if err := <-done; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			st := sh.Stats()
			if st.Admitted != 2 || st.Drained != 1 || st.Connections != 0 || st.CloseSent[closecode.TryAgainLater] != 1 ||
				st.CloseReceived[closecode.NormalClosure] != 1 || st.CloseReceived[closecode.ServiceRestart] != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
