package websocket

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/flate"
)

// This file is the permessage-deflate codec (RFC 7692 §7.2) with memory
// that follows the negotiated window:
//
//   - Compressors and decompressors come from pools and are held only while
//     a message is written or read, with one exception below.
//   - With context takeover in a direction, the only state an idle
//     connection keeps is the last 2^bits bytes of plain text (history).
//     The next message starts a pooled compressor or decompressor with that
//     history (its last primeHistoryBytes, for a compressor) as its
//     dictionary. Keeping a whole compressor per connection
//     instead would cost several hundred KiB (klauspost's encoders carry
//     fixed-size hash tables and a 64 KiB block buffer), whatever the
//     window.
//   - The exception: priming a compressor with a 32 KiB history re-hashes
//     it, which cost more than compressing a 1.5 KiB message (half of the
//     server's CPU in bench/). So a connection sending with context
//     takeover and a 2^15 window keeps its compressor, and simply continues
//     the stream, while it is busy; it gives the compressor back once it
//     has sent nothing for keepCompressorIdle. At most maxKeptCompressors
//     are kept in the process, which bounds the extra memory. Idle
//     connections stay small; busy ones compress at the speed of a
//     compressor per connection.
//   - Messages sent or received uncompressed never touch the history: only
//     compressed messages form the deflate stream whose window both ends
//     share, so the two windows stay equal whatever is sent in between.

// errCorruptDeflate is wrapped by every error the inflate reader returns
// because the compressed data itself is bad (invalid deflate, a message
// that ends inside a deflate block, data after a final block, a distance
// beyond the history). When klauspost/flate reported the problem, its
// flate.CorruptInputError is wrapped too. The connection must be failed
// with 1007 Invalid Frame Payload Data; errors from the source reader are
// passed through unchanged and never wrap errCorruptDeflate.
var errCorruptDeflate = errors.New("websocket: corrupt permessage-deflate data")

// errDeflateBroken is returned when compressing after a message that was
// abandoned mid-way while context takeover is in use: the peer's window no
// longer matches ours, so nothing more can be compressed on this
// connection. The connection must be closed (1011 Internal Error).
var errDeflateBroken = errors.New("websocket: permessage-deflate compressor unusable after an interrupted message (context takeover keeps the peer's window in step with ours); close the connection")

// errDeflateClosed is returned by the codec after release.
var errDeflateClosed = errors.New("websocket: permessage-deflate state used after the connection was closed")

// deflateTail is what a sync flush ends with; RFC 7692 §7.2.1 strips it from
// every compressed message and §7.2.2 puts it back before decompressing.
var deflateTail = [4]byte{0x00, 0x00, 0xff, 0xff}

// inflateTail is appended to every compressed message before inflating:
// deflateTail, which completes the empty stored block the sender stripped,
// followed by an empty stored block with BFINAL set. A well-formed message
// therefore makes the decompressor report io.EOF exactly at its end, while
// a message cut inside a block swallows these bytes as block data and ends
// in an error instead of silently truncated output.
var inflateTail = [...]byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// maxTrailingAfterFinal is how many payload bytes may follow a deflate
// block with BFINAL set. RFC 7692 §7.2.3.4 lets a sender end a message with
// a final block; §7.2.1 then has it append an empty stored block and strip
// four bytes, which leaves at most one byte. Five also tolerates a sender
// that did not strip the empty block. More is an error.
const maxTrailingAfterFinal = 5

// deflateState is one connection's permessage-deflate codec. The write side
// (startMessage, Write, finishMessage, abortMessage) and the read side
// (startInflate, Read, finishInflate) may run concurrently with each other,
// but each side handles one message at a time. release may be called at any
// time, from any goroutine.
type deflateState struct {
	closed atomic.Bool

	// Write side, guarded by wmu.
	wmu       sync.Mutex
	wLevel    int
	wBits     int  // our compression window
	wTakeover bool // keep history between messages
	wHist     history
	fw        *flate.Writer // held during a message, and kept while busy (see keep)
	fwPool    *sync.Pool
	tail      tailHolder
	mw        deflateMessageWriter
	wErr      error // sticky: errDeflateBroken or errDeflateClosed
	// keep is true when fw outlives its message (context takeover with a
	// 2^15 history); inMsg marks a message in progress; lastMsg is when
	// the last one finished; idleTimer gives fw back once the connection
	// has been quiet for keepIdle (armed while fw is kept).
	keep       bool
	fwCounted  bool // fw holds one of the maxKeptCompressors places
	keepIdle   time.Duration
	inMsg      bool
	lastMsg    time.Time
	idleTimer  *time.Timer
	timerArmed bool

	// Read side, guarded by rmu.
	rmu       sync.Mutex
	rTakeover bool
	rHist     history
	inf       *inflater // held during a message
	ir        inflateReader
}

