package reconnect

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// State is where a Client is in its life. It moves
// Connecting → Open → Closed → Waiting → Connecting … and ends in Stopped;
// a failed attempt goes Connecting → Closed without Open.
type State int

// The states of a Client, each reported by an Event when entered.
const (
	// StateConnecting: a handshake is under way.
	StateConnecting State = iota + 1
	// StateOpen: a connection is up; writes go straight to it once the
	// queue has been flushed.
	StateOpen
	// StateClosed: the connection, or the attempt to make one, ended. The
	// event carries the close code and reason (or HTTP status) and the
	// verdict on them.
	StateClosed
	// StateWaiting: the client sleeps before its next attempt. The event
	// carries the delay and its cause.
	StateWaiting
	// StateStopped: the client will not connect again: it gave up, its
	// context ended, or the application closed it. The event carries the
	// final error (ErrClosed after Close) and the number of unsent
	// messages. It is always the last event.
	StateStopped
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateOpen:
		return "open"
	case StateClosed:
		return "closed"
	case StateWaiting:
		return "waiting"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Event reports one state change of a Client. Which fields are set depends
// on State, as each field's comment says.
type Event struct {
	// State is the state entered.
	State State
	// Time is when it was entered, by the client's Clock.
	Time time.Time
	// Attempt is the number of the reconnect attempt since the link was
	// last stable: 0 for the client's first connection, then 1, 2, …
	// (Connecting, Open, Waiting).
	Attempt int
	// Code and Reason are the close code and reason the connection ended
	// with; Code is 1006 for a connection or dial lost without one and 0
	// for a handshake refused over HTTP (Closed).
	Code   closecode.Code
	Reason string
	// Remote reports whether the server sent Code (Closed).
	Remote bool
	// Status is the HTTP status of a refused handshake, or 0 (Closed).
	Status int
	// Delay is how long the client waits before attempt Attempt (Waiting).
	Delay time.Duration
	// Hinted reports whether the server's retry hint, rather than the
	// backoff, set the delay (Waiting).
	Hinted bool
	// Decision is the verdict on how the connection or attempt ended: the
	// cause of a wait or of giving up (Closed, Waiting, Stopped).
	Decision Decision
	// Err is the error that ended the connection or attempt (Closed), or
	// the reason the client stopped (Stopped).
	Err error
	// Unsent is the number of queued messages the client never sent; the
	// messages themselves are in Client.Unsent (Stopped).
	Unsent int
	// From is the sequence a resuming client asked the connection to start
	// with (the query parameter ResumeFromParam), or 0 when it asked for
	// live messages only or does not resume (Connecting, Open).
	From uint64
	// Resume says whether the connection resumes: ResumeRefused when the
	// server did not select ResumeSubprotocol, which the client logs as a
	// warning (Open).
	Resume ResumeStatus
	// Subprotocol is the subprotocol the server selected, or "" (Open).
	Subprotocol string
}

// String describes the event in one line for people, e.g.
// "closed: 1013 Try Again Later (server at capacity; retry-after=4.2)" or
// "waiting 4.6s before attempt 3 (server hint 4.2s)".
func (e Event) String() string {
	var b strings.Builder
	b.WriteString(e.State.String())
	switch e.State {
	case StateConnecting, StateOpen:
		switch {
		case e.Attempt > 0 && e.From > 0:
			fmt.Fprintf(&b, " (attempt %d, resuming from %d)", e.Attempt, e.From)
		case e.Attempt > 0:
			fmt.Fprintf(&b, " (attempt %d)", e.Attempt)
		case e.From > 0:
			fmt.Fprintf(&b, " (resuming from %d)", e.From)
		}
		if e.State == StateOpen && e.Resume == ResumeRefused {
			sel := "none"
			if e.Subprotocol != "" {
				sel = strconv.Quote(e.Subprotocol)
			}
			fmt.Fprintf(&b, ": the server did not select %s (selected %s): messages are plain and nothing missed can be resumed", ResumeSubprotocol, sel)
		}
	case StateClosed:
		switch {
		case e.Status != 0:
			fmt.Fprintf(&b, ": handshake refused with HTTP %d", e.Status)
		case e.Code != 0:
			b.WriteString(": ")
			b.WriteString(e.Code.String())
		}
		if e.Reason != "" {
			fmt.Fprintf(&b, " (%s)", e.Reason)
		}
		if e.Err != nil && e.Code == closecode.AbnormalClosure {
			fmt.Fprintf(&b, ": %v", e.Err)
		}
	case StateWaiting:
		fmt.Fprintf(&b, " %v before attempt %d", e.Delay.Round(time.Millisecond), e.Attempt)
		if e.Hinted {
			fmt.Fprintf(&b, " (server hint %v)", e.Decision.Hint)
		}
	case StateStopped:
		if e.Err != nil {
			fmt.Fprintf(&b, ": %v", e.Err)
		}
		if e.Unsent > 0 {
			fmt.Fprintf(&b, " (%d messages unsent)", e.Unsent)
		}
	}
	return b.String()
}
