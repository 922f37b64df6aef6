package websocket

import (
	"bytes"
	stdflate "compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/flate"
)

// compressMsg compresses msg as one message, written in chunks of at most
// chunk bytes (0: in one Write).
func compressMsg(t testing.TB, d *deflateState, msg []byte, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := d.startMessage(&buf)
	for rest := msg; len(rest) > 0; {
		n := len(rest)
		if chunk > 0 {
			n = min(n, chunk)
		}
		if _, err := w.Write(rest[:n]); err != nil {
			t.Fatalf("compress write: %v", err)
		}
		rest = rest[n:]
	}
	if err := d.finishMessage(); err != nil {
		t.Fatalf("finishMessage: %v", err)
	}
	if bytes.HasSuffix(buf.Bytes(), deflateTail[:]) && len(msg) > 0 {
		// Not an error in itself (data may end that way), but our
		// encoder never leaves the marker: its last block is the flush.
		t.Fatalf("compressed message still ends with the sync marker: % x", buf.Bytes()[max(0, buf.Len()-8):])
	}
	return buf.Bytes()
}

// inflateMsg decompresses one message.
func inflateMsg(d *deflateState, payload []byte) ([]byte, error) {
	r := d.startInflate(bytes.NewReader(payload))
	defer d.finishInflate()
	return io.ReadAll(r)
}

// codecPair returns the server's and the client's codec for p.
func codecPair(p *deflateParams, opts *CompressionOptions) (server, client *deflateState) {
	return newDeflateState(p, true, opts), newDeflateState(p, false, opts)
}

// noise returns n random bytes, which deflate cannot shrink.
func noise(r *rand.Rand, n int) []byte {
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b[:n:n]
}

// jsonish returns n bytes of JSON-like text with repeated keys.
func jsonish(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		fmt.Fprintf(&b, `{"id":%d,"user":"user-%d","event":"update","payload":{"x":%d,"y":%d,"ok":true}},`, r.IntN(1e6), r.IntN(50), r.IntN(1000), r.IntN(1000))
	}
	return b.Bytes()[:n]
}

// One MiB inputs, shared by the tests (generating them is slow under -race).
var (
	bigRandom       = sync.OnceValue(func() []byte { return noise(rand.New(rand.NewPCG(1, 1)), 1<<20) })
	bigCompressible = sync.OnceValue(func() []byte { return jsonish(rand.New(rand.NewPCG(1, 1)), 1<<20) })
)

// stdPeer decodes with the standard library, independently of our
// inflater: a fresh reader per message with the previous messages' last
// 2^bits bytes as dictionary (takeover), or none. A distance beyond that
// dictionary is an error, so this also checks the window across messages.
type stdPeer struct {
	takeover bool
	window   int
	hist     []byte
}

func (p *stdPeer) decode(payload []byte) ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(payload), bytes.NewReader(deflateTail[:]))
	var dict []byte
	if p.takeover {
		dict = p.hist
	}
	fr := stdflate.NewReaderDict(src, dict)
	out, err := io.ReadAll(fr)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // the stream goes on after the sync flush
	}
	if err != nil {
		return out, err
	}
	if p.takeover {
		p.hist = append(p.hist, out...)
		if len(p.hist) > p.window {
			p.hist = append([]byte(nil), p.hist[len(p.hist)-p.window:]...)
		}
	}
	return out, nil
}

