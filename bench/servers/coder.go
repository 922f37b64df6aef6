package servers

import (
	"context"
	"net/http"

	"github.com/coder/websocket"
)

// newCoder follows coder/websocket's docs: Accept in the handler, Read and
// Write with a context. Its default read limit (32 KiB) is raised so the
// 1 MiB messages fit.
func newCoder(o Options) (http.Handler, error) {
	if err := noLimit("coder", o); err != nil {
		return nil, err
	}
	ao := &websocket.AcceptOptions{InsecureSkipVerify: true, CompressionMode: websocket.CompressionDisabled}
	switch o.Compression {
	case CompressionNoTakeover:
		ao.CompressionMode = websocket.CompressionNoContextTakeover
	case CompressionTakeover:
		ao.CompressionMode = websocket.CompressionContextTakeover
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, ao)
		if err != nil {
			return
		}
		defer track()()
		defer c.CloseNow()
		c.SetReadLimit(o.ReadLimit)
		ctx := context.Background()
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			if err := c.Write(ctx, typ, p); err != nil {
				return
			}
		}
	}), nil
}
