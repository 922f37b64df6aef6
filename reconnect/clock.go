package reconnect

import "time"

// Clock is the client's source of time: it stamps events and feeds the
// Schedule, and times the waits between attempts. Tests inject a fake one
// to check the waits without sleeping. Dial and close timeouts stay on the
// real clock, since the network does.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTimer returns a channel that receives once d has passed, and a
	// function that stops the timer and releases it.
	NewTimer(d time.Duration) (<-chan time.Time, func() bool)
}

// realClock is the Clock a nil Options.Clock means.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}