func TestDeflateRoundTrip(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 1 << 10, 1 << 20}
	for _, takeover := range []bool{true, false} {
		for bits := 8; bits <= 15; bits++ {
			t.Run(fmt.Sprintf("takeover=%v/bits=%d", takeover, bits), func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(uint64(bits), 1))
				p := dparams(!takeover, !takeover, bits, bits)
				for _, level := range []int{0, 9} {
					server, client := codecPair(p, &CompressionOptions{Level: level})
					peer := &stdPeer{takeover: takeover, window: 1 << bits}
					for _, size := range sizes {
						for _, kind := range []string{"random", "compressible"} {
							if size == 1<<20 && (level == 9 || testing.Short() || raceEnabled) {
								continue
							}
							msg := noise(rng, min(size, 1<<10))
							switch {
							case size == 1<<20 && kind == "random":
								msg = bigRandom()
							case size == 1<<20:
								msg = bigCompressible()
							case kind == "compressible":
								msg = jsonish(rng, size)
							}
							// Several messages, so takeover has history to use.
							for i := range min(3, 1+(1<<20)/max(size, 1)) {
								chunk := []int{0, 1000, 7}[i%3]
								if size > 1<<16 {
									chunk = []int{0, 64 << 10, 4000}[i%3]
								}
								payload := compressMsg(t, server, msg, chunk)
								got, err := inflateMsg(client, payload)
								if err != nil || !bytes.Equal(got, msg) {
									t.Fatalf("level %d, %s %d B message %d: inflated %d B, err %v", level, kind, size, i, len(got), err)
								}
								std, err := peer.decode(payload)
								if err != nil || !bytes.Equal(std, msg) {
									t.Fatalf("level %d, %s %d B message %d: compress/flate peer got %d B, err %v", level, kind, size, i, len(std), err)
								}
							}
						}
					}
				}
			})
		}
	}
}

// TestInflateFromIndependentPeers feeds our inflater from compressors that
// are not ours: the standard library (32 KiB window) and a single,
// long-lived klauspost windowed writer (the way a zlib peer keeps one
// compressor for the connection).
func TestInflateFromIndependentPeers(t *testing.T) {
	t.Parallel()
	for _, takeover := range []bool{true, false} {
		for bits := 8; bits <= 15; bits++ {
			t.Run(fmt.Sprintf("takeover=%v/bits=%d", takeover, bits), func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(uint64(bits), 2))
				p := dparams(!takeover, !takeover, bits, bits)
				client := newDeflateState(p, false, nil)
				var out bytes.Buffer
				var fw interface {
					io.Writer
					Flush() error
				}
				if bits == 15 {
					fw, _ = stdflate.NewWriter(&out, stdflate.DefaultCompression)
				} else {
					fw, _ = flate.NewWriterWindow(&out, 1<<bits)
				}
				for i := range 12 {
					size := []int{0, 1, 1 << 10, 1 << 16}[i%4]
					msg := jsonish(rng, size)
					if i%3 == 0 {
						msg = noise(rng, size)
					}
					if !takeover {
						if bits == 15 {
							fw.(*stdflate.Writer).Reset(&out)
						} else {
							fw.(*flate.Writer).Reset(&out)
						}
					}
					out.Reset()
					fw.Write(msg)
					if err := fw.Flush(); err != nil {
						t.Fatal(err)
					}
					payload := bytes.TrimSuffix(out.Bytes(), deflateTail[:])
					got, err := inflateMsg(client, payload)
					if err != nil || !bytes.Equal(got, msg) {
						t.Fatalf("message %d (%d B): got %d B, err %v", i, size, len(got), err)
					}
				}
			})
		}
	}
}

// TestMixedCompressedAndPlainUnderTakeover sends a sequence where some
// messages go out uncompressed (below the threshold or opted out). They
// never pass through the codec on either side, so both windows stay in
// step and every compressed message decodes, including ones that refer
// back to earlier compressed messages.
func TestMixedCompressedAndPlainUnderTakeover(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 3))
	for _, bits := range []int{9, 12, 15} {
		server, client := codecPair(dparams(false, false, bits, bits), nil)
		threshold := compressionThreshold(nil)
		peer := &stdPeer{takeover: true, window: 1 << bits}
		base := jsonish(rng, 300)
		for i := range 60 {
			msg := append(append([]byte(nil), base...), fmt.Sprintf("#%d", i)...)
			optOut := i%5 == 0
			if i%3 == 0 {
				msg = msg[:rng.IntN(threshold)] // short: goes out plain
			}
			if len(msg) < threshold || optOut {
				continue // sent uncompressed: the codecs never see it
			}
			payload := compressMsg(t, server, msg, 0)
			got, err := inflateMsg(client, payload)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("bits %d message %d: got %q, err %v", bits, i, got, err)
			}
			if std, err := peer.decode(payload); err != nil || !bytes.Equal(std, msg) {
				t.Fatalf("bits %d message %d: compress/flate peer: %v", bits, i, err)
			}
			if i > 10 && len(payload) > len(msg)/4 {
				t.Errorf("bits %d message %d: %d B compressed to %d B; takeover should make repeats tiny", bits, i, len(msg), len(payload))
			}
		}
	}
}

