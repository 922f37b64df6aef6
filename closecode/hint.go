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

// ParseRetryHint finds a "retry-after=<seconds>" hint in a close reason and
// returns it as a duration. Seconds are decimal and may be fractional. It
// reports false when the reason has no valid hint; negative, NaN and absurd
// values (over a day) are rejected rather than trusted.
func ParseRetryHint(reason string) (time.Duration, bool) {
	i := strings.LastIndex(reason, hintKey)
	if i < 0 {
		return 0, false
	}
	rest := reason[i+len(hintKey):]
	end := 0
	for end < len(rest) && (rest[end] >= '0' && rest[end] <= '9' || rest[end] == '.') {
		end++
	}
	if end == 0 {
		return 0, false
	}
	secs, err := strconv.ParseFloat(rest[:end], 64)
	if err != nil || math.IsNaN(secs) || secs < 0 || secs > 86400 {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
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
