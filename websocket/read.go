package websocket

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/ebb-ws/ebb/closecode"
)

// readState is the reader's view of the incoming stream. It belongs to the
// goroutine holding readSema.
type readState struct {
	// Current data frame.
	fin       bool
	remaining int64
	key       [4]byte
	masked    bool
	maskPos   int

	// Current message.
	inMessage    bool // a message was started and not read to its end
	continuation bool // the peer owes continuation frames
	msgType      MessageType
	compressed   bool
	total        int64
	utf8         utf8Validator
	mr           messageReader
	gen          uint64 // counts messages, so a stale stream cannot read on

	// Current message read whole (Read, ReadInto); see collect.go.
	collect bool    // the message is read into memory, not streamed
	dstCap  int64   // capacity of the caller's buffer (ReadInto)
	chunks  []chunk // filled buffers before cur
	cur     chunk   // the buffer being filled
	stored  int64   // bytes in chunks and cur
	owned   int64   // bytes of the buffers the Conn allocated for the message
	held    int64   // of owned, counted in the memory budget
	hold    bool    // ReadHeld: on delivery, keep held counted (as kept)
	kept    int64   // held bytes handed over to ReadHeld's caller
	probe   [1]byte

	ctrl [maxControlPayload]byte
}

// Read reads the next whole data message. The returned slice is the
// caller's to keep, and no longer counted in the Conn's MemoryBudget.
//
// While the message arrives, Read holds memory for the bytes received (see
// the package documentation, Hostile peers), and may wait for room in the
// memory budget; ctx bounds that wait as it bounds the reads.
//
// Read returns a *CloseError when the connection ends: the peer's close
// (Remote true), or the code this endpoint closed with after a protocol
// violation, an oversized message (1009: over the read limit, or larger
// than the whole memory budget), invalid UTF-8 (1007), or a message that
// found no room in the memory budget in time (1013 with a retry-after=
// hint). If ctx ends while Read waits, the connection is closed, since a
// frame may have been read only in part.
func (c *Conn) Read(ctx context.Context) (MessageType, []byte, error) {
	return c.read(ctx, nil)
}

// ReadInto is Read with a buffer to reuse: a message is read into buf[:0]
// when it fits in cap(buf), however it was framed or compressed; a larger
// one is delivered in a new slice. Loops that handle one message at a time
// (echo, proxies, decoders) save an allocation per message; the returned
// slice is only valid until buf is reused, so pass it back in as the next
// buf. buf's memory does not count in the memory budget: it is the
// caller's.
func (c *Conn) ReadInto(ctx context.Context, buf []byte) (MessageType, []byte, error) {
	return c.read(ctx, buf[:0])
}

// ReadHeld is ReadInto for a message the application keeps for a while
// after reading it — an echo being written back, a message queued for
// other connections: a message that did not fit in buf stays counted in
// the Conn's MemoryBudget until release is called, so the budget bounds
// that memory too and other reads wait (their peers pushed back by TCP)
// instead of allocating more. Call release when the message is no longer
// needed (later calls do nothing); release is never nil, also on error. A
// message read into buf, or within BudgetFreeBytes, counts nothing.
func (c *Conn) ReadHeld(ctx context.Context, buf []byte) (typ MessageType, p []byte, release func(), err error) {
	var kept int64
	typ, p, err = c.readWith(ctx, buf[:0], func() {
		kept, c.rd.kept = c.rd.kept, 0
	})
	if kept == 0 {
		return typ, p, func() {}, err
	}
	var once sync.Once
	return typ, p, func() { once.Do(func() { c.budget.release(kept) }) }, err
}

func (c *Conn) read(ctx context.Context, dst []byte) (MessageType, []byte, error) {
	return c.readWith(ctx, dst, nil)
}

// readWith reads one message; with take set, the message's budget is kept
// on delivery (rd.kept) and take runs, under the read lock, to claim it.
func (c *Conn) readWith(ctx context.Context, dst []byte, take func()) (MessageType, []byte, error) {
	if err := c.acquire(ctx, c.readSema); err != nil {
		return 0, nil, err
	}
	defer func() { <-c.readSema }()
	if take != nil {
		c.rd.hold = true
		defer func() { c.rd.hold = false; take() }()
	}
	stop := c.watchRead(ctx)
	typ, p, err := c.readMessage(ctx, dst)
	if causedByContext(ctx, stop(), err) {
		return 0, nil, c.interrupted(ctx)
	}
	return typ, p, err
}