// newDeflateState returns the codec for a connection that negotiated p;
// isServer says which side of p is ours. opts supplies the compression level
// and may be nil.
func newDeflateState(p *deflateParams, isServer bool, opts *CompressionOptions) *deflateState {
	ownBits, peerBits := p.clientMaxWindowBits, p.serverMaxWindowBits
	ownNoTakeover, peerNoTakeover := p.clientNoContextTakeover, p.serverNoContextTakeover
	if isServer {
		ownBits, peerBits = peerBits, ownBits
		ownNoTakeover, peerNoTakeover = peerNoTakeover, ownNoTakeover
	}
	d := &deflateState{
		wLevel:    opts.level(),
		wBits:     ownBits,
		wTakeover: !ownNoTakeover,
		rTakeover: !peerNoTakeover,
	}
	d.fwPool = writerPool(d.wLevel, d.wBits)
	if d.wTakeover && d.wLevel != flate.HuffmanOnly {
		// Huffman-only output never refers back, so it needs no history.
		d.wHist.max = 1 << ownBits
		// Priming re-hashes the history: worth avoiding at 32 KiB, cheap
		// at smaller windows (2^12 is 1/8 of the work), where klauspost's
		// custom-window encoder also found fewer matches when continued
		// than when primed.
		d.keep = ownBits == maxWindowBits
		d.keepIdle = keepCompressorIdle
	}
	if d.rTakeover {
		// At least 512 bytes: zlib peers asked for a 256-byte window
		// silently use 512 (see CompressionOptions).
		d.rHist.max = 1 << max(peerBits, minPeerWindowBits)
	}
	d.mw.d = d
	d.ir.d = d
	return d
}

// release returns pooled state and drops the history. The codec returns
// errors afterwards. A message in progress on another goroutine gives its
// pooled state back when it next calls into the codec.
func (d *deflateState) release() {
	d.closed.Store(true)
	if d.wmu.TryLock() {
		d.releaseWriteLocked()
		d.wmu.Unlock()
	}
	if d.rmu.TryLock() {
		d.releaseReadLocked()
		d.rmu.Unlock()
	}
}

func (d *deflateState) releaseWriteLocked() {
	d.putWriter()
	d.wHist.free()
	d.wErr = errDeflateClosed
	if d.idleTimer != nil {
		d.idleTimer.Stop()
		d.timerArmed = false
	}
}

func (d *deflateState) releaseReadLocked() {
	d.putInflater()
	d.rHist.free()
}

// ---- compression ----

// writerPools holds idle compressors: one pool per level for a 32 KiB
// window, and one per smaller window (klauspost's windowed encoder has no
// level). They are filled in once, before any use.
var writerPools = newWriterPools()

const numLevels = flate.BestCompression - flate.HuffmanOnly + 1

func newWriterPools() *[numLevels + maxWindowBits - minWindowBits]sync.Pool {
	var pools [numLevels + maxWindowBits - minWindowBits]sync.Pool
	for level := flate.HuffmanOnly; level <= flate.BestCompression; level++ {
		pools[level-flate.HuffmanOnly].New = func() any {
			w, err := flate.NewWriter(nil, level)
			if err != nil {
				panic(err) // levels -2..9 are all valid; unreachable
			}
			return w
		}
	}
	for bits := minWindowBits; bits < maxWindowBits; bits++ {
		pools[numLevels+bits-minWindowBits].New = func() any {
			w, err := flate.NewWriterWindow(nil, 1<<bits)
			if err != nil {
				panic(err) // 256..16384 is within klauspost's range; unreachable
			}
			return w
		}
	}
	return &pools
}

