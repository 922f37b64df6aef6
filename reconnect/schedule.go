package reconnect

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Errors a GaveUpError wraps when a cap of the Policy, not the close code,
// ended the link. Test for them with errors.Is.
var (
	// ErrMaxAttempts: Policy.MaxAttempts reconnect attempts in a row failed.
	ErrMaxAttempts = errors.New("reconnect: reached Policy.MaxAttempts without a stable connection; raise it or find out why the server keeps refusing")
	// ErrMaxElapsed: the next delay would have ended past Policy.MaxElapsed.
	ErrMaxElapsed = errors.New("reconnect: the next attempt would start past Policy.MaxElapsed; raise it or find out why the server stays unavailable")
)

// GaveUpError says why a client stopped reconnecting: the verdict on the
// last ending (Decision) and, when a cap rather than the verdict stopped it,
// which cap (Limit). errors.Is and errors.As see through it to Limit and to
// Decision.Err, e.g. a *websocket.CloseError or a
// *websocket.MandatoryExtensionError.
type GaveUpError struct {
	// Decision is the verdict on the last connection or attempt.
	Decision Decision
	// Limit is ErrMaxAttempts or ErrMaxElapsed when a cap ended the link
	// although Decision.Retry was true; nil when the verdict itself said
	// stop.
	Limit error
	// Attempts is the number of reconnect attempts made since the link was
	// last stable.
	Attempts int
	// Elapsed is the time since the link was last stable (or since the
	// client started).
	Elapsed time.Duration
}

func (e *GaveUpError) Error() string {
	var b strings.Builder
	b.WriteString("reconnect: gave up")
	if e.Attempts > 0 {
		fmt.Fprintf(&b, " after %d attempts in %v", e.Attempts, e.Elapsed.Round(time.Millisecond))
	}
	if e.Limit != nil {
		b.WriteString(": ")
		b.WriteString(strings.TrimPrefix(e.Limit.Error(), "reconnect: "))
		b.WriteString("; last: ")
	} else {
		b.WriteString(": ")
	}
	b.WriteString(e.Decision.Why)
	if e.Decision.Err != nil {
		b.WriteString(" (")
		b.WriteString(e.Decision.Err.Error())
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns Limit and Decision.Err, whichever are set.
func (e *GaveUpError) Unwrap() []error {
	var errs []error
	if e.Limit != nil {
		errs = append(errs, e.Limit)
	}
	if e.Decision.Err != nil {
		errs = append(errs, e.Decision.Err)
	}
	return errs
}

// Wait is what a Schedule tells a client to do after a failure: sleep Delay,
// then make attempt number Attempt.
type Wait struct {
	// Attempt is the number of the reconnect attempt that follows the wait,
	// counting from 1 since the link was last stable.
	Attempt int
	// Delay is the jittered delay, never below the Decision's hint.
	Delay time.Duration
	// Nominal is the delay without jitter or hint: min(Cap, Base·2^(Attempt−1)).
	Nominal time.Duration
	// Hinted reports whether the server's hint raised the delay above where
	// the backoff alone would have put it.
	Hinted bool
	// Decision is the verdict that led to the wait.
	Decision Decision
}

// Schedule applies a Policy over the life of one link: it counts attempts,
// resets the count only after a connection stayed up for the stable
// period, enforces MaxAttempts and MaxElapsed, and computes each delay.
// Time is passed in by the caller and randomness comes from an injected
// Rand, so a Schedule is deterministic under test. A Schedule is not safe
// for concurrent use.
type Schedule struct {
	policy  Policy
	rand    Rand
	attempt int       // reconnect attempts since the link was last stable
	since   time.Time // when the link was last stable, or the start
	upSince time.Time // when the current connection opened
	up      bool
}

// NewSchedule starts a schedule at now. A nil r draws from math/rand/v2's
// global source.
func NewSchedule(p Policy, r Rand, now time.Time) *Schedule {
	if r == nil {
		r = globalRand{}
	}
	return &Schedule{policy: p, rand: r, since: now}
}

// Opened records that a connection opened at now.
func (s *Schedule) Opened(now time.Time) {
	s.up, s.upSince = true, now
}

// Attempts returns the number of reconnect attempts made since the link was
// last stable.
func (s *Schedule) Attempts() int { return s.attempt }

// Next records that the connection (or the attempt to make one) ended at
// now with verdict d, and returns how long to wait before the next attempt.
// If the connection had stayed up for the stable period (for a 1012, the
// shorter Policy.RestartStable) the count starts again from zero first; a
// shorter connection leaves it growing. Next
// returns a *GaveUpError when d says stop or a cap of the Policy is reached.
func (s *Schedule) Next(now time.Time, d Decision) (Wait, error) {
	if s.up {
		s.up = false
		stable := s.policy.stablePeriod()
		if d.Class == closecode.Soon {
			stable = min(stable, s.policy.restartStable())
		}
		if now.Sub(s.upSince) >= stable {
			s.attempt = 0
			s.since = now
		}
	}
	gaveUp := func(limit error) (Wait, error) {
		return Wait{}, &GaveUpError{Decision: d, Limit: limit, Attempts: s.attempt, Elapsed: now.Sub(s.since)}
	}
	if !d.Retry {
		return gaveUp(nil)
	}
	if s.policy.MaxAttempts > 0 && s.attempt >= s.policy.MaxAttempts {
		return gaveUp(ErrMaxAttempts)
	}
	b := s.policy.Backoff
	n := s.attempt
	delay := b.Delay(n, d.Hint, s.rand)
	if s.policy.MaxElapsed > 0 && now.Add(delay).Sub(s.since) > s.policy.MaxElapsed {
		return gaveUp(ErrMaxElapsed)
	}
	nominal := b.Nominal(n)
	plainLo, _ := b.Window(n, 0)
	s.attempt++
	return Wait{
		Attempt:  s.attempt,
		Delay:    delay,
		Nominal:  nominal,
		Hinted:   d.Hint > plainLo,
		Decision: d,
	}, nil
}
