package shed

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// echoHandler accepts an ebb connection and echoes it until it ends.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	c, err := Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := context.Background() // the request context ends with the handler anyway
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			return
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return
		}
	}
}

// echoServer serves echoHandler behind s on loopback.
func echoServer(t testing.TB, s *Shedder) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(s.Middleware(http.HandlerFunc(echoHandler)))
	t.Cleanup(srv.Close)
	return srv
}

func addrOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// echo sends msg and expects it back.
func (rc *rawClient) echo(msg string) error {
	if err := rc.writeFrame(0x1, []byte(msg)); err != nil {
		return err
	}
	op, p, err := rc.readFrame()
	if err != nil {
		return err
	}
	if op != 0x1 || string(p) != msg {
		return errors.New("echo: got opcode " + string('0'+rune(op)) + " payload " + string(p) + ", want " + msg)
	}
	return nil
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRefusedClientGets101ThenClose1013(t *testing.T) {
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 1}, RefusalLinger: 300 * time.Millisecond})
	srv := echoServer(t, s)

	a, resp, err := dialRaw(addrOf(srv), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first client: %v %v", resp, err)
	}
	defer a.Close()
	if err := a.echo("hello"); err != nil {
		t.Fatalf("admitted client: %v", err)
	}

	t.Run("answering client", func(t *testing.T) {
		b, resp, err := dialRaw(addrOf(srv), nil)
		if err != nil {
			t.Fatalf("refused client handshake: %v", err)
		}
		defer b.Close()
		if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Protocol") != "" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
			t.Fatalf("refusal response %d %v: want a bare 101", resp.StatusCode, resp.Header)
		}
		code, reason, err := b.readClose()
		if err != nil {
			t.Fatalf("reading the Close frame: %v", err)
		}
		hint, ok := closecode.ParseRetryHint(reason)
		if code != closecode.TryAgainLater || !ok || hint < DefaultRetryBase || !strings.HasPrefix(reason, "server at capacity; retry-after=") {
			t.Fatalf("close %v %q: want 1013 \"server at capacity; retry-after=…\" with a hint ≥ %v", code, reason, DefaultRetryBase)
		}
		if err := b.writeClose(code, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := b.br.ReadByte(); err != io.EOF {
			t.Fatalf("after the close handshake: %v, want EOF (server closes TCP)", err)
		}
		// websocket.RefuseWithClose closes the connection before it
		// returns the code shed counts: the count follows the EOF.
		waitFor(t, "the refused client's 1013 to be counted", func() bool {
			return s.Stats().CloseReceived[closecode.TryAgainLater] == 1
		})
	})
	t.Run("subprotocol offered", func(t *testing.T) {
		b, resp, err := dialRaw(addrOf(srv), http.Header{
			"Sec-WebSocket-Protocol":   {"graphql-ws, chat"},
			"Sec-WebSocket-Extensions": {"permessage-deflate"},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "graphql-ws" || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
			t.Fatalf("refusal selected protocol %q, extensions %q: want the first offer echoed and no extension", got, resp.Header.Get("Sec-WebSocket-Extensions"))
		}
		if code, _, err := b.readClose(); err != nil || code != closecode.TryAgainLater {
			t.Fatalf("close %v %v, want 1013", code, err)
		}
		_ = b.writeClose(closecode.TryAgainLater, "")
	})
	t.Run("silent client is cut off after the linger", func(t *testing.T) {
		b, _, err := dialRaw(addrOf(srv), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if code, _, err := b.readClose(); err != nil || code != closecode.TryAgainLater {
			t.Fatalf("close %v %v, want 1013", code, err)
		}
		start := time.Now()
		_, err = b.br.ReadByte()
		if err == nil {
			t.Fatal("read a byte after the Close frame")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("server held a silent refused client %v, want about RefusalLinger", d)
		}
	})
	if err := a.echo("still here"); err != nil {
		t.Fatalf("admitted client after refusals: %v", err)
	}
	st := s.Stats()
	if st.Refused[Refusal{ReasonConns, ModeClose}] != 3 || st.CloseSent[closecode.TryAgainLater] != 3 || st.Admitted != 1 {
		t.Fatalf("stats %+v: want 3 conns/close refusals with 1013 sent, 1 admitted", st)
	}
}

// stormResult is what one client of the storm saw.
type stormResult struct {
	admitted bool
	code     closecode.Code
	reason   string
	err      error
}

func TestStorm200AgainstLimit50(t *testing.T) {
	const clients, limit, rounds = 200, 50, 20
	s := mustNew(t, &Options{Limits: Limits{MaxConns: limit}})
	srv := echoServer(t, s)

	results := make([]stormResult, clients)
	var answered sync.WaitGroup
	answered.Add(clients)
	allAnswered := make(chan struct{})
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			res := &results[i]
			<-start
			rc, resp, err := dialRaw(addrOf(srv), nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				res.err = errors.Join(errors.New("handshake failed"), err)
				answered.Done()
				return
			}
			defer rc.Close()
			// An admitted client gets its message back; a refused one
			// gets the Close frame first.
			if err := rc.writeFrame(0x1, []byte("hi")); err != nil {
				res.err = err
				answered.Done()
				return
			}
			op, p, err := rc.readFrame()
			switch {
			case err != nil:
				res.err = err
			case op == 0x8 && len(p) >= 2:
				res.code = closecode.Code(int(p[0])<<8 | int(p[1]))
				res.reason = string(p[2:])
				res.err = rc.writeClose(res.code, "")
			case op == 0x1 && string(p) == "hi":
				res.admitted = true
			default:
				res.err = errors.New("unexpected frame")
			}
			answered.Done()
			if !res.admitted || res.err != nil {
				return
			}
			<-allAnswered // hold the slot until every client has its answer
			for r := range rounds {
				if err := rc.echo("round " + string(rune('a'+r))); err != nil {
					res.err = err
					return
				}
			}
			if err := rc.writeClose(closecode.NormalClosure, "bye"); err != nil {
				res.err = err
				return
			}
			if code, _, err := rc.readClose(); err != nil || code != closecode.NormalClosure {
				res.err = errors.Join(errors.New("close handshake"), err)
			}
		})
	}
	close(start)
	answered.Wait()
	close(allAnswered)
	wg.Wait()

	var admitted, refused int
	var hints []time.Duration
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("client %d: %v", i, r.err)
		}
		if r.admitted {
			admitted++
			continue
		}
		refused++
		h, ok := closecode.ParseRetryHint(r.reason)
		if r.code != closecode.TryAgainLater || !ok {
			t.Fatalf("client %d refused with %v %q: want 1013 with a parsable hint", i, r.code, r.reason)
		}
		hints = append(hints, h)
	}
	if admitted != limit || refused != clients-limit {
		t.Fatalf("admitted %d refused %d, want exactly %d and %d", admitted, refused, limit, clients-limit)
	}
	slices.Sort(hints)
	distinct := len(slices.Compact(slices.Clone(hints)))
	if distinct < refused/5 || hints[len(hints)-1]-hints[0] < 2*time.Second {
		t.Fatalf("hints from %v to %v, %d distinct among %d: not spread", hints[0], hints[len(hints)-1], distinct, refused)
	}
	t.Logf("%d refused, hints %v … %v, %d distinct", refused, hints[0], hints[len(hints)-1], distinct)

	waitFor(t, "every slot to be released", func() bool { return s.Stats().Connections == 0 })
	st := s.Stats()
	if st.Admitted != limit || st.Refused[Refusal{ReasonConns, ModeClose}] != clients-limit || st.InFlight != 0 {
		t.Fatalf("stats %+v: want %d admitted, %d conns/close refusals", st, limit, clients-limit)
	}
	if st.CloseSent[closecode.TryAgainLater] != clients-limit || st.CloseReceived[closecode.TryAgainLater] != clients-limit || st.CloseReceived[closecode.NormalClosure] != limit {
		t.Fatalf("close codes sent %v received %v: want 150×1013 both ways and 50×1000 received", st.CloseSent, st.CloseReceived)
	}
	// The admitted clients closed first: the server's 1000s are echoes of
	// theirs, not closes it chose.
	if st.CloseSent[closecode.NormalClosure] != 0 || st.CloseEchoed[closecode.NormalClosure] != limit {
		t.Fatalf("1000 sent %d, echoed %d: want 0 sent and %d echoed", st.CloseSent[closecode.NormalClosure], st.CloseEchoed[closecode.NormalClosure], limit)
	}
}

