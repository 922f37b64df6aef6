package closecode

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// MaxReasonBytes is the longest close reason that fits in a Close frame:
// control frames carry at most 125 bytes, two of which hold the code.
const MaxReasonBytes = 123

// hintKey starts the retry hint in a close reason.
const hintKey = "retry-after="

// FormatRetryHint appends a retry hint to a human reason, giving the form
// every ebb component agrees on: "server at capacity; retry-after=4.5".
// The delay is written in seconds with at most one decimal, rounded up so
// that the hint is never shorter than d. The text is shortened (never the
// hint) so that the whole reason fits in MaxReasonBytes.
func FormatRetryHint(reason string, d time.Duration) string {
	if d < 0 {
		d = 0
	}
	tenths := int64(math.Ceil(d.Seconds() * 10))
	secs := strconv.FormatInt(tenths/10, 10)
	if tenths%10 != 0 {
		secs += "." + strconv.FormatInt(tenths%10, 10)
	}
	hint := hintKey + secs
	if reason == "" {
		return hint
	}
	const sep = "; "
	room := MaxReasonBytes - len(hint) - len(sep)
	reason = TruncateReason(reason, room)
	return reason + sep + hint
}

// MaxRetryHint is the longest retry hint ParseRetryHint accepts. A longer
// one is more likely a mistake or a hostile server than a plan, so it is
// not trusted; clients fall back to their own backoff.
const MaxRetryHint = 24 * time.Hour

// ParseRetryHint finds a "retry-after=<seconds>" hint in a close reason and
// returns it as a duration. It reports false when the reason has no valid
// hint, and it is strict, since the reason comes from the peer:
//
//   - the key starts the reason or follows a byte that cannot be part of a
//     word (a space, ";", "(", ...); the last such key counts;
//   - the value is plain decimal seconds: one or more digits, optionally a
//     "." and one or more digits ("4", "4.5", "0.25"), nothing else: no
//     sign, exponent, hexadecimal, "inf" or "nan";
//   - the value ends the reason or is followed by a byte that cannot be
//     part of a word, so "4.5abc" or "1e308" is no hint, rather than a
//     hint of 4.5 s or 1 s;
//   - it is at most MaxRetryHint (86400 s); digits past nanoseconds are
//     dropped.
//
// Everything FormatRetryHint writes parses back.
func ParseRetryHint(reason string) (time.Duration, bool) {
	i := strings.LastIndex(reason, hintKey)
	if i < 0 || i > 0 && isWordByte(reason[i-1]) {
		return 0, false
	}
	rest := reason[i+len(hintKey):]
	end := 0
	for end < len(rest) && isWordByte(rest[end]) {
		end++
	}
	whole, frac, dotted := strings.Cut(rest[:end], ".")
	if !isDigits(whole) || dotted && !isDigits(frac) {
		return 0, false
	}
	const maxSecs = int64(MaxRetryHint / time.Second)
	var secs int64
	for _, d := range []byte(whole) {
		secs = secs*10 + int64(d-'0')
		if secs > maxSecs {
			return 0, false
		}
	}
	var nanos int64
	scale := int64(time.Second)
	for _, d := range []byte(frac) {
		if scale /= 10; scale == 0 {
			break
		}
		nanos += int64(d-'0') * scale
	}
	if secs == maxSecs && nanos > 0 {
		return 0, false
	}
	return time.Duration(secs)*time.Second + time.Duration(nanos), true
}

// isWordByte reports whether b can be part of a word or number: a letter,
// a digit, or one of "._+-". A hint's key and value must not be glued to
// such bytes.
func isWordByte(b byte) bool {
	return 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '_' || b == '+' || b == '-'
}

// isDigits reports whether s is one or more ASCII digits.
func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// TruncateReason shortens s to at most n bytes without splitting a UTF-8
// sequence.
func TruncateReason(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	cut := n
	// Back up to the start of a rune so the result stays valid UTF-8.
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut]
}