// readMessage reads one whole message with readSema held, into dst when
// it is not nil.
//
// Memory follows the bytes that arrive, never the sizes announced: a
// message gets a buffer of its announced size at once only up to
// BudgetFreeBytes (or in the caller's buffer, when it fits there); larger
// ones grow as their payload comes in (see collectMessage).
func (c *Conn) readMessage(ctx context.Context, dst []byte) (MessageType, []byte, error) {
	rd := &c.rd
	if err := c.beginMessage(true, int64(cap(dst))); err != nil {
		return 0, nil, err
	}
	// Fast path: one small uncompressed frame, read straight into its slice.
	fitsDst := dst != nil && rd.remaining <= rd.dstCap
	if rd.fin && !rd.compressed && (rd.remaining <= BudgetFreeBytes || fitsDst) {
		var p []byte
		if fitsDst {
			p = dst[:rd.remaining]
		} else {
			p = make([]byte, rd.remaining)
		}
		if rd.msgType == MessageBinary || int64(c.br.Buffered()) >= rd.remaining {
			if _, err := io.ReadFull(c.br, p); err != nil {
				return 0, nil, c.readFailed(noEOF(err))
			}
			if rd.masked {
				mask(rd.key, 0, p)
			}
			if rd.msgType == MessageText && !utf8.Valid(p) {
				return 0, nil, c.readFailed(errInvalidData("text message is not valid UTF-8"))
			}
		} else {
			// Text still arriving: validate each piece as it comes, so that
			// invalid UTF-8 fails the connection at once, not at the end.
			pos := 0
			for off := 0; off < len(p); {
				n, err := c.br.Read(p[off:])
				if rd.masked {
					pos = mask(rd.key, pos, p[off:off+n])
				}
				if !rd.utf8.write(p[off : off+n]) {
					return 0, nil, c.readFailed(errInvalidData("text message is not valid UTF-8"))
				}
				off += n
				if err != nil && off < len(p) {
					return 0, nil, c.readFailed(noEOF(err))
				}
			}
			if !rd.utf8.done() {
				return 0, nil, c.readFailed(errInvalidData("text message ends inside a UTF-8 sequence"))
			}
		}
		rd.remaining = 0
		rd.inMessage = false
		return rd.msgType, p, nil
	}
	return c.collectMessage(ctx, dst)
}

// Reader returns the next data message as a stream. Read it to io.EOF
// before calling Reader or Read again; an unfinished message is discarded
// then. ctx bounds the reads of the returned reader too.
func (c *Conn) Reader(ctx context.Context) (MessageType, io.Reader, error) {
	if err := c.acquire(ctx, c.readSema); err != nil {
		return 0, nil, err
	}
	defer func() { <-c.readSema }()
	stop := c.watchRead(ctx)
	err := c.beginMessage(false, 0)
	if causedByContext(ctx, stop(), err) {
		return 0, nil, c.interrupted(ctx)
	}
	if err != nil {
		return 0, nil, err
	}
	return c.rd.msgType, &messageStream{c: c, gen: c.rd.gen, ctx: ctx}, nil
}

// interrupted closes the connection after ctx cut a read short.
func (c *Conn) interrupted(ctx context.Context) error {
	cause := context.Cause(ctx)
	if cause == nil {
		// The network deadline, set to ctx's deadline, fired a moment
		// before ctx itself expired.
		cause = context.DeadlineExceeded
	}
	c.mu.Lock()
	if c.closeErr == nil || c.closeErr.Code == closecode.AbnormalClosure {
		// The network error that surfaced first was only the symptom.
		c.closeErr = &CloseError{Code: closecode.AbnormalClosure, Reason: "read interrupted by its context", Err: cause}
	}
	c.mu.Unlock()
	c.closeTCP()
	return fmt.Errorf("websocket: read interrupted, connection closed: %w", cause)
}

