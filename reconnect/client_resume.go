package reconnect

import (
	"fmt"
	"math"
	"net/url"
	"strconv"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// ResumeOptions configure a resuming Client (Options.Resume). The zero
// value starts with live messages and resumes from whatever the client
// delivered last.
type ResumeOptions struct {
	// From is the sequence of the first message wanted on the first
	// connection, e.g. LastSeq()+1 saved by an earlier run of the program.
	// Zero asks for live messages only.
	From uint64
}

// ResumeStatus says whether a connection of a Client speaks the resume
// protocol (Event.Resume).
type ResumeStatus int

// The resume status of a connection.
const (
	// ResumeOff: the client does not resume (Options.Resume is nil).
	ResumeOff ResumeStatus = iota
	// ResumeAccepted: the server selected ResumeSubprotocol; the client
	// asked for what it missed (Event.From) and drops duplicates.
	ResumeAccepted
	// ResumeRefused: the client offered ResumeSubprotocol and the server
	// did not select it. Messages on this connection are plain: the client
	// cannot number them, drop duplicates or notice losses, and Read
	// reports a *GapError (GapNoResume) before them whenever messages may
	// have been published while the client was away. The position does
	// not move: if a later connection resumes, it asks for what followed
	// the last numbered message, so messages read plain may come again
	// (the client prefers a duplicate to a silent loss).
	ResumeRefused
)

func (s ResumeStatus) String() string {
	switch s {
	case ResumeOff:
		return "off"
	case ResumeAccepted:
		return "accepted"
	case ResumeRefused:
		return "refused"
	}
	return fmt.Sprintf("ResumeStatus(%d)", int(s))
}

// GapReason says why messages are missing (GapError.Reason).
type GapReason int

// Why a resuming client reports a gap.
const (
	// GapTooOld: the server's history no longer holds them ("!gap").
	GapTooOld GapReason = iota + 1
	// GapReset: the server's numbering restarted below what the client
	// had delivered: its history was reset (a standalone server restarted
	// without its store, or the client moved to another cluster). Next is
	// in the new numbering, below From.
	GapReset
	// GapNoResume: the client could not ask for what it missed: the
	// server did not select ResumeSubprotocol (Next is 0 and the messages
	// that follow are plain), or an earlier connection ended before the
	// client learned its position (From is 0).
	GapNoResume
)

func (r GapReason) String() string {
	switch r {
	case GapTooOld:
		return "too old"
	case GapReset:
		return "reset"
	case GapNoResume:
		return "no resume"
	}
	return fmt.Sprintf("GapReason(%d)", int(r))
}

// GapError is what Read returns, in order with the messages, where a
// resuming client's stream has a hole: nothing is skipped silently. It is
// not final: Read goes on with the messages after the gap. An application
// that keeps state derived from the stream resyncs it here (reloads a
// snapshot, say); one that only shows the stream may log it and go on:
//
//	var gap *reconnect.GapError
//	if errors.As(err, &gap) {
//		log.Println(gap)
//		continue
//	}
type GapError struct {
	// Reason says why the messages are missing.
	Reason GapReason
	// From is the first sequence that may be missing; 0 when unknown.
	From uint64
	// Next is the sequence delivery continues with; 0 when unknown.
	Next uint64
}

func (e *GapError) Error() string {
	switch e.Reason {
	case GapTooOld:
		return fmt.Sprintf("reconnect: %s lost (no longer in the server's history); delivery continues with %d", span(e.From, e.Next), e.Next)
	case GapReset:
		return fmt.Sprintf("reconnect: the server's numbering restarted at %d, below the %d the client asked for: its history was reset (a restart without its store?); messages from %d on in the old numbering may be lost; delivery continues with %d", e.Next, e.From, e.From, e.Next)
	case GapNoResume:
		if e.Next == 0 {
			from := ""
			if e.From > 0 {
				from = fmt.Sprintf(" (from %d on)", e.From)
			}
			return "reconnect: the server did not select the subprotocol " + ResumeSubprotocol + ", so messages published while the client was away" + from + " cannot be asked for and may be lost; the messages that follow are plain: enable resume on the server"
		}
		return fmt.Sprintf("reconnect: the connection ended before the client learned its position, so messages before %d published while it was away may be lost; delivery continues with %d", e.Next, e.Next)
	}
	return fmt.Sprintf("reconnect: gap (%v) from %d to %d", e.Reason, e.From, e.Next)
}

// span renders the messages from … next-1.
func span(from, next uint64) string {
	if next-from == 1 {
		return fmt.Sprintf("message %d is", from)
	}
	return fmt.Sprintf("messages %d–%d (%d) are", from, next-1, next-from)
}

// resumed acts on one message of a resuming connection: it delivers data
// that is not a duplicate, reports gaps, and records !live. Only readLoop
// changes the position, and only after Read took what moved it, so a
// message that never reached Read is asked for again.
func (c *Client) resumed(m ResumeMessage, typ websocket.MessageType, reconnected bool) {
	c.mu.Lock()
	known, last := c.known, c.last
	c.mu.Unlock()
	switch m.Kind {
	case ResumeData:
		if known && m.Seq <= last {
			return // a duplicate across a reconnection
		}
		if c.deliver(inbound{typ: typ, data: m.Payload, seq: m.Seq, hasSeq: true}) {
			c.advance(m.Seq)
		}
	case ResumeGap:
		if known && m.Next-1 <= last {
			return // the gap ends before anything not yet delivered
		}
		g := &GapError{Reason: GapTooOld, From: m.From, Next: m.Next}
		if known && g.From <= last {
			g.From = last + 1
		}
		c.deliverGap(g)
	case ResumeLive:
		c.mu.Lock()
		c.live = true
		c.mu.Unlock()
		if c.log != nil {
			c.log.Debug("reconnect: live", "url", c.url, "next", m.Next)
		}
		switch {
		case !known && reconnected:
			// An earlier connection ended before the client learned its
			// position: what was published meanwhile cannot be asked for.
			c.deliverGap(&GapError{Reason: GapNoResume, Next: m.Next})
		case !known:
			// The position, before anything was read: LastSeq reports it
			// at once (no Read can race with this: nothing numbered was
			// delivered yet).
			c.mu.Lock()
			c.known, c.last, c.readSeq = true, m.Next-1, m.Next-1
			c.mu.Unlock()
		case m.Next <= last:
			// The server's next message is one the client already has:
			// its numbering restarted. Without moving back, every new
			// message would be dropped as a duplicate.
			c.deliverGap(&GapError{Reason: GapReset, From: last + 1, Next: m.Next})
		}
	case ResumeOther:
		if c.log != nil {
			c.log.Debug("reconnect: ignoring an unknown "+ResumeSubprotocol+" control", "url", c.url, "word", m.Word)
		}
	}
}

// deliverGap reports g through Read (and the logger) and, once Read took
// it, moves the position to the message before g.Next.
func (c *Client) deliverGap(g *GapError) {
	if c.log != nil {
		c.log.Warn(g.Error(), "url", c.url)
	}
	m := inbound{err: g}
	if g.Next > 0 {
		m.seq, m.hasSeq = g.Next-1, true
	}
	if c.deliver(m) && g.Next > 0 {
		c.mu.Lock()
		c.known, c.last = true, g.Next-1
		c.mu.Unlock()
	}
}

// advance records that seq was delivered.
func (c *Client) advance(seq uint64) {
	c.mu.Lock()
	c.known, c.last = true, seq
	c.mu.Unlock()
}

// resumeFrom is the from of the next connection: the sequence after the
// last one delivered, or 0 to start live (no position yet, or not
// resuming).
func (c *Client) resumeFrom() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.resume || !c.known || c.last == math.MaxUint64 {
		return 0
	}
	return c.last + 1
}

