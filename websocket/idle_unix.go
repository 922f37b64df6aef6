//go:build unix

package websocket

import "syscall"

const canReadNonblock = true

// readNonblock reads what the socket holds without blocking. again reports
// that there is nothing yet (the caller waits for readability).
func readNonblock(fd uintptr, b []byte) (n int, err error, again bool) {
	for {
		n, err = syscall.Read(int(fd), b)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, nil, true
		case nil:
			return n, nil, false
		}
		return 0, err, false
	}
}
