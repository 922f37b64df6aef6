package wsclient

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/flate"
)

// Deflate is the client side of permessage-deflate (RFC 7692).
type Deflate struct {
	// ClientTakeover keeps the compressor's window between messages;
	// ServerTakeover keeps the decompressor's dictionary.
	ClientTakeover, ServerTakeover bool
	w                              *flate.Writer
	wbuf                           bytes.Buffer
	r                              io.ReadCloser
	src                            bytes.Reader
	dict                           []byte
	out                            []byte
}

// tail ends a message's deflate data: the 00 00 ff ff that senders strip,
// then an empty final stored block so the decompressor ends cleanly.
var tail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// NewDeflate returns the client state for the server's extension answer,
// or nil when the server did not accept permessage-deflate. A client
// window smaller than 15 bits asked by the server (client_max_window_bits)
// is honoured with klauspost's windowed encoder.
func NewDeflate(answer string) (*Deflate, error) {
	if !strings.HasPrefix(answer, "permessage-deflate") {
		return nil, nil
	}
	d := &Deflate{ClientTakeover: true, ServerTakeover: true}
	bits := 15
	for _, p := range strings.Split(answer, ";")[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch k {
		case "client_no_context_takeover":
			d.ClientTakeover = false
		case "server_no_context_takeover":
			d.ServerTakeover = false
		case "client_max_window_bits":
			if _, err := fmt.Sscanf(v, "%d", &bits); err != nil || bits < 8 || bits > 15 {
				return nil, fmt.Errorf("wsclient: client_max_window_bits %q in %q: want 8 to 15", v, answer)
			}
		case "server_max_window_bits":
		default:
			return nil, fmt.Errorf("wsclient: unknown permessage-deflate parameter %q in %q", k, answer)
		}
	}
	var w *flate.Writer
	var err error
	if bits < 15 {
		w, err = flate.NewWriterWindow(&d.wbuf, 1<<bits)
	} else {
		w, err = flate.NewWriter(&d.wbuf, flate.BestSpeed)
	}
	if err != nil {
		return nil, err
	}
	d.w = w
	d.r = flate.NewReader(bytes.NewReader(nil))
	return d, nil
}

// Compress returns the compressed form of msg, valid until the next call.
func (d *Deflate) Compress(msg []byte) ([]byte, error) {
	d.wbuf.Reset()
	if !d.ClientTakeover {
		d.w.Reset(&d.wbuf)
	}
	if _, err := d.w.Write(msg); err != nil {
		return nil, err
	}
	if err := d.w.Flush(); err != nil {
		return nil, err
	}
	b := d.wbuf.Bytes()
	return b[:len(b)-4], nil
}

// Decompress inflates one message's payload; the result is valid until the
// next call.
func (d *Deflate) Decompress(p []byte) ([]byte, error) {
	d.src.Reset(append(p, tail...))
	if err := d.r.(flate.Resetter).Reset(&d.src, d.dict); err != nil {
		return nil, err
	}
	d.out = d.out[:0]
	for {
		if len(d.out) == cap(d.out) {
			d.out = append(d.out, 0)[:len(d.out)]
		}
		n, err := d.r.Read(d.out[len(d.out):cap(d.out)])
		d.out = d.out[:len(d.out)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("wsclient: inflating a server message: %w", err)
		}
	}
	if d.ServerTakeover {
		d.dict = append(d.dict, d.out...)
		if len(d.dict) > 32<<10 {
			d.dict = append(d.dict[:0], d.dict[len(d.dict)-32<<10:]...)
		}
	}
	return d.out, nil
}
