package websocket

import "unicode/utf8"

// utf8Validator checks a text message for valid UTF-8 as it streams in,
// across frame and read boundaries. It fails as soon as the bytes seen so far
// cannot begin valid UTF-8, so an invalid message is rejected at the first
// bad byte rather than at its end (RFC 6455 §8.1).
type utf8Validator struct {
	// pending holds the bytes of a sequence split across writes (at most 3).
	pending [utf8.UTFMax]byte
	n       int
}

// write validates the next chunk of the message. It returns false when the
// message can no longer be valid UTF-8.
func (v *utf8Validator) write(p []byte) bool {
	if v.n > 0 {
		// Complete the pending sequence with bytes from p.
		need := seqLen(v.pending[0]) - v.n
		take := min(need, len(p))
		copy(v.pending[v.n:], p[:take])
		v.n += take
		p = p[take:]
		if !validPrefix(v.pending[:v.n]) {
			return false
		}
		if v.n < seqLen(v.pending[0]) {
			return true
		}
		v.n = 0
	}
	// Fast path: everything up to the last (possibly incomplete) sequence.
	tail := incompleteTail(p)
	if !utf8.Valid(p[:len(p)-tail]) {
		return false
	}
	if tail > 0 {
		t := p[len(p)-tail:]
		if !validPrefix(t) {
			return false
		}
		v.n = copy(v.pending[:], t)
	}
	return true
}

// done reports whether the message ended on a sequence boundary.
func (v *utf8Validator) done() bool { return v.n == 0 }

func (v *utf8Validator) reset() { v.n = 0 }

// incompleteTail returns how many bytes at the end of p start a multi-byte
// sequence that p does not complete (0–3).
func incompleteTail(p []byte) int {
	// Look back at most 3 bytes for the start of the last sequence.
	for i := 1; i <= 3 && i <= len(p); i++ {
		b := p[len(p)-i]
		if b < 0x80 {
			return 0 // ASCII: nothing pending.
		}
		if b >= 0xC0 { // A lead byte.
			if seqLen(b) > i {
				return i
			}
			return 0
		}
		// Continuation byte: keep looking for its lead.
	}
	return 0
}

// seqLen returns the length of the sequence that lead byte b starts, or 1
// for bytes that cannot start one (validPrefix rejects those).
func seqLen(b byte) int {
	switch {
	case b >= 0xC2 && b <= 0xDF:
		return 2
	case b >= 0xE0 && b <= 0xEF:
		return 3
	case b >= 0xF0 && b <= 0xF4:
		return 4
	}
	return 1
}

// validPrefix reports whether p (shorter than its sequence) can still become
// a valid UTF-8 sequence: a valid lead byte, and continuation bytes in the
// ranges RFC 3629 allows after it (no overlongs, surrogates, or code points
// above U+10FFFF).
func validPrefix(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	lead := p[0]
	if seqLen(lead) < 2 || len(p) > seqLen(lead) {
		return false
	}
	if len(p) >= 2 {
		lo, hi := byte(0x80), byte(0xBF)
		switch lead {
		case 0xE0:
			lo = 0xA0
		case 0xED:
			hi = 0x9F
		case 0xF0:
			lo = 0x90
		case 0xF4:
			hi = 0x8F
		}
		if p[1] < lo || p[1] > hi {
			return false
		}
	}
	if len(p) > 2 {
		for _, c := range p[2:] {
			if c < 0x80 || c > 0xBF {
				return false
			}
		}
	}
	return true
}
