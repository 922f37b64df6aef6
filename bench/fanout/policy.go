package fanout

import (
	"net/http"
	"time"

	"github.com/jpillora/backoff"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
)

// Policy is a system's own reconnect rule, as the client loop applies it:
// whether to reconnect after a connection or an attempt ended, and after
// how long. Each client has its own Policy; it is not safe for concurrent
// use.
type Policy interface {
	// Opened records that the subscription is established (connected and
	// subscribed).
	Opened(now time.Time)
	// Closed returns the delay before the next attempt after a connection
	// ended with close code code (1006 when it ended without a close
	// frame), or false to stop.
	Closed(now time.Time, code int, reason string) (time.Duration, bool)
	// Refused returns the delay after an attempt failed before a
	// subscription was established: status is the HTTP answer to the
	// upgrade (0 when the TCP connection failed or the upgrade succeeded
	// but the subscription did not), retryAfter its Retry-After header.
	Refused(now time.Time, status int, retryAfter string) (time.Duration, bool)
}

// EbbPolicy is ebb's reconnect policy (package reconnect, the policy
// reconnect.Client applies), for a persistent link: the default backoff
// (1 s base doubling to 30 s, equal jitter on every attempt), server
// retry-after hints as a floor, the attempt counter reset only after a
// connection stayed up for the stable period (10 s).
type EbbPolicy struct {
	p reconnect.Policy
	s *reconnect.Schedule
}

// NewEbbPolicy starts ebb's policy at now.
func NewEbbPolicy(now time.Time) *EbbPolicy {
	p := reconnect.Policy{Persistent: true}
	return &EbbPolicy{p: p, s: reconnect.NewSchedule(p, nil, now)}
}

// Opened implements Policy.
func (e *EbbPolicy) Opened(now time.Time) { e.s.Opened(now) }

// Closed implements Policy.
func (e *EbbPolicy) Closed(now time.Time, code int, reason string) (time.Duration, bool) {
	return e.next(now, e.p.Decide(closecode.Code(code), reason))
}

// Refused implements Policy.
func (e *EbbPolicy) Refused(now time.Time, status int, retryAfter string) (time.Duration, bool) {
	if status == 0 {
		return e.next(now, e.p.Decide(closecode.AbnormalClosure, ""))
	}
	h := http.Header{}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return e.next(now, e.p.DecideHTTP(status, h, now))
}

func (e *EbbPolicy) next(now time.Time, d reconnect.Decision) (time.Duration, bool) {
	w, err := e.s.Next(now, d)
	if err != nil {
		return 0, false
	}
	return w.Delay, true
}

// CentPolicy is the reconnect policy of Centrifugo's Go SDK
// (github.com/centrifugal/centrifuge-go v0.12.1, its defaults): before
// attempt n (counting from 1 after each loss) it waits
// jpillora/backoff's ForAttempt(n) with Min 200 ms, Max 20 s, Factor 2
// and jitter (uniform between Min and Min·2^n, capped at Max); the count
// goes back to zero as soon as a connect succeeds. Close codes 3500–3999
// and 4500–4999 end the client; every other code, and a connection lost
// without one, reconnects. (centrifuge-js uses the same scheme with a
// 500 ms minimum.)
type CentPolicy struct {
	attempts int
	b        backoff.Backoff
}

// NewCentPolicy returns centrifuge-go's default policy.
func NewCentPolicy() *CentPolicy {
	return &CentPolicy{b: backoff.Backoff{Min: 200 * time.Millisecond, Max: 20 * time.Second, Factor: 2, Jitter: true}}
}

// Opened implements Policy.
func (c *CentPolicy) Opened(time.Time) { c.attempts = 0 }

// Closed implements Policy.
func (c *CentPolicy) Closed(_ time.Time, code int, _ string) (time.Duration, bool) {
	if !CentReconnects(code) {
		return 0, false
	}
	c.attempts++
	return c.b.ForAttempt(float64(c.attempts)), true
}

// Refused implements Policy.
func (c *CentPolicy) Refused(time.Time, int, string) (time.Duration, bool) {
	c.attempts++
	return c.b.ForAttempt(float64(c.attempts)), true
}

// CentReconnects reports whether centrifuge-go reconnects after close
// code code.
func CentReconnects(code int) bool {
	return code < 3500 || code >= 5000 || (code >= 4000 && code < 4500)
}
