package servers

import (
	"net/http"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// newGobwas follows gobwas/ws's README (the high-level example): UpgradeHTTP
// in the handler, then a goroutine that loops over wsutil.ReadClientData
// and wsutil.WriteServerMessage on the raw connection.
func newGobwas(o Options) (http.Handler, error) {
	if err := noLimit("gobwas", o); err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		done := track()
		go func() {
			defer done()
			defer conn.Close()
			for {
				msg, op, err := wsutil.ReadClientData(conn)
				if err != nil {
					return
				}
				if err := wsutil.WriteServerMessage(conn, op, msg); err != nil {
					return
				}
			}
		}()
	}), nil
}
