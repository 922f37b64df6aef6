package shed

import (
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// State is a step in the life of an upgrade request as shed sees it, in
// the manner of http.ConnState. Options.OnState receives every change.
//
// An upgrade request goes either to StateRefused (and no further), or
// through StateAdmitted → StateOpen → StateClosing → StateClosed, where
// StateOpen is skipped when the handler neither hijacks nor calls Track
// (for example it answered 400), and StateClosing happens only when shed
// itself asks the connection to close (shedding or drain).
type State int

// Admission states.
const (
	// StateAdmitted: the request passed admission and holds a slot: it
	// counts toward MaxConns, MaxConnsPerIP and MaxInFlight. The handler
	// is about to run.
	StateAdmitted State = iota + 1
	// StateRefused: the request was refused; Event.Reason, Mode, Code and
	// Hint say why and how. No handler ran and no slot is held.
	StateRefused
	// StateOpen: the handler hijacked the connection or registered it with
	// Track, so the handshake is over and it no longer counts toward
	// MaxInFlight.
	StateOpen
	// StateClosing: shed asked the connection to close (Event.Reason is
	// the shedding reason or ReasonDraining; Event.Code and Hint are what
	// was sent). If the handler had not registered a Closer yet, the close
	// is sent when it does.
	StateClosing
	// StateClosed: the handler returned or called the release func from
	// Track; the slot is free.
	StateClosed
)

// String returns the state's name, e.g. "admitted".
func (s State) String() string {
	switch s {
	case StateAdmitted:
		return "admitted"
	case StateRefused:
		return "refused"
	case StateOpen:
		return "open"
	case StateClosing:
		return "closing"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Event describes one state change for Options.OnState.
type Event struct {
	// State is the state entered.
	State State
	// Request is the upgrade request. Handlers must not be called with
	// it; it is there for logging and for the application's own
	// bookkeeping (path, headers, context values).
	Request *http.Request
	// ClientIP is the address the per-IP limit counted the request under.
	ClientIP netip.Addr
	// Reason is set for StateRefused and StateClosing.
	Reason Reason
	// Mode is set for StateRefused.
	Mode Mode
	// Code is the close code sent, for StateRefused with ModeClose and for
	// StateClosing.
	Code closecode.Code
	// Hint is the retry hint sent (for ModeHTTP, before rounding up to
	// whole seconds).
	Hint time.Duration
}
