package fanout

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// fastPolicy reconnects after 1 ms, whatever happened.
type fastPolicy struct{}

func (fastPolicy) Opened(time.Time)                                    {}
func (fastPolicy) Closed(time.Time, int, string) (time.Duration, bool) { return time.Millisecond, true }
func (fastPolicy) Refused(time.Time, int, string) (time.Duration, bool) {
	return time.Millisecond, true
}

// scriptServer runs script for the n-th connection (from 0); it records
// each request's query and stops the client's context after the last.
type scriptServer struct {
	t       *testing.T
	proto   string
	scripts []func(ctx context.Context, c *websocket.Conn, r *http.Request) error
	mu      sync.Mutex
	n       int
	queries []string
	done    chan struct{}
}

func (s *scriptServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := s.n
	s.n++
	s.queries = append(s.queries, r.URL.RawQuery)
	s.mu.Unlock()
	if n >= len(s.scripts) {
		http.Error(w, "done", http.StatusServiceUnavailable)
		return
	}
	var opts websocket.AcceptOptions
	if s.proto != "" {
		opts.Subprotocols = []string{s.proto}
	}
	c, err := websocket.Accept(w, r, &opts)
	if err != nil {
		s.t.Errorf("accept: %v", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.scripts[n](ctx, c, r); err != nil {
		s.t.Errorf("script %d: %v", n, err)
	}
	if n == len(s.scripts)-1 {
		close(s.done)
	}
}

func send(ctx context.Context, c *websocket.Conn, msgs ...string) error {
	for _, m := range msgs {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			return err
		}
	}
	return nil
}

// runClient runs one client against srv until the server's scripts are
// done, and returns it with its Stats.
func runClient(t *testing.T, srv *scriptServer, proto Protocol, path string) (*Client, *Stats) {
	t.Helper()
	hs := httptest.NewServer(srv)
	defer hs.Close()
	st := NewStats()
	st.SetPublisherNode(1) // the client's node 0 counts as another node
	c := &Client{ID: 0, Nodes: []Endpoint{{Host: strings.TrimPrefix(hs.URL, "http://"), Path: path}},
		Proto: proto, Channel: "ch", Policy: fastPolicy{}, Stats: st}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	select {
	case <-srv.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's scripts did not finish within 10 s")
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	<-done
	return c, st
}

func data(seq, id uint64) string { return fmt.Sprintf("%d\n%s", seq, Payload(id, 0, 3)) }

func TestEbbClientResumes(t *testing.T) {
	srv := &scriptServer{t: t, proto: ResumeProtocol, done: make(chan struct{})}
	srv.scripts = []func(context.Context, *websocket.Conn, *http.Request) error{
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			if err := send(ctx, c, "!live 5", data(5, 1), data(6, 2)); err != nil {
				return err
			}
			return c.Close(closecode.ServiceRestart, "draining; retry-after=0.001")
		},
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			// Replays 6 again (a duplicate by sequence), then 7, a gap, live.
			if err := send(ctx, c, data(6, 2), data(7, 3), "!gap 8 10", "!future word", "!live 10", data(10, 4), data(12, 5)); err != nil {
				return err
			}
			return c.Close(closecode.TryAgainLater, "busy")
		},
	}
	c, st := runClient(t, srv, Ebb, "/broadcast")
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	if srv.queries[0] != "" || srv.queries[1] != "from=7" {
		t.Errorf("queries = %q, want \"\" then from=7", srv.queries[:2])
	}
	for _, id := range []uint64{1, 2, 3, 4, 5} {
		if !c.seen.has(id) {
			t.Errorf("payload %d not delivered", id)
		}
	}
	if c.dupSeq != 1 || c.dupID != 0 || c.gaps != 1 || c.gapMsgs != 2 || c.skipped != 1 || c.protoErrs != 0 {
		t.Errorf("dupSeq %d dupID %d gaps %d gapMsgs %d skipped %d protoErrs %d; want 1 0 1 2 1 0",
			c.dupSeq, c.dupID, c.gaps, c.gapMsgs, c.skipped, c.protoErrs)
	}
	ended, _ := st.Codes(PhaseSteady)
	if ended["1012"] != 1 || ended["1013"] != 1 {
		t.Errorf("ended = %v, want one 1012 and one 1013", ended)
	}
	if h := st.Latency(PhaseSteady); h.TotalCount() != 5 {
		t.Errorf("latency samples = %d, want 5", h.TotalCount())
	}
	loss := st.Account([]*Client{c}, 1)
	if loss.Published != 5 || loss.Lost != 0 || loss.DupBySeq != 1 {
		t.Errorf("account = %+v", loss)
	}
}

