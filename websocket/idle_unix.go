//go:build unix

package websocket

import "syscall"

const canPeek = true

// peekReadable reports whether the socket has data (or an error or EOF to
// report) without consuming anything and without blocking.
func peekReadable(fd uintptr, b []byte) bool {
	_, _, err := syscall.Recvfrom(int(fd), b, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK && err != syscall.EINTR
}
