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
// per-request state is freed; with a Limit, shed's Handler, the same shape
// behind admission control (the slot is held until the loop returns). The
// loop reuses its read buffer (ReadInto).
func newEbb(o Options) (http.Handler, error) {
	ao := &websocket.AcceptOptions{InsecureSkipOriginCheck: true, ReadLimit: o.ReadLimit}
	if err := ebbCompression(ao, o); err != nil {
		return nil, err
	}
	echo := func(ctx context.Context, c *websocket.Conn) {
		defer track()()
		var buf []byte
		for {
			typ, p, err := c.ReadInto(ctx, buf)
			buf = p
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
	h := s.Handler(ao, echo)
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
