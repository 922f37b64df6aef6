package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/ebb-ws/ebb/reconnect"
)

// The resume protocol v1 on /broadcast, server side. The wire format is
// the library's (package reconnect, resume.go: the one codec ebb's servers
// and clients share):
//
//   - the client offers the subprotocol ResumeProtocol and, to resume,
//     the query parameter from=<N>, the first sequence it wants (anything
//     reconnect.ParseResumeFrom rejects is answered 400 before the
//     upgrade);
//   - data: the original frame type; payload = decimal sequence, "\n",
//     the original payload (reconnect.AppendResumeData);
//   - control, text frames starting with "!": "!gap <from> <next>" (the
//     history no longer holds from…next-1; delivery goes on at next) and
//     "!live <next>" (once: everything asked for before next has been
//     delivered; live from here). A "!live" at or below the client's from
//     says the numbering restarted (a history that was reset): the clients
//     (reconnect, ebb.js) report it as a reset.
//
// A client that does not offer the subprotocol gets plain messages.

// ResumeProtocol is the subprotocol of the resume protocol v1.
const ResumeProtocol = reconnect.ResumeSubprotocol

// appendData appends the data envelope of a broadcast.
func appendData(dst []byte, seq uint64, payload []byte) []byte {
	return reconnect.AppendResumeData(dst, seq, payload)
}

// liveFrame is the "!live <next>" control message.
func liveFrame(next uint64) []byte { return reconnect.AppendResumeLive(nil, next) }

// gapFrame is the "!gap <from> <next>" control message.
func gapFrame(from, next uint64) []byte { return reconnect.AppendResumeGap(nil, from, next) }

// parseFrom reads the from query parameter: 0 when absent, an error when
// it is given more than once or reconnect.ParseResumeFrom rejects it.
func parseFrom(r *http.Request) (uint64, error) {
	vs, ok := r.URL.Query()[reconnect.ResumeFromParam]
	if !ok {
		return 0, nil
	}
	if len(vs) != 1 {
		return 0, fmt.Errorf("%s is given %d times: want it once", reconnect.ResumeFromParam, len(vs))
	}
	return reconnect.ParseResumeFrom(vs[0])
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