// beginMessage skips what is left of an unfinished message, then reads up
// to the first frame of the next data message. collect tells whether that
// message is read whole (Read, ReadInto, with a buffer of dstCap bytes) or
// streamed (Reader).
func (c *Conn) beginMessage(collect bool, dstCap int64) error {
	if c.finished() {
		return c.closedErr()
	}
	rd := &c.rd
	rd.collect, rd.dstCap = false, 0 // a message being skipped is streamed
	if rd.inMessage {
		if _, err := io.Copy(io.Discard, &rd.mr); err != nil {
			return err
		}
	}
	if err := c.awaitData(); err != nil {
		return c.readFailed(err)
	}
	h, err := c.nextDataFrame()
	if err != nil {
		return c.readFailed(err)
	}
	if h.opcode == opContinuation {
		return c.readFailed(errProtocol("continuation frame without a message to continue"))
	}
	rd.msgType = MessageBinary
	if h.opcode == opText {
		rd.msgType = MessageText
	}
	rd.compressed = h.rsv1
	rd.total = 0
	rd.utf8.reset()
	rd.collect, rd.dstCap = collect, dstCap
	rd.inMessage = true
	rd.gen++
	rd.mr = messageReader{c: c, raw: payloadReader{c: c}}
	rd.mr.src = &rd.mr.raw
	if rd.compressed {
		rd.mr.src = c.deflate.startInflate(&rd.mr.raw)
	}
	if err := c.startFrame(h); err != nil {
		return c.readFailed(err)
	}
	return nil
}

// startFrame makes h the current data frame. An uncompressed message
// whose frames announce more than the read limit, or, when it is read
// whole, more than the memory budget can ever hold, is refused at once,
// before any of its payload is read. The sum saturates: no announced
// length, up to 2^63-1 per frame, can wrap it around.
func (c *Conn) startFrame(h frameHeader) error {
	rd := &c.rd
	rd.fin = h.fin
	rd.remaining = h.length
	rd.masked = h.masked
	rd.key = h.key
	rd.maskPos = 0
	rd.continuation = !h.fin
	if rd.compressed {
		return nil // the limits apply to the inflated size, checked as it comes
	}
	total := addSat(rd.total, h.length)
	if limit := c.readLimit.Load(); limit >= 0 && total > limit {
		return errTooBig("message of at least %d bytes exceeds the read limit of %d bytes", total, limit)
	}
	if rd.collect && total > BudgetFreeBytes && total > rd.dstCap && !c.budget.fits(total) {
		c.budget.refuseTooBig()
		return errTooBigForBudget(total, c.budget.Limit())
	}
	return nil
}

// nextDataFrame reads frames until a data frame, handling the control frames
// in between.
func (c *Conn) nextDataFrame() (frameHeader, error) {
	for {
		h, err := readFrameHeader(c.br)
		if err != nil {
			return h, err
		}
		if err := c.checkFrame(h); err != nil {
			return h, err
		}
		if !h.opcode.isControl() {
			return h, nil
		}
		if err := c.handleControl(h); err != nil {
			return h, err
		}
	}
}

// checkFrame enforces the framing rules of RFC 6455 §5 and RFC 7692 §6.
func (c *Conn) checkFrame(h frameHeader) error {
	switch {
	case h.rsv2 || h.rsv3:
		return errProtocol("reserved bit %s set, but no negotiated extension defines it", rsvName(h))
	case h.opcode > opBinary && h.opcode < opClose || h.opcode > opPong:
		return errProtocol("%s", h.opcode)
	case c.server && !h.masked:
		return errProtocol("client frame is not masked")
	case !c.server && h.masked:
		return errProtocol("server frame is masked")
	}
	if h.opcode.isControl() {
		switch {
		case !h.fin:
			return errProtocol("fragmented %s frame", h.opcode)
		case h.length > maxControlPayload:
			return errProtocol("%s frame payload of %d bytes exceeds 125", h.opcode, h.length)
		case h.rsv1:
			return errProtocol("RSV1 set on a %s frame", h.opcode)
		}
		return nil
	}
	if h.rsv1 {
		switch {
		case c.deflate == nil:
			return errProtocol("RSV1 set, but permessage-deflate was not negotiated")
		case h.opcode == opContinuation:
			return errProtocol("RSV1 set on a continuation frame")
		}
	}
	if h.opcode == opContinuation && !c.rd.continuation {
		return errProtocol("continuation frame without a message to continue")
	}
	if h.opcode != opContinuation && c.rd.continuation {
		return errProtocol("new %s message before the previous fragmented message ended", h.opcode)
	}
	return nil
}

func rsvName(h frameHeader) string {
	if h.rsv2 {
		return "RSV2"
	}
	return "RSV3"
}

