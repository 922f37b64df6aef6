// Package examples shows ebb's overload control (package shed) in front of
// WebSocket libraries ebb did not write: gorilla/websocket and
// coder/websocket. It lives in a module of its own so that ebb's go.mod
// never names a peer library.
//
// Each adapter is a few lines: the handler registers its connection with
// shed.Track so that shedding and drain can close it with a code, and
// reports the close code it received with shed.RecordClose.
package examples
