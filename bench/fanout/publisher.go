package fanout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/bench/wsclient"
)

// Publisher sends Payloads at a fixed rate through one node, moving to
// the next node when that one fails (the way an application backend
// behind a load balancer would). It does not resend a message whose
// publication failed or is unknown: what reaches the subscribers is what
// the system accepted, and the loss account counts only those.
type Publisher struct {
	Proto   Protocol
	Nodes   []Endpoint
	API     []string // Centrifugo: base URL of each node's HTTP API
	APIKey  string   // Centrifugo: X-API-Key
	Channel string   // Centrifugo channel
	Pad     int      // payload padding
	Stats   *Stats

	next   atomic.Uint64 // id of the next message
	sent   atomic.Int64
	failed atomic.Int64
}

// NextID returns the id the next message will carry (ids start at 1).
func (p *Publisher) NextID() uint64 { return p.next.Load() + 1 }

// Sent returns how many messages were handed to a node, and how many
// failed to be.
func (p *Publisher) Sent() (sent, failed int64) { return p.sent.Load(), p.failed.Load() }

// Run publishes rate messages per second until ctx ends.
func (p *Publisher) Run(ctx context.Context, rate float64) error {
	var send func(ctx context.Context, id uint64) error
	var closeFn func()
	switch p.Proto {
	case Centrifugo:
		send, closeFn = p.centSender()
	default:
		send, closeFn = p.ebbSender(ctx)
	}
	defer closeFn()
	// Centrifugo's HTTP API answers each publish; up to inflight calls
	// overlap, so that a slow answer does not hold the schedule back. A
	// /broadcast write does not wait for an answer.
	const inflight = 16
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	defer wg.Wait()
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return nil
		}
		id := p.next.Add(1)
		if p.Proto != Centrifugo {
			p.account(ctx, send(ctx, id))
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		wg.Go(func() {
			p.account(ctx, send(ctx, id))
			<-sem
		})
	}
}

func (p *Publisher) account(ctx context.Context, err error) {
	switch {
	case err == nil:
		p.sent.Add(1)
	case ctx.Err() == nil:
		p.failed.Add(1)
	}
}

// centSender publishes through Centrifugo's server HTTP API.
func (p *Publisher) centSender() (func(context.Context, uint64) error, func()) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	var node atomic.Int32
	p.Stats.SetPublisherNode(0)
	send := func(ctx context.Context, id uint64) error {
		var last error
		data := Payload(id, p.Stats.Now(), p.Pad)
		key := "bench-" + strconv.FormatUint(id, 10)
		for try := 0; try < len(p.API); try++ {
			n := int(node.Load())
			body := CentPublishBody(p.Channel, data, key)
			req, err := http.NewRequestWithContext(ctx, "POST", p.API[n]+"/api/publish", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("X-API-Key", p.APIKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err == nil {
				var r CentPublishResult
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode != 200:
					err = fmt.Errorf("fanout: publish to %s: HTTP %d: %s", p.API[n], resp.StatusCode, trim(b))
				case json.Unmarshal(b, &r) != nil || r.Error != nil:
					err = fmt.Errorf("fanout: publish to %s answered %s", p.API[n], trim(b))
				default:
					p.Stats.Published(id)
					return nil
				}
			}
			last = err
			if ctx.Err() != nil {
				return err
			}
			// Move on from the failed node (unless another call already did).
			if node.CompareAndSwap(int32(n), int32((n+1)%len(p.API))) {
				p.Stats.SetPublisherNode((n + 1) % len(p.API))
			}
		}
		return last
	}
	return send, client.CloseIdleConnections
}

// ebbSender publishes by sending on a /broadcast connection (resume
// protocol: its own messages come back with their sequence, which is the
// acknowledgement). A reader goroutine drains the connection.
func (p *Publisher) ebbSender(ctx context.Context) (func(context.Context, uint64) error, func()) {
	var (
		mu   sync.Mutex
		conn *wsclient.Conn
		node = -1
		wg   sync.WaitGroup
	)
	connect := func() error {
		var last error
		for try := 0; try < len(p.Nodes); try++ {
			n := (node + 1 + try) % len(p.Nodes)
			if node < 0 {
				n = try
			}
			ep := p.Nodes[n]
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := wsclient.Dial(dctx, ep.Host, wsclient.RequestTo(ep.Host, ep.Path, "", ResumeProtocol), 64<<10)
			cancel()
			if err != nil {
				last = err
				continue
			}
			node, conn = n, c
			p.Stats.SetPublisherNode(n)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var buf []byte
				for {
					op, _, _, msg, err := c.ReadMessage(true, buf)
					buf = msg[:0]
					if err != nil {
						c.NC.Close()
						return
					}
					if m, err := ParseResume(op == wsclient.OpText, msg); err == nil && m.Kind == ResumeData {
						if id, _, ok := ParsePayload(m.Payload); ok {
							p.Stats.Published(id)
						}
					}
				}
			}()
			return nil
		}
		return last
	}
	send := func(ctx context.Context, id uint64) error {
		mu.Lock()
		defer mu.Unlock()
		for try := 0; try < 2; try++ {
			if conn == nil {
				if err := connect(); err != nil {
					return err
				}
			}
			conn.NC.SetWriteDeadline(time.Now().Add(2 * time.Second))
			err := conn.WriteFrame(wsclient.OpText, false, Payload(id, p.Stats.Now(), p.Pad))
			if err == nil {
				return nil
			}
			conn.NC.Close()
			conn = nil
		}
		return fmt.Errorf("fanout: could not send message %d", id)
	}
	closeFn := func() {
		mu.Lock()
		if conn != nil {
			conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
	return send, closeFn
}
