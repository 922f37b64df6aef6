package reconnect

import (
	"fmt"

	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// maxRetryAfter bounds an HTTP Retry-After the policy trusts, matching
// closecode.ParseRetryHint: a larger value is more likely a bug or an
// attack than a plan, and is ignored rather than obeyed.
const maxRetryAfter = 24 * time.Hour

// Policy decides whether to reconnect after a connection or a handshake
// ended, and bounds how long a client keeps trying. It needs no WebSocket
// library: callers pass the close code and reason, or the HTTP status and
// header of a refused handshake, that their own library reported.
//
// The zero value is the default policy: default Backoff, a 10 s stable
// period, no cap on attempts or time, 1000 ends the link, and private-use
// codes without a rule end it too.
type Policy struct {
	// Backoff computes the delay before each attempt.
	Backoff Backoff
	// StablePeriod is how long a connection must stay up before the attempt
	// counter goes back to zero. A server that accepts and then drops
	// clients sooner ("flapping") keeps the counter growing, so its clients
	// back off instead of hammering it. Zero or negative means
	// DefaultStablePeriod.
	StablePeriod time.Duration
	// RestartStable is how long a connection must have stayed up for a
	// close with 1012 Service Restart (retry class Soon) to count as
	// stable, resetting the attempt counter like StablePeriod does. A
	// server that closes with 1012 after serving a client is restarting
	// on purpose — in a rolling restart the next node may do the same a
	// few seconds later — and its retry hint already paces the return, so
	// the client need not add growing backoff on top; a server that sends
	// 1012 sooner after accepting is looping, and still gets backoff. Zero
	// or negative means DefaultRestartStable.
	RestartStable time.Duration
	// MaxAttempts caps the reconnect attempts in a row without a stable
	// connection; when it is reached the client gives up with
	// ErrMaxAttempts. Zero means no cap.
	MaxAttempts int
	// MaxElapsed caps the time since the link was last stable (or since the
	// client started); a client whose next delay would end past it gives up
	// at once with ErrMaxElapsed instead of waiting in vain. Zero means no
	// cap.
	MaxElapsed time.Duration
	// Persistent keeps the link up after a normal closure (1000) or an
	// empty close frame (1005), which otherwise mean "done". Use it for
	// links that should always be there, such as a live feed.
	Persistent bool
	// Application decides codes whose retry class is
	// closecode.Application: private-use 4000–4999 and registered
	// 3000–3999 codes without an entry of their own. It returns true to
	// reconnect. Nil means stop: the client cannot know what an
	// application's own code means, and retrying blindly is the failure
	// this package exists to avoid.
	Application func(code closecode.Code, reason string) bool
}

func (p Policy) restartStable() time.Duration {
	if p.RestartStable <= 0 {
		return DefaultRestartStable
	}
	return p.RestartStable
}

func (p Policy) stablePeriod() time.Duration {
	if p.StablePeriod <= 0 {
		return DefaultStablePeriod
	}
	return p.StablePeriod
}

// Decision is the policy's verdict on how a connection or a handshake
// ended.
type Decision struct {
	// Retry reports whether to reconnect.
	Retry bool
	// Class is the retry class the verdict follows. For an HTTP answer it
	// is Backoff for 429 and 5xx and Permanent for anything else.
	Class closecode.RetryClass
	// Code is the close code the connection ended with (1006 when it was
	// lost without one), or 0 when the handshake was refused over HTTP.
	Code closecode.Code
	// Reason is the close reason as received.
	Reason string
	// Status is the HTTP status of a refused handshake, or 0.
	Status int
	// Hint is the server's minimum delay before the next attempt: the
	// retry-after= of a close reason or the Retry-After of an HTTP answer.
	// Zero when there is none or when Retry is false.
	Hint time.Duration
	// Why explains the verdict in words, for logs and events, e.g.
	// "1008 Policy Violation is permanent: retrying repeats the failure".
	Why string
	// Err is the error that ended the connection or the attempt, when the
	// caller has one. The policy does not set it; the Client does.
	Err error
}

// String returns Why.
func (d Decision) String() string { return d.Why }

// Decide returns the verdict on a connection that ended with code and
// reason. The code's retry class (closecode.Classify) decides: Backoff and
// Soon retry; Done (1000) and Depends (1005, an empty close frame) retry
// only when Persistent; Application codes follow the Application rule;
// Permanent, UntilConfigChange (1010) and Invalid codes stop. A
// retry-after= hint in the reason of a retried close becomes Hint.
//
// Soon (1012) has one rule of its own, in Schedule: a connection that was
// up for RestartStable before the restart counts as stable, so its first
// delay is short (and no sooner than the hint) even when the previous node
// of a rolling restart moved it a moment before, while a server stuck in a
// restart loop still gets backoff.
func (p Policy) Decide(code closecode.Code, reason string) Decision {
	class := closecode.Classify(code)
	d := Decision{Class: class, Code: code, Reason: reason}
	name := code.String()
	switch class {
	case closecode.Backoff, closecode.Soon:
		d.Retry = true
		d.Why = name + ": " + class.String()
	case closecode.Done, closecode.Depends:
		d.Retry = p.Persistent
		if p.Persistent {
			d.Why = name + ": the peer ended the link, and the link is persistent: retry with backoff"
		} else {
			d.Why = name + ": the peer ended the link on purpose; not reconnecting (set Persistent to keep the link up)"
		}
	case closecode.Application:
		if p.Application == nil {
			d.Why = name + ": the application decides, and no Application rule is set; not reconnecting"
		} else {
			d.Retry = p.Application(code, reason)
			if d.Retry {
				d.Why = name + ": the Application rule says retry"
			} else {
				d.Why = name + ": the Application rule says stop"
			}
		}
	case closecode.Permanent:
		d.Why = name + " is permanent: retrying repeats the failure; " + closecode.Lookup(code).Fix
	case closecode.UntilConfigChange:
		d.Why = name + " is permanent until the configuration changes: " + closecode.Lookup(code).Fix
	default:
		d.Why = name + " is not a valid close code: the peer broke the protocol; not reconnecting"
	}
	if d.Retry {
		if h, ok := closecode.ParseRetryHint(reason); ok {
			d.Hint = h
			d.Why += fmt.Sprintf(", not before the server's hint of %v", h)
		}
	}
	return d
}

// DecideHTTP returns the verdict on a handshake the server refused with an
// HTTP status other than 101. 429 Too Many Requests and 503 Service
// Unavailable say "come back later", and any 5xx may be transient: those
// retry, with their Retry-After header (seconds or an HTTP date, read at
// now) as Hint. Any other 4xx means the request itself is wrong
// (authentication, path, origin) and stops, as do 1xx, 2xx and 3xx answers,
// which mean the URL does not lead to a WebSocket endpoint.
func (p Policy) DecideHTTP(status int, header http.Header, now time.Time) Decision {
	d := Decision{Status: status, Class: closecode.Permanent}
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	text = strings.TrimSpace(text)
	switch {
	case status == http.StatusTooManyRequests || status >= 500 && status <= 599:
		d.Retry = true
		d.Class = closecode.Backoff
		d.Why = "handshake refused with HTTP " + text + ": retry with backoff"
		if h, ok := ParseRetryAfter(header.Get("Retry-After"), now); ok {
			d.Hint = h
			d.Why += fmt.Sprintf(", not before the server's Retry-After of %v", h)
		}
	case status >= 400 && status <= 499:
		d.Why = "handshake refused with HTTP " + text + ": the request itself is refused (credentials, path or origin); retrying repeats the failure"
	default:
		d.Why = "handshake answered with HTTP " + text + " instead of 101 Switching Protocols: the URL does not lead to a WebSocket endpoint; not reconnecting"
	}
	return d
}

// ParseRetryAfter reads an HTTP Retry-After value (RFC 9110 §10.2.3):
// either delay-seconds or an HTTP date, which is measured from now. It
// reports false for an empty or malformed value or one over a day; a date
// in the past gives 0 and true.
func ParseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if value[0] >= '0' && value[0] <= '9' {
		secs, err := strconv.ParseUint(value, 10, 64)
		if err != nil || secs > uint64(maxRetryAfter/time.Second) {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(value)
	if err != nil {
		return 0, false
	}
	d := at.Sub(now)
	switch {
	case d < 0:
		return 0, true
	case d > maxRetryAfter:
		return 0, false
	}
	return d, true
}