// TestDeflateHonoursWindow checks that the compressor never refers further
// back than the negotiated window, within a message and across messages:
// random data that repeats at a distance beyond the window cannot shrink.
func TestDeflateHonoursWindow(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(4, 4))
	for bits := 8; bits <= 15; bits++ {
		w := 1 << bits
		d := newDeflateState(dparams(false, false, bits, bits), true, nil)
		// Within a message: a random block of 2w bytes, four times.
		block := noise(rng, 2*w)
		msg := bytes.Repeat(block, 4)
		if got := len(compressMsg(t, d, msg, 0)); got < len(msg)*9/10 {
			t.Errorf("bits %d: %d B repeating every %d B compressed to %d B: the window was exceeded", bits, len(msg), 2*w, got)
		}
		// Control: repeats within the window do shrink, so the check above can fail.
		near := bytes.Repeat(block[:w/2], 16)
		if got := len(compressMsg(t, d, near, 0)); got > len(near)/3 {
			t.Errorf("bits %d: %d B repeating every %d B compressed to only %d B", bits, len(near), w/2, got)
		}
		// Across messages: the previous message is 2w random bytes, the
		// next repeats its first half, which is out of reach.
		d = newDeflateState(dparams(false, false, bits, bits), true, nil)
		first := noise(rng, 2*w)
		compressMsg(t, d, first, 0)
		if got := len(compressMsg(t, d, first[:w], 0)); got < w*9/10 {
			t.Errorf("bits %d: message repeating data %d B back compressed to %d B: the window was exceeded", bits, 2*w, got)
		}
		// ...while its last part, within reach, compresses to almost
		// nothing, once the compressor went back to the pool (idle) and
		// the history primes a pooled one. Within reach means the window,
		// and at most the primeHistoryBytes it is primed with. (A kept
		// compressor at 2^15 continues the stream instead; after 64 KiB of
		// noise its hash table is too sparse for this check.)
		reach := min(w, primeHistoryBytes)
		d = newDeflateState(dparams(false, false, bits, bits), true, nil)
		compressMsg(t, d, first, 0)
		d.wmu.Lock()
		d.putWriter()
		d.wmu.Unlock()
		if got := len(compressMsg(t, d, first[2*w-reach*3/4:], 0)); got > reach/8+16 {
			t.Errorf("bits %d, primed: repeat within the window compressed to %d B", bits, got)
		}
	}
}

func TestDeflateNoTakeoverKeepsNothing(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 5))
	server, client := codecPair(dparams(true, true, 15, 15), nil)
	msg := jsonish(rng, 4096)
	compressMsg(t, server, msg, 0)
	second := compressMsg(t, server, msg, 0)
	// A fresh inflater, knowing nothing of the first message, decodes it.
	if got, err := inflateMsg(newDeflateState(dparams(true, true, 15, 15), false, nil), second); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("second message depends on the first: %v", err)
	}
	if _, err := inflateMsg(client, second); err != nil {
		t.Fatal(err)
	}
	if server.fw != nil || server.wHist.buf != nil || client.inf != nil || client.rHist.buf != nil {
		t.Fatalf("state kept between messages: fw=%v hist=%d inf=%v rhist=%d", server.fw != nil, len(server.wHist.buf), client.inf != nil, len(client.rHist.buf))
	}
}

// TestDeflatePooledWriterCarriesNoDictionary makes sure a compressor that
// goes back to the pool after a takeover message does not bring that
// connection's history to the next user.
func TestDeflatePooledWriterCarriesNoDictionary(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	msg := jsonish(rng, 2000)
	for range 20 {
		a := newDeflateState(dparams(false, false, 15, 15), true, nil)
		compressMsg(t, a, msg, 0)
		compressMsg(t, a, msg, 0)
		b := newDeflateState(dparams(true, true, 15, 15), true, nil)
		payload := compressMsg(t, b, msg, 0)
		fresh := newDeflateState(dparams(true, true, 15, 15), false, nil)
		if got, err := inflateMsg(fresh, payload); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("compressor from the pool referred to another connection's history: %v", err)
		}
	}
}

