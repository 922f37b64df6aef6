// Package websocket implements the WebSocket protocol (RFC 6455) with
// permessage-deflate compression (RFC 7692) for servers on net/http and for
// clients.
//
// Accept upgrades an HTTP request to a WebSocket connection; Dial opens one.
// A Conn is safe for one reader and any number of concurrent writers: every
// message is written whole, and control frames (ping, pong, close) are
// interleaved safely between the frames of a fragmented message.
//
// Every way a connection can end is reported as a *CloseError carrying the
// close code (see package closecode) and whether the peer or this endpoint
// sent it. A client that requires an extension the server did not accept
// closes with 1010 Mandatory Extension and returns a *MandatoryExtensionError.
package websocket
