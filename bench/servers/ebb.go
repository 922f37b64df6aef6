package servers

import (
	"context"
	"net"
	"net/http"

	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// newEbb serves with ebb the way its docs recommend for servers holding
// many connections: websocket.Handler, which upgrades and runs the echo
// loop in a goroutine of its own so the net/http handler returns and its
// per-request state is freed. With a Limit, the handler is wrapped in
// shed's Middleware, which holds an admission slot for as long as the
// handler runs; as shed's docs require, the upgrade then goes through
// shed.Accept and the loop stays in the handler.
func newEbb(o Options) (http.Handler, error) {
	ao := &websocket.AcceptOptions{InsecureSkipOriginCheck: true, ReadLimit: o.ReadLimit}
	if err := ebbCompression(ao, o); err != nil {
		return nil, err
	}
	echo := func(ctx context.Context, c *websocket.Conn) {
		defer track()()
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				c.CloseNow()
				return
			}
			if err := c.Write(ctx, typ, p); err != nil {
				c.CloseNow()
				return
			}
		}
	}
	if o.Limit <= 0 {
		return websocket.Handler(ao, echo), nil
	}
	s, err := shed.New(&shed.Options{Limits: shed.Limits{MaxConns: o.Limit, HardDemand: o.HardDemand}})
	if err != nil {
		return nil, err
	}
	h := s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := shed.Accept(w, r, ao)
		if err != nil {
			return
		}
		echo(r.Context(), c)
	}))
	if !o.Guard {
		return h, nil
	}
	return guardedEbb{h, s, &shed.ListenerOptions{MaxPending: o.MaxPending}}, nil
}

// guardedEbb is ebb behind shed with shed's Listener on the server's
// listener: connections past the hard ceiling get a canned 503 in the
// accept loop, before net/http starts a goroutine for them.
type guardedEbb struct {
	http.Handler
	s    *shed.Shedder
	opts *shed.ListenerOptions
}

// WrapListener implements ListenerWrapper.
func (g guardedEbb) WrapListener(ln net.Listener) net.Listener { return g.s.Listener(ln, g.opts) }
