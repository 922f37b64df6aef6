package session

import "sync"

// messageOverhead is what a queued message counts besides its payload, so
// that a flood of empty messages is bounded too.
const messageOverhead = 64

// outQueue hands received messages from the reader to the printer, bounded
// in bytes: the reader waits while the messages queued or being printed
// add up to the limit, so that a slow output stops the reading and TCP
// holds the server back. A message larger than the limit goes through when
// the queue is empty. One goroutine puts, one gets.
type outQueue struct {
	limit int

	mu     sync.Mutex
	items  []message
	held   int // bytes queued or being printed
	closed bool

	room  chan struct{} // signaled when bytes are released
	ready chan struct{} // signaled when a message is added or the queue closes
}

func newOutQueue(limit int) *outQueue {
	return &outQueue{limit: limit, room: make(chan struct{}, 1), ready: make(chan struct{}, 1)}
}

func cost(m message) int { return len(m.p) + messageOverhead }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// put queues m once there is room, or drops it and returns false when
// abort is closed first.
func (q *outQueue) put(m message, abort <-chan struct{}) bool {
	n := cost(m)
	for {
		select {
		case <-abort:
			return false
		default:
		}
		q.mu.Lock()
		if q.held == 0 || q.held+n <= q.limit {
			q.items = append(q.items, m)
			q.held += n
			q.mu.Unlock()
			signal(q.ready)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.room:
		case <-abort:
			return false
		}
	}
}

// get returns the next message, waiting for one; false once the queue is
// closed and empty. The message's bytes stay held until release.
func (q *outQueue) get() (message, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			m := q.items[0]
			q.items[0] = message{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return m, true
		}
		if q.closed {
			q.mu.Unlock()
			return message{}, false
		}
		q.mu.Unlock()
		<-q.ready
	}
}

// release gives back the bytes of a message get returned, once printed.
func (q *outQueue) release(m message) {
	q.mu.Lock()
	q.held -= cost(m)
	q.mu.Unlock()
	signal(q.room)
}

// close ends the queue: get returns what is left, then false.
func (q *outQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	signal(q.ready)
}
