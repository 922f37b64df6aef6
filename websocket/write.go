package websocket

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"unicode/utf8"

	"github.com/ebb-ws/ebb/closecode"
)

// smallFrame is the payload size up to which a frame is copied next to its
// header and sent with one write; larger payloads go out with writev.
const smallFrame = 2048

// writerFrameSize is how much a streaming Writer buffers before it sends a
// frame.
const writerFrameSize = 32 << 10

// bufPool recycles frame buffers so that an idle Conn holds none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, writerFrameSize+maxFrameHeader); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

// putBuf returns b to the pool unless it grew large: a pool of huge buffers
// would keep their memory alive for nothing.
func putBuf(b *[]byte) {
	if cap(*b) > 1<<18 {
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// Write sends p as one message. Concurrent Writes are safe: each message
// goes out whole. If permessage-deflate was negotiated, messages of at least
// the compression threshold are compressed.
func (c *Conn) Write(ctx context.Context, typ MessageType, p []byte) error {
	return c.write(ctx, typ, p, c.deflate != nil && len(p) >= c.threshold)
}

// WriteUncompressed sends p as one message without compressing it, even if
// permessage-deflate was negotiated: useful for data that is already
// compressed (images, archives), where deflate only costs CPU.
func (c *Conn) WriteUncompressed(ctx context.Context, typ MessageType, p []byte) error {
	return c.write(ctx, typ, p, false)
}

func (c *Conn) write(ctx context.Context, typ MessageType, p []byte, compress bool) error {
	if err := checkMessageType(typ); err != nil {
		return err
	}
	if err := c.acquire(ctx, c.msgSema); err != nil {
		return err
	}
	defer func() { <-c.msgSema }()
	if !compress {
		return c.writeFrame(ctx, true, typ.opcode(), false, p)
	}
	bp := getBuf()
	defer putBuf(bp)
	out := &appendWriter{b: *bp}
	w := c.deflate.startMessage(out)
	if _, err := w.Write(p); err != nil {
		c.deflate.abortMessage()
		return fmt.Errorf("websocket: compressing message: %w", err)
	}
	if err := c.deflate.finishMessage(); err != nil {
		return fmt.Errorf("websocket: compressing message: %w", err)
	}
	*bp = out.b
	return c.writeFrame(ctx, true, typ.opcode(), true, out.b)
}

func checkMessageType(typ MessageType) error {
	if typ != MessageText && typ != MessageBinary {
		return fmt.Errorf("websocket: invalid message type %d: want MessageText or MessageBinary", int(typ))
	}
	return nil
}

// appendWriter collects compressed output.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// Writer returns a writer for one message, sent in frames as it fills. The
// message is finished by Close; until then other messages wait (control
// frames do not). ctx bounds every write of the message.
func (c *Conn) Writer(ctx context.Context, typ MessageType) (io.WriteCloser, error) {
	if err := checkMessageType(typ); err != nil {
		return nil, err
	}
	if err := c.acquire(ctx, c.msgSema); err != nil {
		return nil, err
	}
	w := &messageWriter{c: c, ctx: ctx, op: typ.opcode(), buf: getBuf()}
	if c.deflate != nil {
		w.compress = true
		w.out = &frameFlusher{w: w}
		w.dst = c.deflate.startMessage(w.out)
	}
	return w, nil
}

// messageWriter sends one message as frames of up to writerFrameSize bytes.
type messageWriter struct {
	c        *Conn
	ctx      context.Context
	op       opcode // opcode of the next frame: the type, then continuation
	compress bool
	started  bool
	closed   bool
	err      error
	buf      *[]byte
	out      *frameFlusher
	dst      io.Writer // the compressor, when compressing
}

func (w *messageWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, errors.New("websocket: write to a message writer after Close")
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.compress {
		n, err := w.dst.Write(p)
		if err == nil {
			err = w.out.err
		}
		if err != nil {
			w.err = err
		}
		return n, err
	}
	return w.buffer(p)
}

// buffer adds p to the pending frame, sending full frames as they fill.
func (w *messageWriter) buffer(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		room := writerFrameSize - len(*w.buf)
		if room == 0 {
			if err := w.flush(false); err != nil {
				return n, err
			}
			continue
		}
		k := min(room, len(p))
		*w.buf = append(*w.buf, p[:k]...)
		p = p[k:]
		n += k
	}
	return n, nil
}

// flush sends the buffered bytes as one frame.
func (w *messageWriter) flush(fin bool) error {
	err := w.c.writeFrame(w.ctx, fin, w.op, w.compress && !w.started, *w.buf)
	w.op = opContinuation
	w.started = true
	*w.buf = (*w.buf)[:0]
	if err != nil {
		w.err = err
	}
	return err
}

// Close sends the last frame and lets other messages through.
func (w *messageWriter) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	defer func() {
		putBuf(w.buf)
		<-w.c.msgSema
	}()
	if w.err != nil {
		if w.compress {
			w.c.deflate.abortMessage()
		}
		return w.err
	}
	if w.compress {
		if err := w.c.deflate.finishMessage(); err != nil {
			return fmt.Errorf("websocket: compressing message: %w", err)
		}
		if w.out.err != nil {
			return w.out.err
		}
	}
	return w.flush(true)
}

// frameFlusher receives compressed output and sends it in frames.
type frameFlusher struct {
	w   *messageWriter
	err error
}

func (f *frameFlusher) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	if _, err := f.w.buffer(p); err != nil {
		f.err = err
		return 0, err
	}
	return len(p), nil
}

