package hostile

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Opcodes and header bits of RFC 6455 §5.2, spelled out here because the
// attackers build frames by hand, including the invalid ones.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA

	rsv1 = 0x40
	rsv2 = 0x20
	rsv3 = 0x10
)

// testKey is the Sec-WebSocket-Key every raw attacker sends (RFC 6455's
// example): the server cannot tell a fixed key from a random one.
const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// mask is the masking key of small attacker frames. Large ones use a zero
// key, which leaves the payload as it is (masking costs the attacker
// nothing then; a server cannot refuse a zero key).
var mask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// dialFrom opens a TCP connection to addr from the loopback address from
// ("" lets the kernel choose 127.0.0.1). Linux routes all of 127/8 to lo,
// so 127.0.0.2, 127.0.0.3… are other clients as far as per-IP limits go.
func dialFrom(ctx context.Context, from, addr string) (net.Conn, error) {
	d := net.Dialer{}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	return d.DialContext(ctx, "tcp", addr)
}

// rawConn is a hand-driven WebSocket client connection.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

// upgradeRequest is a valid upgrade request for path, with extra header
// lines (each ending in \r\n).
func upgradeRequest(host, path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + testKey +
		"\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

// upgrade dials addr from the address from and completes a WebSocket
// handshake by hand; with deflate it offers permessage-deflate and fails
// unless the server accepted it. The handshake is bounded by ctx.
func upgrade(ctx context.Context, addr, path, from string, deflate bool) (*rawConn, error) {
	nc, err := dialFrom(ctx, from, addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var extra []string
	if deflate {
		extra = append(extra, "Sec-WebSocket-Extensions: permessage-deflate\r\n")
	}
	c := &rawConn{Conn: nc, br: bufio.NewReaderSize(nc, 16*kib)}
	if _, err := io.WriteString(nc, upgradeRequest(addr, path, extra...)); err != nil {
		nc.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("reading the handshake response: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		nc.Close()
		return nil, &statusError{resp.StatusCode}
	}
	if deflate && !strings.Contains(resp.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		nc.Close()
		return nil, fmt.Errorf("the server did not accept permessage-deflate (answered %q): start it with --compress", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	nc.SetDeadline(time.Time{})
	return c, nil
}

// statusError is a handshake answered with another status than 101.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d instead of 101", e.code) }

// frameHeader encodes a frame header announcing n payload bytes; key nil
// means unmasked.
func frameHeader(fin bool, rsv, op byte, n uint64, key *[4]byte) []byte {
	b0 := rsv | op
	if fin {
		b0 |= 0x80
	}
	h := []byte{b0, 0}
	switch {
	case n <= 125:
		h[1] = byte(n)
	case n <= 0xFFFF:
		h[1] = 126
		h = binary.BigEndian.AppendUint16(h, uint16(n))
	default:
		h[1] = 127
		h = binary.BigEndian.AppendUint64(h, n)
	}
	if key != nil {
		h[1] |= 0x80
		h = append(h, key[:]...)
	}
	return h
}

// clientFrame is a whole masked frame.
func clientFrame(fin bool, rsv, op byte, payload []byte) []byte {
	f := frameHeader(fin, rsv, op, uint64(len(payload)), &mask)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	return f
}

// frame is a frame read from the server.
type frame struct {
	fin bool
	op  byte
	n   uint64 // payload length
	p   []byte // payload, nil when dropped
}

// readFrame reads one server frame. A payload longer than keep is read
// and dropped (p is nil), so an attacker can sink a server's large echoes
// without holding them.
func (c *rawConn) readFrame(keep int) (frame, error) {
	var h [2]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{fin: h[0]&0x80 != 0, op: h[0] & 0x0F, n: uint64(h[1] & 0x7F)}
	switch f.n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return f, err
		}
		f.n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			return f, err
		}
		f.n = binary.BigEndian.Uint64(b[:])
	}
	if h[1]&0x80 != 0 {
		return f, errors.New("the server sent a masked frame")
	}
	if f.n > uint64(keep) {
		_, err := io.CopyN(io.Discard, c.br, int64(f.n))
		return f, err
	}
	f.p = make([]byte, f.n)
	_, err := io.ReadFull(c.br, f.p)
	return f, err
}

// awaitMessage reads frames until the end of a data message (whose
// payloads it drops) or a Close frame; it returns the Close frame's code,
// or 0 when a message came.
func (c *rawConn) awaitMessage() (int, error) {
	for {
		f, err := c.readFrame(125)
		if err != nil {
			return 0, err
		}
		switch {
		case f.op == opClose && len(f.p) >= 2:
			return int(binary.BigEndian.Uint16(f.p)), nil
		case f.op == opClose:
			return 1005, nil
		case f.op < opClose && f.fin:
			return 0, nil
		}
	}
}

// closeFrame is what awaitClose saw.
type closeFrame struct {
	code   int // 1005 when the frame had no code, 0 when none came
	reason string
	after  time.Duration // from the call to the Close frame
	eof    bool          // the TCP connection ended (after the frame, or instead of it)
}

// awaitClose reads (and drops) frames until a Close frame, for at most
// wait, then waits the rest of wait for the server to end the TCP
// connection.
func (c *rawConn) awaitClose(wait time.Duration) (closeFrame, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(wait))
	defer c.SetReadDeadline(time.Time{})
	var cf closeFrame
	for {
		f, err := c.readFrame(1 << 10)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err) {
				cf.eof = true
				return cf, nil
			}
			return cf, err
		}
		if f.op != opClose {
			continue
		}
		p := f.p
		cf.after = time.Since(start)
		cf.code = 1005
		if len(p) >= 2 {
			cf.code = int(binary.BigEndian.Uint16(p))
			cf.reason = string(p[2:])
		}
		// The server closes TCP once it has sent Close (and, for a
		// clean close, seen ours); wait for that, answering as a client
		// should.
		c.Write(clientFrame(true, 0, opClose, p[:min(len(p), 2)]))
		_, err = io.Copy(io.Discard, c.br)
		cf.eof = err == nil || isReset(err)
		return cf, nil
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// zeroSegment is 1 MiB of zeros deflated and flushed: a byte-aligned run
// of deflate blocks ending in an empty stored block (00 00 ff ff), whose
// back-references stay inside itself. Segments therefore concatenate into
// a valid stream of any multiple of 1 MiB.
var zeroSegment = sync.OnceValue(func() []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(make([]byte, mib))
	w.Flush()
	return b.Bytes()
})

// deflateBomb is a permessage-deflate payload (RFC 7692: without the
// final 00 00 ff ff) that inflates to n MiB of zeros. 32 MiB take about
// 32 KiB on the wire.
func deflateBomb(n int) []byte {
	seg := zeroSegment()
	p := bytes.Repeat(seg, n)
	return p[:len(p)-4]
}

// compressedMessage is a whole masked frame carrying a compressed message
// (RSV1 set; the zero key leaves the payload as it is).
func compressedMessage(op byte, payload []byte) []byte {
	return append(frameHeader(true, rsv1, op, uint64(len(payload)), &[4]byte{}), payload...)
}

// closePayload is a Close frame's payload: code and reason.
func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}
