package websocket

import (
	"context"
	"io"
	"math"
	"math/bits"
	"sync"

	"github.com/ebb-ws/ebb/closecode"
)

// Reading a whole message (Read, ReadInto) with memory that follows the
// bytes received, never the sizes announced.
//
// A message that is not read straight into its slice (see readMessage) is
// gathered into chunks as its payload arrives: first the caller's buffer,
// if any, then buffers from pools, each about as large as everything
// gathered so far (so the number of chunks grows with the logarithm of the
// size) or as what has arrived already, whichever is more. Gathering
// copies nothing. At the end the chunks are copied once into a slice of
// exactly the message's size, which is the caller's; the pooled chunks go
// back. An uncompressed message's size is known from its last frame: once
// half of it has arrived, its final slice is allocated and the rest is read
// straight into it, so that large messages are copied at most halfway.
//
// "Arrived" means stored, buffered by the Conn, or, on Linux, received by
// the socket and not read yet: bytes the peer actually sent.

// chunk is one buffer of a message being gathered.
type chunk struct {
	b   []byte  // the bytes gathered in it; cap(b) is its size
	box *[]byte // the pooled buffer behind b; nil if b is not pooled
}

// maxChunks is how many chunk slots a Conn keeps between messages; a
// message that needed more gives the longer list up.
const maxChunks = 16

// collectMessage reads the rest of the current message into memory,
// starting in dst[:0].
func (c *Conn) collectMessage(ctx context.Context, dst []byte) (MessageType, []byte, error) {
	rd := &c.rd
	rd.cur = chunk{b: dst[:0]}
	for {
		if len(rd.cur.b) == cap(rd.cur.b) {
			more, err := c.makeRoom(ctx)
			if err != nil {
				c.dropMessage()
				return 0, nil, err
			}
			if !more {
				break
			}
			continue
		}
		n, err := rd.mr.Read(rd.cur.b[len(rd.cur.b):cap(rd.cur.b)])
		if err != nil && err != io.EOF {
			c.dropMessage() // the failure may have dropped it already
			return 0, nil, err
		}
		rd.cur.b = rd.cur.b[:len(rd.cur.b)+n]
		rd.stored += int64(n)
		if err == io.EOF {
			break
		}
	}
	p := c.assemble()
	if rd.hold { // ReadHeld: the caller releases the budget
		rd.kept, rd.held = rd.held, 0
	}
	c.dropMessage() // delivered: the slice is the caller's now
	return rd.msgType, p, nil
}

// makeRoom is called when the current chunk is full. Unless more of the
// message is certain to come, it first reads one byte, so that a message
// ending here gets no new buffer; then it grows. It reports whether the
// message goes on.
func (c *Conn) makeRoom(ctx context.Context) (more bool, err error) {
	rd := &c.rd
	if rd.stored == 0 && (rd.compressed || rd.remaining > 0) {
		return true, c.growMessage(ctx, 0)
	}
	n, err := rd.mr.Read(rd.probe[:])
	if err != nil && err != io.EOF {
		return false, err
	}
	if n > 0 {
		if gerr := c.growMessage(ctx, 1); gerr != nil {
			return false, gerr
		}
		rd.cur.b = append(rd.cur.b, rd.probe[0])
		rd.stored++
	}
	return err == nil, nil
}

// assemble returns the gathered message as one slice of its own: the
// caller's buffer, or the final slice, when it is all there, else a copy.
func (c *Conn) assemble() []byte {
	rd := &c.rd
	if len(rd.chunks) == 0 && rd.cur.box == nil {
		if rd.cur.b == nil {
			return []byte{}
		}
		return rd.cur.b
	}
	p := make([]byte, rd.stored)
	off := 0
	for _, ch := range rd.chunks {
		off += copy(p[off:], ch.b)
	}
	copy(p[off:], rd.cur.b)
	return p
}

// dropMessage lets go of the message's buffers and gives its memory budget
// back. It runs on delivery and, before the close handshake, on failure,
// so that a failing connection holds neither while it waits for the peer's
// Close frame.
func (c *Conn) dropMessage() {
	rd := &c.rd
	for i, ch := range rd.chunks {
		if ch.box != nil {
			putMsgBuf(ch.box)
		}
		rd.chunks[i] = chunk{}
	}
	rd.chunks = rd.chunks[:0]
	if cap(rd.chunks) > maxChunks {
		rd.chunks = nil
	}
	if rd.cur.box != nil {
		putMsgBuf(rd.cur.box)
	}
	rd.cur = chunk{}
	rd.stored, rd.owned = 0, 0
	if rd.held > 0 {
		c.budget.release(rd.held)
		rd.held = 0
	}
}

