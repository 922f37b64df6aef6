package websocket

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// MessageType is the type of a data message. The zero value means "none".
type MessageType int

// Data message types (RFC 6455 §5.6).
const (
	// MessageText is a UTF-8 text message. Received text is validated; an
	// invalid message ends the connection with 1007.
	MessageText MessageType = iota + 1
	// MessageBinary is a binary message.
	MessageBinary
)

func (t MessageType) String() string {
	switch t {
	case MessageText:
		return "text"
	case MessageBinary:
		return "binary"
	}
	return "none"
}

func (t MessageType) opcode() opcode {
	if t == MessageText {
		return opText
	}
	return opBinary
}

// DefaultReadLimit is the largest message a Conn accepts unless told
// otherwise: 32 MiB. For compressed messages it bounds the decompressed size.
const DefaultReadLimit = 32 << 20

// closeTimeout bounds how long Close waits for the peer's Close frame.
const closeTimeout = 5 * time.Second

// failDrainTimeout bounds how long a connection that failed waits for the
// peer's close reply before it drops the TCP connection.
const failDrainTimeout = time.Second

// Conn is a WebSocket connection.
//
// All methods may be called concurrently, except that only one goroutine may
// read at a time (Read, Reader and the reader it returns). Writes from many
// goroutines are serialized per message; control frames are sent between
// the frames of a fragmented message, never inside one.
//
// Control frames arrive only while someone reads: a Conn answers pings and
// completes Ping calls and the close handshake from within Read. An
// application that never reads should not rely on Ping.
type Conn struct {
	nc          net.Conn
	br          *bufio.Reader
	server      bool
	subprotocol string
	extensions  string
	deflate     *deflateState // nil unless permessage-deflate was negotiated
	// deflateParams is what was negotiated, kept for checking requirements.
	deflateParams *deflateParams
	threshold     int // messages shorter than this are sent uncompressed
	logger        *slog.Logger

	readLimit atomic.Int64 // -1: none; never 0
	budget    *MemoryBudget
	idle      *idleWaiter // nil when the connection is not a plain socket

	// readSema is held by the goroutine reading; rd belongs to it.
	readSema chan struct{}
	rd       readState

	// msgSema is held for a whole data message, frameSema for one frame.
	msgSema   chan struct{}
	frameSema chan struct{}
	maskRand  *rand.ChaCha8 // guarded by frameSema
	whdr      [maxFrameHeader]byte
	wbufs     [2][]byte // header and payload for writev, guarded by frameSema

	mu        sync.Mutex
	closeSent *CloseError
	closeRecv *CloseError
	closeErr  *CloseError // why the connection ended; set once
	recvCh    chan struct{}
	doneCh    chan struct{}
	closeOnce sync.Once
	pings     map[[8]byte]chan struct{}
}

type connConfig struct {
	nc          net.Conn
	br          *bufio.Reader
	server      bool
	subprotocol string
	extensions  string
	deflate     *deflateState
	threshold   int
	readLimit   int64
	budget      *MemoryBudget // nil: DefaultMemoryBudget
	logger      *slog.Logger
}

func newConn(cfg connConfig) *Conn {
	c := &Conn{
		nc:          cfg.nc,
		br:          cfg.br,
		server:      cfg.server,
		subprotocol: cfg.subprotocol,
		extensions:  cfg.extensions,
		deflate:     cfg.deflate,
		threshold:   cfg.threshold,
		logger:      cfg.logger,
		budget:      cfg.budget,
		readSema:    make(chan struct{}, 1),
		msgSema:     make(chan struct{}, 1),
		frameSema:   make(chan struct{}, 1),
		recvCh:      make(chan struct{}),
		doneCh:      make(chan struct{}),
	}
	if c.budget == nil {
		c.budget = DefaultMemoryBudget()
	}
	c.idle = newIdleWaiter(c.nc)
	if c.br == nil || (c.idle != nil && c.br.Buffered() == 0) {
		// A handshake reader with nothing left in it is dropped for a
		// pooled one (see idle.go).
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(c.nc)
	}
	c.SetReadLimit(cfg.readLimit)
	if !c.server {
		var seed [32]byte
		crand.Read(seed[:])
		c.maskRand = rand.NewChaCha8(seed)
	}
	return c
}

// Subprotocol returns the subprotocol both sides agreed on, or "".
func (c *Conn) Subprotocol() string { return c.subprotocol }

// Extensions returns the negotiated Sec-WebSocket-Extensions value, or "".
func (c *Conn) Extensions() string { return c.extensions }

// Compressed reports whether permessage-deflate was negotiated.
func (c *Conn) Compressed() bool { return c.deflate != nil }

