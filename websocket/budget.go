package websocket

import (
	"container/heap"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"
)

// BudgetFreeBytes is how large a message buffer may be before it counts
// against a MemoryBudget. Smaller messages never touch the budget: no lock,
// no wait, so ordinary traffic is never slowed by large messages. It is also
// the most a Conn allocates for a message before its bytes arrive (a header
// announcing 16 KiB gets a 16 KiB buffer; one announcing 32 MiB gets the
// same 16 KiB, and more only as the payload comes in).
const BudgetFreeBytes = 16 << 10

// MemoryBudgetMaxWait is the longest a read waits for room in its
// MemoryBudget. A message still waiting then is refused with 1013 Try Again
// Later and a retry-after= hint (see MemoryBudget). The read's context can
// make the wait shorter.
const MemoryBudgetMaxWait = 5 * time.Second

// defaultBudgetBytes is the default budget when GOMEMLIMIT is not set.
const defaultBudgetBytes = 256 << 20

// minDefaultBudgetBytes is the least the default budget is when derived from
// a small GOMEMLIMIT.
const minDefaultBudgetBytes = 4 << 20

// MemoryBudget bounds the memory of messages being read whole (Read and
// ReadInto) across every Conn that shares it: the bytes buffered for
// messages that are still arriving, decompressed bytes included. A peer can
// make a Conn hold budget only with bytes it actually sent (or, when
// compressed, that actually inflated); announced sizes never reserve any.
//
// A buffer counts once it grows past BudgetFreeBytes, for its whole
// capacity, until the message is delivered (the returned slice is then the
// caller's and no longer counted), fails, or the connection ends. Reader
// streams without buffering and does not use the budget.
//
// When the budget is spent, a read that needs more stops reading from its
// socket (TCP then slows the sender down) and waits. Waiting reads are
// served in order of how much their message already holds, largest first,
// then in order of arrival: the messages closest to completion finish and
// give their memory back first. A message that can never fit, because it
// is larger than the whole budget, is refused at once with 1009 Message Too
// Big: no amount of waiting would help. A message that waited
// MemoryBudgetMaxWait in vain is refused with 1013 Try Again Later and a
// retry-after= hint of 1 to 2 s (jittered, so that refused clients do not
// come back together): the server is not refusing the message, only the
// moment, and a client that retries later will likely succeed.
//
// Messages that each hold part of the budget and all wait for more would
// otherwise wait for each other until MemoryBudgetMaxWait. When every byte
// in use belongs to a waiting read, the one holding most is let through
// beyond the limit instead; the others go on waiting until it has finished
// and released its memory. So the budget can be exceeded, only then and by
// one message at a time: by at most that message's size, which is no more
// than the read limit plus one byte and never more than the budget itself.
// Stats reports how often (Overdrafts) and the resulting Peak.
//
// The zero value is not usable; create budgets with NewMemoryBudget. A
// budget's size is fixed at creation and it is safe for concurrent use.
type MemoryBudget struct {
	limit   int64
	maxWait time.Duration

	mu          sync.Mutex
	inUse       int64
	waitingHeld int64 // the part of inUse held by waiting readers
	peak        int64
	waiters     budgetQueue
	seq         uint64
	waits       uint64
	tooBig      uint64
	tryLater    uint64
	overdrafts  uint64
}

// MemoryBudgetStats is a snapshot of a MemoryBudget's use, for metrics.
type MemoryBudgetStats struct {
	// Limit is the budget's size in bytes.
	Limit int64
	// InUse is the memory counted now, in bytes. It exceeds Limit only
	// while a deadlock is being broken (see Overdrafts).
	InUse int64
	// Peak is the largest InUse seen since the budget was created.
	Peak int64
	// Waiters is the number of reads waiting for room now.
	Waiters int
	// Waits counts the reads that had to wait.
	Waits uint64
	// RefusedTooBig counts messages refused with 1009 Message Too Big
	// because they were larger than the whole budget.
	RefusedTooBig uint64
	// RefusedTryLater counts messages refused with 1013 Try Again Later
	// because they waited MemoryBudgetMaxWait in vain.
	RefusedTryLater uint64
	// Overdrafts counts the times the budget let a message grow past the
	// limit because every message holding part of it was waiting for more.
	Overdrafts uint64
}

// NewMemoryBudget returns a budget of the given size in bytes, to share
// between Conns through AcceptOptions.MemoryBudget or
// DialOptions.MemoryBudget. Size it to the memory the process can spare for
// messages in flight: peak heap use for messages can reach about twice the
// budget (plus one message, see above), since chunks wait in pools and a
// message's final copy exists next to its chunks for a moment, until the
// garbage collector runs. With the default GOGC the collector lets the
// whole heap grow to twice its live size before it runs: under a flood of
// large messages a process's RSS peaks at 2.5–3 × the budget (measured
// with 20 and 50 deflate bombs of 32 MiB against the 256 MiB default:
// 600–810 MiB, whatever the number of bombs). Set GOMEMLIMIT to cap it:
// the default budget is then a quarter of the limit and the collector
// keeps the heap under it (GOMEMLIMIT=512MiB: 455 MiB). A size of 0 or less allows no buffer past
// BudgetFreeBytes, so larger messages can only be read with Reader.
func NewMemoryBudget(bytes int64) *MemoryBudget {
	return &MemoryBudget{limit: max(bytes, 0), maxWait: MemoryBudgetMaxWait}
}

var defaultBudget = sync.OnceValue(func() *MemoryBudget { return NewMemoryBudget(defaultBudgetSize()) })