// writerPool returns the pool for a compressor of level and window bits.
func writerPool(level, bits int) *sync.Pool {
	if bits == maxWindowBits || level == flate.HuffmanOnly { // Huffman-only never refers back
		return &writerPools[level-flate.HuffmanOnly]
	}
	return &writerPools[numLevels+bits-minWindowBits]
}

// startMessage begins a compressed message. Bytes written to the returned
// writer are compressed into dst as they come (klauspost buffers up to one
// block); finishMessage completes the message. dst never receives the
// final four bytes 0x00 0x00 0xff 0xff that RFC 7692 §7.2.1 strips.
// After a failure with context takeover, the writer returns
// errDeflateBroken.
func (d *deflateState) startMessage(dst io.Writer) io.Writer {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed.Load() {
		d.releaseWriteLocked()
	}
	if d.wErr != nil {
		return &d.mw
	}
	if d.inMsg {
		d.putWriter() // an unfinished previous message (should not happen)
	}
	d.inMsg = true
	d.tail = tailHolder{dst: dst}
	if d.fw != nil {
		// Kept from the previous message: it already holds the history
		// and writes to &d.tail, so the stream just goes on.
		return &d.mw
	}
	d.fw = d.fwPool.Get().(*flate.Writer)
	if d.wTakeover {
		d.fw.ResetDict(&d.tail, primeWith(d.wHist.linear()))
	} else {
		d.fw.ResetDict(&d.tail, nil)
	}
	return &d.mw
}

// finishMessage flushes the message's compressed data into dst, minus the
// stripped tail. Without context takeover the compressor goes back to the
// pool; with it, the history keeps the message's last 2^bits bytes.
func (d *deflateState) finishMessage() error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed.Load() {
		d.releaseWriteLocked()
	}
	if d.wErr != nil {
		return d.wErr
	}
	if d.fw == nil || !d.inMsg {
		return errors.New("websocket: internal error: finishMessage without startMessage")
	}
	err := d.fw.Flush()
	if err == nil && (d.tail.n != len(deflateTail) || d.tail.tail != deflateTail) {
		err = fmt.Errorf("websocket: internal error: compressed message ends in % x, not a sync flush", d.tail.tail[:d.tail.n])
	}
	d.inMsg = false
	if err != nil || !d.keep || !d.holdBudgetLocked() {
		d.putWriter()
	} else {
		d.tail = tailHolder{} // drop the message's destination; fw keeps &d.tail
		d.lastMsg = time.Now()
		d.armIdleTimerLocked(d.keepIdle)
	}
	if err != nil && d.wTakeover {
		d.wErr = errDeflateBroken
	}
	return err
}

// primeHistoryBytes is how much of the history a pooled compressor is
// primed with. The peer holds the whole window, and an encoder may refer
// to less of it than allowed, so any tail of the history is valid; priming
// re-hashes every byte, so less is cheaper. For ~2 KiB JSON messages at a
// 32 KiB window, the last 8 KiB cut the cost per message from 75 µs to 23
// µs at the same ratio (0.2151 → 0.2141): the matches that pay are in the
// recent messages.
const primeHistoryBytes = 8 << 10

// primeWith returns the part of hist to prime a compressor with.
func primeWith(hist []byte) []byte {
	return hist[max(0, len(hist)-primeHistoryBytes):]
}

// keepCompressorIdle is how long a connection that sends with context
// takeover keeps its compressor after its last message.
const keepCompressorIdle = 100 * time.Millisecond

// maxKeptCompressors bounds the compressors kept between messages in the
// whole process. A kept compressor costs about 800 KiB (klauspost's hash
// tables, block buffer and history at the default level), so a server
// whose thousands of connections all send every few ms would otherwise
// hold GiBs; with the bound the extra memory stays near 32 MiB, and
// connections past it prime a pooled compressor per message as idle ones
// do. The busiest connections, which gain the most, tend to hold the
// places.
const maxKeptCompressors = 40

// keptCompressors counts the compressors kept between messages now.
var keptCompressors atomic.Int64

