package websocket

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMaskMatchesReference(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for n := range 300 {
		for pos := range 4 {
			key := [4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			want := append([]byte(nil), b...)
			wantPos := maskBytewise(key, pos, want)
			gotPos := mask(key, pos, b)
			if !bytes.Equal(b, want) || gotPos != wantPos {
				t.Fatalf("n=%d pos=%d: mask differs from the bytewise reference", n, pos)
			}
		}
	}
}

func TestFrameHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 125, 126, 65535, 65536, 1 << 32, 1<<63 - 1} {
		for _, masked := range []bool{false, true} {
			h := frameHeader{fin: true, rsv1: true, opcode: opBinary, masked: masked, length: n}
			if masked {
				h.key = [4]byte{1, 2, 3, 4}
			}
			b := appendFrameHeader(nil, h)
			got, err := readFrameHeader(bufio.NewReader(bytes.NewReader(b)))
			if err != nil || got != h {
				t.Fatalf("length %d masked %v: got %+v, %v", n, masked, got, err)
			}
			wantLen := 2
			switch {
			case n > 65535:
				wantLen += 8
			case n > 125:
				wantLen += 2
			}
			if masked {
				wantLen += 4
			}
			if len(b) != wantLen {
				t.Fatalf("length %d: header of %d bytes, want the shortest form (%d)", n, len(b), wantLen)
			}
		}
	}
	// A 64-bit length with the top bit set is a protocol error.
	b := []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}
	if _, err := readFrameHeader(bufio.NewReader(bytes.NewReader(b))); err == nil {
		t.Fatal("length with the top bit set was accepted")
	}
}

// TestUTF8ValidatorAllSplits checks the streaming validator against
// utf8.Valid for every way of cutting each sample in two and three.
func TestUTF8ValidatorAllSplits(t *testing.T) {
	t.Parallel()
	samples := []string{
		"", "ascii", "κόσμε", "\u20ac\U0001F600", "\xed\x9f\xbf", "\xee\x80\x80", "\xf4\x8f\xbf\xbf",
		"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xff", "\x80",
		"a\xe2\x82", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited", "\xf8\x88\x80\x80\x80",
		strings.Repeat("é", 50) + "\xe2\x82\xac", "\xf0\x9f\x98",
	}
	for _, s := range samples {
		want := utf8.ValidString(s)
		for i := 0; i <= len(s); i++ {
			for j := i; j <= len(s); j++ {
				var v utf8Validator
				ok := v.write([]byte(s[:i])) && v.write([]byte(s[i:j])) && v.write([]byte(s[j:])) && v.done()
				if ok != want {
					t.Fatalf("%q split at %d,%d: valid=%v, want %v", s, i, j, ok, want)
				}
			}
		}
	}
}

// TestUTF8FailsFast checks that an invalid prefix is reported at once,
// before the message ends.
func TestUTF8FailsFast(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"\xf4\x90", "\xed\xa0", "\xe0\x80", "\xc1", "\xf5", "ok\xff"} {
		var v utf8Validator
		if v.write([]byte(prefix)) {
			t.Errorf("%q accepted as a prefix", prefix)
		}
	}
}

func FuzzUTF8Validator(f *testing.F) {
	f.Add([]byte("κόσμε"), 3)
	f.Add([]byte("\xed\xa0\x80"), 1)
	f.Add([]byte("\xf0\x9f\x98\x80"), 2)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		if cut < 0 {
			cut = -cut
		}
		cut %= len(b) + 1
		var v utf8Validator
		got := v.write(b[:cut]) && v.write(b[cut:]) && v.done()
		if got != utf8.Valid(b) {
			t.Fatalf("%q cut at %d: %v, utf8.Valid says %v", b, cut, got, !got)
		}
	})
}

func FuzzMask(f *testing.F) {
	f.Add([]byte("hello, world, this is more than 64 bytes of text to cover the unrolled loop."), uint32(0x12345678), 1)
	f.Fuzz(func(t *testing.T, b []byte, k uint32, pos int) {
		key := [4]byte{byte(k), byte(k >> 8), byte(k >> 16), byte(k >> 24)}
		pos &= 3
		want := append([]byte(nil), b...)
		maskBytewise(key, pos, want)
		mask(key, pos, b)
		if !bytes.Equal(b, want) {
			t.Fatal("mask differs from the reference")
		}
	})
}

// FuzzReadFrameHeader decodes arbitrary bytes: never a panic, and every
// header that decodes re-encodes to the same bytes when it used the
// shortest length form.
func FuzzReadFrameHeader(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'h', 'e', 'l', 'l', 'o'})
	f.Add([]byte{0x82, 126, 0x01, 0x00})
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{0x88, 0x02, 0x03, 0xe8})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readFrameHeader(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		enc := appendFrameHeader(nil, h)
		if !bytes.HasPrefix(b, enc) {
			// Longer-than-needed length forms are legal to decode.
			again, err := readFrameHeader(bufio.NewReader(bytes.NewReader(enc)))
			if err != nil || again != h {
				t.Fatalf("re-encoded header %x decodes to %+v, %v; want %+v", enc, again, err, h)
			}
		}
	})
}

func FuzzClosePayload(f *testing.F) {
	f.Add([]byte{0x03, 0xe8})
	f.Add([]byte{0x03, 0xf5, 'b', 'u', 's', 'y'})
	f.Add([]byte{0x03})
	f.Add([]byte{0x03, 0xed})
	f.Add([]byte{0x0f, 0xa0, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		code, reason, err := parseClosePayload(p)
		if err != nil {
			return
		}
		if len(p) == 0 {
			if code != 1005 {
				t.Fatalf("empty payload gave %d", code)
			}
			return
		}
		if !utf8.ValidString(reason) || len(p) < 2 {
			t.Fatal("accepted an invalid payload")
		}
		if code < 1000 || code == 1004 || code == 1005 || code == 1006 || code == 1015 || (code > 1015 && code < 3000) || code > 4999 {
			t.Fatalf("accepted close code %d", code)
		}
	})
}