// TestEbbLibClientResumes runs ebb's own client (reconnect.Client with
// Resume) through the same script: it resumes from 7 after the 1012, drops
// the duplicate itself and reports the gap.
func TestEbbLibClientResumes(t *testing.T) {
	srv := &scriptServer{t: t, proto: ResumeProtocol, done: make(chan struct{})}
	srv.scripts = []func(context.Context, *websocket.Conn, *http.Request) error{
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			if err := send(ctx, c, "!live 5", data(5, 1), data(6, 2)); err != nil {
				return err
			}
			return c.Close(closecode.ServiceRestart, "draining")
		},
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			if err := send(ctx, c, data(6, 2), data(7, 3), "!gap 8 10", "!live 10", data(10, 4)); err != nil {
				return err
			}
			// Let the client read everything before the connection ends.
			time.Sleep(100 * time.Millisecond)
			return c.Close(closecode.TryAgainLater, "busy")
		},
	}
	c, st := runClient(t, srv, EbbLib, "/broadcast")
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	if srv.queries[0] != "" || srv.queries[1] != "from=7" {
		t.Errorf("queries = %q, want \"\" then from=7", srv.queries[:2])
	}
	for _, id := range []uint64{1, 2, 3, 4} {
		if !c.seen.has(id) {
			t.Errorf("payload %d not delivered", id)
		}
	}
	if c.dupID != 0 || c.gaps != 1 || c.gapMsgs != 2 {
		t.Errorf("dupID %d gaps %d gapMsgs %d; want 0 1 2", c.dupID, c.gaps, c.gapMsgs)
	}
	ended, _ := st.Codes(PhaseSteady)
	if ended["1012"] != 1 || ended["1013"] != 1 {
		t.Errorf("ended = %v, want one 1012 and one 1013", ended)
	}
}

func TestEbbClientNeedsSubprotocol(t *testing.T) {
	srv := &scriptServer{t: t, done: make(chan struct{})}
	srv.scripts = []func(context.Context, *websocket.Conn, *http.Request) error{
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			return send(ctx, c, "plain")
		},
	}
	c, _ := runClient(t, srv, Ebb, "/broadcast")
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), ResumeProtocol) {
		t.Errorf("Err = %v, want one naming %s", err, ResumeProtocol)
	}
}

// readCmds reads one frame of newline-separated commands.
func readCmds(ctx context.Context, c *websocket.Conn) ([]map[string]json.RawMessage, error) {
	_, b, err := c.Read(ctx)
	if err != nil {
		return nil, err
	}
	var out []map[string]json.RawMessage
	for _, l := range strings.Split(string(b), "\n") {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			return nil, fmt.Errorf("command %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func pub(off, id uint64) string {
	return fmt.Sprintf(`{"push":{"channel":"ch","pub":{"data":%s,"offset":%d}}}`, Payload(id, 0, 1), off)
}

func TestCentClientRecovers(t *testing.T) {
	var subs []string
	srv := &scriptServer{t: t, done: make(chan struct{})}
	handshake := func(ctx context.Context, c *websocket.Conn, sub string) error {
		cmds, err := readCmds(ctx, c)
		if err != nil {
			return err
		}
		if len(cmds) != 2 || cmds[0]["connect"] == nil || cmds[1]["subscribe"] == nil {
			return fmt.Errorf("want connect and subscribe in one frame, got %v", cmds)
		}
		subs = append(subs, string(cmds[1]["subscribe"]))
		return send(ctx, c, `{"id":1,"connect":{"client":"x","ping":25,"pong":true}}`+"\n"+sub)
	}
	srv.scripts = []func(context.Context, *websocket.Conn, *http.Request) error{
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			if err := handshake(ctx, c, `{"id":2,"subscribe":{"recoverable":true,"epoch":"e","offset":3,"positioned":true}}`); err != nil {
				return err
			}
			if err := send(ctx, c, pub(4, 1), "{}"); err != nil {
				return err
			}
			// The client answers the ping with {}.
			if _, b, err := c.Read(ctx); err != nil || string(b) != "{}" {
				return fmt.Errorf("pong: %q, %v", b, err)
			}
			return c.Close(3001, "shutdown")
		},
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			rec := `{"id":2,"subscribe":{"recoverable":true,"epoch":"e","offset":5,"was_recovering":true,"recovered":true,"publications":[` +
				fmt.Sprintf(`{"data":%s,"offset":5}`, Payload(2, 0, 1)) + `]}}`
			if err := handshake(ctx, c, rec); err != nil {
				return err
			}
			if err := send(ctx, c, pub(5, 2)+"\n"+pub(6, 3)); err != nil {
				return err
			}
			return c.Close(3001, "shutdown")
		},
		func(ctx context.Context, c *websocket.Conn, r *http.Request) error {
			return handshake(ctx, c, `{"id":2,"error":{"code":108,"message":"not available"}}`)
		},
	}
	c, st := runClient(t, srv, Centrifugo, "/connection/websocket")
	if len(subs) < 2 || !strings.Contains(subs[0], `"channel":"ch"`) || strings.Contains(subs[0], "recover") ||
		!strings.Contains(subs[1], `"recover":true`) || !strings.Contains(subs[1], `"offset":4`) || !strings.Contains(subs[1], `"epoch":"e"`) {
		t.Errorf("subscribe commands = %q; want a plain one, then recover from offset 4 in epoch e", subs)
	}
	for _, id := range []uint64{1, 2, 3} {
		if !c.seen.has(id) {
			t.Errorf("payload %d not delivered", id)
		}
	}
	if c.dupSeq != 1 || c.skipped != 0 || c.protoErrs != 0 {
		t.Errorf("dupSeq %d skipped %d protoErrs %d; want 1 0 0", c.dupSeq, c.skipped, c.protoErrs)
	}
	ended, refused := st.Codes(PhaseSteady)
	if ended["3001"] != 2 || refused["error 108 not available"] != 1 {
		t.Errorf("ended %v refused %v; want 3001 ×2 and one error 108", ended, refused)
	}
}
