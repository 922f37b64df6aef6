package websocket

import (
	"syscall"
	"unsafe"
)

// newQueuedFn returns the function RawConn.Control runs to learn how many
// received bytes wait unread in a socket (TIOCINQ), storing them in *n.
func newQueuedFn(n *int32) func(fd uintptr) {
	return func(fd uintptr) {
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(n))); errno != 0 {
			*n = 0
		}
	}
}
