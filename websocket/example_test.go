package websocket_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// An echo server: Accept upgrades the request, then the handler reads and
// writes whole messages until the client closes.
func ExampleAccept() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols: []string{"echo.v1"},
		})
		if err != nil {
			return // Accept has answered the request with the reason.
		}
		defer c.CloseNow()
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				// The peer's close (or the violation this side closed for).
				log.Printf("connection ended: %v", err)
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	_ = http.ListenAndServe("127.0.0.1:8080", handler)
}

// A client: Dial, write, read the answer, close with a code.
func ExampleDial() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		typ, msg, err := c.Read(r.Context())
		if err != nil {
			return
		}
		c.Write(r.Context(), typ, []byte(strings.ToUpper(string(msg))))
		c.Read(r.Context()) // Wait for the client's close.
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	_, reply, err := c.Read(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply))
	fmt.Println(c.Close(closecode.NormalClosure, "done"))
	// Output:
	// HELLO
	// <nil>
}

// Every way a connection ends is a *CloseError: the code, the reason, and
// which side sent it.
func ExampleCloseError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("server at capacity", 4500*time.Millisecond))
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A server that closes right after the upgrade, as an overloaded one
	// does, makes Dial itself return its close (or the first Read, when
	// the Close frame comes a moment later).
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err == nil {
		_, _, err = c.Read(ctx)
	}
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		hint, _ := closecode.ParseRetryHint(ce.Reason)
		fmt.Println(ce.Code, "| remote:", ce.Remote, "| retry after", hint)
		fmt.Println(closecode.Classify(ce.Code))
	}
	// Output:
	// 1013 Try Again Later | remote: true | retry after 4.5s
	// retry with backoff
}

// Handler runs each connection in its own goroutine and lets net/http free
// the request: the cheapest way to hold many idle connections.
func ExampleHandler() {
	h := websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	_ = http.ListenAndServe("127.0.0.1:8080", h)
}

// A server that bounds the memory its uploads may take together: every
// connection shares one 64 MiB budget, and the budget's use is exported
// for monitoring. A message that finds no room in time is refused with
// 1013 and a retry hint, one larger than the whole budget with 1009.
func ExampleMemoryBudget() {
	uploads := websocket.NewMemoryBudget(64 << 20)
	handler := websocket.Handler(&websocket.AcceptOptions{
		ReadLimit:    16 << 20,
		MemoryBudget: uploads,
	}, func(ctx context.Context, c *websocket.Conn) {
		for {
			_, msg, err := c.Read(ctx)
			if err != nil {
				return
			}
			_ = msg // store the upload; msg no longer counts in the budget
		}
	})
	http.Handle("/upload", handler)
	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		s := uploads.Stats()
		fmt.Fprintf(w, "upload_bytes_in_use %d\nupload_budget_bytes %d\nupload_refused_total{code=\"1009\"} %d\nupload_refused_total{code=\"1013\"} %d\n",
			s.InUse, s.Limit, s.RefusedTooBig, s.RefusedTryLater)
	})
	_ = http.ListenAndServe("127.0.0.1:8080", nil)
}
