package websocket

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// opcode is a frame's opcode (RFC 6455 §5.2).
type opcode byte

const (
	opContinuation opcode = 0x0
	opText         opcode = 0x1
	opBinary       opcode = 0x2
	opClose        opcode = 0x8
	opPing         opcode = 0x9
	opPong         opcode = 0xA
)

func (o opcode) isControl() bool { return o&0x8 != 0 }

func (o opcode) String() string {
	switch o {
	case opContinuation:
		return "continuation"
	case opText:
		return "text"
	case opBinary:
		return "binary"
	case opClose:
		return "close"
	case opPing:
		return "ping"
	case opPong:
		return "pong"
	}
	return fmt.Sprintf("reserved opcode 0x%X", byte(o))
}

// maxControlPayload is the largest payload a control frame may carry.
const maxControlPayload = 125

// maxFrameHeader is the longest frame header: 2 bytes, 8 bytes of extended
// length, 4 bytes of masking key.
const maxFrameHeader = 14

// frameHeader is a decoded frame header.
type frameHeader struct {
	fin    bool
	rsv1   bool
	rsv2   bool
	rsv3   bool
	opcode opcode
	masked bool
	length int64
	key    [4]byte
}

// readFrameHeader decodes one frame header from r. It rejects only what makes
// the header itself unreadable (a length with the top bit set); the caller
// checks the protocol rules, since which rules apply depends on the state.
//
// It peeks at the buffered bytes instead of copying them out, so decoding a
// header allocates nothing.
func readFrameHeader(r *bufio.Reader) (frameHeader, error) {
	var h frameHeader
	b, err := r.Peek(2)
	if err != nil {
		if len(b) > 0 {
			err = noEOF(err)
		}
		return h, err
	}
	n := 2
	switch b[1] & 0x7F {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b[1]&0x80 != 0 {
		n += 4
	}
	if b, err = r.Peek(n); err != nil {
		return h, noEOF(err)
	}
	h.fin = b[0]&0x80 != 0
	h.rsv1 = b[0]&0x40 != 0
	h.rsv2 = b[0]&0x20 != 0
	h.rsv3 = b[0]&0x10 != 0
	h.opcode = opcode(b[0] & 0x0F)
	h.masked = b[1]&0x80 != 0
	rest := b[2:]
	switch l := b[1] & 0x7F; l {
	case 126:
		h.length = int64(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	case 127:
		u := binary.BigEndian.Uint64(rest)
		if u>>63 != 0 {
			return h, errProtocol("frame length has its most significant bit set")
		}
		h.length = int64(u)
		rest = rest[8:]
	default:
		h.length = int64(l)
	}
	if h.masked {
		copy(h.key[:], rest)
	}
	r.Discard(n)
	return h, nil
}

// appendFrameHeader encodes h at the end of b. The length is encoded in the
// shortest form, as RFC 6455 §5.2 requires.
func appendFrameHeader(b []byte, h frameHeader) []byte {
	b0 := byte(h.opcode)
	if h.fin {
		b0 |= 0x80
	}
	if h.rsv1 {
		b0 |= 0x40
	}
	if h.rsv2 {
		b0 |= 0x20
	}
	if h.rsv3 {
		b0 |= 0x10
	}
	var b1 byte
	if h.masked {
		b1 = 0x80
	}
	switch {
	case h.length <= 125:
		b = append(b, b0, b1|byte(h.length))
	case h.length <= 0xFFFF:
		b = append(b, b0, b1|126)
		b = binary.BigEndian.AppendUint16(b, uint16(h.length))
	default:
		b = append(b, b0, b1|127)
		b = binary.BigEndian.AppendUint64(b, uint64(h.length))
	}
	if h.masked {
		b = append(b, h.key[:]...)
	}
	return b
}

// noEOF turns an EOF inside a frame into ErrUnexpectedEOF: the peer hung up
// mid-frame, which is not a clean end.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