// handleControl reads a control frame's payload and acts on it.
func (c *Conn) handleControl(h frameHeader) error {
	p := c.rd.ctrl[:h.length]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return noEOF(err)
	}
	if h.masked {
		mask(h.key, 0, p)
	}
	switch h.opcode {
	case opPing:
		// A pong write can only fail if the connection is going down; the
		// next read reports that.
		c.writeControl(context.Background(), opPong, p)
		return nil
	case opPong:
		c.gotPong(p)
		return nil
	}
	return c.handleClose(p)
}

// parseClosePayload validates a Close frame's payload (RFC 6455 §5.5.1,
// §7.4).
func parseClosePayload(p []byte) (closecode.Code, string, error) {
	switch {
	case len(p) == 0:
		return closecode.NoStatusReceived, "", nil
	case len(p) == 1:
		return 0, "", errProtocol("close frame payload of 1 byte: a close code takes 2")
	}
	code := closecode.Code(binary.BigEndian.Uint16(p))
	if !closecode.ValidOnWire(code) {
		return 0, "", errProtocol("close code %d is not allowed on the wire", int(code))
	}
	reason := p[2:]
	if !utf8.Valid(reason) {
		return 0, "", errInvalidData("close reason is not valid UTF-8")
	}
	return code, string(reason), nil
}

// handleClose processes the peer's Close frame: it answers it if this
// endpoint has not closed yet, and ends the connection.
func (c *Conn) handleClose(p []byte) error {
	code, reason, err := parseClosePayload(p)
	if err != nil {
		var pe *protocolError
		if errors.As(err, &pe) {
			pe.peerClosed = true
		}
		return err
	}
	ce := &CloseError{Code: code, Reason: reason, Remote: true}
	if weClosed := c.recordPeerClose(ce); !weClosed {
		// Echo the code, as RFC 6455 §5.5.1 suggests; an empty close gets an
		// empty answer.
		echo := code
		if code == closecode.NoStatusReceived {
			echo = 0
		}
		c.writeClose(echo, "")
	}
	c.finishClose()
	return ce
}

// recordPeerClose records the peer's Close frame (the first one counts),
// wakes whoever waits for it, and reports whether this side had already
// sent its own Close.
func (c *Conn) recordPeerClose(ce *CloseError) (weClosed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeRecv == nil {
		c.closeRecv = ce
		close(c.recvCh)
	}
	if c.closeErr == nil {
		c.closeErr = ce
	}
	return c.closeSent != nil
}

// finishClose ends the TCP connection after the close handshake. The server
// closes first (RFC 6455 §7.1.1); a client gives it a moment to do so.
func (c *Conn) finishClose() {
	if !c.server {
		c.nc.SetReadDeadline(time.Now().Add(failDrainTimeout))
		io.Copy(io.Discard, c.br)
	}
	c.closeTCP()
}

// readFailed turns a read error into the connection's end. Protocol
// violations are answered with a Close frame carrying their code.
func (c *Conn) readFailed(err error) error {
	c.dropMessage()
	var pe *protocolError
	var ce *CloseError
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &pe):
		sent := c.setCloseErr(&CloseError{Code: pe.code, Reason: pe.reason})
		c.fail(pe.code, pe.reason, pe.peerClosed)
		return sent
	}
	if ce := c.Err(); ce != nil {
		// We closed first (Close or CloseNow); the read error is a result.
		c.closeTCP()
		return ce
	}
	got := c.setCloseErr(&CloseError{Code: closecode.AbnormalClosure, Err: err})
	c.closeTCP()
	return got
}

// fail sends a Close frame for a violation found while reading, waits
// briefly for the peer's answer so the frame is not lost to a TCP reset,
// and closes the connection.
//
// When the violation was in the peer's own Close frame, no answer will
// come: a server closes at once, a client waits only for the server to
// close TCP.
func (c *Conn) fail(code closecode.Code, reason string, peerClosed bool) {
	if c.logger != nil {
		c.logger.Debug("websocket: failing connection", "code", int(code), "reason", reason, "remote", c.nc.RemoteAddr().String())
	}
	c.writeClose(code, closecode.TruncateReason(reason, closecode.MaxReasonBytes))
	switch {
	case !peerClosed:
		c.awaitClose(time.Now().Add(failDrainTimeout))
	case !c.server:
		c.nc.SetReadDeadline(time.Now().Add(failDrainTimeout))
		io.Copy(io.Discard, c.br)
	}
	c.closeTCP()
}