// holdBudgetLocked reports whether d may keep its compressor after this
// message, taking one of the maxKeptCompressors places if it holds none.
func (d *deflateState) holdBudgetLocked() bool {
	if d.fwCounted {
		return true
	}
	if keptCompressors.Add(1) > maxKeptCompressors {
		keptCompressors.Add(-1)
		return false
	}
	d.fwCounted = true
	return true
}

// armIdleTimerLocked makes sure the idle timer fires within after. Busy
// connections do not reset it per message: when it fires it looks at
// lastMsg and re-arms itself for the rest of the idle period.
func (d *deflateState) armIdleTimerLocked(after time.Duration) {
	if d.timerArmed {
		return
	}
	d.timerArmed = true
	if d.idleTimer == nil {
		d.idleTimer = time.AfterFunc(after, d.releaseIdleCompressor)
		return
	}
	d.idleTimer.Reset(after)
}

// releaseIdleCompressor gives a kept compressor back to the pool once the
// connection has sent nothing for keepIdle. The history is kept
// up to date on every write, so the next message primes a pooled
// compressor from it as usual.
func (d *deflateState) releaseIdleCompressor() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.timerArmed = false
	switch {
	case d.closed.Load():
		d.releaseWriteLocked() // Close found the lock taken by this callback
	case d.fw == nil:
	case d.inMsg: // a long message is being written: look again later
		d.armIdleTimerLocked(d.keepIdle)
	default:
		if quiet := time.Since(d.lastMsg); quiet < d.keepIdle {
			d.armIdleTimerLocked(d.keepIdle - quiet)
			return
		}
		d.putWriter()
	}
}

// abortMessage gives up on a message whose frames could not all be sent.
// The compressor goes back to the pool; with context takeover the codec is
// marked broken, because the peer did not see what the history now holds.
func (d *deflateState) abortMessage() {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	d.inMsg = false
	d.putWriter()
	if d.wTakeover && d.wErr == nil {
		d.wErr = errDeflateBroken
	}
	if d.closed.Load() {
		d.releaseWriteLocked()
	}
}

func (d *deflateState) putWriter() {
	if d.fw == nil {
		return
	}
	d.fw.ResetDict(nil, nil) // drop references to dst and the history
	d.fwPool.Put(d.fw)
	d.fw = nil
	d.tail = tailHolder{}
	if d.fwCounted {
		keptCompressors.Add(-1)
		d.fwCounted = false
	}
}

// deflateMessageWriter is the writer startMessage returns.
type deflateMessageWriter struct{ d *deflateState }

func (w *deflateMessageWriter) Write(p []byte) (int, error) {
	d := w.d
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if d.closed.Load() {
		d.releaseWriteLocked()
	}
	if d.wErr != nil {
		return 0, d.wErr
	}
	if d.fw == nil || !d.inMsg {
		return 0, errors.New("websocket: internal error: write to a finished compressed message")
	}
	n, err := d.fw.Write(p)
	if d.wTakeover {
		d.wHist.write(p[:n])
	}
	if err != nil && d.wTakeover {
		d.wErr = errDeflateBroken
	}
	if d.closed.Load() { // released while we wrote: give the state back now
		d.releaseWriteLocked()
	}
	return n, err
}

// tailHolder forwards everything written to it to dst except the last four
// bytes, which it holds back: when the message ends they are the sync
// flush marker that RFC 7692 strips.
type tailHolder struct {
	dst  io.Writer
	tail [4]byte
	n    int
}

func (t *tailHolder) Write(p []byte) (int, error) {
	if t.n+len(p) <= len(t.tail) {
		t.n += copy(t.tail[t.n:], p)
		return len(p), nil
	}
	emit := t.n + len(p) - len(t.tail) // bytes of tail+p that go out now
	fromTail := min(emit, t.n)
	if fromTail > 0 {
		if _, err := t.dst.Write(t.tail[:fromTail]); err != nil {
			return 0, err
		}
		t.n = copy(t.tail[:], t.tail[fromTail:t.n])
	}
	fromP := emit - fromTail
	if fromP > 0 {
		if _, err := t.dst.Write(p[:fromP]); err != nil {
			return 0, err
		}
	}
	t.n += copy(t.tail[t.n:], p[fromP:])
	return len(p), nil
}

