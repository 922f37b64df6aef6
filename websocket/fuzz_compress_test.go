package websocket

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/; the f.Add calls below
// repeat the most important seeds so that plain `go test` runs them too.

func FuzzParseExtensions(f *testing.F) {
	for _, s := range []string{
		offerChromium, offerFirefox, offerRFCFallback,
		`permessage-deflate; client_max_window_bits="12"`, `a; b="1\"`, ", ,a;b=c,", "a;", "x-webkit-deflate-frame; no_context_takeover",
	} {
		f.Add(s, "")
	}
	f.Add("permessage-deflate", "permessage-deflate; server_no_context_takeover")
	f.Fuzz(func(t *testing.T, h1, h2 string) {
		exts, err := parseExtensions([]string{h1, h2})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "websocket: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		// What parses formats back into something that parses the same.
		var parts []string
		for _, e := range exts {
			if !extIsToken(e.name) {
				t.Fatalf("name %q is not a token", e.name)
			}
			for _, p := range e.params {
				if !extIsToken(p.name) || (p.hasValue && !extIsToken(p.value)) {
					t.Fatalf("parameter %+v is not made of tokens", p)
				}
			}
			parts = append(parts, formatExtension(e))
		}
		again, err := parseExtensions([]string{strings.Join(parts, ", ")})
		if err != nil || !reflect.DeepEqual(again, exts) {
			t.Fatalf("format/parse round trip of %q, %q: %#v vs %#v, %v", h1, h2, exts, again, err)
		}
	})
}

// optsFromByte derives server options from one fuzzed byte and a level.
func optsFromByte(b byte) *CompressionOptions {
	bitsOf := func(v byte) int {
		if v%3 == 0 {
			return 0
		}
		return 8 + int(v)%8
	}
	return &CompressionOptions{
		ServerNoContextTakeover: b&1 != 0,
		ClientNoContextTakeover: b&2 != 0,
		ServerMaxWindowBits:     bitsOf(b >> 2 & 7),
		ClientMaxWindowBits:     bitsOf(b >> 5),
	}
}

func FuzzNegotiateDeflate(f *testing.F) {
	for _, s := range []string{
		offerChromium, offerFirefox, offerRFCFallback,
		"permessage-deflate; server_max_window_bits=8; client_max_window_bits=8",
		"permessage-deflate; server_no_context_takeover; client_no_context_takeover",
		"permessage-deflate; foo, permessage-deflate; client_max_window_bits=10",
		"permessage-deflate; server_max_window_bits",
	} {
		f.Add(s, byte(0))
		f.Add(s, byte(0xff))
		f.Add(s, byte(0x5a))
	}
	f.Fuzz(func(t *testing.T, header string, cfg byte) {
		opts := optsFromByte(cfg)
		resp, p, err := negotiateDeflateServer([]string{header}, opts)
		if err != nil {
			if _, perr := parseExtensions([]string{header}); perr == nil {
				t.Fatalf("negotiation failed on a header that parses: %v", err)
			}
			return
		}
		if resp == "" {
			if p != nil {
				t.Fatalf("declined with params %+v", p)
			}
			return
		}
		checkServerAnswer(t, []string{header}, resp, p)
		if p.serverMaxWindowBits > opts.serverBits() {
			t.Fatalf("server window %d above the server's own limit %d", p.serverMaxWindowBits, opts.serverBits())
		}
		if opts.ServerNoContextTakeover && !p.serverNoContextTakeover || opts.ClientNoContextTakeover && !p.clientNoContextTakeover {
			t.Fatalf("server option lost: %+v -> %+v", opts, p)
		}
	})
}

// fuzzReadCap bounds how much output FuzzInflate reads per message.
const fuzzReadCap = 1 << 20

func FuzzInflate(f *testing.F) {
	f.Add([]byte{0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}, []byte{0xf2, 0x00, 0x11, 0x00, 0x00}, true)
	f.Add([]byte{0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00}, []byte{}, false)
	f.Add([]byte{0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00}, []byte{0xff}, true)
	f.Add(refersToMissingDictionary(), []byte{0x00}, true)
	f.Fuzz(func(t *testing.T, first, second []byte, takeover bool) {
		d := newDeflateState(dparams(!takeover, !takeover, 9, 9), false, nil)
		for _, payload := range [][]byte{first, second} {
			r := d.startInflate(bytes.NewReader(payload))
			n, err := io.Copy(io.Discard, io.LimitReader(r, fuzzReadCap))
			d.finishInflate()
			if err != nil && !errors.Is(err, errCorruptDeflate) {
				t.Fatalf("error %v does not wrap errCorruptDeflate", err)
			}
			// Deflate expands at most 1032:1 (258-byte matches in under
			// two bits), plus what the history lets the first match copy.
			if n > int64(len(payload))*1100+1024 {
				t.Fatalf("%d B of input produced %d B", len(payload), n)
			}
			if d.inf != nil {
				t.Fatal("finishInflate kept the decompressor")
			}
		}
	})
}

func FuzzDeflateRoundTrip(f *testing.F) {
	f.Add([]byte("hello hello hello"), []byte("hello again"), uint8(15), int8(0), uint16(0), true)
	f.Add([]byte(""), []byte("x"), uint8(8), int8(9), uint16(1), false)
	f.Add(bytes.Repeat([]byte("ab"), 2000), []byte("abababab"), uint8(9), int8(-2), uint16(7), true)
	f.Fuzz(func(t *testing.T, m1, m2 []byte, bits uint8, level int8, chunk uint16, takeover bool) {
		b := minWindowBits + int(bits)%8
		opts := &CompressionOptions{Level: int(level) % 10}
		if opts.Level < -2 {
			opts.Level = -2
		}
		p := dparams(!takeover, !takeover, b, b)
		server, client := codecPair(p, opts)
		peer := &stdPeer{takeover: takeover, window: 1 << b}
		for _, msg := range [][]byte{m1, m2, m1} {
			payload := compressMsg(t, server, msg, int(chunk))
			got, err := inflateMsg(client, payload)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("round trip of %d B (bits %d, level %d): got %d B, %v", len(msg), b, opts.Level, len(got), err)
			}
			std, err := peer.decode(payload)
			if err != nil || !bytes.Equal(std, msg) {
				t.Fatalf("compress/flate could not decode our %d B message: %v", len(msg), err)
			}
		}
	})
}