func TestDrain500Clients(t *testing.T) {
	const clients, window = 500, 2 * time.Second
	var evMu sync.Mutex
	var sentAt []time.Time // when the drain sent each 1012
	s := mustNew(t, &Options{DrainWindow: window, OnState: func(ev Event) {
		if ev.State == StateClosing {
			evMu.Lock()
			sentAt = append(sentAt, time.Now())
			evMu.Unlock()
		}
	}})
	srv := echoServer(t, s)

	type got struct {
		code closecode.Code
		hint time.Duration
		at   time.Time
		err  error
	}
	results := make([]got, clients)
	var open, wg sync.WaitGroup
	open.Add(clients)
	for i := range clients {
		wg.Go(func() {
			res := &results[i]
			rc, _, err := dialRaw(addrOf(srv), nil)
			if err == nil {
				defer rc.Close()
				err = rc.echo("up")
			}
			open.Done()
			if err != nil {
				res.err = err
				return
			}
			code, reason, err := rc.readClose()
			res.at = time.Now()
			if err != nil {
				res.err = err
				return
			}
			res.code = code
			h, ok := closecode.ParseRetryHint(reason)
			if !ok {
				res.err = errors.New("no hint in " + reason)
			}
			res.hint = h
			_ = rc.writeClose(code, "")
		})
	}
	open.Wait()
	if n := s.Stats().Connections; n != clients {
		t.Fatalf("%d connections before the drain, want %d", n, clients)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := time.Since(begin)
	wg.Wait()

	// The server spreads its closes over the window. Receive times are
	// checked with slack: the machine running the test may be busy (the
	// race detector on one CPU handles these 1000 connections slowly), and
	// a drain that falls behind catches up at once.
	const slack = 5 * time.Second
	var latest time.Duration
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("client %d: %v", i, r.err)
		}
		at := r.at.Sub(begin)
		if r.code != closecode.ServiceRestart || at > window+slack {
			t.Fatalf("client %d: code %v after %v, want 1012 within the %v window", i, r.code, at, window)
		}
		latest = max(latest, at)
	}
	evMu.Lock()
	var halves [2]int
	for _, at := range sentAt {
		halves[min(1, int(at.Sub(begin)*2/window))]++
	}
	evMu.Unlock()
	if halves[0]+halves[1] != clients || halves[0] < clients/5 || halves[1] < clients/5 {
		t.Fatalf("1012 sent per half of the window %v: not spread over it", halves)
	}
	t.Logf("Shutdown took %v; 1012 sent per half of the window %v; last client had it after %v", took, halves, latest)
	st := s.Stats()
	if st.Drained != clients || st.Connections != 0 || st.ForceClosed != 0 || st.CloseReceived[closecode.ServiceRestart] != clients {
		t.Fatalf("stats %+v: want %d drained with 1012 answered, none left or forced", st, clients)
	}

	// A client arriving during (here: after) the drain gets 101 then 1012.
	rc, resp, err := dialRaw(addrOf(srv), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("late client: %v %v", resp, err)
	}
	defer rc.Close()
	code, reason, err := rc.readClose()
	if _, ok := closecode.ParseRetryHint(reason); err != nil || code != closecode.ServiceRestart || !ok || !strings.HasPrefix(reason, "server restarting") {
		t.Fatalf("late client: %v %q %v, want 1012 \"server restarting; retry-after=…\"", code, reason, err)
	}
}

