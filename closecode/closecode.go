// Package closecode is ebb's registry of WebSocket close codes: the single
// source of truth for what each code means, who may send it, whether it may
// appear on the wire, and whether a client should reconnect after it.
//
// Everything else in ebb (typed errors, the reconnect policy, the CLI's
// explain command, the browser client's table) is derived from this package.
package closecode

import (
	"fmt"
	"strconv"
)

// Code is a WebSocket close status code (RFC 6455 §7.4).
type Code int

// Codes defined by RFC 6455 §7.4.1 and the IANA "WebSocket Close Code
// Number Registry".
const (
	NormalClosure           Code = 1000
	GoingAway               Code = 1001
	ProtocolError           Code = 1002
	UnsupportedData         Code = 1003
	Reserved1004            Code = 1004
	NoStatusReceived        Code = 1005
	AbnormalClosure         Code = 1006
	InvalidFramePayloadData Code = 1007
	PolicyViolation         Code = 1008
	MessageTooBig           Code = 1009
	MandatoryExtension      Code = 1010
	InternalError           Code = 1011
	ServiceRestart          Code = 1012
	TryAgainLater           Code = 1013
	BadGateway              Code = 1014
	TLSHandshake            Code = 1015
	Unauthorized            Code = 3000
	Forbidden               Code = 3003
	Timeout                 Code = 3008
)

// Sender says which side of a connection may send a code.
type Sender int

// Who sends a code. SenderLocal codes are never sent: an endpoint reports
// them to its own application when no (valid) code was received.
const (
	SenderEither Sender = iota + 1
	SenderClient
	SenderServer
	SenderLocal
)

func (s Sender) String() string {
	switch s {
	case SenderEither:
		return "either endpoint"
	case SenderClient:
		return "client"
	case SenderServer:
		return "server"
	case SenderLocal:
		return "nobody (local only, never on the wire)"
	}
	return "unknown"
}

// RetryClass says what a client should do after a connection ended with a
// code. The reconnect package and the browser client act on it.
type RetryClass int

// Retry classes, from "stop" to "come back".
const (
	// Done: the work finished. Reconnect only if the application asked for
	// a persistent link.
	Done RetryClass = iota + 1
	// Backoff: a transient failure. Reconnect with exponential backoff and
	// jitter; a server hint (retry-after=) is a floor under the delay.
	Backoff
	// Soon: the server is restarting. Reconnect after a short jittered
	// delay (the hint, when present, is a floor).
	Soon
	// Permanent: a bug or policy on one side. Retrying repeats the failure.
	Permanent
	// UntilConfigChange: retrying cannot help until someone changes the
	// client's or the server's configuration (1010).
	UntilConfigChange
	// Application: private-use codes; the application decides.
	Application
	// Depends: the code alone does not say (1005); look at what happened.
	Depends
	// Invalid: the code must not be used at all.
	Invalid
)

func (r RetryClass) String() string {
	switch r {
	case Done:
		return "done"
	case Backoff:
		return "retry with backoff"
	case Soon:
		return "retry soon, jittered"
	case Permanent:
		return "permanent"
	case UntilConfigChange:
		return "permanent until the configuration changes"
	case Application:
		return "application decides"
	case Depends:
		return "depends on what happened"
	case Invalid:
		return "invalid code"
	}
	return "unknown"
}

// ShouldRetry reports whether a client should reconnect on its own after a
// close of this class. Done and Application return false: the caller decides
// those with its own rules.
func (r RetryClass) ShouldRetry() bool {
	return r == Backoff || r == Soon
}

// Info is one registry entry.
type Info struct {
	Code Code `json:"code"`
	// Name is the registered name, e.g. "Try Again Later".
	Name string `json:"name"`
	// Sender says which side may send the code.
	Sender Sender `json:"-"`
	// Description says what the code means.
	Description string `json:"description"`
	// When says in what situation an application typically sees it.
	When string `json:"when"`
	// Fix says what to do about it, and on which side.
	Fix string `json:"fix"`
	// Retry is what a client should do next.
	Retry RetryClass `json:"-"`
	// OnWire reports whether the code may appear in a Close frame.
	OnWire bool `json:"on_wire"`
	// Reference names the defining document.
	Reference string `json:"reference"`
	// Range is true for entries describing a range rather than one code
	// (for example any 4000–4999 code).
	Range bool `json:"range,omitempty"`
}

// Name returns the registered name of c, or a description of its range.
func (c Code) Name() string { return Lookup(c).Name }

// String returns the code and its name, e.g. "1013 Try Again Later".
func (c Code) String() string {
	return strconv.Itoa(int(c)) + " " + Lookup(c).Name
}

// ValidOnWire reports whether c may be sent in, and accepted from, a Close
// frame (RFC 6455 §7.4). 1000–1003 and 1007–1014 and 3000–4999 are valid;
// 1004, 1005, 1006, 1015, anything below 1000, unassigned 1016–2999 and
// 5000 and above are not. A peer receiving an invalid code answers 1002.
func ValidOnWire(c Code) bool {
	switch {
	case c >= 1000 && c <= 1003:
		return true
	case c >= 1007 && c <= 1014:
		return true
	case c >= 3000 && c <= 4999:
		return true
	}
	return false
}

// MaySend reports whether an endpoint in the given role may put c in a
// Close frame. It is ValidOnWire plus the registry's sender rule: a server
// never sends 1010 (only a client can require an extension).
func MaySend(c Code, server bool) bool {
	if !ValidOnWire(c) {
		return false
	}
	if c == MandatoryExtension && server {
		return false
	}
	return true
}

// Classify returns the retry class of c.
func Classify(c Code) RetryClass { return Lookup(c).Retry }

// Lookup returns the registry entry for c. Codes without an entry of their
// own get the entry of their range (3000–3999 registered, 4000–4999 private
// use, 1016–2999 reserved, …); Lookup never fails.
func Lookup(c Code) Info {
	if info, ok := registry[c]; ok {
		return info
	}
	info := rangeInfo(c)
	info.Code = c
	return info
}

// Known reports whether c has an entry of its own (not only a range entry).
func Known(c Code) bool {
	_, ok := registry[c]
	return ok
}

// All returns every entry of its own, in code order, followed by the range
// entries (with Code set to the first code of the range).
func All() []Info {
	out := make([]Info, 0, len(order)+len(ranges))
	for _, c := range order {
		out = append(out, registry[c])
	}
	for _, r := range ranges {
		info := r.info
		info.Code = r.lo
		out = append(out, info)
	}
	return out
}

// Range returns the first and last code of the range that c's range entry
// covers, or c, c for a code with an entry of its own.
func Range(c Code) (lo, hi Code) {
	if Known(c) {
		return c, c
	}
	for _, r := range ranges {
		if c >= r.lo && c <= r.hi {
			return r.lo, r.hi
		}
	}
	return c, c
}

// Parse reads a code written in decimal ("1013"). It rejects anything that
// is not a number in 0–65535, the range a Close frame can carry.
func Parse(s string) (Code, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("closecode: %q is not a close code: want a decimal number such as 1000 or 1013", s)
	}
	if n < 0 || n > 65535 {
		return 0, fmt.Errorf("closecode: %d is out of range: a close code is a 16-bit number (0–65535)", n)
	}
	return Code(n), nil
}
