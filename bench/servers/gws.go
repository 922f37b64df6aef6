package servers

import (
	"net/http"

	"github.com/lxzan/gws"
)

// gwsEcho is gws's event handler: it echoes each message and releases the
// message's pooled buffer, as gws's README shows.
type gwsEcho struct {
	gws.BuiltinEventHandler
}

func (gwsEcho) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

// newGws follows gws's README for net/http: an Upgrader, Upgrade in the
// handler, then `go socket.ReadLoop()` (one goroutine per connection;
// ParallelEnabled stays off).
func newGws(o Options) (http.Handler, error) {
	if err := noLimit("gws", o); err != nil {
		return nil, err
	}
	so := &gws.ServerOption{ReadMaxPayloadSize: int(o.ReadLimit), WriteMaxPayloadSize: int(o.ReadLimit)}
	switch o.Compression {
	case CompressionNoTakeover:
		so.PermessageDeflate = gws.PermessageDeflate{Enabled: true}
	case CompressionTakeover:
		so.PermessageDeflate = gws.PermessageDeflate{
			Enabled:               true,
			ServerContextTakeover: true,
			ClientContextTakeover: true,
			ServerMaxWindowBits:   o.WindowBits,
			ClientMaxWindowBits:   o.WindowBits,
		}
	}
	up := gws.NewUpgrader(gwsEcho{}, so)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r)
		if err != nil {
			return
		}
		done := track()
		go func() {
			defer done()
			c.ReadLoop()
		}()
	}), nil
}