// growMessage adds a buffer for more of the message, which has pending
// bytes (0 or 1) read but not stored yet. The new chunk is as large as
// what is stored, or as what has arrived beyond it, at least
// BudgetFreeBytes, rounded up to a pool size of at most maxPooledMsgBuf;
// it never goes past the read limit plus the one byte that shows a message
// is too big, nor past the memory budget. Once the message's end is known
// and half of it has arrived, the message's final slice is allocated
// instead (growFinal).
//
// Past BudgetFreeBytes of buffers the message counts in the memory budget,
// and growing may wait for room there; a message that needs more than the
// whole budget is refused with 1009.
func (c *Conn) growMessage(ctx context.Context, pending int64) error {
	rd := &c.rd
	n := rd.stored
	arrived := n + pending
	if !rd.compressed {
		arrived += int64(c.br.Buffered()) + c.idle.queued()
	}
	if !rd.compressed && rd.fin {
		end := addSat(n+pending, rd.remaining)
		if addSat(arrived, arrived) >= end || addSat(n, max(n, BudgetFreeBytes)) >= end {
			return c.growFinal(ctx, n, end)
		}
	}
	size := min(msgBufClass(max(n, arrived-n, BudgetFreeBytes)), maxPooledMsgBuf)
	pooled := true
	room := int64(math.MaxInt) - n // what a slice can still address
	if limit := c.readLimit.Load(); limit >= 0 {
		room = min(room, addSat(limit, 1)-n)
	}
	if room <= 0 {
		return c.readFailed(errTooBig("message of more than %d bytes cannot be held in memory on this platform; read it with Reader", n))
	}
	if size > room {
		size, pooled = room, false
	}
	if owned := rd.owned + size; owned > BudgetFreeBytes {
		if !c.budget.fits(rd.owned + 1) {
			c.budget.refuseTooBig()
			return c.readFailed(errTooBigForBudget(n+1, c.budget.Limit()))
		}
		if !c.budget.fits(owned) {
			size, pooled = c.budget.Limit()-rd.owned, false
		}
		if err := c.account(ctx, rd.owned+size); err != nil {
			return err
		}
	}
	if len(rd.cur.b) > 0 || rd.cur.box != nil {
		rd.chunks = append(rd.chunks, rd.cur)
	}
	if pooled {
		box := getMsgBuf(size)
		rd.cur = chunk{b: (*box)[:0], box: box}
	} else {
		rd.cur = chunk{b: make([]byte, 0, size)}
	}
	rd.owned += size
	return nil
}

// growFinal allocates the message's final slice, of exactly end bytes,
// and moves the n bytes gathered so far into it.
func (c *Conn) growFinal(ctx context.Context, n, end int64) error {
	rd := &c.rd
	if end > math.MaxInt {
		return c.readFailed(errTooBig("message of %d bytes cannot be held in memory on this platform; read it with Reader", end))
	}
	if end > BudgetFreeBytes && !c.budget.fits(end) {
		c.budget.refuseTooBig()
		return c.readFailed(errTooBigForBudget(end, c.budget.Limit()))
	}
	// The chunks are gone once copied: the message then owns end bytes.
	if err := c.account(ctx, end); err != nil {
		return err
	}
	final := make([]byte, n, end)
	off := 0
	for i, ch := range rd.chunks {
		off += copy(final[off:], ch.b)
		if ch.box != nil {
			putMsgBuf(ch.box)
		}
		rd.chunks[i] = chunk{}
	}
	rd.chunks = rd.chunks[:0]
	copy(final[off:], rd.cur.b)
	if rd.cur.box != nil {
		putMsgBuf(rd.cur.box)
	}
	rd.cur = chunk{b: final}
	rd.owned = end
	return nil
}

// account makes the message's count in the memory budget match buffers of
// owned bytes: nothing up to BudgetFreeBytes, all of them past it. Growing
// may wait for room.
func (c *Conn) account(ctx context.Context, owned int64) error {
	rd := &c.rd
	want := owned
	if owned <= BudgetFreeBytes {
		want = 0
	}
	switch {
	case want > rd.held:
		if err := c.budget.acquire(ctx, c.doneCh, rd.held, want-rd.held); err != nil {
			return c.budgetFailed(err)
		}
	case want < rd.held:
		c.budget.release(rd.held - want)
	}
	rd.held = want
	return nil
}

// budgetFailed turns an error from MemoryBudget.acquire into the read's
// result.
func (c *Conn) budgetFailed(err error) error {
	switch err {
	case errBudgetTimeout:
		return c.readFailed(&protocolError{
			code:   closecode.TryAgainLater,
			reason: closecode.FormatRetryHint("server memory for messages is exhausted", budgetRetryHint()),
		})
	case errConnDone:
		return c.closedErr()
	}
	return err // the context's: the caller closes the connection
}

// errTooBigForBudget is the 1009 for a message larger than the whole
// memory budget.
func errTooBigForBudget(size, budget int64) error {
	return errTooBig("message of at least %d bytes exceeds the memory budget of %d bytes for messages read whole; read it with Reader, or give the Conn a larger MemoryBudget", size, budget)
}

// addSat returns a+b for non-negative a and b, or math.MaxInt64 when the
// sum would overflow.
func addSat(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// Pools of chunks, BudgetFreeBytes·2^k bytes each up to maxPooledMsgBuf.
// Reusing them spares gathering most of the cost of fresh memory (zeroing,
// page faults, the garbage collector's work). They hold memory only
// between garbage collections, and their stale contents never reach a
// caller: assemble copies out of them.
const maxPooledMsgBuf = 4 << 20

var msgBufPools [9]sync.Pool // BudgetFreeBytes (16 KiB) to maxPooledMsgBuf (4 MiB)

// msgBufClass returns the smallest pool size that holds n bytes, or n
// rounded up past maxPooledMsgBuf.
func msgBufClass(n int64) int64 {
	class := int64(BudgetFreeBytes)
	for class < n {
		if class > math.MaxInt64/2 {
			return n
		}
		class *= 2
	}
	return class
}

func msgBufPool(size int64) *sync.Pool {
	return &msgBufPools[bits.TrailingZeros64(uint64(size/BudgetFreeBytes))]
}

// getMsgBuf returns a pooled buffer of size bytes, one of the pool sizes.
func getMsgBuf(size int64) *[]byte {
	if v := msgBufPool(size).Get(); v != nil {
		return v.(*[]byte)
	}
	b := make([]byte, size)
	return &b
}

func putMsgBuf(b *[]byte) {
	*b = (*b)[:cap(*b)]
	msgBufPool(int64(len(*b))).Put(b)
}

// The pools must cover BudgetFreeBytes to maxPooledMsgBuf exactly; this
// fails to compile otherwise.
var _ = [1]struct{}{}[maxPooledMsgBuf/BudgetFreeBytes-1<<(len(msgBufPools)-1)]