func TestSheddingRealConnections(t *testing.T) {
	var high atomic.Bool
	var s *Shedder
	s = mustNew(t, &Options{
		Limits: Limits{Pressure: 1}, SampleInterval: time.Millisecond,
		// High until the first round, so that exactly one round happens
		// however slowly this test runs.
		Pressure: func() float64 {
			if high.Load() && s.stats.shed.Load() == 0 {
				return 4
			}
			return 0
		},
		Shed: &ShedPolicy{Interval: 300 * time.Millisecond, Fraction: 0.5},
	})
	srv := echoServer(t, s)
	var clients []*rawClient
	for range 10 {
		rc, _, err := dialRaw(addrOf(srv), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if err := rc.echo("x"); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, rc)
	}
	high.Store(true)
	waitFor(t, "a shedding round", func() bool { return s.Stats().Shed > 0 })
	// The five newest got 1013 with a hint and answer it.
	for i, rc := range clients[5:] {
		code, reason, err := rc.readClose()
		if _, ok := closecode.ParseRetryHint(reason); err != nil || code != closecode.TryAgainLater || !ok {
			t.Fatalf("new client %d: %v %q %v, want 1013 with a hint", 5+i, code, reason, err)
		}
		_ = rc.writeClose(code, "")
	}
	waitFor(t, "the shed connections to go", func() bool { return s.Stats().Connections == 5 })
	time.Sleep(400 * time.Millisecond) // longer than an interval: no second round
	if st := s.Stats(); st.Shed != 5 || st.Connections != 5 {
		t.Fatalf("shed %d, left %d: want one round of half of 10", st.Shed, st.Connections)
	}
	// The five oldest still echo.
	for i, rc := range clients[:5] {
		if err := rc.echo("still"); err != nil {
			t.Fatalf("old client %d: %v", i, err)
		}
	}
}

func TestShutdownForceClosesHijackedUntracked(t *testing.T) {
	s := mustNew(t, &Options{DrainWindow: 10 * time.Millisecond})
	handlerDone := make(chan struct{})
	srv := httptest.NewServer(s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(handlerDone)
		// A library we know nothing about: it hijacks and never calls Track.
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		key := r.Header.Get("Sec-WebSocket-Key")
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wantAccept(key) + "\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(io.Discard, brw)
	})))
	defer srv.Close()
	rc, resp, err := dialRaw(addrOf(srv), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%v %v", resp, err)
	}
	defer rc.Close()
	waitFor(t, "the hijack", func() bool { return s.Stats().InFlight == 0 })
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded (nothing could close it gracefully)", err)
	}
	<-handlerDone
	waitFor(t, "the slot to be released", func() bool { return s.Stats().Connections == 0 })
	if _, err := rc.br.ReadByte(); err == nil || errors.Is(err, net.ErrClosed) {
		t.Fatalf("client read %v after the force-close, want EOF or reset", err)
	}
	if st := s.Stats(); st.ForceClosed != 1 || st.Connections != 0 {
		t.Fatalf("stats %+v: want 1 force-closed, 0 left", st)
	}
}
