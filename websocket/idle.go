package websocket

import (
	"bufio"
	"net"
	"sync"
	"syscall"
)

// An idle connection should cost as little memory as possible: servers hold
// tens of thousands of them. Between messages, when nothing is buffered, a
// Conn returns its read buffer to a pool and waits for the socket to become
// readable without a buffer (through syscall.RawConn), taking a buffer
// again only when bytes arrive. Connections that are not plain sockets
// (TLS, pipes) keep their buffer.

const readBufferSize = 4096

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}

// idleWaiter waits for readability without holding a buffer.
type idleWaiter struct {
	rc   syscall.RawConn
	fn   func(uintptr) bool
	peek [1]byte
}

func newIdleWaiter(nc net.Conn) *idleWaiter {
	if !canPeek {
		return nil
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &idleWaiter{rc: rc}
	// RawConn.Read calls fn, and while fn returns false it waits for the
	// socket to become readable and calls it again. The netpoller is
	// edge-triggered and RawConn.Read forgets earlier readiness, so fn must
	// look for data already queued: a non-blocking one-byte peek.
	w.fn = func(fd uintptr) bool { return peekReadable(fd, w.peek[:]) }
	return w
}

// awaitData is called by the reader at a message boundary. If nothing is
// buffered it gives the buffer back, waits for data, and takes one again.
func (c *Conn) awaitData() error {
	if c.idle == nil || c.br.Buffered() > 0 {
		return nil
	}
	readerPool.Put(c.br)
	c.br = nil
	err := c.idle.rc.Read(c.idle.fn)
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c.nc)
	c.br = br
	if err != nil {
		return &netReadError{err}
	}
	return nil
}
