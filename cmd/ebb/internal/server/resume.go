package server

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
)

// The resume protocol v1 on /broadcast, server side. This mirrors the
// agreed wire format (notes/RESUME.md in the project's working notes) and
// the clients' reading of it; the library's reconnect package carries the
// shared codec (reconnect.AppendResumeData, ParseResumeFrom, …), which
// this file should use once both are on one branch:
//
//   - the client offers the subprotocol ResumeProtocol and, to resume,
//     the query parameter from=<N>, the first sequence it wants (a decimal
//     uint64 ≥ 1; anything else is answered 400 before the upgrade);
//   - data: the original frame type; payload = decimal sequence, "\n",
//     the original payload (text stays UTF-8);
//   - control, text frames starting with "!": "!gap <from> <next>" (the
//     history no longer holds from…next-1; delivery goes on at next;
//     always from < next) and "!live <next>" (once: everything asked for
//     before next has been delivered; live from here). A "!live" at or
//     below the client's from says the numbering restarted (a history that
//     was reset): the clients (reconnect, ebb.js) report it as a reset.
//
// A client that does not offer the subprotocol gets plain messages.

// ResumeProtocol is the subprotocol of the resume protocol v1.
const ResumeProtocol = "ebb.resume.v1"

// appendData appends the data envelope of a broadcast: seq, '\n', payload.
func appendData(dst []byte, seq uint64, payload []byte) []byte {
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, '\n')
	return append(dst, payload...)
}

// liveFrame is the "!live <next>" control message.
func liveFrame(next uint64) []byte {
	return strconv.AppendUint([]byte("!live "), next, 10)
}

// gapFrame is the "!gap <from> <next>" control message.
func gapFrame(from, next uint64) []byte {
	b := strconv.AppendUint([]byte("!gap "), from, 10)
	b = append(b, ' ')
	return strconv.AppendUint(b, next, 10)
}

// parseFrom reads the from query parameter: 0 when absent, an error when
// it is not one decimal uint64 ≥ 1.
func parseFrom(r *http.Request) (uint64, error) {
	vs, ok := r.URL.Query()["from"]
	if !ok {
		return 0, nil
	}
	if len(vs) != 1 {
		return 0, fmt.Errorf("from is given %d times: want it once", len(vs))
	}
	v := vs[0]
	n, err := strconv.ParseUint(v, 10, 64) // no sign, no "_"
	if err != nil || n == 0 || v[0] == '0' {
		return 0, fmt.Errorf("from=%.40q: want the decimal sequence number (1 or more, no leading zeros) of the first broadcast wanted, the last one received plus 1", v)
	}
	return n, nil
}

type fromKey struct{}

// withFrom answers a malformed from with 400 before admission and the
// upgrade, and passes a valid one to the broadcast handler through the
// request's context.
func withFrom(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		from, err := parseFrom(r)
		if err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintln(w, "ebb broadcast: "+err.Error())
			return
		}
		if from > 0 {
			r = r.WithContext(context.WithValue(r.Context(), fromKey{}, from))
		}
		next.ServeHTTP(w, r)
	})
}

// fromOf returns the from a request carried (0: none).
func fromOf(ctx context.Context) uint64 {
	from, _ := ctx.Value(fromKey{}).(uint64)
	return from
}
