package examples

import (
	"context"
	"net/http"

	"github.com/coder/websocket"
	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/shed"
)

// CoderEcho is a coder/websocket echo handler that lets shed close its
// connections. Put it behind shed.Shedder.Middleware.
func CoderEcho(opts *websocket.AcceptOptions) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, opts)
		if err != nil {
			return // Accept answered the request
		}
		defer c.CloseNow()
		defer shed.Track(r, CoderCloser{c})()
		ctx := context.Background()
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				if code := websocket.CloseStatus(err); code != -1 {
					shed.RecordClose(r, closecode.Code(code), shed.Received)
				}
				return
			}
			if err := c.Write(ctx, typ, p); err != nil {
				return
			}
		}
	}
}

// CoderCloser adapts a coder connection to shed.Closer and
// shed.ForceCloser. coder's Close already runs the whole closing
// handshake with a bounded wait and is safe concurrently with Read.
type CoderCloser struct {
	C *websocket.Conn // the connection to close
}

// Close runs the closing handshake with code and reason.
func (c CoderCloser) Close(code closecode.Code, reason string) error {
	return c.C.Close(websocket.StatusCode(code), reason)
}

// CloseNow drops the connection at once.
func (c CoderCloser) CloseNow() error { return c.C.CloseNow() }
