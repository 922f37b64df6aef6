// Package fanout is the neutral client side of the cluster measure: many
// subscribers spread over the nodes of a cluster, one publisher, and what
// they see — fan-out latency, close codes, the reconnect wave, messages
// lost and duplicated. It speaks two protocols on top of wsclient's
// hand-framed WebSocket: ebb's resume protocol on /broadcast
// (subprotocol ebb.resume.v1) and Centrifugo's bidirectional JSON protocol
// (connect, subscribe with recovery, publications with offsets). Each
// system's clients reconnect with that system's own policy: ebb's reconnect
// package, and the backoff of Centrifugo's Go SDK (centrifuge-go).
//
// This file holds the wire formats, as pure functions that the unit tests
// cover without a server.
package fanout

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
)

// Payload returns the message the publisher sends: a small JSON object
// with the message's id, its send time in nanoseconds since the run's
// start, and pad bytes of padding, the same bytes for every system.
// (Centrifugo's JSON protocol wants publication data to be JSON.)
func Payload(id uint64, sentNs int64, pad int) []byte {
	b := make([]byte, 0, 48+pad)
	b = append(b, `{"i":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, sentNs, 10)
	b = append(b, `,"p":"`...)
	for range pad {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// ParsePayload reads the id and send time back from a Payload, without a
// JSON decoder: it is called for every delivery. ok is false for anything
// Payload did not produce.
func ParsePayload(b []byte) (id uint64, sentNs int64, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"i":`))
	if !ok {
		return 0, 0, false
	}
	i := bytes.IndexByte(rest, ',')
	if i <= 0 {
		return 0, 0, false
	}
	id, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(`,"t":`))
	if !ok {
		return 0, 0, false
	}
	j := bytes.IndexAny(rest, ",}")
	if j <= 0 {
		return 0, 0, false
	}
	sentNs, err = strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return id, sentNs, true
}

// ResumeProtocol is the subprotocol of ebb's resume protocol.
const ResumeProtocol = "ebb.resume.v1"

// ResumeTarget returns the request target for a /broadcast subscriber
// that wants every message from sequence from on (0: live only).
func ResumeTarget(path string, from uint64) string {
	if from == 0 {
		return path
	}
	return path + "?from=" + strconv.FormatUint(from, 10)
}

// ResumeKind tells what a message of the resume protocol is.
type ResumeKind int

// The kinds of resume-protocol messages.
const (
	ResumeData    ResumeKind = iota // "<seq>\n<payload>"
	ResumeLive                      // "!live <next>": replay done
	ResumeGap                       // "!gap <from> <next>": history lost
	ResumeUnknown                   // another "!" word: ignored
)

// ResumeMsg is one parsed server message of the resume protocol.
type ResumeMsg struct {
	Kind ResumeKind
	// Seq is the sequence of a data message.
	Seq uint64
	// From and Next are the numbers of !gap (From, Next) and !live (Next).
	From, Next uint64
	// Payload is a data message's original bytes (aliases the input).
	Payload []byte
}

// ParseResume parses one server message of the resume protocol. Data
// messages are "<seq>\n<payload>" with seq a decimal ≥ 1 without leading
// zeros; control messages are text starting with "!".
func ParseResume(text bool, b []byte) (ResumeMsg, error) {
	if len(b) > 0 && b[0] == '!' {
		if !text {
			return ResumeMsg{}, fmt.Errorf("fanout: control message %q came in a binary frame, want text", trim(b))
		}
		f := bytes.Fields(b[1:])
		if len(f) == 0 {
			return ResumeMsg{Kind: ResumeUnknown}, nil
		}
		switch string(f[0]) {
		case "live":
			if len(f) != 2 {
				return ResumeMsg{}, fmt.Errorf("fanout: %q: want \"!live <next>\"", trim(b))
			}
			n, err := seqNumber(f[1])
			if err != nil {
				return ResumeMsg{}, fmt.Errorf("fanout: %q: %w", trim(b), err)
			}
			return ResumeMsg{Kind: ResumeLive, Next: n}, nil
		case "gap":
			if len(f) != 3 {
				return ResumeMsg{}, fmt.Errorf("fanout: %q: want \"!gap <from> <next>\"", trim(b))
			}
			from, err := seqNumber(f[1])
			if err != nil {
				return ResumeMsg{}, fmt.Errorf("fanout: %q: %w", trim(b), err)
			}
			next, err := seqNumber(f[2])
			if err != nil {
				return ResumeMsg{}, fmt.Errorf("fanout: %q: %w", trim(b), err)
			}
			if next < from {
				return ResumeMsg{}, fmt.Errorf("fanout: %q: next %d is before from %d", trim(b), next, from)
			}
			return ResumeMsg{Kind: ResumeGap, From: from, Next: next}, nil
		}
		return ResumeMsg{Kind: ResumeUnknown}, nil
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return ResumeMsg{}, fmt.Errorf("fanout: data message %q has no \"<seq>\\n\" envelope", trim(b))
	}
	seq, err := seqNumber(b[:i])
	if err != nil {
		return ResumeMsg{}, fmt.Errorf("fanout: data message %q: %w", trim(b), err)
	}
	return ResumeMsg{Kind: ResumeData, Seq: seq, Payload: b[i+1:]}, nil
}

// seqNumber parses a sequence number: decimal, ≥ 1, no leading zeros.
func seqNumber(b []byte) (uint64, error) {
	if len(b) == 0 || b[0] == '0' || len(b) > 20 {
		return 0, fmt.Errorf("sequence %q: want a decimal number ≥ 1 without leading zeros", b)
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sequence %q: want a decimal number ≥ 1 without leading zeros", b)
	}
	return n, nil
}

// trim shortens b for an error message.
func trim(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// Centrifugo's client protocol (JSON, bidirectional): commands carry an id
// and one method; replies carry the same id and a result or an error;
// pushes have no id. A frame may hold several newline-separated JSON
// objects. An empty object is a ping from the server, answered with an
// empty object when the connect result said "pong".

// CentConnect returns a connect command.
func CentConnect(id uint32, name string) []byte {
	b, _ := json.Marshal(map[string]any{"id": id, "connect": map[string]any{"name": name}})
	return b
}

// CentSubscribe returns a subscribe command for channel. With recover it
// asks for the publications after offset in epoch (stream recovery).
func CentSubscribe(id uint32, channel string, recover bool, offset uint64, epoch string) []byte {
	sub := map[string]any{"channel": channel}
	if recover {
		sub["recover"] = true
		sub["offset"] = offset
		sub["epoch"] = epoch
	}
	b, _ := json.Marshal(map[string]any{"id": id, "subscribe": sub})
	return b
}

// CentPublication is a publication in a push or a subscribe result.
type CentPublication struct {
	Data   json.RawMessage `json:"data"`
	Offset uint64          `json:"offset"`
}

// CentError is an error reply.
type CentError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

// CentSubscribeResult is the result of a subscribe command.
type CentSubscribeResult struct {
	Recoverable   bool              `json:"recoverable"`
	Epoch         string            `json:"epoch"`
	Offset        uint64            `json:"offset"`
	Positioned    bool              `json:"positioned"`
	WasRecovering bool              `json:"was_recovering"`
	Recovered     bool              `json:"recovered"`
	Publications  []CentPublication `json:"publications"`
}

// CentDisconnect is a disconnect push (protocol v2 normally closes the
// WebSocket with the code instead).
type CentDisconnect struct {
	Code   uint32 `json:"code"`
	Reason string `json:"reason"`
}

// CentReply is one JSON object received from Centrifugo.
type CentReply struct {
	ID      uint32     `json:"id"`
	Error   *CentError `json:"error"`
	Connect *struct {
		Client string `json:"client"`
		Ping   uint32 `json:"ping"`
		Pong   bool   `json:"pong"`
	} `json:"connect"`
	Subscribe *CentSubscribeResult `json:"subscribe"`
	Push      *CentPush            `json:"push"`
}

// CentPush is a push: a publication or a disconnect.
type CentPush struct {
	Channel    string           `json:"channel"`
	Pub        *CentPublication `json:"pub"`
	Disconnect *CentDisconnect  `json:"disconnect"`
}

// Ping reports whether the object was empty: a server ping.
func (r *CentReply) Ping() bool {
	return r.ID == 0 && r.Error == nil && r.Connect == nil && r.Subscribe == nil && r.Push == nil
}

// ParseCent calls fn for every JSON object in a frame from Centrifugo.
// The reply passed to fn is valid only during the call. Publication
// pushes in Centrifugo's usual shape take a fast path that allocates
// nothing per message (the client's cost per delivery stays close to
// what the resume protocol costs); anything else goes through
// encoding/json.
func ParseCent(frame []byte, fn func(*CentReply) error) error {
	var (
		fast  CentPush
		pub   CentPublication
		reply CentReply
	)
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if data, off, ok := centFastPub(line); ok {
			pub = CentPublication{Data: data, Offset: off}
			fast.Pub = &pub
			reply = CentReply{}
			reply.Push = &fast
			if err := fn(&reply); err != nil {
				return err
			}
			continue
		}
		var r CentReply
		if err := json.Unmarshal(line, &r); err != nil {
			return fmt.Errorf("fanout: Centrifugo sent %q, want a JSON reply or push: %w", trim(line), err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return nil
}

// centFastPub recognizes a publication push as Centrifugo writes it,
// {"push":{"channel":"…","pub":{"data":<object>,"offset":N}}} with the
// offset optional, and returns its data and offset. ok is false for any
// other shape (the caller decodes those with encoding/json).
func centFastPub(line []byte) (data []byte, offset uint64, ok bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"push":{"channel":"`))
	if !ok {
		return nil, 0, false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return nil, 0, false
	}
	rest, ok = bytes.CutPrefix(rest[i:], []byte(`","pub":{"data":{`))
	if !ok {
		return nil, 0, false
	}
	// The data object: find its closing brace, minding strings.
	depth, inStr, esc := 1, false, false
	end := -1
	for j, b := range rest {
		switch {
		case esc:
			esc = false
		case inStr && b == '\\':
			esc = true
		case b == '"':
			inStr = !inStr
		case inStr:
		case b == '{':
			depth++
		case b == '}':
			depth--
		}
		if depth == 0 {
			end = j
			break
		}
	}
	if end < 0 {
		return nil, 0, false
	}
	data = line[len(line)-len(rest)-1 : len(line)-len(rest)+end+1]
	tail := rest[end+1:]
	if bytes.Equal(tail, []byte("}}}")) {
		return data, 0, true
	}
	tail, ok = bytes.CutPrefix(tail, []byte(`,"offset":`))
	if !ok {
		return nil, 0, false
	}
	num, ok := bytes.CutSuffix(tail, []byte("}}}"))
	if !ok || len(num) == 0 {
		return nil, 0, false
	}
	offset, err := strconv.ParseUint(string(num), 10, 64)
	if err != nil {
		return nil, 0, false
	}
	return data, offset, true
}

// CentPublishBody returns the body of a publish call to Centrifugo's
// server HTTP API. A non-empty idempotency key lets the publisher retry
// through another node without publishing twice (Centrifugo keeps the
// keys it saw for 5 minutes where its broker supports it: Redis, not
// NATS).
func CentPublishBody(channel string, data []byte, idempotencyKey string) []byte {
	m := map[string]any{"channel": channel, "data": json.RawMessage(data)}
	if idempotencyKey != "" {
		m["idempotency_key"] = idempotencyKey
	}
	b, _ := json.Marshal(m)
	return b
}

// CentPublishResult is the answer of Centrifugo's HTTP API to publish.
type CentPublishResult struct {
	Error  *CentError `json:"error"`
	Result *struct {
		Offset uint64 `json:"offset"`
		Epoch  string `json:"epoch"`
	} `json:"result"`
}

// HostTarget splits a ws:// URL into host:port and request target.
func HostTarget(u string) (host, target string, err error) {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "ws" || p.Host == "" {
		return "", "", fmt.Errorf("fanout: endpoint %q: want ws://host:port/path", u)
	}
	return p.Host, p.RequestURI(), nil
}