// awaitClose reads and discards frames until the peer's Close frame, the
// end of the stream, or the deadline. The caller holds readSema.
func (c *Conn) awaitClose(deadline time.Time) {
	c.nc.SetReadDeadline(deadline)
	for {
		h, err := readFrameHeader(c.br)
		if err != nil {
			return
		}
		if h.opcode != opClose || h.length > maxControlPayload {
			if _, err := c.br.Discard(int(min(h.length, 1<<30))); err != nil {
				return
			}
			continue
		}
		p := c.rd.ctrl[:h.length]
		if _, err := io.ReadFull(c.br, p); err != nil {
			return
		}
		if h.masked {
			mask(h.key, 0, p)
		}
		if code, reason, err := parseClosePayload(p); err == nil {
			c.recordPeerClose(&CloseError{Code: code, Reason: reason, Remote: true})
		}
		if !c.server {
			io.Copy(io.Discard, c.br)
		}
		return
	}
}

// payloadReader yields a message's raw payload bytes (still compressed if
// the message is), unmasked, across its frames.
type payloadReader struct {
	c *Conn
}

func (r *payloadReader) Read(p []byte) (int, error) {
	c := r.c
	rd := &c.rd
	for rd.remaining == 0 {
		if rd.fin {
			return 0, io.EOF
		}
		h, err := c.nextDataFrame()
		if err != nil {
			if isFrameError(err) {
				return 0, err
			}
			return 0, &netReadError{err}
		}
		if err := c.startFrame(h); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > rd.remaining {
		p = p[:rd.remaining]
	}
	n, err := c.br.Read(p)
	rd.remaining -= int64(n)
	if rd.masked {
		rd.maskPos = mask(rd.key, rd.maskPos, p[:n])
	}
	if err != nil {
		return n, &netReadError{noEOF(err)}
	}
	return n, nil
}

// messageReader reads one message: it decompresses when needed, enforces
// the read limit on what it yields, and validates text. The caller holds
// readSema.
type messageReader struct {
	c   *Conn
	raw payloadReader
	src io.Reader
}

func (r *messageReader) Read(p []byte) (int, error) {
	c := r.c
	rd := &c.rd
	if !rd.inMessage {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.src.Read(p)
	rd.total += int64(n)
	if limit := c.readLimit.Load(); limit >= 0 && rd.total > limit {
		return 0, c.readFailed(errTooBig("message exceeds the read limit of %d bytes", limit))
	}
	if rd.msgType == MessageText && !rd.utf8.write(p[:n]) {
		return 0, c.readFailed(errInvalidData("text message is not valid UTF-8"))
	}
	switch {
	case err == io.EOF:
		if rd.msgType == MessageText && !rd.utf8.done() {
			return 0, c.readFailed(errInvalidData("text message ends inside a UTF-8 sequence"))
		}
		rd.inMessage = false
		if rd.compressed {
			c.deflate.finishInflate()
		}
		return n, io.EOF
	case err != nil:
		var ne *netReadError
		if rd.compressed && !errors.As(err, &ne) && !isFrameError(err) {
			// Anything the inflater itself reports means a corrupt stream.
			return 0, c.readFailed(errInvalidData("compressed message is corrupt: %v", err))
		}
		return 0, c.readFailed(err)
	}
	return n, nil
}

// isFrameError reports whether err came from framing (a protocol error or
// the peer's close) rather than from the data itself.
func isFrameError(err error) bool {
	var pe *protocolError
	var ce *CloseError
	return errors.As(err, &pe) || errors.As(err, &ce)
}

// netReadError marks an error of the network connection itself, so that it
// is not mistaken for corrupt compressed data.
type netReadError struct{ err error }

func (e *netReadError) Error() string { return e.err.Error() }
func (e *netReadError) Unwrap() error { return e.err }

// messageStream is the reader Reader returns. It takes the read lock for
// each Read and stops at the end of its own message, even if the caller
// keeps it past that.
type messageStream struct {
	c   *Conn
	gen uint64
	ctx context.Context
}

func (s *messageStream) Read(p []byte) (int, error) {
	c := s.c
	if err := c.acquire(s.ctx, c.readSema); err != nil {
		return 0, err
	}
	defer func() { <-c.readSema }()
	if c.rd.gen != s.gen {
		return 0, io.EOF
	}
	stop := c.watchRead(s.ctx)
	n, err := c.rd.mr.Read(p)
	if causedByContext(s.ctx, stop(), err) {
		return n, c.interrupted(s.ctx)
	}
	return n, err
}
