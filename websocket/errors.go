package websocket

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// CloseError reports how a connection ended: the close code and reason, and
// which side chose them. Every error that ends a Conn's Read is, or wraps, a
// *CloseError; use errors.As or CloseStatus to get at it.
type CloseError struct {
	// Code is the close code. For a connection that ended without a Close
	// frame it is 1006 (Abnormal Closure); for a Close frame without a code,
	// 1005 (No Status Received).
	Code closecode.Code
	// Reason is the close reason from the Close frame, or, for a close this
	// endpoint initiated because of a protocol error, what was wrong.
	Reason string
	// Remote is true when the peer sent the Close frame, false when this
	// endpoint did (or when there was no Close frame at all).
	Remote bool
	// Err is the underlying cause when there is one (for example the network
	// error behind a 1006).
	Err error
}

func (e *CloseError) Error() string {
	var b strings.Builder
	b.WriteString("websocket: ")
	switch {
	case e.Code == closecode.AbnormalClosure:
		b.WriteString("connection lost without a close frame (1006 Abnormal Closure)")
	case e.Remote:
		b.WriteString("peer closed the connection with ")
		b.WriteString(e.Code.String())
	default:
		b.WriteString("closed the connection with ")
		b.WriteString(e.Code.String())
	}
	if e.Reason != "" {
		fmt.Fprintf(&b, ": %q", e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *CloseError) Unwrap() error { return e.Err }

// CloseStatus returns the close code of the *CloseError in err's chain, or
// -1 when there is none.
func CloseStatus(err error) closecode.Code {
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// HandshakeError is returned by Dial when the server answered the upgrade
// request with something other than a valid 101 response.
type HandshakeError struct {
	// StatusCode is the HTTP status the server sent (0 if the failure came
	// after a 101, for example a bad Sec-WebSocket-Accept).
	StatusCode int
	// RetryAfter is the server's Retry-After header as a delay, or 0.
	RetryAfter time.Duration
	// Body holds the start of the response body (at most 1 KiB), which
	// usually explains a refusal.
	Body string
	// Reason says what was wrong.
	Reason string
}

func (e *HandshakeError) Error() string {
	var b strings.Builder
	b.WriteString("websocket: handshake failed: ")
	b.WriteString(e.Reason)
	if e.StatusCode != 0 && e.StatusCode != http.StatusSwitchingProtocols {
		fmt.Fprintf(&b, " (HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
		if e.RetryAfter > 0 {
			fmt.Fprintf(&b, ", Retry-After %s", e.RetryAfter)
		}
		b.WriteString(")")
	}
	if body := strings.TrimSpace(e.Body); body != "" {
		fmt.Fprintf(&b, ": %q", body)
	}
	return b.String()
}

// ErrClosed is returned by writes and reads on a connection that has already
// ended; it is wrapped together with the *CloseError that ended it.
var ErrClosed = errors.New("websocket: connection closed")

// protocolError is a violation of RFC 6455 found while reading; it becomes a
// Close frame with its code.
type protocolError struct {
	code   closecode.Code
	reason string
	// peerClosed is set when the violation was in the peer's Close frame:
	// the peer is closing already and will not send another one.
	peerClosed bool
}

func (e *protocolError) Error() string { return e.reason }

func errProtocol(format string, args ...any) error {
	return &protocolError{code: closecode.ProtocolError, reason: fmt.Sprintf(format, args...)}
}

func errInvalidData(format string, args ...any) error {
	return &protocolError{code: closecode.InvalidFramePayloadData, reason: fmt.Sprintf(format, args...)}
}

func errTooBig(format string, args ...any) error {
	return &protocolError{code: closecode.MessageTooBig, reason: fmt.Sprintf(format, args...)}
}
