package shed_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// readmeServe is the README's admission-control snippet: ebb's handler and
// any other library's behind one Shedder, a paced accept loop, and a drain
// on stop that keeps refusing newcomers until the last connection is gone.
func readmeServe(ctx context.Context, srv *http.Server, ln net.Listener, stop <-chan struct{},
	serve func(context.Context, *websocket.Conn), gorillaHandler http.Handler) error {
	// README:begin
	sh, err := shed.New(&shed.Options{Limits: shed.Limits{MaxConns: 10_000, MaxConnsPerIP: 20, HardDemand: 20_000}})
	if err != nil {
		return err // a limit out of range, said plainly
	}
	http.Handle("/ws", sh.Handler(nil, serve))            // ebb: the place is held until serve returns
	http.Handle("/legacy", sh.Middleware(gorillaHandler)) // any library: one line
	go srv.Serve(sh.Listener(ln, nil))                    // a connect storm waits its turn

	<-stop            // SIGTERM, say
	sh.Shutdown(ctx)  // 1012 to every connection over the drain window; newcomers refused meanwhile
	srv.Shutdown(ctx) // then stop the listener and plain HTTP
	// README:end
	return nil
}

// The README's snippet, run: a client of each handler echoes, then both
// are drained with 1012 and a retry hint.
func Example_readme() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{}
	stop := make(chan struct{})
	serve := func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			if c.Write(ctx, typ, p) != nil {
				return
			}
		}
	}
	// Stands in for a gorilla/websocket handler (examples/ has the real one).
	other := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := shed.Accept(w, r, nil)
		if err != nil {
			return
		}
		serve(r.Context(), c)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- readmeServe(ctx, srv, ln, stop, serve, other) }()

	var conns []*websocket.Conn
	for _, path := range []string{"/ws", "/legacy"} {
		var c *websocket.Conn
		for try := 0; try < 50; try++ { // until the handlers are registered
			if c, _, err = websocket.Dial(ctx, "ws://"+ln.Addr().String()+path, nil); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			fmt.Println(path, err)
			return
		}
		c.Write(ctx, websocket.MessageText, []byte("hi "+path))
		_, p, err := c.Read(ctx)
		fmt.Println(string(p), err)
		conns = append(conns, c)
	}
	close(stop)
	for _, c := range conns {
		_, _, err := c.Read(ctx)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			_, hinted := closecode.ParseRetryHint(ce.Reason)
			fmt.Println(ce.Code, "hint:", hinted, strings.Contains(ce.Reason, "retry-after="))
		}
	}
	fmt.Println(<-done)
	// Output:
	// hi /ws <nil>
	// hi /legacy <nil>
	// 1012 Service Restart hint: true true
	// 1012 Service Restart hint: true true
	// <nil>
}
