package reconnect

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/ebb-ws/ebb/websocket"
)

// The wire format of ebb's resume protocol, version 1: the one
// implementation of RESUME.md that ebb's servers and clients share. It is a
// codec and nothing else: it keeps no state and does no I/O.
const (
	// ResumeSubprotocol is the subprotocol (Sec-WebSocket-Protocol) a
	// client offers and a server selects to speak the resume protocol. When
	// the server does not select it, messages are plain and nothing is
	// resumed.
	ResumeSubprotocol = "ebb.resume.v1"
	// ResumeFromParam is the query parameter of the handshake request that
	// carries the sequence of the first message the client wants (the last
	// one it delivered, plus one). Without it the server starts with live
	// messages. A server answers a value that ParseResumeFrom rejects with
	// HTTP 400, before the upgrade.
	ResumeFromParam = "from"
)

// ResumeKind says what a message of the resume protocol is.
type ResumeKind int

// The kinds of resume messages. The zero value means "none".
const (
	// ResumeData is a broadcast message: Seq and Payload are set. Its
	// frame type is the original message's.
	ResumeData ResumeKind = iota + 1
	// ResumeGap ("!gap <from> <next>") says the messages From … Next-1 are
	// no longer in the server's history; delivery goes on with Next.
	ResumeGap
	// ResumeLive ("!live <next>") says the replay is over: every message
	// before Next that the client asked for was sent, the rest is live. A
	// Next at or below the client's last delivered sequence means the
	// server's numbering restarted (its history was reset).
	ResumeLive
	// ResumeOther is a control message with a word this version does not
	// know (Word is set). Clients ignore it, so that servers can add
	// controls without breaking them.
	ResumeOther
)

func (k ResumeKind) String() string {
	switch k {
	case ResumeData:
		return "data"
	case ResumeGap:
		return "gap"
	case ResumeLive:
		return "live"
	case ResumeOther:
		return "other"
	}
	return "none"
}

// ResumeMessage is one decoded message of the resume protocol. Which
// fields are set depends on Kind.
type ResumeMessage struct {
	Kind ResumeKind
	// Seq is a data message's sequence, ≥ 1 (ResumeData).
	Seq uint64
	// From is the first missing sequence (ResumeGap).
	From uint64
	// Next is the sequence delivery continues with (ResumeGap, ResumeLive).
	Next uint64
	// Payload is the original message (ResumeData). It aliases the slice
	// given to ParseResumeMessage: no copy is made.
	Payload []byte
	// Word is the control word of an unknown control, cut to 64 bytes
	// (ResumeOther).
	Word string
}

// maxSeqDigits is the length of math.MaxUint64 in decimal.
const maxSeqDigits = 20

// maxWord bounds ResumeMessage.Word, so that a hostile control does not
// make the client copy megabytes for a log line.
const maxWord = 64

// AppendResumeData appends the payload of a data message, seq then "\n"
// then payload, to dst and returns the extended slice. Send it in a frame
// of the original message's type; a valid UTF-8 payload stays valid UTF-8.
// It costs one copy of payload. seq must be at least 1: it panics on 0,
// a numbering bug that every client would reject.
func AppendResumeData(dst []byte, seq uint64, payload []byte) []byte {
	if seq == 0 {
		panic("reconnect: AppendResumeData with sequence 0: sequences start at 1")
	}
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '\n')
	return append(dst, payload...)
}

// AppendResumeGap appends the text of "!gap <from> <next>" to dst: the
// messages from … next-1 are gone from the history. It panics unless
// 1 ≤ from < next (a bug in the caller, which clients would reject).
func AppendResumeGap(dst []byte, from, next uint64) []byte {
	if from == 0 || next <= from {
		panic(fmt.Sprintf("reconnect: AppendResumeGap(%d, %d): want 1 ≤ from < next", from, next))
	}
	dst = append(dst, "!gap "...)
	dst = strconv.AppendUint(dst, from, 10)
	dst = append(dst, ' ')
	return strconv.AppendUint(dst, next, 10)
}

// AppendResumeLive appends the text of "!live <next>" to dst: the replay
// is over and the next message is next. It panics on 0. A server whose
// history was reset answers a client's from with the next sequence of its
// new numbering, which the client recognises because it is below from.
func AppendResumeLive(dst []byte, next uint64) []byte {
	if next == 0 {
		panic("reconnect: AppendResumeLive with sequence 0: sequences start at 1")
	}
	dst = append(dst, "!live "...)
	return strconv.AppendUint(dst, next, 10)
}

// ParseResumeFrom parses the value of the from query parameter: a decimal
// sequence ≥ 1 without sign or leading zeros. Servers answer an error with
// HTTP 400 and the error's text.
func ParseResumeFrom(s string) (uint64, error) {
	n, why := parseSeq([]byte(s))
	if why != "" {
		return 0, fmt.Errorf("reconnect: query parameter %s=%q: %s; want the sequence of the first message wanted, a decimal number ≥ 1 without leading zeros", ResumeFromParam, s, why)
	}
	return n, nil
}

