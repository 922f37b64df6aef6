package shed

import (
	"net/http"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// Accept upgrades r with websocket.Accept and registers the connection
// with the Shedder whose Middleware admitted r, so that shedding and
// Shutdown can close it with a code, and the close codes it sends and
// receives are counted when the handler returns. On failure it behaves as
// websocket.Accept (the request is answered, an *websocket.UpgradeError
// returned). Outside a request admitted by a Shedder it is plain
// websocket.Accept.
func Accept(w http.ResponseWriter, r *http.Request, opts *websocket.AcceptOptions) (*websocket.Conn, error) {
	c, err := websocket.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	Track(r, ebbConn{c})
	return c, nil
}

// ebbConn adapts *websocket.Conn to Closer, ForceCloser and codeReporter.
type ebbConn struct{ c *websocket.Conn }

// Close runs the closing handshake (websocket.Conn.Close bounds the wait).
func (e ebbConn) Close(code closecode.Code, reason string) error { return e.c.Close(code, reason) }

// CloseNow drops the connection without a handshake.
func (e ebbConn) CloseNow() error { return e.c.CloseNow() }

func (e ebbConn) closeCodes() (sent, received closecode.Code, echoed bool) {
	if ce := e.c.CloseSent(); ce != nil {
		sent = ce.Code
	}
	if ce := e.c.CloseReceived(); ce != nil {
		received = ce.Code
	}
	return sent, received, e.c.CloseEchoed()
}