func TestInflateEdgeCases(t *testing.T) {
	t.Parallel()
	finalBlock := func(msg string, extra ...byte) []byte {
		var b bytes.Buffer
		w, _ := stdflate.NewWriter(&b, stdflate.BestSpeed)
		w.Write([]byte(msg))
		w.Close()
		return append(b.Bytes(), extra...)
	}
	tests := []struct {
		name    string
		payload []byte
		want    string
		corrupt bool
	}{
		{"empty payload is an empty message", nil, "", false},
		{"empty message as ebb sends it", []byte{0x00}, "", false},
		{"RFC 7692 §7.2.3.1 'Hello'", []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, "Hello", false},
		{"RFC 7692 §7.2.3.3 uncompressed block", []byte{0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}, "Hello", false},
		{"RFC 7692 §7.2.3.4 final block", []byte{0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, "Hello", false},
		{"final block plus the RFC's leftover byte", finalBlock("hello hello hello", 0x00), "hello hello hello", false},
		{"final block, marker not stripped", finalBlock("hi", 0x00, 0x00, 0x00, 0xff, 0xff), "hi", false},
		{"garbage after the final block", finalBlock("hi", bytes.Repeat([]byte{0xaa}, 20)...), "", true},
		{"reserved block type", []byte{0xff}, "", true},
		{"distance beyond the history", refersToMissingDictionary(), "", true},
		{"RFC 7692 §7.2.3.4 final block with its extra byte", []byte{0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}, "Hello", false},
		{"cut inside a block", []byte{0xf2, 0x48, 0xcd}, "", true},
		{"sync marker not stripped", []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0x00, 0xff, 0xff}, "", true},
		{"bad stored length", []byte{0x00, 0x05, 0x00, 0x00, 0x00}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := newDeflateState(dparams(false, false, 15, 15), false, nil)
			got, err := inflateMsg(d, tt.payload)
			if tt.corrupt {
				if !errors.Is(err, errCorruptDeflate) {
					t.Fatalf("inflate(% x) = %q, %v; want an error wrapping errCorruptDeflate", tt.payload, got, err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("inflate(% x) = %q, %v; want %q", tt.payload, got, err, tt.want)
			}
			// The codec is still usable: the next message decodes.
			if got, err := inflateMsg(d, []byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}); err != nil || string(got) != "Hello" {
				t.Fatalf("next message: %q, %v", got, err)
			}
		})
	}
	// klauspost's own error is reachable for callers that want the offset.
	d := newDeflateState(dparams(false, false, 15, 15), false, nil)
	_, err := inflateMsg(d, []byte{0xff})
	if !errors.As(err, new(flate.CorruptInputError)) {
		t.Fatalf("error %v does not wrap flate.CorruptInputError", err)
	}
}

// TestInflateWindowEightToleratesNine: a zlib peer that agreed to a 256-byte
// window silently compresses with 512 bytes; ebb keeps 512 bytes of
// history so that still decodes.
func TestInflateWindowEightToleratesNine(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 7))
	client := newDeflateState(dparams(false, false, 8, 8), false, nil)
	var out bytes.Buffer
	fw, _ := flate.NewWriterWindow(&out, 512)
	first := noise(rng, 400)
	for _, msg := range [][]byte{first, first[:300]} { // second refers ~400 B back
		out.Reset()
		fw.Write(msg)
		fw.Flush()
		got, err := inflateMsg(client, bytes.TrimSuffix(out.Bytes(), deflateTail[:]))
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d B message from a 512-byte window: %v", len(msg), err)
		}
	}
}

// refersToMissingDictionary returns a message compressed against a
// dictionary the receiver does not have.
func refersToMissingDictionary() []byte {
	dict := []byte("the quick brown fox jumps over the lazy dog; ")
	var b bytes.Buffer
	w, _ := stdflate.NewWriterDict(&b, stdflate.DefaultCompression, dict)
	w.Write(dict)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), deflateTail[:])
}

