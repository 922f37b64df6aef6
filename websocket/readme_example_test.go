package websocket_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// The README's server snippet (between the README markers), run: an echo
// handler with compression on.
func Example_readmeServer() {
	// README:begin
	http.Handle("/echo", websocket.Handler(&websocket.AcceptOptions{
		Compression: &websocket.CompressionOptions{}, // accept permessage-deflate
	}, func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				return // err is a *websocket.CloseError: code, reason, who sent it
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	}))
	// README:end
	srv := httptest.NewServer(http.DefaultServeMux)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Println(readmeClient(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/echo"))
	// Output:
	// echoed: hello
	// <nil>
}

// readmeClient is the README's client snippet: it requires
// permessage-deflate, so a server without it ends in 1010.
func readmeClient(ctx context.Context, url string) error {
	// README:begin
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Require: []websocket.Requirement{{Extension: "permessage-deflate"}},
	})
	var me *websocket.MandatoryExtensionError
	if errors.As(err, &me) {
		return me // closed with 1010: says what was missing, offered, answered, and the fix
	}
	if err != nil {
		return err // unreachable, refused (1013 and its retry hint in a *CloseError), …
	}
	defer c.Close(closecode.NormalClosure, "bye")

	if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
		return err
	}
	_, reply, err := c.Read(ctx)
	if err != nil {
		return err
	}
	fmt.Println("echoed:", string(reply))
	// README:end
	return nil
}

// The README's client snippet against a server without compression (1010),
// a port where nothing listens, and an overloaded server (1013): every
// failure is an error to handle, none a panic.
func Example_readmeClient() {
	plain := httptest.NewServer(websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) {
		c.Read(ctx)
	}))
	defer plain.Close()
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Compression: &websocket.CompressionOptions{}})
		if err == nil {
			c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("server at capacity", 4*time.Second))
		}
	}))
	defer full.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	err := readmeClient(ctx, "ws"+strings.TrimPrefix(plain.URL, "http"))
	var me *websocket.MandatoryExtensionError
	fmt.Println("no compression:", errors.As(err, &me), len(me.Missing), "missing")

	err = readmeClient(ctx, "ws://127.0.0.1:1/echo")
	fmt.Println("nothing listening:", err != nil)

	err = readmeClient(ctx, "ws"+strings.TrimPrefix(full.URL, "http"))
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		hint, _ := closecode.ParseRetryHint(ce.Reason)
		fmt.Println("overloaded:", ce.Code, "retry after", hint)
	}
	// Output:
	// no compression: true 1 missing
	// nothing listening: true
	// overloaded: 1013 Try Again Later retry after 4s
}
