package fanout

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// EbbLib is ebb's own Go client: reconnect.Client with Options.Resume
// (ebb.resume.v1), ebb's reconnect policy for a persistent link, its
// envelope stripping, duplicate dropping and gap reports. The bench's
// part is only to route each attempt to a node and to account what the
// client reports. Duplicates by sequence cannot be counted in this mode:
// the client drops them itself.
const EbbLib Protocol = 100

// runLib runs the client as a reconnect.Client until ctx ends.
func (c *Client) runLib(ctx context.Context) {
	var (
		dials   atomic.Int64
		dialled atomic.Int32 // node of the latest dial
		open    bool         // only touched from OnEvent (the client's goroutine)
	)
	dialer := &net.Dialer{}
	opts := &reconnect.Options{
		Policy: reconnect.Policy{Persistent: true},
		Resume: &reconnect.ResumeOptions{},
		Dial: &websocket.DialOptions{
			// Attempt k after a loss goes to the k-th next node, as with
			// the neutral client; the URL's host names the home node.
			NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				n := (c.Home + int(dials.Add(1)-1)) % len(c.Nodes)
				dialled.Store(int32(n))
				return dialer.DialContext(ctx, network, c.Nodes[n].Host)
			},
			ReadLimit: 1 << 20,
		},
		HandshakeTimeout: c.dialLimit(),
		OnEvent: func(e reconnect.Event) {
			switch e.State {
			case reconnect.StateConnecting:
				c.Stats.attempt()
			case reconnect.StateOpen:
				if e.Resume != reconnect.ResumeAccepted {
					c.mu.Lock()
					c.err = errors.New("fanout: the server did not select subprotocol " + ResumeProtocol + ": it does not speak ebb's resume protocol")
					c.mu.Unlock()
				}
				open = true
				c.mu.Lock()
				c.node = int(dialled.Load())
				c.mu.Unlock()
				c.Stats.open()
			case reconnect.StateClosed:
				how := strconv.Itoa(int(e.Code))
				switch {
				case e.Status != 0:
					how = "HTTP " + strconv.Itoa(e.Status)
				case e.Code == 1006 && !e.Remote:
					how = "1006 no close frame"
				}
				if ctx.Err() != nil {
					if open {
						c.Stats.closedByHarness()
					}
				} else if open {
					c.Stats.ended(how)
				} else {
					c.Stats.refuse(how)
				}
				open = false
				c.mu.Lock()
				c.node = -1
				c.mu.Unlock()
			case reconnect.StateStopped:
				if ctx.Err() == nil {
					c.gaveUp = true
				}
			}
		},
	}
	u := "ws://" + c.Nodes[c.Home].Host + c.Nodes[c.Home].Path
	rc, err := reconnect.New(ctx, u, opts)
	if err != nil {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		return
	}
	for {
		_, data, err := rc.Read(ctx)
		var ge *reconnect.GapError
		switch {
		case errors.As(err, &ge):
			c.gaps++
			if ge.Next > ge.From && ge.From > 0 {
				c.gapMsgs += int(ge.Next - ge.From)
			}
			continue
		case err != nil:
			<-rc.Done()
			return
		}
		c.mu.Lock()
		node := c.node
		c.mu.Unlock()
		c.deliver(data, node)
	}
}
