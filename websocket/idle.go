package websocket

import (
	"bufio"
	"io"
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

var chunkPool = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// idleWaiter waits for data without holding a buffer between messages.
type idleWaiter struct {
	rc    syscall.RawConn
	fn    func(uintptr) bool
	chunk *[]byte // borrowed from chunkPool only while reading, never while waiting
	n     int
	err   error
	pre   prefixReader

	queuedFn func(fd uintptr) // nil where unsupported
	queuedN  int32
}

func newIdleWaiter(nc net.Conn) *idleWaiter {
	if !canReadNonblock {
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
	// socket to become readable and calls it again. fn tries a real
	// non-blocking read: when data is already there (a busy connection)
	// that is the only system call; otherwise one more after the wait, as
	// for any blocking read. (A readiness-only wait would need a third call:
	// the netpoller is edge-triggered and RawConn.Read forgets earlier
	// readiness, so data already queued must be looked for.)
	w.fn = func(fd uintptr) bool {
		if w.chunk == nil {
			w.chunk = chunkPool.Get().(*[]byte)
		}
		n, err, again := readNonblock(fd, *w.chunk)
		if again {
			// Nothing yet: wait without holding the chunk.
			chunkPool.Put(w.chunk)
			w.chunk = nil
			return false
		}
		w.n, w.err = n, err
		return true
	}
	w.pre.nc = nc
	w.queuedFn = newQueuedFn(&w.queuedN)
	return w
}

// queued returns how many bytes the socket has received that are not read
// yet, or 0 when that cannot be told. It costs one system call.
func (w *idleWaiter) queued() int64 {
	if w == nil || w.queuedFn == nil {
		return 0
	}
	w.queuedN = 0
	if w.rc.Control(w.queuedFn) != nil {
		return 0
	}
	return int64(max(w.queuedN, 0))
}

// awaitData is called by the reader at a message boundary. If nothing is
// buffered it gives the buffer back, waits for data, and takes one again.
func (c *Conn) awaitData() error {
	w := c.idle
	if w == nil || c.br.Buffered() > 0 {
		return nil
	}
	readerPool.Put(c.br)
	c.br = nil
	w.n, w.err = 0, nil
	err := w.rc.Read(w.fn)
	if err == nil {
		err = w.err
	}
	if err == nil && w.n == 0 {
		err = io.EOF
	}
	// The bytes read go through a fresh reader first, then the socket.
	br := readerPool.Get().(*bufio.Reader)
	if w.chunk != nil {
		w.pre.b = (*w.chunk)[:w.n]
	}
	br.Reset(&w.pre)
	c.br = br
	if w.n > 0 {
		// Pull them into the reader's own buffer so the chunk can go back.
		if _, perr := br.Peek(w.n); perr != nil && err == nil {
			err = perr
		}
	}
	w.pre.b = nil
	if w.chunk != nil {
		chunkPool.Put(w.chunk)
		w.chunk = nil
	}
	if err != nil {
		return &netReadError{noEOFIfData(err, w.n)}
	}
	return nil
}

func noEOFIfData(err error, n int) error {
	if n > 0 {
		return noEOF(err)
	}
	return err
}

// prefixReader yields b, then reads from the connection.
type prefixReader struct {
	b  []byte
	nc net.Conn
}

func (p *prefixReader) Read(dst []byte) (int, error) {
	if len(p.b) > 0 {
		n := copy(dst, p.b)
		p.b = p.b[n:]
		return n, nil
	}
	return p.nc.Read(dst)
}
