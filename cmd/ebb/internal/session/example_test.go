package session_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"strings"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/session"
	"github.com/ebb-ws/ebb/websocket"
)

// A session with an echo server: two lines in, their echoes out, then a
// close with 1000 once the connection is quiet.
func ExampleRun() {
	srv := httptest.NewServer(websocket.Handler(nil, func(ctx context.Context, c *websocket.Conn) {
		for {
			typ, p, err := c.Read(ctx)
			if err != nil || c.Write(ctx, typ, p) != nil {
				return
			}
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	in := strings.NewReader("hello\nworld\n")
	res := session.Run(context.Background(), url, in, os.Stdout, io.Discard, nil)
	fmt.Println(res.OK(), res.Close.Code, res.Close.By)
	// Output:
	// hello
	// world
	// true 1000 Normal Closure client
}
