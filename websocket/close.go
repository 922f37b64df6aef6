package websocket

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Close performs the close handshake: it sends a Close frame with code and
// reason, waits up to 5 seconds for the peer's Close frame, and closes the
// network connection. The reason must be valid UTF-8 of at most 123 bytes.
//
// If another goroutine is reading, that reader receives the peer's Close
// frame and returns its *CloseError; otherwise Close reads (and discards
// data messages) until the Close frame arrives. Close returns nil when the
// handshake completed, including when it had already completed before.
func (c *Conn) Close(code closecode.Code, reason string) error {
	if err := c.checkCloseArgs(code, reason); err != nil {
		return err
	}
	select {
	case <-c.doneCh:
		return nil
	default:
	}
	c.setCloseErr(&CloseError{Code: code, Reason: reason})
	if err := c.writeClose(code, reason); err != nil {
		c.closeTCP()
		return err
	}
	deadline := time.Now().Add(closeTimeout)
	select {
	case c.readSema <- struct{}{}:
		// Nobody is reading: read until the peer answers (a client also
		// waits for the server to close TCP first, RFC 6455 §7.1.1).
		if c.CloseReceived() == nil {
			c.awaitClose(deadline)
		}
		<-c.readSema
	default:
		// The reader will see the answer, and then end the connection.
		t := time.NewTimer(closeTimeout)
		defer t.Stop()
		select {
		case <-c.recvCh:
		case <-c.doneCh:
		case <-t.C:
		}
		if !c.server {
			// The reader is giving the server a moment to close first.
			select {
			case <-c.doneCh:
			case <-time.After(min(time.Until(deadline), failDrainTimeout)):
			}
		}
	}
	c.closeTCP()
	if c.CloseReceived() == nil {
		return fmt.Errorf("websocket: sent close %s but the peer did not answer within %s; connection dropped", code, closeTimeout)
	}
	return nil
}

// Ping sends a ping and waits for the matching pong. A pong arrives only
// while some goroutine reads from the connection (see Conn).
func (c *Conn) Ping(ctx context.Context) error {
	var key [8]byte
	c.mu.Lock()
	if c.pings == nil {
		c.pings = make(map[[8]byte]chan struct{})
	}
	for {
		binary.LittleEndian.PutUint64(key[:], rand.Uint64())
		if _, dup := c.pings[key]; !dup {
			break
		}
	}
	ch := make(chan struct{})
	c.pings[key] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pings, key)
		c.mu.Unlock()
	}()
	if err := c.writeControl(ctx, opPing, key[:]); err != nil {
		return err
	}
	if c.CloseSent() != nil {
		return fmt.Errorf("websocket: ping not sent, close already sent: %w", ErrClosed)
	}
	select {
	case <-ch:
		select {
		case <-c.doneCh:
			return c.closedErr()
		default:
			return nil
		}
	case <-ctx.Done():
		return fmt.Errorf("websocket: no pong: %w", ctx.Err())
	case <-c.doneCh:
		return c.closedErr()
	}
}

// gotPong completes the Ping waiting for this payload, if any. Unsolicited
// pongs are ignored (RFC 6455 §5.5.3).
func (c *Conn) gotPong(p []byte) {
	if len(p) != 8 {
		return
	}
	key := [8]byte(p)
	c.mu.Lock()
	if ch, ok := c.pings[key]; ok {
		close(ch)
		delete(c.pings, key)
	}
	c.mu.Unlock()
}