// MalformedResumeError reports a message that breaks the resume protocol:
// the peer does not speak ebb.resume.v1 correctly. Retrying does not help;
// the sender must be fixed.
type MalformedResumeError struct {
	// Type is the frame type of the message.
	Type websocket.MessageType
	// Head is the start of the message, at most 32 bytes.
	Head string
	// Len is the length of the whole message.
	Len int
	// Why says what is wrong and what was expected.
	Why string
}

func (e *MalformedResumeError) Error() string {
	head := strconv.Quote(e.Head)
	if e.Len > len(e.Head) {
		head += fmt.Sprintf("… (%d bytes)", e.Len)
	}
	return fmt.Sprintf("reconnect: malformed %s message (%s %s): %s", ResumeSubprotocol, e.Type, head, e.Why)
}

func malformed(typ websocket.MessageType, p []byte, format string, args ...any) (ResumeMessage, error) {
	head := p[:min(len(p), 32)]
	return ResumeMessage{}, &MalformedResumeError{Type: typ, Head: string(head), Len: len(p), Why: fmt.Sprintf(format, args...)}
}

// ParseResumeMessage decodes a message received on a connection that
// selected ResumeSubprotocol. It never panics and never copies: the
// payload of a data message aliases p. Malformed input gives a
// *MalformedResumeError that says what was expected; an unknown control
// word is not an error (ResumeOther).
func ParseResumeMessage(typ websocket.MessageType, p []byte) (ResumeMessage, error) {
	if typ != websocket.MessageText && typ != websocket.MessageBinary {
		return malformed(typ, p, "message type %d is neither text nor binary", int(typ))
	}
	if len(p) == 0 {
		return malformed(typ, p, "empty message: want a sequence and a newline before the payload, or a text control starting with \"!\"")
	}
	switch c := p[0]; {
	case c >= '0' && c <= '9':
		nl := 1
		for nl < len(p) && nl <= maxSeqDigits && p[nl] >= '0' && p[nl] <= '9' {
			nl++
		}
		switch {
		case nl > maxSeqDigits:
			return malformed(typ, p, "sequence of more than %d digits: want a decimal sequence ≤ 18446744073709551615 and a newline before the payload", maxSeqDigits)
		case nl == len(p):
			return malformed(typ, p, "sequence %q is not followed by a newline: want the sequence, a newline, then the payload", p)
		case p[nl] != '\n':
			return malformed(typ, p, "sequence %q is followed by %q: want a newline, then the payload", p[:nl], rune(p[nl]))
		}
		seq, why := parseSeq(p[:nl])
		if why != "" {
			return malformed(typ, p, "sequence %q: %s", p[:nl], why)
		}
		return ResumeMessage{Kind: ResumeData, Seq: seq, Payload: p[nl+1:]}, nil
	case c == '!':
		if typ != websocket.MessageText {
			return malformed(typ, p, "a control message in a binary frame: controls (\"!…\") are text")
		}
		return parseControl(p)
	default:
		return malformed(typ, p, "starts with %q: want a decimal sequence (data) or \"!\" (a text control)", rune(c))
	}
}

// parseControl decodes "!<word>[ <args>]"; p starts with "!" and is text.
func parseControl(p []byte) (ResumeMessage, error) {
	word, args, _ := bytes.Cut(p[1:], []byte(" "))
	switch string(word) {
	case "gap":
		a, b, ok := bytes.Cut(args, []byte(" "))
		if !ok {
			return malformed(websocket.MessageText, p, "want \"!gap <from> <next>\", two sequences after the word")
		}
		from, why := parseSeq(a)
		if why != "" {
			return malformed(websocket.MessageText, p, "!gap from %q: %s", a, why)
		}
		next, why := parseSeq(b)
		if why != "" {
			return malformed(websocket.MessageText, p, "!gap next %q: %s", b, why)
		}
		if next <= from {
			return malformed(websocket.MessageText, p, "!gap %d %d: want from < next (the gap is from … next-1)", from, next)
		}
		return ResumeMessage{Kind: ResumeGap, From: from, Next: next}, nil
	case "live":
		next, why := parseSeq(args)
		if why != "" {
			return malformed(websocket.MessageText, p, "!live next %q: %s; want \"!live <next>\"", args, why)
		}
		return ResumeMessage{Kind: ResumeLive, Next: next}, nil
	case "":
		return malformed(websocket.MessageText, p, "no word after \"!\": want \"!gap <from> <next>\", \"!live <next>\" or another word")
	}
	w := word
	if len(w) > maxWord {
		// Back up to the start of a rune (at most 3 bytes in valid UTF-8).
		n := maxWord
		for n > maxWord-utf8.UTFMax+1 && !utf8.RuneStart(w[n]) {
			n--
		}
		w = w[:n]
	}
	return ResumeMessage{Kind: ResumeOther, Word: string(w)}, nil
}

// parseSeq parses a sequence: decimal, ≥ 1, no sign, no leading zeros, at
// most math.MaxUint64. It returns what is wrong, or "".
func parseSeq(b []byte) (uint64, string) {
	if len(b) == 0 {
		return 0, "empty, want a decimal sequence ≥ 1"
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, "not a decimal number"
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, "larger than 18446744073709551615"
		}
		n = n*10 + d
	}
	switch {
	case n == 0:
		return 0, "sequences start at 1"
	case b[0] == '0':
		return 0, "leading zero"
	}
	return n, ""
}
