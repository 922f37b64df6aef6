// Package wsclient is the neutral load client of the benchmark: a minimal
// WebSocket client written directly on net.Conn, the same for every server.
// It does as little work per message as the protocol allows: frames to send
// are built and masked once (one fixed mask key) and written with a single
// write; frames received are parsed from a large bufio.Reader and their
// payload skipped or copied into a reused buffer. The client therefore costs
// well under what a server costs per message (see the CPU shares in
// RESULTS.md).
package wsclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Opcodes used by the client.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// maskKey is the client's one mask key. RFC 6455 wants unpredictable keys
// to protect intermediaries; on loopback a fixed key lets every frame be
// masked once, ahead of time, so masking costs the client nothing.
var maskKey = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// key is a fixed Sec-WebSocket-Key; its accept value is checked.
const (
	key       = "dGhlIHNhbXBsZSBub25jZQ=="
	acceptKey = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// Request returns the upgrade request for host, offering ext as
// Sec-WebSocket-Extensions when it is not empty.
func Request(host, ext string) []byte {
	return RequestTo(host, "/ws", ext, "")
}

// RequestTo returns the upgrade request for target (a path with an
// optional query) on host, offering ext as Sec-WebSocket-Extensions and
// proto as Sec-WebSocket-Protocol when they are not empty.
func RequestTo(host, target, ext, proto string) []byte {
	var b strings.Builder
	b.WriteString("GET " + target + " HTTP/1.1\r\nHost: ")
	b.WriteString(host)
	b.WriteString("\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n")
	if ext != "" {
		b.WriteString("Sec-WebSocket-Extensions: " + ext + "\r\n")
	}
	if proto != "" {
		b.WriteString("Sec-WebSocket-Protocol: " + proto + "\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// HandshakeError is a non-101 answer to the upgrade request.
type HandshakeError struct {
	Status     int
	RetryAfter string
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("wsclient: server answered the upgrade with HTTP %d, want 101 (Retry-After %q)", e.Status, e.RetryAfter)
}

// Conn is one client connection.
type Conn struct {
	NC         net.Conn
	BR         *bufio.Reader
	Extensions string // the server's Sec-WebSocket-Extensions answer
	Protocol   string // the server's Sec-WebSocket-Protocol answer
	Deflate    *Deflate
	// AutoPong answers every ping with a pong from inside ReadMessage
	// (a server that pings may drop a client that never answers).
	AutoPong bool
	hdr      [14]byte
	buf      []byte
}

// Dial connects to addr, sends req (from Request) and reads the answer. A
// non-101 answer returns a *HandshakeError. bufSize sizes the read buffer.
func Dial(ctx context.Context, addr string, req []byte, bufSize int) (*Conn, error) {
	return DialFrom(ctx, nil, addr, req, bufSize)
}

// DialFrom is Dial from the local address local (nil: any).
func DialFrom(ctx context.Context, local net.Addr, addr string, req []byte, bufSize int) (*Conn, error) {
	d := net.Dialer{LocalAddr: local}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := Handshake(ctx, nc, req, bufSize)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Handshake runs the opening handshake on nc.
func Handshake(ctx context.Context, nc net.Conn, req []byte, bufSize int) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	if _, err := nc.Write(req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, bufSize)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return nil, fmt.Errorf("wsclient: reading the handshake status line: %w", err)
	}
	status := 0
	if len(line) >= 12 && bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		fmt.Sscanf(string(line[9:12]), "%d", &status)
	}
	c := &Conn{NC: nc, BR: br}
	var accept, retry string
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("wsclient: reading handshake headers: %w", err)
		}
		s := strings.TrimRight(string(line), "\r\n")
		if s == "" {
			break
		}
		k, v, _ := strings.Cut(s, ":")
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "sec-websocket-accept":
			accept = v
		case "sec-websocket-extensions":
			c.Extensions = v
		case "sec-websocket-protocol":
			c.Protocol = v
		case "retry-after":
			retry = v
		}
	}
	if status != 101 {
		return nil, &HandshakeError{Status: status, RetryAfter: retry}
	}
	if accept != acceptKey {
		return nil, fmt.Errorf("wsclient: Sec-WebSocket-Accept is %q, want %q", accept, acceptKey)
	}
	return c, nil
}

// Frame returns a complete masked client frame (FIN set) carrying payload.
func Frame(op byte, rsv1 bool, payload []byte) []byte {
	var h [14]byte
	n := header(h[:], op, rsv1, len(payload))
	f := make([]byte, n+len(payload))
	copy(f, h[:n])
	copy(f[n:], payload)
	mask(f[n:])
	return f
}

