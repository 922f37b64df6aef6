package fanout

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/bench/wsclient"
)

// Protocol names the wire protocol a Client speaks.
type Protocol int

// The protocols.
const (
	// Ebb is ebb's resume protocol on /broadcast.
	Ebb Protocol = iota
	// Centrifugo is Centrifugo's JSON client protocol with one channel
	// subscription.
	Centrifugo
)

// Endpoint is one node as clients reach it.
type Endpoint struct {
	Host string // host:port
	Path string // "/broadcast" or "/connection/websocket"
}

// Client is one subscriber. It connects to its home node first; after a
// loss, attempt k goes to the k-th next node in the ring (what a load
// balancer that has taken the lost node out would do), at the time its
// Policy says.
type Client struct {
	ID        int
	Home      int
	Nodes     []Endpoint
	Proto     Protocol
	Channel   string // Centrifugo channel
	Policy    Policy
	Stats     *Stats
	DialLimit time.Duration // per attempt (handshake included); 0: 5 s

	mu  sync.Mutex
	cur *wsclient.Conn
	err error // see Err

	node int // node of the established subscription, -1 when none

	lastSeq uint64 // ebb sequence or Centrifugo offset delivered last
	epoch   string // Centrifugo stream epoch
	seen    bitset
	buf     []byte

	dupID, dupSeq, skipped, gaps, gapMsgs, bad, protoErrs int
	gaveUp                                                bool
}

// Err returns the error that stopped the client when it makes the
// measure meaningless (the server does not speak the protocol), or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Run keeps the client subscribed until ctx ends.
func (c *Client) Run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		if c.cur != nil {
			c.cur.NC.Close()
		}
		c.mu.Unlock()
	})
	defer stop()
	if c.Proto == EbbLib {
		c.runLib(ctx)
		return
	}
	node := c.Home
	for ctx.Err() == nil {
		delay, ok := c.once(ctx, node)
		if ctx.Err() != nil || c.Err() != nil {
			return
		}
		if !ok {
			c.gaveUp = true
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		node = (node + 1) % len(c.Nodes)
	}
}

