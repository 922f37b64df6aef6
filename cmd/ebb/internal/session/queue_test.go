package session

import (
	"testing"
	"time"
)

func TestOutQueue(t *testing.T) {
	t.Parallel()
	msg := func(n int) message { return message{p: make([]byte, n)} }
	q := newOutQueue(1000)
	never := make(chan struct{})

	// Up to the limit, put does not wait; a message larger than the limit
	// goes through alone.
	for range 2 {
		if !q.put(msg(400), never) {
			t.Fatal("put refused a message within the limit")
		}
	}
	put := make(chan bool, 1)
	go func() { put <- q.put(msg(400), never) }()
	select {
	case <-put:
		t.Fatal("put did not wait with the queue full")
	case <-time.After(50 * time.Millisecond):
	}
	m, _ := q.get()
	q.release(m)
	if ok := <-put; !ok {
		t.Fatal("put failed after room was made")
	}
	for range 2 {
		m, _ := q.get()
		q.release(m)
	}
	if !q.put(msg(5000), never) {
		t.Fatal("a message above the limit did not go through an empty queue")
	}

	// With the queue full, abort drops the message.
	abort := make(chan struct{})
	close(abort)
	if q.put(msg(10), abort) {
		t.Fatal("put queued a message past the limit after abort")
	}
	q.close()
	if m, ok := q.get(); !ok || len(m.p) != 5000 {
		t.Fatalf("get after close = %d bytes, %v; want the 5000-byte message first", len(m.p), ok)
	}
	if _, ok := q.get(); ok {
		t.Fatal("get returned a message from a closed, empty queue")
	}
}
