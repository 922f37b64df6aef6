package session_test

import (
	"context"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/session"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
)

// gate is an output that blocks every write until opened, then discards.
type gate struct {
	open    chan struct{}
	written atomic.Int64
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.written.Add(int64(len(p)))
	return len(p), nil
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestSlowOutputHoldsTheServerBack: a server sends 10 text messages of 4 MiB
// (40 MiB) while the output does not take a byte. The session must stop
// reading (the server's writes block on TCP) instead of buffering: its
// heap stays within a few messages, and the server gets only a fraction
// of its messages out. Once the output moves, everything arrives. Not
// parallel: it measures the process's heap.
func TestSlowOutputHoldsTheServerBack(t *testing.T) {
	const (
		count = 10
		size  = 4 << 20
		// The queue's 4 MiB, the message the reader holds, the one being
		// printed, the library's read buffers, and slack for the GC.
		heapBound = 24 << 20
	)
	for _, tc := range []struct {
		name string
		opts session.Options
	}{
		{"single", session.Options{}},
		{"reconnect", session.Options{Reconnect: policy(0, false)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := wstest.NewFlood(t, count, size)
			out := &gate{open: make(chan struct{})}
			base := heapInUse()
			in, inW := io.Pipe()
			defer inW.Close()
			res := make(chan *session.Result, 1)
			go func() { res <- session.Run(context.Background(), f.URL, in, out, io.Discard, &tc.opts) }()

			// Wait until the server is stuck: no progress for half a second.
			last, still := -1, time.Now()
			for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				if n := f.Sent(); n != last {
					last, still = n, time.Now()
				} else if time.Since(still) > 500*time.Millisecond {
					break
				}
			}
			grown := int64(heapInUse()) - int64(base)
			sent := f.Sent()
			t.Logf("output blocked: the server got %d of %d messages out; the heap grew by %.1f MiB", sent, count, float64(grown)/(1<<20))
			if sent >= count/2 {
				t.Errorf("the server sent %d of %d messages to a client whose output is blocked: the session kept reading", sent, count)
			}
			if grown > heapBound {
				t.Errorf("the heap grew by %.1f MiB with the output blocked, want at most %d MiB", float64(grown)/(1<<20), heapBound>>20)
			}

			close(out.open)
			select {
			case r := <-res:
				if !r.OK() {
					t.Errorf("result %+v, want the server's 1000 after every message", r)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the session did not end after the output was opened")
			}
			if f.Sent() != count || out.written.Load() < count*size {
				t.Errorf("after opening the output: %d messages sent, %d bytes written, want %d messages, at least %d bytes", f.Sent(), out.written.Load(), count, count*size)
			}
		})
	}
}
