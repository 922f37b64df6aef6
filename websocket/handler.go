package websocket

import (
	"context"
	"net/http"
)

// Handler returns an http.Handler that upgrades every request with Accept
// and runs serve on the connection in a goroutine of its own.
//
// The handler returns as soon as the connection is open. That is what makes
// idle connections cheap: while an http.Handler runs, net/http keeps the
// request's reader, writers and state alive (about 10 KiB per connection);
// once it returns they are freed, and an idle Conn costs about 2 KiB of heap
// plus its goroutine's stack. Prefer Handler to calling Accept in a
// long-running handler when a server holds many connections.
//
// serve's context carries the request context's values and is never
// canceled: the connection's end is what Read reports, and a context that
// cannot end costs nothing on every Read and Write (no deadline to watch).
// Derive a cancelable context from it if serve starts goroutines of its own.
// The connection is closed (CloseNow) after serve returns, if serve did not
// close it.
func Handler(opts *AcceptOptions, serve func(ctx context.Context, c *Conn)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := Accept(w, r, opts)
		if err != nil {
			return
		}
		ctx := context.WithoutCancel(r.Context())
		go func() {
			defer c.CloseNow()
			serve(ctx, c)
		}()
	})
}
