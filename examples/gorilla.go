package examples

import (
	"errors"
	"net/http"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/shed"
	"github.com/gorilla/websocket"
)

// closeWait bounds how long a close started by shed waits for the peer's
// answering Close frame before the connection is dropped.
const closeWait = 5 * time.Second

// GorillaEcho is a gorilla/websocket echo handler that lets shed close its
// connections. Put it behind shed.Shedder.Middleware.
func GorillaEcho(up *websocket.Upgrader) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade answered the request
		}
		defer c.Close()
		defer shed.Track(r, GorillaCloser{c})()
		for {
			mt, p, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					shed.RecordClose(r, closecode.Code(ce.Code), shed.Received)
				}
				return
			}
			if err := c.WriteMessage(mt, p); err != nil {
				return
			}
		}
	}
}

// GorillaCloser adapts a gorilla connection to shed.Closer and
// shed.ForceCloser. gorilla's Close drops the TCP connection without a
// Close frame, so Close here sends the frame with WriteControl (safe
// concurrently with the handler's reads and writes) and bounds the wait
// for the peer's answer with a read deadline; the handler's read loop then
// sees the answer and returns.
type GorillaCloser struct {
	C *websocket.Conn // the connection to close
}

// Close sends a Close frame with code and reason.
func (g GorillaCloser) Close(code closecode.Code, reason string) error {
	msg := websocket.FormatCloseMessage(int(code), reason)
	if err := g.C.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		return err
	}
	return g.C.NetConn().SetReadDeadline(time.Now().Add(closeWait))
}

// CloseNow drops the connection at once.
func (g GorillaCloser) CloseNow() error { return g.C.NetConn().Close() }