type failingSource struct {
	data []byte
	err  error
}

func (r *failingSource) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestInflatePassesSourceErrorsThrough(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(8, 8))
	msg := jsonish(rng, 10000)
	payload := compressMsg(t, newDeflateState(dparams(false, false, 15, 15), true, nil), msg, 0)
	for _, srcErr := range []error{errors.New("network is down"), io.ErrUnexpectedEOF} {
		d := newDeflateState(dparams(false, false, 15, 15), false, nil)
		r := d.startInflate(&failingSource{data: payload[:len(payload)/2], err: srcErr})
		_, err := io.ReadAll(r)
		d.finishInflate()
		if err != srcErr || errors.Is(err, errCorruptDeflate) {
			t.Fatalf("source error %v came back as %v", srcErr, err)
		}
	}
}

// TestInflateBombIsIncremental decompresses a payload that expands about
// many times and reads only the first MiB of it: memory must not
// follow the expanded size.
func TestInflateBombIsIncremental(t *testing.T) {
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.BestSpeed)
	zeros := make([]byte, 1<<20)
	for range 64 { // 64 MiB of zeros
		fw.Write(zeros)
	}
	fw.Flush()
	payload := bytes.TrimSuffix(b.Bytes(), deflateTail[:])
	if len(payload) > 1<<20 {
		t.Fatalf("bomb payload is %d B", len(payload))
	}
	d := newDeflateState(dparams(false, false, 15, 15), false, nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := d.startInflate(bytes.NewReader(payload))
	n, err := io.Copy(io.Discard, io.LimitReader(r, 1<<20))
	runtime.ReadMemStats(&after)
	d.finishInflate()
	if err != nil || n != 1<<20 {
		t.Fatalf("read %d B, %v", n, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 512<<10 {
		t.Fatalf("reading 1 MiB of a 64 MiB bomb allocated %d B", grew)
	}
}

func TestTailHolder(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(9, 9))
	for range 500 {
		data := noise(rng, rng.IntN(40))
		var dst bytes.Buffer
		th := tailHolder{dst: &dst}
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(6))
			if m, err := th.Write(rest[:n]); err != nil || m != n {
				t.Fatalf("Write = %d, %v", m, err)
			}
			rest = rest[n:]
		}
		keep := min(4, len(data))
		if !bytes.Equal(dst.Bytes(), data[:len(data)-keep]) || !bytes.Equal(th.tail[:th.n], data[len(data)-keep:]) {
			t.Fatalf("data % x: forwarded % x, held % x", data, dst.Bytes(), th.tail[:th.n])
		}
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(10, 10))
	for _, limit := range []int{256, 512, 4096} {
		h := history{max: limit}
		var all []byte
		for range 300 {
			p := noise(rng, []int{0, 1, 3, limit / 3, limit - 1, limit, limit + 5}[rng.IntN(7)])
			h.write(p)
			all = append(all, p...)
			if rng.IntN(4) == 0 {
				want := all[max(0, len(all)-limit):]
				if got := h.linear(); !bytes.Equal(got, want) {
					t.Fatalf("limit %d: history of %d B has %d B, not the last %d", limit, len(all), len(got), len(want))
				}
			}
			if cap(h.buf) > limit {
				t.Fatalf("limit %d: history grew to %d B", limit, cap(h.buf))
			}
		}
	}
}

func TestDeflateAbortBreaksTakeoverOnly(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(11, 11))
	msg := jsonish(rng, 1000)
	for _, takeover := range []bool{true, false} {
		d := newDeflateState(dparams(!takeover, !takeover, 15, 15), true, nil)
		var buf bytes.Buffer
		w := d.startMessage(&buf)
		w.Write(msg)
		d.abortMessage()
		if d.fw != nil {
			t.Fatal("abortMessage kept the pooled compressor")
		}
		buf.Reset()
		w = d.startMessage(&buf)
		_, werr := w.Write(msg)
		ferr := d.finishMessage()
		if takeover {
			if !errors.Is(werr, errDeflateBroken) || !errors.Is(ferr, errDeflateBroken) {
				t.Fatalf("after an aborted takeover message: Write %v, finish %v; want errDeflateBroken", werr, ferr)
			}
			continue
		}
		if werr != nil || ferr != nil {
			t.Fatalf("without takeover an abort must not matter: %v, %v", werr, ferr)
		}
	}
}

