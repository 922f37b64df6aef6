package reconnect_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// readmeSubscribe is the README's reconnecting-client snippet: every
// connection, the first and each one after a reconnect, subscribes again.
func readmeSubscribe(ctx context.Context, url string) (*reconnect.Client, error) {
	// README:begin
	client, err := reconnect.Dial(ctx, url, &reconnect.Options{
		OnEvent: func(e reconnect.Event) { log.Println(e) }, // closed: 1013 Try Again Later (…; retry-after=4.2) …
		OnConnect: func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte(`{"subscribe":"prices"}`))
		},
	})
	if err != nil {
		return nil, err // only for options that can never work: a bad URL, say
	}
	defer client.Close(closecode.NormalClosure, "bye")
	// README:end
	_, p, err := client.Read(ctx)
	fmt.Println(string(p), err)
	return client, nil
}

// The README's snippet against a server that refuses the first connection
// with 1013 and a short hint, then answers the subscription.
func Example_readme() {
	var tries atomic.Int32
	srv := httptest.NewServer(websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) {
		if tries.Add(1) == 1 {
			c.Close(closecode.TryAgainLater, closecode.FormatRetryHint("server at capacity", 10*time.Millisecond))
			return
		}
		_, p, err := c.Read(ctx)
		if err == nil {
			c.Write(ctx, websocket.MessageText, append([]byte("subscribed: "), p...))
		}
		c.Read(ctx)
	}))
	defer srv.Close()
	defer log.SetOutput(log.Writer())
	log.SetOutput(io.Discard) // the snippet logs every event

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := readmeSubscribe(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")); err != nil {
		fmt.Println(err)
	}
	fmt.Println("connections:", tries.Load())
	// Output:
	// subscribed: {"subscribe":"prices"} <nil>
	// connections: 2
}
