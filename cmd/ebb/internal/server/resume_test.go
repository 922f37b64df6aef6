package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// rmsg is one message a resume client read: a control word or data.
type rmsg struct {
	ctrl string // "!live 12", "!gap 3 9"; "" for data
	seq  uint64
	data string
	typ  websocket.MessageType
}

func (m rmsg) String() string {
	if m.ctrl != "" {
		return m.ctrl
	}
	return fmt.Sprintf("%d:%q", m.seq, m.data)
}

// dialResume opens /broadcast on addr offering the resume subprotocol,
// from the sequence from (0: live only).
func dialResume(ctx context.Context, addr string, from uint64) (*websocket.Conn, error) {
	u := "ws://" + addr + "/broadcast"
	if from > 0 {
		u += "?from=" + strconv.FormatUint(from, 10)
	}
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{ResumeProtocol}})
	if err != nil {
		return nil, err
	}
	if c.Subprotocol() != ResumeProtocol {
		c.CloseNow()
		return nil, fmt.Errorf("server selected subprotocol %q, want %q", c.Subprotocol(), ResumeProtocol)
	}
	return c, nil
}

// readResume reads one message of the resume protocol, checking the
// envelope strictly (the wire format, written independently of the
// server's encoder).
func readResume(ctx context.Context, c *websocket.Conn) (rmsg, error) {
	typ, p, err := c.Read(ctx)
	if err != nil {
		return rmsg{}, err
	}
	if typ == websocket.MessageText && len(p) > 0 && p[0] == '!' {
		return rmsg{ctrl: string(p)}, nil
	}
	i := bytes.IndexByte(p, '\n')
	if i <= 0 || (p[0] == '0') {
		return rmsg{}, fmt.Errorf("data message %q has no sequence envelope", p)
	}
	seq, err := strconv.ParseUint(string(p[:i]), 10, 64)
	if err != nil || seq == 0 {
		return rmsg{}, fmt.Errorf("data message %q: bad sequence", p)
	}
	return rmsg{seq: seq, data: string(p[i+1:]), typ: typ}, nil
}

// readN reads n messages.
func readN(t *testing.T, ctx context.Context, c *websocket.Conn, n int) []rmsg {
	t.Helper()
	var out []rmsg
	for range n {
		m, err := readResume(ctx, c)
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		out = append(out, m)
	}
	return out
}

func send(t *testing.T, ctx context.Context, c *websocket.Conn, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
}

func liveAt(t *testing.T, m rmsg) uint64 {
	t.Helper()
	var n uint64
	if _, err := fmt.Sscanf(m.ctrl, "!live %d", &n); err != nil {
		t.Fatalf("got %v, want !live <next>", m)
	}
	return n
}

