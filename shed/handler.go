package shed

import (
	"context"
	"net/http"

	"github.com/ebb-ws/ebb/websocket"
)

// Handler is the Shedder's counterpart of websocket.Handler: admission,
// then Accept, then serve on the connection in a goroutine of its own, while
// the HTTP handler returns at once so that net/http frees the request's
// buffers (about 10 KiB per connection). The connection keeps its slot, and
// stays visible to shedding and Shutdown, until serve returns.
//
// serve's context carries the request context's values and is never
// canceled, so that Read and Write have no deadline to watch (see
// websocket.Handler). The connection is closed (CloseNow) after serve
// returns, if serve did not close it.
func (s *Shedder) Handler(opts *websocket.AcceptOptions, serve func(ctx context.Context, c *websocket.Conn)) http.Handler {
	return s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, opts)
		if err != nil {
			return
		}
		sl, _ := r.Context().Value(ctxKey{}).(*slot)
		if sl != nil {
			sl.mu.Lock()
			sl.w = nil // the ResponseWriter holds net/http's buffers
			sl.mu.Unlock()
			sl.detached.Store(true)
		}
		ctx := context.WithoutCancel(r.Context())
		go func() {
			defer func() {
				c.CloseNow()
				if sl != nil {
					sl.release()
				}
			}()
			serve(ctx, c)
		}()
	}))
}