type failingSink struct{ after int }

func (w *failingSink) Write(p []byte) (int, error) {
	if w.after < len(p) {
		return 0, errors.New("connection reset")
	}
	w.after -= len(p)
	return len(p), nil
}

func TestDeflateDestinationError(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(12, 12))
	d := newDeflateState(dparams(false, false, 15, 15), true, nil)
	w := d.startMessage(&failingSink{after: 10})
	_, err := w.Write(noise(rng, 200_000))
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Write = %v, want the destination's error", err)
	}
	if err := d.finishMessage(); !errors.Is(err, errDeflateBroken) {
		t.Fatalf("finishMessage after a failed Write = %v, want errDeflateBroken", err)
	}
	w = d.startMessage(io.Discard)
	if _, err := w.Write([]byte("x")); !errors.Is(err, errDeflateBroken) {
		t.Fatalf("after a failed takeover message: %v, want errDeflateBroken", err)
	}
}

func TestDeflateReleaseWhileInUse(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(13, 13))
	msg := jsonish(rng, 100_000)
	payload := compressMsg(t, newDeflateState(dparams(false, false, 15, 15), true, nil), msg, 0)
	for range 50 {
		server, client := codecPair(dparams(false, false, 15, 15), nil)
		var wg sync.WaitGroup
		wg.Go(func() {
			r := client.startInflate(bytes.NewReader(payload))
			buf := make([]byte, 512)
			for {
				if _, err := r.Read(buf); err != nil {
					break
				}
			}
			client.finishInflate()
		})
		wg.Go(func() {
			w := server.startMessage(io.Discard)
			for i := 0; i < len(msg); i += 1000 {
				if _, err := w.Write(msg[i : i+1000]); err != nil {
					break
				}
			}
			server.finishMessage()
		})
		server.release()
		client.release()
		wg.Wait()
		if server.fw != nil || client.inf != nil || server.wHist.buf != nil || client.rHist.buf != nil {
			t.Fatal("pooled state or history kept after release and the end of the message")
		}
		if _, err := server.startMessage(io.Discard).Write([]byte("x")); !errors.Is(err, errDeflateClosed) {
			t.Fatalf("write after release: %v", err)
		}
		if _, err := client.startInflate(bytes.NewReader(payload)).Read(make([]byte, 10)); !errors.Is(err, errDeflateClosed) {
			t.Fatalf("read after release: %v", err)
		}
	}
}

// keptCompressor reports whether d holds a compressor between messages.
func keptCompressor(d *deflateState) bool {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	return d.fw != nil
}

// waitUntil polls cond for up to 5 s and fails the test with what if it
// never holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 5 s waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitReleased waits until d's idle timer gave its compressor back.
func waitReleased(t *testing.T, d *deflateState) {
	t.Helper()
	waitUntil(t, "the idle compressor to go back to the pool", func() bool { return !keptCompressor(d) })
}

func TestDeflateKeepsCompressorWhileBusy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		p        *deflateParams
		wantKept bool
	}{
		{"takeover 2^15", dparams(false, false, 15, 15), true},
		{"takeover 2^12", dparams(false, false, 12, 12), false},
		{"no takeover", dparams(true, true, 15, 15), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(14, 14))
			server, client := codecPair(tc.p, nil)
			server.keepIdle = 30 * time.Millisecond
			peer := &stdPeer{takeover: !tc.p.serverNoContextTakeover, window: 1 << tc.p.serverMaxWindowBits}
			send := func(phase string, n int) {
				for i := range n {
					msg := jsonish(rng, 1500)
					payload := compressMsg(t, server, msg, []int{0, 100}[i%2])
					if got, err := inflateMsg(client, payload); err != nil || !bytes.Equal(got, msg) {
						t.Fatalf("%s, message %d: inflated %d B, %v", phase, i, len(got), err)
					}
					if got, err := peer.decode(payload); err != nil || !bytes.Equal(got, msg) {
						t.Fatalf("%s, message %d: compress/flate peer got %d B, %v", phase, i, len(got), err)
					}
					if kept := keptCompressor(server); kept != tc.wantKept {
						t.Fatalf("%s, message %d: compressor kept = %v, want %v", phase, i, kept, tc.wantKept)
					}
				}
			}
			// Busy: the stream goes on in one compressor. Idle: it goes
			// back to the pool, and the next message primes one from the
			// history; the peer decodes both the same way.
			send("busy", 20)
			waitReleased(t, server)
			send("after idle", 10)
			waitReleased(t, server)
		})
	}
}