// TestResumeSingleNode: on one server, a resume client learns its
// position, gets numbered messages, and after a disconnect gets exactly
// what it missed, then !live, then live messages; a plain client gets
// plain messages; the sender's text stays text.
func TestResumeSingleNode(t *testing.T) {
	s := start(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := dialResume(ctx, s.Addr(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseNow()
	first := liveAt(t, readN(t, ctx, r, 1)[0])
	if now := uint64(time.Now().UnixMicro()); first > now || now-first > uint64(time.Minute/time.Microsecond) {
		t.Errorf("first sequence %d: want the history's creation time in microseconds (about %d)", first, now)
	}
	plain, err := dial(t, ctx, s, "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.CloseNow()
	if plain.Subprotocol() != "" {
		t.Fatalf("plain client got subprotocol %q", plain.Subprotocol())
	}
	sender, err := dial(t, ctx, s, "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	waitMembers(t, s, 3)
	send(t, ctx, sender, "a", "b", "c")
	got := readN(t, ctx, r, 3)
	for i, m := range got {
		if m.ctrl != "" || m.seq != first+uint64(i) || m.data != string(rune('a'+i)) || m.typ != websocket.MessageText {
			t.Fatalf("message %d = %v, want %d:%q as text", i, m, first+uint64(i), string(rune('a'+i)))
		}
	}
	for i := range 3 {
		if _, p, err := plain.Read(ctx); err != nil || string(p) != string(rune('a'+i)) {
			t.Fatalf("plain client: %q %v, want %q without an envelope", p, err, string(rune('a'+i)))
		}
	}
	// The resume client leaves after c; d, e, f are published; it comes
	// back from d.
	r.Close(closecode.NormalClosure, "")
	waitMembers(t, s, 2)
	send(t, ctx, sender, "d", "e", "f")
	for range 3 {
		if _, _, err := plain.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r2, err := dialResume(ctx, s.Addr(), first+3)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.CloseNow()
	got = readN(t, ctx, r2, 4)
	for i, m := range got[:3] {
		if m.seq != first+3+uint64(i) || m.data != string(rune('d'+i)) {
			t.Fatalf("replayed %v, want d, e, f from %d", got, first+3)
		}
	}
	if liveAt(t, got[3]) != first+6 {
		t.Fatalf("after the replay: %v, want !live %d", got[3], first+6)
	}
	send(t, ctx, sender, "g")
	if m := readN(t, ctx, r2, 1)[0]; m.seq != first+6 || m.data != "g" {
		t.Fatalf("live after resume: %v, want %d:\"g\"", m, first+6)
	}
	// A resume from the next sequence replays nothing: !live first.
	r3, err := dialResume(ctx, s.Addr(), first+7)
	if err != nil {
		t.Fatal(err)
	}
	defer r3.CloseNow()
	if m := readN(t, ctx, r3, 1)[0]; liveAt(t, m) != first+7 {
		t.Fatalf("resume at the head: %v, want !live %d", m, first+7)
	}
	if _, body := get(t, s.Addr(), "/metrics"); !strings.Contains(body, "ebb_broadcast_resumes_total 2\n") ||
		!strings.Contains(body, fmt.Sprintf("ebb_broadcast_last_seq %d\n", first+6)) || !strings.Contains(body, "ebb_broadcast_messages_total 7\n") {
		t.Errorf("/metrics lacks the resume counters:\n%s", grep(body, "ebb_broadcast"))
	}
}

// TestResumeGap: a client asking for messages the history has dropped is
// told "!gap <from> <oldest>", then gets everything from the oldest, in
// order; one asking for a sequence never given out is told where the
// history is.
func TestResumeGap(t *testing.T) {
	s := start(t, Config{Broadcast: BroadcastLimits{HistoryMsgs: 5}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	sender, err := dial(t, ctx, s, "/broadcast")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.CloseNow()
	first := s.hub.bus.lastSeq() + 1
	for i := range 12 {
		send(t, ctx, sender, strconv.Itoa(i))
	}
	for range 12 {
		if _, _, err := sender.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r, err := dialResume(ctx, s.Addr(), first+2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.CloseNow()
	got := readN(t, ctx, r, 7)
	want := []string{fmt.Sprintf("!gap %d %d", first+2, first+7)}
	for i := 7; i < 12; i++ {
		want = append(want, fmt.Sprintf("%d:%q", first+uint64(i), strconv.Itoa(i)))
	}
	want = append(want, fmt.Sprintf("!live %d", first+12))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resume past the history:\n got %v\nwant %v", got, want)
	}
	// A sequence this history never gave out (a client of a server that
	// has since been replaced by this one, with its clock set back).
	r2, err := dialResume(ctx, s.Addr(), first+1000)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.CloseNow()
	// No "!gap" (from < next there); a "!live" below the client's from
	// tells it the numbering restarted.
	got = readN(t, ctx, r2, 1)
	if want := fmt.Sprintf("[!live %d]", first+12); fmt.Sprint(got) != want {
		t.Fatalf("resume from the future: %v, want %v", got, want)
	}
	if _, body := get(t, s.Addr(), "/metrics"); !strings.Contains(body, "ebb_broadcast_gaps_total 2\n") {
		t.Errorf("/metrics does not count 2 gaps:\n%s", grep(body, "ebb_broadcast"))
	}
}

// TestResumeBadFrom: a malformed from is answered 400, before the
// upgrade, with a body that says what was expected.
func TestResumeBadFrom(t *testing.T) {
	s := start(t, Config{})
	for _, q := range []string{"from=abc", "from=0", "from=-1", "from=", "from=1&from=2", "from=18446744073709551616", "from=+5", "from=007", "from=1_000"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.Addr()+"/broadcast?"+q, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		req.Header.Set("Sec-WebSocket-Protocol", ResumeProtocol)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "want the decimal sequence number") && !strings.Contains(string(body), "want it once") {
			t.Errorf("?%s: %d %q, want 400 saying what from must be", q, resp.StatusCode, body)
		}
	}
	if st := s.Shedder().Stats(); st.Admitted != 0 || st.RefusedTotal != 0 {
		t.Errorf("a malformed from reached admission: %+v", st)
	}
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
