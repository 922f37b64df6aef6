package shed_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// echo is an ebb echo handler that registers its connection with shed.
func echo(w http.ResponseWriter, r *http.Request) {
	c, err := shed.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	for {
		typ, p, err := c.Read(context.Background())
		if err != nil {
			return
		}
		if err := c.Write(context.Background(), typ, p); err != nil {
			return
		}
	}
}

// A server with room for one connection: the second client is upgraded
// and told at once to come back later, with a hint it can act on.
func Example() {
	sh, err := shed.New(&shed.Options{Limits: shed.Limits{MaxConns: 1}})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(sh.Middleware(http.HandlerFunc(echo)))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	first, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer first.CloseNow()
	_ = first.Write(ctx, websocket.MessageText, []byte("hi"))
	_, _, _ = first.Read(ctx) // the echo: the first client is in

	// The refusal comes with the upgrade, so Dial itself reports it (when
	// the Close frame arrives a moment later, the first Read does).
	second, _, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		_, _, err = second.Read(ctx)
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		hint, ok := closecode.ParseRetryHint(ce.Reason)
		fmt.Println("second client:", ce.Code)
		fmt.Println("retry hint parsed:", ok, "at least 2s:", hint >= 2*time.Second)
	}

	_ = first.Close(closecode.NormalClosure, "")
	_ = sh.Shutdown(ctx)
	// Output:
	// second client: 1013 Try Again Later
	// retry hint parsed: true at least 2s: true
}

// Shutdown drains WebSockets, which http.Server.Shutdown does not wait
// for: start it from RegisterOnShutdown and wait for it afterwards.
func ExampleShedder_Shutdown() {
	sh, err := shed.New(&shed.Options{DrainWindow: 2 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: sh.Middleware(http.HandlerFunc(echo))}
	drained := make(chan error, 1)
	srv.RegisterOnShutdown(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		drained <- sh.Shutdown(ctx) // 1012 to every connection, spread over 2 s
	})
	go func() { _ = srv.Serve(ln) }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String(), nil)
	if err != nil {
		log.Fatal(err)
	}
	closed := make(chan closecode.Code, 1)
	go func() {
		_, _, err := c.Read(ctx)
		closed <- websocket.CloseStatus(err)
	}()
	// Once Dial returns, the server holds a slot for the connection; a
	// drain that starts before the handler calls Track closes it as soon
	// as it does.

	_ = srv.Shutdown(ctx) // stops listening; returns without waiting for WebSockets
	fmt.Println("drain:", <-drained)
	fmt.Println("client saw:", <-closed)
	// Output:
	// drain: <nil>
	// client saw: 1012 Service Restart
}

// Any WebSocket library can be drained and shed: register a Closer from
// the handler. Here is the shape for gorilla/websocket, whose Close does
// not send a Close frame by itself (c stands for a *websocket.Conn of
// gorilla; a fake keeps the example self-contained).
func ExampleTrack() {
	handler := func(w http.ResponseWriter, r *http.Request) {
		// c, err := upgrader.Upgrade(w, r, nil) …
		release := shed.Track(r, shed.CloserFunc(func(code closecode.Code, reason string) error {
			// msg := websocket.FormatCloseMessage(int(code), reason)
			// _ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
			// return c.Close()
			return nil
		}))
		defer release()
		// read loop …
	}
	sh, _ := shed.New(nil)
	mux := http.NewServeMux()
	mux.Handle("/gorilla", sh.Middleware(http.HandlerFunc(handler)))
}

// WritePrometheus serves /metrics without a client library.
func ExampleShedder_WritePrometheus() {
	sh, err := shed.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	sh.RecordClose(closecode.NormalClosure, shed.Received)
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_ = sh.WritePrometheus(w)
	})

	var b strings.Builder
	_ = sh.WritePrometheus(&b)
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "ebb_connections ") || strings.HasPrefix(line, "ebb_close_codes_total") {
			fmt.Println(line)
		}
	}
	// Output:
	// ebb_connections 0
	// ebb_close_codes_total{code="1000",direction="received"} 1
}

// Limits can be changed while the server runs, for example from an admin
// endpoint or when the machine's capacity changes.
func ExampleShedder_SetLimits() {
	sh, err := shed.New(&shed.Options{
		Limits: shed.Limits{MaxConns: 10_000, MaxConnsPerIP: 50, Rate: 200, Burst: 400},
	})
	if err != nil {
		log.Fatal(err)
	}
	l := sh.Limits()
	l.MaxConns = 5_000 // with a ShedPolicy, the excess is shed gradually
	if err := sh.SetLimits(l); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	fmt.Println(sh.Limits().MaxConns)
	// Output: 5000
}

// An Advisor makes the connection limit a cluster's: here a stand-in for a
// cluster view says the other servers have room, so a client refused by
// this full server is told to come back soon (the load balancer will send
// it elsewhere) instead of waiting out this server's overload.
func ExampleAdvisorFunc() {
	othersHaveRoom := true // from the cluster's view, in a real server
	sh, err := shed.New(&shed.Options{
		Limits: shed.Limits{MaxConns: 1},
		Jitter: -1, // exact hints for the example's output
		Advisor: shed.AdvisorFunc(func(r shed.AdviceRequest) shed.Advice {
			if r.MaxConns > 0 && r.Conns >= r.MaxConns && othersHaveRoom {
				return shed.Advice{Verdict: shed.VerdictNodeFull, Hint: 500 * time.Millisecond, Text: "node at capacity, cluster has room"}
			}
			return shed.Advice{} // no opinion: shed decides alone
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(sh.Middleware(http.HandlerFunc(echo)))
	defer srv.Close()
	defer sh.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	first, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer first.CloseNow()
	// Wait until the first connection holds its slot.
	for sh.Stats().Connections < 1 {
		time.Sleep(time.Millisecond)
	}
	second, _, err := websocket.Dial(ctx, url, nil)
	if err == nil {
		_, _, err = second.Read(ctx) // the Close frame came a moment later
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		fmt.Println(ce.Code, ce.Reason)
	}
	// Output:
	// 1013 Try Again Later node at capacity, cluster has room; retry-after=0.5
}