// ---- decompression ----

// inflater is a pooled decompressor with its input buffer.
type inflater struct {
	in    inflateInput
	drain [64]byte      // for checkAfterFinal, here so it does not escape per call
	br    *bufio.Reader // over in; klauspost reads it byte-wise without copying
	fr    io.ReadCloser // klauspost flate reader, also a flate.Resetter
}

var inflaterPool = sync.Pool{New: func() any {
	inf := &inflater{}
	inf.br = bufio.NewReaderSize(&inf.in, 4096)
	inf.fr = flate.NewReader(inf.br)
	return inf
}}

// inflateInput yields a message's compressed payload followed by
// inflateTail, and remembers what it delivered and any error from src.
type inflateInput struct {
	src       io.Reader
	srcN      int64 // bytes delivered from src
	srcDone   bool
	srcErr    error // a non-EOF error from src, passed through as is
	tailPos   int   // bytes of inflateTail delivered
	delivered int64 // total bytes delivered
}

func (in *inflateInput) Read(p []byte) (int, error) {
	if !in.srcDone {
		n, err := in.src.Read(p)
		in.srcN += int64(n)
		in.delivered += int64(n)
		switch {
		case err == io.EOF:
			in.srcDone = true
		case err != nil:
			in.srcErr = err
			return n, err
		}
		if n > 0 || !in.srcDone {
			return n, nil
		}
	}
	if in.tailPos == len(inflateTail) {
		return 0, io.EOF
	}
	n := copy(p, inflateTail[in.tailPos:])
	in.tailPos += n
	in.delivered += int64(n)
	return n, nil
}

// startInflate begins reading a compressed message. src yields the
// message's payload (all frames, io.EOF at the end of the message); the
// returned reader yields the decompressed message and io.EOF at its end.
// Output is produced as it is read, at most len(p) bytes per Read, so the
// caller's read limit stops a decompression bomb before it costs memory.
// Errors from src are returned unchanged; errors in the data wrap
// errCorruptDeflate. finishInflate must follow the end of the message.
func (d *deflateState) startInflate(src io.Reader) io.Reader {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	d.ir.done, d.ir.started, d.ir.err = false, false, nil
	if d.closed.Load() {
		d.releaseReadLocked()
		d.ir.err = errDeflateClosed
		return &d.ir
	}
	if d.inf == nil {
		d.inf = inflaterPool.Get().(*inflater)
	}
	inf := d.inf
	inf.in = inflateInput{src: src}
	inf.br.Reset(&inf.in)
	var dict []byte
	if d.rTakeover {
		dict = d.rHist.linear()
	}
	// Reset copies dict into the decompressor's own window.
	if err := inf.fr.(flate.Resetter).Reset(inf.br, dict); err != nil {
		d.ir.err = fmt.Errorf("%w: %w", errCorruptDeflate, err)
	}
	return &d.ir
}

// finishInflate gives the decompressor back to the pool. Call it when the
// reader returned io.EOF, or when the message is abandoned.
func (d *deflateState) finishInflate() {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	d.putInflater()
	if d.closed.Load() {
		d.releaseReadLocked()
	}
}

func (d *deflateState) putInflater() {
	if d.inf == nil {
		return
	}
	d.inf.in = inflateInput{} // drop the reference to src
	inflaterPool.Put(d.inf)
	d.inf = nil
}

// inflateReader is the reader startInflate returns.
type inflateReader struct {
	d       *deflateState
	started bool
	done    bool
	err     error
}

