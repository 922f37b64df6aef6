package loadgen_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/loadgen"
	"github.com/ebb-ws/ebb/websocket"
)

// An echo load test against a server in the same program: four
// connections for half a second, then the figures as data.
func Example() {
	srv := httptest.NewServer(websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, p); err != nil {
				return
			}
		}
	}))
	defer srv.Close()

	rep, err := loadgen.Echo(context.Background(), loadgen.EchoOptions{
		Options: loadgen.Options{
			URL:      "ws" + strings.TrimPrefix(srv.URL, "http"),
			Conns:    4,
			Duration: 500 * time.Millisecond,
		},
		Size: 128,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Check fails when nothing was measured or more than 10% of the
	// handshakes failed; WriteText and WriteJSON print the whole report.
	if err := rep.Check(0.1); err != nil {
		fmt.Println(err)
		return
	}

	run := rep.Runs[0]
	fmt.Println("connections:", run.Handshakes.Completed)
	fmt.Println("every message echoed:", run.Messages.Received == run.Messages.Sent)
	fmt.Println("p99 under a second:", run.Latency.P99 < 1000)
	for _, c := range run.CloseCodes {
		fmt.Println("ended:", c.Count, "×", c.Code, c.Name, "by", c.By)
	}
	// Output:
	// connections: 4
	// every message echoed: true
	// p99 under a second: true
	// ended: 4 × 1000 Normal Closure by client
}
