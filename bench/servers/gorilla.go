package servers

import (
	"net/http"

	"github.com/gorilla/websocket"
)

// newGorilla follows gorilla's echo example: an Upgrader with default
// buffer sizes, ReadMessage and WriteMessage in the handler goroutine.
// gorilla negotiates permessage-deflate without context takeover only.
func newGorilla(o Options) (http.Handler, error) {
	if err := noLimit("gorilla", o); err != nil {
		return nil, err
	}
	up := websocket.Upgrader{
		CheckOrigin:       func(*http.Request) bool { return true },
		EnableCompression: o.Compression == CompressionNoTakeover,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer track()()
		defer c.Close()
		c.SetReadLimit(o.ReadLimit)
		for {
			typ, p, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, p); err != nil {
				return
			}
		}
	}), nil
}