// writeFrame sends one frame, holding frameSema for its duration. Data
// frames are refused once a Close frame was sent.
func (c *Conn) writeFrame(ctx context.Context, fin bool, op opcode, rsv1 bool, p []byte) error {
	if err := c.acquire(ctx, c.frameSema); err != nil {
		return err
	}
	defer func() { <-c.frameSema }()
	if sent := c.CloseSent(); sent != nil {
		return fmt.Errorf("websocket: cannot write a %s frame after sending close (%s): %w", op, sent.Code, ErrClosed)
	}
	return c.writeFrameLocked(ctx, fin, op, rsv1, p)
}

// writeFrameLocked sends a frame; the caller holds frameSema.
func (c *Conn) writeFrameLocked(ctx context.Context, fin bool, op opcode, rsv1 bool, p []byte) error {
	h := frameHeader{fin: fin, rsv1: rsv1, opcode: op, length: int64(len(p))}
	stop := c.watchWrite(ctx)
	var err error
	if c.server {
		err = c.writeServerFrame(h, p)
	} else {
		err = c.writeClientFrame(h, p)
	}
	if causedByContext(ctx, stop(), err) {
		// A frame may be half written: the stream cannot continue.
		cause := context.Cause(ctx)
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		c.setCloseErr(&CloseError{Code: closecode.AbnormalClosure, Reason: "write interrupted by its context", Err: cause})
		c.closeTCP()
		return fmt.Errorf("websocket: write interrupted, connection closed: %w", cause)
	}
	if err != nil {
		c.setCloseErr(&CloseError{Code: closecode.AbnormalClosure, Err: err})
		c.closeTCP()
		return fmt.Errorf("websocket: writing %s frame: %w", op, err)
	}
	return nil
}

// writeServerFrame sends an unmasked frame: small ones copied next to the
// header in one write, large ones with writev and no copy.
func (c *Conn) writeServerFrame(h frameHeader, p []byte) error {
	if len(p) <= smallFrame {
		bp := getBuf()
		b := appendFrameHeader(*bp, h)
		b = append(b, p...)
		_, err := c.nc.Write(b)
		putBuf(bp)
		return err
	}
	c.wbufs[0] = appendFrameHeader(c.whdr[:0], h)
	c.wbufs[1] = p
	bufs := net.Buffers(c.wbufs[:])
	_, err := bufs.WriteTo(c.nc)
	c.wbufs[1] = nil
	return err
}

// writeClientFrame sends a masked frame. The payload is masked in a copy, a
// chunk at a time, since the caller's slice must not change.
func (c *Conn) writeClientFrame(h frameHeader, p []byte) error {
	h.masked = true
	binary.LittleEndian.PutUint32(h.key[:], uint32(c.maskRand.Uint64()))
	bp := getBuf()
	defer putBuf(bp)
	b := appendFrameHeader(*bp, h)
	pos := 0
	for {
		k := min(cap(b)-len(b), len(p))
		start := len(b)
		b = append(b, p[:k]...)
		pos = mask(h.key, pos, b[start:])
		p = p[k:]
		if _, err := c.nc.Write(b); err != nil {
			return err
		}
		if len(p) == 0 {
			return nil
		}
		b = b[:0]
	}
}

// writeControl sends a control frame. Pings and pongs are dropped silently
// once a Close frame was sent, as RFC 6455 §5.5.1 requires.
func (c *Conn) writeControl(ctx context.Context, op opcode, p []byte) error {
	if err := c.acquire(ctx, c.frameSema); err != nil {
		return err
	}
	defer func() { <-c.frameSema }()
	if c.CloseSent() != nil {
		return nil
	}
	return c.writeFrameLocked(ctx, true, op, false, p)
}

// writeClose sends a Close frame with code and reason, once. Code 0 sends
// an empty payload (the answer to a Close frame without a code).
func (c *Conn) writeClose(code closecode.Code, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := c.acquire(ctx, c.frameSema); err != nil {
		return err
	}
	defer func() { <-c.frameSema }()
	c.mu.Lock()
	if c.closeSent != nil {
		c.mu.Unlock()
		return nil
	}
	sent := &CloseError{Code: code, Reason: reason}
	if code == 0 {
		sent.Code = closecode.NoStatusReceived
	}
	c.closeSent = sent
	c.closeEcho = c.closeRecv != nil
	c.mu.Unlock()
	var p []byte
	if code != 0 {
		var arr [maxControlPayload]byte
		p = binary.BigEndian.AppendUint16(arr[:0], uint16(code))
		p = append(p, reason...)
	}
	return c.writeFrameLocked(ctx, true, opClose, false, p)
}

// checkCloseArgs validates what an application asks to send in a Close
// frame.
func (c *Conn) checkCloseArgs(code closecode.Code, reason string) error {
	if !closecode.ValidOnWire(code) {
		return fmt.Errorf("websocket: close code %d may not be sent: want 1000–1003, 1007–1014 or 3000–4999 (%s)", int(code), closecode.Lookup(code).Name)
	}
	if code == closecode.MandatoryExtension && c.server {
		return errors.New("websocket: a server may not send 1010 Mandatory Extension: only a client requires extensions")
	}
	if len(reason) > closecode.MaxReasonBytes {
		return fmt.Errorf("websocket: close reason is %d bytes: at most %d fit in a Close frame", len(reason), closecode.MaxReasonBytes)
	}
	if !utf8.ValidString(reason) {
		return errors.New("websocket: close reason is not valid UTF-8")
	}
	return nil
}
