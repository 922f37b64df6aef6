//go:build !unix

package websocket

// Without a portable non-blocking read, connections keep their buffer.
const canReadNonblock = false

func readNonblock(uintptr, []byte) (int, error, bool) { return 0, nil, false }
