package shed

import (
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// refuse answers a refused upgrade in the decided mode. A close refusal
// falls back to 503 when the request cannot be upgraded (see
// websocket.CanRefuseWithClose: no valid Sec-WebSocket-Key or version 13,
// or a ResponseWriter that cannot hijack, as under HTTP/2). The refusal is
// counted before any I/O, so the counts never lag behind what a client has
// already seen.
func (s *Shedder) refuse(w http.ResponseWriter, r *http.Request, d decision) {
	text := d.text
	if text == "" {
		text = d.reason.Text()
	}
	reason := closecode.FormatRetryHint(text, d.hint)
	if d.mode == ModeClose && !websocket.CanRefuseWithClose(w, r) {
		d.mode = ModeHTTP
	}
	s.stats.refused[d.reason][d.mode].Add(1)
	if d.mode == ModeClose {
		s.stats.recordCode(d.code, Sent)
	}
	if lg := s.log(); lg != nil && lg.Enabled(r.Context(), slog.LevelDebug) {
		lg.LogAttrs(r.Context(), slog.LevelDebug, "shed: refused upgrade",
			slog.String("reason", d.reason.String()), slog.String("mode", d.mode.String()),
			slog.String("client", d.ip.String()), slog.Duration("hint", d.hint))
	}
	if s.opts.OnState != nil {
		ev := Event{State: StateRefused, Request: r, ClientIP: d.ip, Reason: d.reason, Mode: d.mode, Code: d.code, Hint: d.hint}
		if d.mode == ModeHTTP {
			ev.Code = 0 // no Close frame is sent
		}
		s.emit(ev)
	}
	if d.mode == ModeHTTP || !s.refuseClose(w, r, d.code, reason) {
		refuseHTTP(w, reason, d.hint)
	}
}

// refuseHTTP answers 503 with Retry-After in whole seconds (rounded up, so
// it is never shorter than the hint) and the reason as the body, in the
// same "retry-after=" form as a close reason. The connection is not kept
// alive: a refused client should go away.
func refuseHTTP(w http.ResponseWriter, reason string, hint time.Duration) {
	h := w.Header()
	h.Set("Retry-After", strconv.FormatInt(max(1, int64(math.Ceil(hint.Seconds()))), 10))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = w.Write(append([]byte(reason), '\n'))
}

// refuseClose completes the upgrade and closes with code and reason through
// websocket.RefuseWithClose: one write through the server's own buffers,
// no Conn, no goroutine, then a wait of at most RefusalLinger for the
// client's Close. It reports false, having written nothing, if the hijack
// failed, so that the caller can still answer 503.
func (s *Shedder) refuseClose(w http.ResponseWriter, r *http.Request, code closecode.Code, reason string) bool {
	got, err := websocket.RefuseWithClose(w, r, code, reason, &websocket.RefuseOptions{
		Linger: s.opts.RefusalLinger,
		// Only waiting for the client's Close now, which costs no CPU: a
		// shed Listener hands out the next pending place (it also sees the
		// 101 go by, except under TLS).
		Written: leftPending,
	})
	if err != nil {
		return !hijackFailed(err)
	}
	if got != 0 {
		s.stats.recordCode(got, Received)
	}
	return true
}

// hijackFailed reports whether err says RefuseWithClose wrote nothing
// because the connection could not be hijacked.
func hijackFailed(err error) bool {
	return errors.Is(err, http.ErrNotSupported) || errors.Is(err, http.ErrHijacked)
}
