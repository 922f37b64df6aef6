package servers

import (
	"fmt"

	"github.com/ebb-ws/ebb/websocket"
)

// ebbCompressionReady says whether this build of ebb has permessage-deflate.
const ebbCompressionReady = true

// ebbCompression configures ebb's permessage-deflate for o. In takeover
// mode a window smaller than 15 bits limits both directions: the server's
// own compressor and, through client_max_window_bits, the client's.
func ebbCompression(ao *websocket.AcceptOptions, o Options) error {
	switch o.Compression {
	case CompressionOff:
	case CompressionNoTakeover:
		ao.Compression = &websocket.CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true}
	case CompressionTakeover:
		ao.Compression = &websocket.CompressionOptions{ServerMaxWindowBits: o.WindowBits, ClientMaxWindowBits: o.WindowBits}
	default:
		return fmt.Errorf("servers: unknown compression mode %q", o.Compression)
	}
	return nil
}