func (r *inflateReader) Read(p []byte) (int, error) {
	d := r.d
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if d.closed.Load() {
		d.releaseReadLocked()
		return 0, errDeflateClosed
	}
	if r.done {
		return 0, io.EOF
	}
	if r.err != nil {
		return 0, r.err
	}
	if d.inf == nil {
		return 0, errors.New("websocket: internal error: read from a finished compressed message")
	}
	inf := d.inf
	if !r.started {
		// An empty payload carries no deflate data at all. Some senders
		// produce it for an empty message; take it as one.
		r.started = true
		if _, err := inf.br.Peek(1); err == nil && inf.in.srcDone && inf.in.srcN == 0 {
			r.done = true
			return 0, io.EOF
		}
	}
	if len(p) == 0 {
		return 0, nil
	}
	n, err := inf.fr.Read(p)
	if n > 0 && d.rTakeover {
		d.rHist.write(p[:n])
	}
	if d.closed.Load() { // released while we read: give the state back now
		d.releaseReadLocked()
		return n, errDeflateClosed
	}
	switch {
	case err == nil:
		return n, nil
	case inf.in.srcErr != nil:
		r.err = inf.in.srcErr
	case err == io.EOF:
		r.err = r.checkAfterFinal(inf)
		if r.err == nil {
			r.done = true
			return n, io.EOF
		}
	case err == io.ErrUnexpectedEOF:
		r.err = fmt.Errorf("%w: the message ends inside a deflate block", errCorruptDeflate)
	default:
		r.err = fmt.Errorf("%w: %w", errCorruptDeflate, err)
	}
	return n, r.err
}

// checkAfterFinal runs when the decompressor met a block with BFINAL set:
// either the one inflateTail ends with, or one the sender wrote. It reads
// the rest of the payload and allows at most maxTrailingAfterFinal bytes.
func (r *inflateReader) checkAfterFinal(inf *inflater) error {
	consumed := inf.in.delivered - int64(inf.br.Buffered())
	for !inf.in.srcDone && inf.in.srcN-consumed <= maxTrailingAfterFinal {
		if _, err := inf.in.Read(inf.drain[:]); err != nil {
			return err // from src, unchanged
		}
	}
	if left := inf.in.srcN - consumed; left > maxTrailingAfterFinal {
		return fmt.Errorf("%w: %d or more bytes follow the final deflate block", errCorruptDeflate, left)
	}
	return nil
}

// history is the last max bytes written to it: a ring that grows on demand
// up to max bytes, so a connection that sends little keeps little.
type history struct {
	buf []byte
	pos int // with len(buf) == max: index of the oldest byte
	max int
}

func (h *history) write(p []byte) {
	if h.max == 0 || len(p) == 0 {
		return
	}
	if len(p) >= h.max {
		h.grow(h.max)
		h.buf = h.buf[:h.max]
		copy(h.buf, p[len(p)-h.max:])
		h.pos = 0
		return
	}
	if len(h.buf) < h.max {
		room := h.max - len(h.buf)
		k := min(room, len(p))
		h.grow(len(h.buf) + k)
		h.buf = append(h.buf, p[:k]...)
		p = p[k:]
		if len(p) == 0 {
			return
		}
	}
	n := copy(h.buf[h.pos:], p)
	copy(h.buf, p[n:])
	h.pos = (h.pos + len(p)) % h.max
}

// grow makes room for n bytes without letting append overshoot max.
func (h *history) grow(n int) {
	if cap(h.buf) >= n {
		return
	}
	c := min(max(n, 2*cap(h.buf), 256), h.max)
	nb := make([]byte, len(h.buf), c)
	copy(nb, h.buf)
	h.buf = nb
}

// linear returns the history oldest byte first, rotating it in place with
// the smaller of its two parts copied through a pooled scratch buffer (a
// few memmoves, instead of one byte at a time).
func (h *history) linear() []byte {
	if h.pos == 0 {
		return h.buf
	}
	older, newer := h.buf[h.pos:], h.buf[:h.pos]
	sp := scratchPool.Get().(*[]byte)
	if len(newer) <= len(older) {
		tmp := append((*sp)[:0], newer...)
		copy(h.buf, older)
		copy(h.buf[len(older):], tmp)
		*sp = tmp
	} else {
		tmp := append((*sp)[:0], older...)
		copy(h.buf[len(older):], newer)
		copy(h.buf, tmp)
		*sp = tmp
	}
	scratchPool.Put(sp)
	h.pos = 0
	return h.buf
}

// scratchPool holds buffers for history.linear, at most half a 32 KiB
// window each.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 1<<(maxWindowBits-1)); return &b }}

func (h *history) free() { h.buf, h.pos = nil, 0 }