func TestDeflateKeptCompressorSurvivesALongMessage(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(15, 15))
	server, client := codecPair(dparams(false, false, 15, 15), nil)
	server.keepIdle = 10 * time.Millisecond
	first := jsonish(rng, 500)
	payload := compressMsg(t, server, first, 0) // arms the idle timer
	if got, err := inflateMsg(client, payload); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first message: %v", err)
	}
	// A message still being written when the timer fires keeps its
	// compressor (the timer looks again later instead of spinning).
	msg := jsonish(rng, 4000)
	var buf bytes.Buffer
	w := server.startMessage(&buf)
	if _, err := w.Write(msg[:2000]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if !keptCompressor(server) {
		t.Fatal("compressor taken away in the middle of a message")
	}
	if _, err := w.Write(msg[2000:]); err != nil {
		t.Fatal(err)
	}
	if err := server.finishMessage(); err != nil {
		t.Fatal(err)
	}
	if got, err := inflateMsg(client, buf.Bytes()); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("long message: inflated %d B, %v", len(got), err)
	}
	waitReleased(t, server)
}

func TestDeflateReleaseDropsKeptCompressor(t *testing.T) {
	t.Parallel()
	d := newDeflateState(dparams(false, false, 15, 15), true, nil)
	compressMsg(t, d, []byte("hello hello hello"), 0)
	if !keptCompressor(d) {
		t.Fatal("compressor not kept after a takeover message")
	}
	d.release()
	if keptCompressor(d) || d.idleTimer.Stop() {
		t.Fatal("release left the compressor kept or its idle timer armed")
	}
}

func TestDeflateKeptCompressorsAreBounded(t *testing.T) {
	// Not parallel: it counts the process-wide places.
	waitUntil(t, "other tests' kept compressors to go idle", func() bool { return keptCompressors.Load() == 0 })
	p := dparams(false, false, 15, 15)
	states := make([]*deflateState, maxKeptCompressors+10)
	t.Cleanup(func() {
		for _, d := range states {
			if d != nil {
				d.release()
			}
		}
	})
	kept := 0
	first := []byte("the same message again and again")
	var lastFirst []byte // the last connection's first message, compressed
	for i := range states {
		states[i] = newDeflateState(p, true, nil)
		states[i].keepIdle = time.Hour // busy for the whole test
		lastFirst = compressMsg(t, states[i], first, 0)
		if keptCompressor(states[i]) {
			kept++
		}
	}
	if kept != maxKeptCompressors || keptCompressors.Load() != maxKeptCompressors {
		t.Fatalf("%d connections kept a compressor (counter %d), want the bound %d", kept, keptCompressors.Load(), maxKeptCompressors)
	}
	// Past the bound a connection still compresses correctly, priming a
	// pooled compressor per message.
	last := states[len(states)-1]
	peer := newDeflateState(p, false, nil)
	if got, err := inflateMsg(peer, lastFirst); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first message past the bound: %q, %v", got, err)
	}
	for i := range 3 {
		msg := []byte(fmt.Sprintf("message %d, message %d", i, i))
		if got, err := inflateMsg(peer, compressMsg(t, last, msg, 0)); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("message %d past the bound: %q, %v", i, got, err)
		}
	}
	// Closing connections gives their places back.
	for _, d := range states {
		d.release()
	}
	if n := keptCompressors.Load(); n != 0 {
		t.Fatalf("%d places still taken after every connection closed", n)
	}
}
