//go:build !unix

package websocket

// Without a portable non-blocking peek, connections keep their buffer.
const canPeek = false

func peekReadable(uintptr, []byte) bool { return true }