// SetReadLimit sets the largest message the Conn accepts, in bytes; a
// larger one ends the connection with 1009 Message Too Big. For compressed
// messages the limit applies to the decompressed size. 0 means
// DefaultReadLimit. A negative limit removes it, which is dangerous on
// connections from untrusted peers but not unbounded: Read and ReadInto
// still hold no more than the Conn's MemoryBudget (a message larger than
// the whole budget is refused with 1009), and memory follows the bytes
// that arrive, whatever size a frame announces. Reader streams messages
// of any size.
//
// An uncompressed message is refused as soon as its frame headers announce
// more than the limit; a compressed one once it has inflated past it.
func (c *Conn) SetReadLimit(n int64) {
	switch {
	case n == 0:
		n = DefaultReadLimit
	case n < 0:
		n = -1
	}
	c.readLimit.Store(n)
}

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// Done returns a channel that is closed when the underlying network
// connection has been closed.
func (c *Conn) Done() <-chan struct{} { return c.doneCh }

// CloseSent returns the Close frame this endpoint sent, or nil.
func (c *Conn) CloseSent() *CloseError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeSent
}

// CloseReceived returns the Close frame the peer sent, or nil.
func (c *Conn) CloseReceived() *CloseError {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeRecv
}

// Err returns the *CloseError that ended the connection, or nil while it is
// open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr == nil {
		return nil
	}
	return c.closeErr
}

// finished reports whether nothing more can be read: the network
// connection is closed or the peer's Close frame has arrived. A Close this
// side sent is not enough: its answer is still to be read.
func (c *Conn) finished() bool {
	select {
	case <-c.doneCh:
		return true
	case <-c.recvCh:
		return true
	default:
		return false
	}
}

// setCloseErr records why the connection ended, first cause wins, and
// returns the recorded cause.
func (c *Conn) setCloseErr(ce *CloseError) *CloseError {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr == nil {
		c.closeErr = ce
	}
	return c.closeErr
}

// closeTCP closes the network connection once and wakes everyone waiting.
func (c *Conn) closeTCP() {
	c.closeOnce.Do(func() {
		c.nc.Close()
		c.mu.Lock()
		for k, ch := range c.pings {
			close(ch)
			delete(c.pings, k)
		}
		c.mu.Unlock()
		close(c.doneCh)
		if c.deflate != nil {
			c.deflate.release()
		}
	})
}

// CloseNow closes the network connection at once, without a close
// handshake. The peer sees 1006 Abnormal Closure. Use Close instead when you
// can.
func (c *Conn) CloseNow() error {
	c.setCloseErr(&CloseError{Code: closecode.AbnormalClosure, Reason: "closed by CloseNow without a close handshake"})
	c.closeTCP()
	return nil
}

// acquire takes a one-slot semaphore, giving up when ctx ends or the
// connection closes.
func (c *Conn) acquire(ctx context.Context, sema chan struct{}) error {
	select {
	case sema <- struct{}{}:
		return nil
	default:
	}
	select {
	case sema <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.doneCh:
		return c.closedErr()
	}
}

// closedErr returns the error for an operation on a connection that ended.
func (c *Conn) closedErr() error {
	c.mu.Lock()
	ce := c.closeErr
	c.mu.Unlock()
	if ce == nil {
		ce = &CloseError{Code: closecode.AbnormalClosure, Reason: "connection closed"}
	}
	return ce
}

// watchDeadline applies ctx's deadline and cancellation to a blocking
// network operation through set (SetReadDeadline or SetWriteDeadline). It
// costs nothing for a context that can never end. The returned stop clears
// the deadline again and reports whether ctx ended during the operation.
func watchDeadline(ctx context.Context, set func(time.Time) error) (stop func() bool) {
	if ctx.Done() == nil {
		return noStop
	}
	if dl, ok := ctx.Deadline(); ok {
		set(dl)
	}
	ran := make(chan struct{})
	cancel := context.AfterFunc(ctx, func() {
		set(time.Unix(1, 0))
		close(ran)
	})
	return func() bool {
		if !cancel() {
			<-ran
		}
		set(time.Time{})
		return ctx.Err() != nil
	}
}

// noStop is the stop function of a context that can never end.
func noStop() bool { return false }

// watchRead applies ctx to the reads that follow; see watchDeadline. The
// check comes first so that the common context.Background costs nothing.
func (c *Conn) watchRead(ctx context.Context) func() bool {
	if ctx.Done() == nil {
		return noStop
	}
	return watchDeadline(ctx, c.nc.SetReadDeadline)
}

// watchWrite applies ctx to the writes that follow; see watchDeadline.
func (c *Conn) watchWrite(ctx context.Context) func() bool {
	if ctx.Done() == nil {
		return noStop
	}
	return watchDeadline(ctx, c.nc.SetWriteDeadline)
}

// causedByContext reports whether err is the result of ctx ending, even
// when the network deadline fired a moment before ctx noticed.
func causedByContext(ctx context.Context, ctxDone bool, err error) bool {
	if err == nil {
		return false
	}
	if ctxDone {
		return true
	}
	if dl, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) && !time.Now().Before(dl) {
		return true
	}
	return false
}
