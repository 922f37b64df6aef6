package main

import (
	"context"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// hub fans /broadcast messages out to every member. Each member has its
// own bounded queue and writer goroutine, so one slow client cannot stall
// the others: a client whose queue is full is closed with 1008.
type hub struct {
	mu      sync.Mutex
	members map[*member]struct{}
}

type member struct {
	c     *websocket.Conn
	queue chan outMsg
	done  chan struct{}
}

type outMsg struct {
	typ websocket.MessageType
	p   []byte
}

// memberQueue is how many messages a member may lag behind.
const memberQueue = 256

func newHub() *hub { return &hub{members: make(map[*member]struct{})} }

func (h *hub) join(c *websocket.Conn) *member {
	m := &member{c: c, queue: make(chan outMsg, memberQueue), done: make(chan struct{})}
	h.mu.Lock()
	h.members[m] = struct{}{}
	h.mu.Unlock()
	go m.writeLoop()
	return m
}

func (h *hub) leave(m *member) {
	h.mu.Lock()
	if _, ok := h.members[m]; ok {
		delete(h.members, m)
		close(m.queue)
	}
	h.mu.Unlock()
	<-m.done
}

func (h *hub) send(typ websocket.MessageType, p []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for m := range h.members {
		select {
		case m.queue <- outMsg{typ, p}:
		default:
			// Too slow: drop it rather than everyone.
			delete(h.members, m)
			close(m.queue)
			go m.c.Close(closecode.PolicyViolation, "too slow: broadcast queue full")
		}
	}
}

func (m *member) writeLoop() {
	defer close(m.done)
	for msg := range m.queue {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := m.c.Write(ctx, msg.typ, msg.p)
		cancel()
		if err != nil {
			for range m.queue {
			}
			return
		}
	}
}
