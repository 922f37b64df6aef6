package session

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/explain"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/websocket"
)

// events reports what happens in a session: as JSON lines on out, or as
// messages on out and text events on diag.
type events struct {
	out, diag io.Writer
	json      bool
}

// The JSON events. Field names are snake_case; durations are seconds
// rounded to the millisecond (suffix _s).
type (
	openEvent struct {
		Event       string `json:"event"` // "open"
		URL         string `json:"url"`
		Attempt     *int   `json:"attempt,omitempty"` // with Reconnect
		Subprotocol string `json:"subprotocol"`
		Extensions  string `json:"extensions"`
	}
	messageEvent struct {
		Event  string  `json:"event"` // "message"
		Type   string  `json:"type"`  // "text" or "binary"
		Size   int     `json:"size"`
		Data   *string `json:"data,omitempty"`   // text
		Base64 *string `json:"base64,omitempty"` // binary
	}
	// closedEvent reports the close code that ended a connection, with
	// the registry's view of it.
	closedEvent struct {
		Event       string   `json:"event"` // "closed"
		Code        int      `json:"code"`
		Name        string   `json:"name"`
		By          string   `json:"by"` // ByServer, ByClient, ByNobody
		Reason      string   `json:"reason"`
		RetryAfterS *float64 `json:"retry_after_s,omitempty"`
		SentCode    int      `json:"sent_code,omitempty"`
		RetryClass  string   `json:"retry_class"`
		Description string   `json:"description"`
		Fix         string   `json:"fix"`
		Required    []string `json:"required,omitempty"` // 1010
		Offered     *string  `json:"offered,omitempty"`  // 1010
		Answered    *string  `json:"answered,omitempty"` // 1010
		Missing     []string `json:"missing,omitempty"`  // 1010
		Error       string   `json:"error,omitempty"`    // cause of a 1006
	}
	warningEvent struct {
		Event   string `json:"event"` // "warning"
		Warning string `json:"warning"`
	}
	errorEvent struct {
		Event       string   `json:"event"` // "error"
		Error       string   `json:"error"`
		Status      int      `json:"status,omitempty"`
		RetryAfterS *float64 `json:"retry_after_s,omitempty"`
	}
)

// secs returns d in seconds rounded to the millisecond, for JSON.
func secs(d time.Duration) float64 {
	return math.Round(d.Seconds()*1000) / 1000
}

func secsPtr(d time.Duration) *float64 {
	s := secs(d)
	return &s
}

// emit writes v as one JSON line on out, in one write.
func (ev *events) emit(v any) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		// Only unsupported values fail; everything here is strings and
		// numbers.
		fmt.Fprintf(&b, `{"event":"error","error":%q}`+"\n", err.Error())
	}
	io.WriteString(ev.out, b.String())
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// open reports a connection that opened; attempt is -1 without Reconnect.
func (ev *events) open(u, subprotocol, extensions string, attempt int) {
	if ev.json {
		e := openEvent{Event: "open", URL: u, Subprotocol: subprotocol, Extensions: extensions}
		if attempt >= 0 {
			e.Attempt = &attempt
		}
		ev.emit(e)
		return
	}
	prefix := ""
	if attempt >= 0 {
		prefix = "open: "
	}
	fmt.Fprintf(ev.diag, "%sconnected to %s (subprotocol: %s, extensions: %s)\n", prefix, u, orNone(subprotocol), orNone(extensions))
}

// openFrom reports the open of a connection Dial did not return (the
// server closed it at once, or this client did with 1010), from the 101
// response: the same words as for a connection that stayed open.
func (ev *events) openFrom(u string, resp *http.Response) {
	ev.open(u, resp.Header.Get("Sec-WebSocket-Protocol"), strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", "), -1)
}

var newline = []byte{'\n'}

// message writes a received message: text as it is, binary as
// "[binary N B] " and its base64, or a JSON message event.
func (ev *events) message(typ websocket.MessageType, p []byte) {
	switch {
	case ev.json && typ == websocket.MessageText:
		s := string(p)
		ev.emit(messageEvent{Event: "message", Type: "text", Size: len(p), Data: &s})
	case ev.json:
		s := base64.StdEncoding.EncodeToString(p)
		ev.emit(messageEvent{Event: "message", Type: "binary", Size: len(p), Base64: &s})
	case typ == websocket.MessageText:
		// Two writes rather than a copy of a message that may be large;
		// only the printer writes messages to out.
		ev.out.Write(p)
		ev.out.Write(newline)
	default:
		fmt.Fprintf(ev.out, "[binary %d B] ", len(p))
		enc := base64.NewEncoder(base64.StdEncoding, ev.out)
		enc.Write(p)
		enc.Close()
		ev.out.Write(newline)
	}
}