// DefaultMemoryBudget returns the budget that Conns created without a
// MemoryBudget share: the whole process's, so that metrics can export its
// Stats.
//
// Its size is fixed the first time it is needed: a quarter of the Go
// memory limit (GOMEMLIMIT or debug.SetMemoryLimit) when one is set, but at
// least 4 MiB, and 256 MiB otherwise. A quarter leaves the rest of the limit
// to everything else a server holds (connections, the application, and the
// garbage growing buffers leave behind). 256 MiB holds eight messages of the
// default 32 MiB read limit at once, or thousands of ordinary ones, and
// fits, with that garbage, in the memory of a small machine; a process that
// needs more in flight sets GOMEMLIMIT or its own budget.
func DefaultMemoryBudget() *MemoryBudget { return defaultBudget() }

// defaultBudgetSize derives the default budget from the Go memory limit.
func defaultBudgetSize() int64 {
	if lim := debug.SetMemoryLimit(-1); lim > 0 && lim < math.MaxInt64 {
		return max(lim/4, minDefaultBudgetBytes)
	}
	return defaultBudgetBytes
}

// Limit returns the budget's size in bytes.
func (b *MemoryBudget) Limit() int64 { return b.limit }

// Stats returns a snapshot of the budget's use. It takes the budget's lock
// briefly; calling it a few times a second costs nothing noticeable.
func (b *MemoryBudget) Stats() MemoryBudgetStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return MemoryBudgetStats{
		Limit:           b.limit,
		InUse:           b.inUse,
		Peak:            b.peak,
		Waiters:         len(b.waiters),
		Waits:           b.waits,
		RefusedTooBig:   b.tooBig,
		RefusedTryLater: b.tryLater,
		Overdrafts:      b.overdrafts,
	}
}

// Errors of acquire; the reader turns them into close codes.
var (
	// errBudgetTimeout: the wait reached maxWait (1013).
	errBudgetTimeout = errors.New("websocket: no room in the memory budget for messages")
)

// budgetWaiter is a read waiting for room.
type budgetWaiter struct {
	held  int64 // bytes the message holds already
	want  int64 // bytes it asks for in addition
	seq   uint64
	index int // in the heap; -1 once decided
	ready chan error
}

// budgetQueue orders waiters by what they hold, largest first, then by
// arrival.
type budgetQueue []*budgetWaiter

func (q budgetQueue) Len() int { return len(q) }
func (q budgetQueue) Less(i, j int) bool {
	if q[i].held != q[j].held {
		return q[i].held > q[j].held
	}
	return q[i].seq < q[j].seq
}
func (q budgetQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index = i
	q[j].index = j
}
func (q *budgetQueue) Push(x any) {
	w := x.(*budgetWaiter)
	w.index = len(*q)
	*q = append(*q, w)
}
func (q *budgetQueue) Pop() any {
	old := *q
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	w.index = -1
	return w
}

// fits reports whether a message that would hold total bytes can ever fit.
func (b *MemoryBudget) fits(total int64) bool { return total <= b.limit }

// refuseTooBig counts a message refused for being larger than the budget.
func (b *MemoryBudget) refuseTooBig() {
	b.mu.Lock()
	b.tooBig++
	b.mu.Unlock()
}

// acquire adds want bytes to a message that holds held bytes of the budget
// already, waiting while there is no room. held+want must fit (see fits).
// It gives up when ctx ends (returning ctx's error), when done is closed
// (returning errConnDone), or after maxWait (errBudgetTimeout).
func (b *MemoryBudget) acquire(ctx context.Context, done <-chan struct{}, held, want int64) error {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.limit-b.inUse >= want {
		b.takeLocked(want)
		b.mu.Unlock()
		return nil
	}
	b.seq++
	w := &budgetWaiter{held: held, want: want, seq: b.seq, ready: make(chan error, 1)}
	heap.Push(&b.waiters, w)
	b.waitingHeld += held
	b.waits++
	b.dispatchLocked()
	b.mu.Unlock()

	timer := time.NewTimer(b.maxWait)
	defer timer.Stop()
	var cause error
	select {
	case err := <-w.ready:
		return err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-done:
		cause = errConnDone
	case <-timer.C:
		cause = errBudgetTimeout
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if w.index < 0 {
		// Decided while we were giving up: take the decision.
		return <-w.ready
	}
	heap.Remove(&b.waiters, w.index)
	b.waitingHeld -= w.held
	if cause == errBudgetTimeout {
		b.tryLater++
	}
	// Those behind may fit now, or be deadlocked without us.
	b.dispatchLocked()
	return cause
}

// errConnDone: the connection closed while its reader waited for room.
var errConnDone = errors.New("websocket: connection closed while waiting for room in the memory budget")

func (b *MemoryBudget) takeLocked(n int64) {
	b.inUse += n
	b.peak = max(b.peak, b.inUse)
}

// release gives n bytes back and lets waiters in.
func (b *MemoryBudget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.inUse -= n
	b.dispatchLocked()
	b.mu.Unlock()
}

// dispatchLocked grants waiters in order while they fit. When the first
// does not fit and every byte in use belongs to a waiter, nothing would
// ever be released: the first, holding most, is granted anyway.
func (b *MemoryBudget) dispatchLocked() {
	for len(b.waiters) > 0 {
		head := b.waiters[0]
		if b.limit-b.inUse < head.want {
			if b.inUse > b.waitingHeld {
				return // a message not waiting will finish or fail, and release
			}
			b.overdrafts++
		}
		heap.Pop(&b.waiters)
		b.waitingHeld -= head.held
		b.takeLocked(head.want)
		head.ready <- nil
	}
}

// budgetRetryHint is the retry-after= hint sent with a 1013 refusal for
// want of memory: 1 s plus up to 1 s of jitter.
func budgetRetryHint() time.Duration {
	return time.Second + rand.N(time.Second)
}