// once makes one attempt on node and, when it succeeds, reads until the
// connection ends; it returns the policy's delay before the next attempt.
func (c *Client) once(ctx context.Context, node int) (time.Duration, bool) {
	c.Stats.attempt()
	ep := c.Nodes[node]
	target, proto := ep.Path, ""
	if c.Proto == Ebb {
		proto = ResumeProtocol
		if c.lastSeq > 0 {
			target = ResumeTarget(ep.Path, c.lastSeq+1)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, c.dialLimit())
	conn, err := wsclient.Dial(dctx, ep.Host, wsclient.RequestTo(ep.Host, target, "", proto), 16<<10)
	cancel()
	if err != nil {
		var he *wsclient.HandshakeError
		if errors.As(err, &he) {
			c.Stats.refuse("HTTP " + strconv.Itoa(he.Status))
			return c.Policy.Refused(time.Now(), he.Status, he.RetryAfter)
		}
		c.Stats.refuse("connect failed")
		return c.Policy.Refused(time.Now(), 0, "")
	}
	conn.AutoPong = true
	c.mu.Lock()
	c.cur = conn
	c.mu.Unlock()
	if ctx.Err() != nil {
		conn.NC.Close()
		return 0, false
	}
	var established bool
	switch c.Proto {
	case Ebb:
		if conn.Protocol != ResumeProtocol {
			c.mu.Lock()
			c.err = fmt.Errorf("fanout: node %s did not select subprotocol %s (answered %q): it does not speak ebb's resume protocol", ep.Host, ResumeProtocol, conn.Protocol)
			c.mu.Unlock()
			conn.NC.Close()
			return 0, false
		}
		established, err = c.readEbb(conn, node)
	case Centrifugo:
		established, err = c.readCent(conn, node)
	}
	conn.Close()
	c.mu.Lock()
	c.cur = nil
	c.mu.Unlock()
	code, reason, how := 1006, "", "1006 no close frame"
	var ce *wsclient.CloseFrameError
	var se *setupError
	switch {
	case errors.As(err, &ce):
		code, reason, how = ce.Code, ce.Reason, strconv.Itoa(ce.Code)
	case errors.As(err, &se):
		how = se.what
	}
	if ctx.Err() != nil {
		// The run is over: the harness closed the connection.
		if established {
			c.Stats.closedByHarness()
		}
		return 0, false
	}
	if established {
		c.node = -1
		c.Stats.ended(how)
	} else {
		c.Stats.refuse(how)
	}
	if se != nil && !established {
		return c.Policy.Refused(time.Now(), 0, "")
	}
	return c.Policy.Closed(time.Now(), code, reason)
}

func (c *Client) dialLimit() time.Duration {
	if c.DialLimit <= 0 {
		return 5 * time.Second
	}
	return c.DialLimit
}

// setupError is a subscription refused by the protocol (a Centrifugo
// error reply), named for the code counts.
type setupError struct{ what string }

func (e *setupError) Error() string { return "fanout: subscription refused: " + e.what }

// established marks the subscription as up.
func (c *Client) establish(node int) {
	c.node = node
	c.Stats.open()
	c.Policy.Opened(time.Now())
}

// deliver accounts one payload received from node.
func (c *Client) deliver(payload []byte, node int) {
	id, sent, ok := ParsePayload(payload)
	if !ok {
		c.bad++
		return
	}
	if c.seen.has(id) {
		c.dupID++
		return
	}
	c.seen.set(id)
	c.Stats.record(c.ID, node, id, c.Stats.Now()-sent)
}

// sequenced accounts the sequence (or offset) of a data message and
// reports whether it is new.
func (c *Client) sequenced(seq uint64) bool {
	if c.lastSeq > 0 {
		if seq <= c.lastSeq {
			c.dupSeq++
			return false
		}
		if seq > c.lastSeq+1 {
			c.skipped += int(seq - c.lastSeq - 1)
		}
	}
	c.lastSeq = seq
	return true
}

// readEbb reads a resume-protocol stream until it ends.
func (c *Client) readEbb(conn *wsclient.Conn, node int) (established bool, err error) {
	for {
		var op byte
		var msg []byte
		op, _, _, msg, err = conn.ReadMessage(true, c.buf)
		c.buf = msg[:0]
		if err != nil {
			return established, err
		}
		m, perr := ParseResume(op == wsclient.OpText, msg)
		if perr != nil {
			c.protoErrs++
			continue
		}
		switch m.Kind {
		case ResumeLive:
			if c.lastSeq == 0 && m.Next > 0 {
				// First subscription: the position from which it is live.
				c.lastSeq = m.Next - 1
			} else if m.Next > 0 && c.lastSeq < m.Next-1 {
				// Replay ended short of where live starts, without a gap notice.
				c.skipped += int(m.Next - 1 - c.lastSeq)
				c.lastSeq = m.Next - 1
			}
			if !established {
				established = true
				c.establish(node)
			}
		case ResumeGap:
			c.gaps++
			c.gapMsgs += int(m.Next - m.From)
			if m.Next > 0 && m.Next-1 > c.lastSeq {
				c.lastSeq = m.Next - 1
			}
		case ResumeData:
			if c.sequenced(m.Seq) {
				c.deliver(m.Payload, c.node)
			}
		}
	}
}

// readCent connects, subscribes (recovering from the last offset when
// the channel has history) and reads publications until the connection
// ends.
func (c *Client) readCent(conn *wsclient.Conn, node int) (established bool, err error) {
	cmd := append(CentConnect(1, "bench"), '\n')
	cmd = append(cmd, CentSubscribe(2, c.Channel, c.epoch != "", c.lastSeq, c.epoch)...)
	if err := conn.WriteFrame(wsclient.OpText, false, cmd); err != nil {
		return false, err
	}
	pong := false
	for {
		var msg []byte
		_, _, _, msg, err = conn.ReadMessage(true, c.buf)
		c.buf = msg[:0]
		if err != nil {
			return established, err
		}
		err = ParseCent(msg, func(r *CentReply) error {
			switch {
			case r.Ping():
				if pong {
					return conn.WriteFrame(wsclient.OpText, false, []byte("{}"))
				}
			case r.Error != nil:
				return &setupError{what: fmt.Sprintf("error %d %s", r.Error.Code, r.Error.Message)}
			case r.Connect != nil:
				pong = r.Connect.Pong
			case r.Subscribe != nil:
				s := r.Subscribe
				if s.WasRecovering && !s.Recovered {
					c.gaps++
				}
				for _, p := range s.Publications {
					c.centPub(&p)
				}
				if s.Recoverable {
					if s.Epoch != c.epoch && c.epoch != "" {
						c.gaps++ // the stream was reset: offsets start over
						c.lastSeq = 0
					}
					c.epoch = s.Epoch
					if s.Offset > c.lastSeq {
						if c.lastSeq > 0 && s.WasRecovering && s.Recovered {
							c.skipped += int(s.Offset - c.lastSeq)
						}
						c.lastSeq = s.Offset
					}
				}
				if !established {
					established = true
					c.establish(node)
				}
			case r.Push != nil && r.Push.Pub != nil:
				c.centPub(r.Push.Pub)
			case r.Push != nil && r.Push.Disconnect != nil:
				return &wsclient.CloseFrameError{Code: int(r.Push.Disconnect.Code), Reason: r.Push.Disconnect.Reason}
			}
			return nil
		})
		if err != nil {
			var ce *wsclient.CloseFrameError
			var se *setupError
			if !errors.As(err, &ce) && !errors.As(err, &se) {
				c.protoErrs++
			}
			return established, err
		}
	}
}

// centPub accounts one Centrifugo publication.
func (c *Client) centPub(p *CentPublication) {
	if p.Offset > 0 && !c.sequenced(p.Offset) {
		return
	}
	c.deliver(p.Data, c.node)
}