// warn reports a problem that does not end the session, on diag (text) or
// as a warning event.
func (ev *events) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if ev.json {
		ev.emit(warningEvent{Event: "warning", Warning: msg})
		return
	}
	fmt.Fprintf(ev.diag, "warning: %s\n", msg)
}

// failed reports the failure that ends a session without a close code:
// an error event in JSON mode; in text mode the caller prints it.
func (ev *events) failed(err error) {
	if !ev.json {
		return
	}
	e := errorEvent{Event: "error", Error: err.Error()}
	var he *websocket.HandshakeError
	if errors.As(err, &he) {
		e.Status = he.StatusCode
		if he.RetryAfter > 0 {
			e.RetryAfterS = secsPtr(he.RetryAfter)
		}
	}
	ev.emit(e)
}

// closedJSON is the JSON form of cl.
func closedJSON(cl *Close) closedEvent {
	info := closecode.Lookup(cl.Code)
	e := closedEvent{
		Event: "closed", Code: int(cl.Code), Name: info.Name, By: cl.By, Reason: cl.Reason,
		SentCode: int(cl.Sent), RetryClass: info.Retry.String(), Description: info.Description, Fix: info.Fix,
	}
	if cl.HasRetryAfter {
		e.RetryAfterS = secsPtr(cl.RetryAfter)
	}
	if me := cl.Mandatory; me != nil {
		e.Required, e.Offered, e.Answered, e.Missing = me.Required, &me.Offered, &me.Answered, me.Missing
	}
	if cl.Err != nil {
		e.Error = handshake.Explain(cl.Err)
	}
	return e
}

// closed reports the close code that ended a connection: who sent it, the
// reason, the server's hint, what the registry says it means and how to
// fix it.
func (ev *events) closed(cl *Close) {
	if ev.json {
		ev.emit(closedJSON(cl))
		return
	}
	var b strings.Builder
	switch {
	case cl.Sent != 0 && cl.Code != closecode.AbnormalClosure:
		fmt.Fprintf(&b, "connection closed by this client with %s; the server answered %s", cl.Sent, cl.Code)
	case cl.Sent != 0:
		fmt.Fprintf(&b, "connection closed by this client with %s; then lost without the server's answer (%s)", cl.Sent, cl.Code)
	case cl.By == ByServer:
		fmt.Fprintf(&b, "connection closed by the server: %s", cl.Code)
	case cl.By == ByNobody:
		fmt.Fprintf(&b, "connection lost: %s", cl.Code)
	default:
		fmt.Fprintf(&b, "connection closed by this client: %s", cl.Code)
	}
	if cl.Reason != "" {
		fmt.Fprintf(&b, ": %q", cl.Reason)
	}
	if cl.Err != nil {
		fmt.Fprintf(&b, ": %s", handshake.Explain(cl.Err))
	}
	b.WriteByte('\n')
	if me := cl.Mandatory; me != nil {
		field(&b, "required:", strings.Join(me.Required, ", "))
		field(&b, "offered:", orNone(me.Offered))
		field(&b, "answered:", orNone(me.Answered))
		field(&b, "missing:", orNone(strings.Join(me.Missing, "; ")))
	}
	writeExplanation(&b, cl.Code, cl.RetryAfter, cl.HasRetryAfter)
	io.WriteString(ev.diag, b.String())
}

// Layout of the explanation under a close: a label column, wrapped text.
const (
	labelWidth = 13
	lineWidth  = 78
)

func field(w io.Writer, label, text string) {
	explain.WriteField(w, "  ", label, labelWidth, text, lineWidth)
}

// writeExplanation writes the registry's view of code: retry class (with
// the server's hint), the one-line meaning, the fix (unless the code means
// success) and where to read more.
func writeExplanation(w io.Writer, code closecode.Code, hint time.Duration, hasHint bool) {
	info := closecode.Lookup(code)
	retry := info.Retry.String()
	if hasHint {
		retry += fmt.Sprintf("; the server asks to wait at least %v", roundHuman(hint))
	}
	field(w, "retry class:", retry)
	field(w, "means:", explain.Summary(code))
	if !normalEnd(code) {
		field(w, "fix:", info.Fix)
	}
	field(w, "details:", fmt.Sprintf("ebb explain %d", int(code)))
}

// roundHuman rounds d for people: 4.6s, 250ms.
func roundHuman(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// plural returns "1 message", "2 messages".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
