package shed

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"time"
)

// Pacing: how a Listener keeps a connect storm from queueing ahead of the
// established connections.
//
// Go's scheduler has no priorities. On a busy process the goroutines that
// handle new connections (net/http's, then the handshake's) pass the CPU
// to one another through the local run queue, while an established
// connection whose data arrives is found by the network poller only every
// few milliseconds and waits at the back of the global run queue. In a
// 10,000-connect storm on one core, the admitted connections' echo p99 was
// 0.7 s, and still 0.2 s with the handshakes in progress bounded.
//
// So during a burst the accept loop steps aside after every batch of
// connections: it sleeps briefly, which lets the scheduler poll the network
// and run whatever the established connections have to do, then waits until
// nothing is runnable (up to paceMaxWait) before it takes the next batch.
// New connections are handled in the time the established ones leave free;
// the clients behind them wait in the kernel's listen queue. Middleware
// adds the other half: each upgrade first yields (runtime.Gosched), which
// puts the handshake at the back of the global run queue, behind the
// established connections already waiting there. MaxPending keeps the
// number of such handshakes small.
const (
	// paceBatchPerProc connections per GOMAXPROCS taken within paceWindow
	// make a burst.
	paceBatchPerProc = 4
	paceWindow       = time.Millisecond
	// paceSleep is the step aside; an idle process sleeps at least 1 ms
	// (the network poller's resolution), a busy one wakes sooner.
	paceSleep = 100 * time.Microsecond
	// paceMaxWait bounds one pause, counted in paceSleep steps, so a
	// process kept busy by its established connections still accepts a
	// batch every few ms. (While goroutines are runnable the process is
	// busy and each step takes about paceSleep.)
	paceMaxWait = 2 * time.Millisecond
)

// pacer decides when the accept loop steps aside. The zero value is not
// usable; see newPacer.
type pacer struct {
	batch    int
	sleep    func(time.Duration)
	runnable func() uint64 // goroutines ready to run and not running

	mu    sync.Mutex
	n     int       // connections taken in this batch
	start time.Time // when this batch began
}

func newPacer() *pacer {
	return &pacer{
		batch:    paceBatchPerProc * runtime.GOMAXPROCS(0),
		sleep:    time.Sleep,
		runnable: runnableGoroutines,
	}
}

// take counts one connection taken at now and reports whether it completes
// a batch that came faster than a burst's rate, after which the caller
// should call stepAside before taking more.
func (p *pacer) take(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.n == 1 {
		p.start = now
	}
	if p.n < p.batch {
		return false
	}
	p.n = 0
	return now.Sub(p.start) < paceWindow
}

// stepAside sleeps once, then until no goroutine is runnable or
// paceMaxWait has passed.
func (p *pacer) stepAside() {
	p.sleep(paceSleep)
	for waited := paceSleep; waited < paceMaxWait && p.runnable() > 0; waited += paceSleep {
		p.sleep(paceSleep)
	}
}

const runnableMetric = "/sched/goroutines/runnable:goroutines"

// runnableGoroutines reads /sched/goroutines/runnable:goroutines, which
// the runtime computes from the run queues' lengths (cheap: no
// stop-the-world, no walk over goroutines). It returns 0 if the metric is
// not supported.
func runnableGoroutines() uint64 {
	s := []metrics.Sample{{Name: runnableMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