// resumeURL adds from to rawURL's query, keeping the rest as it is.
func resumeURL(rawURL string, from uint64) string {
	if from == 0 {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL // checked by New: unreachable
	}
	if u.RawQuery != "" {
		u.RawQuery += "&"
	}
	u.RawQuery += ResumeFromParam + "=" + strconv.FormatUint(from, 10)
	return u.String()
}

// malformedReason is the close reason for a malformed message.
func malformedReason(me *MalformedResumeError) string {
	why := ""
	if me != nil {
		why = ": " + me.Why
	}
	return closecode.TruncateReason("malformed "+ResumeSubprotocol+" message"+why, closecode.MaxReasonBytes)
}

// LastSeq returns the sequence of the last message Read returned on a
// resuming client (the end of the gap, for a *GapError), or, before any,
// the position the server gave with "!live" (or ResumeOptions.From-1), or
// 0. Save it to continue after a restart: a new client with
// ResumeOptions{From: LastSeq() + 1} asks for exactly what comes next.
func (c *Client) LastSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readSeq
}

// Live reports whether the current connection of a resuming client has
// replayed everything it was asked for (the server sent "!live"): the
// messages Read returns from then on are live. It is false while the link
// is down or replaying, and on a client that does not resume.
func (c *Client) Live() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}