func header(h []byte, op byte, rsv1 bool, n int) int {
	h[0] = 0x80 | op
	if rsv1 {
		h[0] |= 0x40
	}
	i := 2
	switch {
	case n < 126:
		h[1] = 0x80 | byte(n)
	case n <= 0xffff:
		h[1] = 0x80 | 126
		binary.BigEndian.PutUint16(h[2:], uint16(n))
		i = 4
	default:
		h[1] = 0x80 | 127
		binary.BigEndian.PutUint64(h[2:], uint64(n))
		i = 10
	}
	copy(h[i:], maskKey[:])
	return i + 4
}

func mask(p []byte) {
	for i := range p {
		p[i] ^= maskKey[i&3]
	}
}

// WriteFrame writes a masked frame built from payload, reusing the
// connection's buffer (for payloads that change, such as compressed ones).
func (c *Conn) WriteFrame(op byte, rsv1 bool, payload []byte) error {
	n := header(c.hdr[:], op, rsv1, len(payload))
	c.buf = append(append(c.buf[:0], c.hdr[:n]...), payload...)
	mask(c.buf[n:])
	_, err := c.NC.Write(c.buf)
	return err
}

// CloseFrameError reports a close frame from the server; Code holds its
// code (1005 when the frame had none) and Reason its reason text.
type CloseFrameError struct {
	Code   int
	Reason string
}

func (e *CloseFrameError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("wsclient: server sent close frame with code %d (%q)", e.Code, e.Reason)
	}
	return fmt.Sprintf("wsclient: server sent close frame with code %d", e.Code)
}

// ReadMessage reads the next data message. With keep false the payload is
// skipped and only its length returned; with keep true it is returned in
// a buffer valid until the next call. Pings and pongs are skipped; a close
// frame returns a *CloseFrameError.
func (c *Conn) ReadMessage(keep bool, dst []byte) (op byte, rsv1 bool, n int, msg []byte, err error) {
	msg = dst[:0]
	first := true
	for {
		b0, err := c.BR.ReadByte()
		if err != nil {
			return 0, false, n, msg, err
		}
		b1, err := c.BR.ReadByte()
		if err != nil {
			return 0, false, n, msg, err
		}
		if b1&0x80 != 0 {
			return 0, false, n, msg, errors.New("wsclient: server sent a masked frame")
		}
		length := uint64(b1 & 0x7f)
		switch length {
		case 126:
			p, err := c.BR.Peek(2)
			if err != nil {
				return 0, false, n, msg, err
			}
			length = uint64(binary.BigEndian.Uint16(p))
			c.BR.Discard(2)
		case 127:
			p, err := c.BR.Peek(8)
			if err != nil {
				return 0, false, n, msg, err
			}
			length = binary.BigEndian.Uint64(p)
			c.BR.Discard(8)
		}
		fop := b0 & 0x0f
		if fop >= OpClose {
			p := make([]byte, length)
			if _, err := io.ReadFull(c.BR, p); err != nil {
				return 0, false, n, msg, err
			}
			if fop == OpClose {
				ce := &CloseFrameError{Code: 1005}
				if len(p) >= 2 {
					ce.Code, ce.Reason = int(binary.BigEndian.Uint16(p)), string(p[2:])
				}
				return 0, false, n, msg, ce
			}
			if fop == OpPing && c.AutoPong {
				if err := c.WriteFrame(OpPong, false, p); err != nil {
					return 0, false, n, msg, err
				}
			}
			continue
		}
		if first {
			op, rsv1, first = fop, b0&0x40 != 0, false
		}
		n += int(length)
		if keep {
			start := len(msg)
			msg = append(msg, make([]byte, length)...)
			if _, err := io.ReadFull(c.BR, msg[start:]); err != nil {
				return 0, false, n, msg, err
			}
		} else if _, err := c.BR.Discard(int(length)); err != nil {
			return 0, false, n, msg, err
		}
		if b0&0x80 != 0 {
			return op, rsv1, n, msg, nil
		}
	}
}

// Close sends a close frame (1000) and closes the TCP connection without
// waiting for the answer.
func (c *Conn) Close() error {
	c.NC.SetWriteDeadline(time.Now().Add(time.Second))
	c.NC.Write(Frame(OpClose, false, []byte{0x03, 0xe8}))
	return c.NC.Close()
}
