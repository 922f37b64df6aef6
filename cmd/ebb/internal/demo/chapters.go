package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// crowdClient starts crowd client i, dialing ws://addr/echo: ebb's
// reconnecting client with the script's backoff (1 s doubling to a 4 s
// cap, jittered; the server's hint is a floor). On every connection it
// says hello; the echo of that hello is how it knows it was admitted (a
// refused client is upgraded too, then closed at once with 1013).
func (st *stage) crowdClient(ctx context.Context, i int, addr string, persistent bool) (*reconnect.Client, error) {
	return reconnect.New(ctx, "ws://"+addr+"/echo", &reconnect.Options{
		Policy: reconnect.Policy{
			Backoff:      reconnect.Backoff{Base: st.dur(time.Second), Cap: st.dur(4 * time.Second)},
			StablePeriod: st.dur(time.Second),
			Persistent:   persistent,
			MaxElapsed:   2 * time.Minute,
		},
		OnEvent: st.clientEvents(i),
		OnConnect: func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte("hello"))
		},
	})
}

// drainReads reads c until it stops, so that the client keeps seeing its
// connection's close frames (reconnect.Client needs a reader).
func drainReads(ctx context.Context, c *reconnect.Client) {
	for {
		if _, _, err := c.Read(ctx); err != nil {
			return
		}
	}
}

// Overload is the first chapter: a crowd larger than the server's limit
// arrives at once. The surplus is refused with 1013 Try Again Later and a
// jittered retry hint; the refused clients back off (never sooner than the
// hint) and get in as admitted clients finish their sessions (2–4 s
// each) and leave with 1000.
type Overload struct{}

// Name implements Chapter.
func (Overload) Name() string { return "overload" }

// Title implements Chapter.
func (Overload) Title() string { return "overload → backoff" }

func (ch Overload) play(ctx context.Context, st *stage) (Finding, error) {
	s := st.server(mainServer)
	if s == nil {
		return nil, errors.New("the server is not running: the overload chapter needs the main server")
	}
	if err := s.Shedder().SetLimits(shed.Limits{MaxConns: st.opts.Limit}); err != nil {
		return nil, err
	}
	start := st.since()
	ctx, cancel := context.WithTimeout(ctx, st.dur(60*time.Second)+10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, st.opts.Crowd)
	for i := range st.opts.Crowd {
		wg.Go(func() {
			if err := st.session(ctx, i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	f := st.overloadFinding(ch.Name(), start)
	if err := errors.Join(all...); err != nil {
		if ctx.Err() != nil && len(all) > 0 {
			return f, fmt.Errorf("%d of %d clients did not finish their session: %w", len(all), st.opts.Crowd, all[0])
		}
		return f, err
	}
	return f, nil
}

// session is one crowd client of the overload chapter: get in, hold the
// connection a few seconds with a ping every half second, leave with 1000.
func (st *stage) session(ctx context.Context, i int) error {
	c, err := st.crowdClient(ctx, i, st.addr, false)
	if err != nil {
		return err
	}
	// The first echo says the server admitted this client.
	if _, _, err := c.Read(ctx); err != nil {
		c.Close(closecode.GoingAway, "")
		return fmt.Errorf("client %d never got in: %w", i, err)
	}
	var reader sync.WaitGroup
	reader.Go(func() { drainReads(ctx, c) })
	hold := st.dur(time.Duration(2000+rand.IntN(2000)) * time.Millisecond)
	tick := time.NewTicker(st.dur(500 * time.Millisecond))
	end := time.NewTimer(hold)
loop:
	for {
		select {
		case <-tick.C:
			_ = c.Write(ctx, websocket.MessageText, []byte("ping from the crowd"))
		case <-end.C:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	tick.Stop()
	end.Stop()
	c.Close(closecode.NormalClosure, "session over")
	reader.Wait()
	return nil
}

// Restart is the second chapter: the limit is lifted and the whole crowd
// connects (persistent links); the server drains, closing every connection
// with 1012 Service Restart spread over the drain window, each with a
// retry hint long enough to cover the drain and the restart. While it
// drains the server keeps its port open, refusing a newcomer with 1012 and
// answering /healthz with 503; it closes the port when the last connection
// is gone, stays down a moment, comes back on the same address, and the
// crowd returns spread out.
type Restart struct{}

// Name implements Chapter.
func (Restart) Name() string { return "restart" }

// Title implements Chapter.
func (Restart) Title() string { return "drain → restart" }

func (ch Restart) play(ctx context.Context, st *stage) (Finding, error) {
	s := st.server(mainServer)
	if s == nil {
		return nil, errors.New("the server is not running: the restart chapter needs the main server")
	}
	room := 10 * st.opts.Crowd
	if err := s.Shedder().SetLimits(shed.Limits{MaxConns: room}); err != nil {
		return nil, err
	}
	start := st.since()
	ctx, cancel := context.WithTimeout(ctx, st.dur(45*time.Second)+10*time.Second)
	defer cancel()
	clients := make([]*reconnect.Client, 0, st.opts.Crowd)
	var readers sync.WaitGroup
	defer func() {
		for _, c := range clients {
			c.Close(closecode.NormalClosure, "demo over")
		}
		readers.Wait()
	}()
	for i := range st.opts.Crowd {
		c, err := st.crowdClient(ctx, i, st.addr, true)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
		readers.Go(func() { drainReads(ctx, c) })
	}
	if err := waitAllOpen(ctx, clients); err != nil {
		return nil, fmt.Errorf("the crowd did not connect: %w", err)
	}
	// Let the full house show on the timeline before the drain.
	if err := sleep(ctx, st.dur(1500*time.Millisecond)); err != nil {
		return nil, err
	}

	st.mark("drain", "drain starts")
	f := &RestartFinding{Clients: st.opts.Crowd, DrainWindow: st.dur(drainWindow), DrainHint: st.dur(drainHint)}
	var probes sync.WaitGroup
	probes.Go(func() {
		// A third into the window, the server is still draining.
		if sleep(ctx, st.dur(drainWindow)/3) != nil {
			return
		}
		st.probeDuringDrain(ctx, f)
	})
	dctx, dcancel := context.WithTimeout(ctx, 3*st.dur(drainWindow)+5*time.Second)
	err := st.stopServer(dctx, mainServer)
	dcancel()
	probes.Wait()
	if err != nil {
		return nil, fmt.Errorf("draining the server: %w", err)
	}
	st.mark("down", "port closed")
	if err := sleep(ctx, st.dur(restartGap)); err != nil {
		return nil, err
	}
	if _, err := st.startServer(mainServer, st.mainConfig(room)); err != nil {
		return nil, fmt.Errorf("restarting: %w", err)
	}
	st.mark("up", "server up")
	up, _ := st.markAt("up")
	for st.opensSince(up) < st.opts.Crowd {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, fmt.Errorf("%d of %d clients came back: %w", st.opensSince(up), st.opts.Crowd, err)
		}
	}
	st.mark("back", "all back")
	if err := sleep(ctx, st.dur(time.Second)); err != nil {
		return nil, err
	}
	st.restartFinding(ch.Name(), start, f)
	return f, nil
}

// probeDuringDrain shows what a draining server does: a newcomer is refused
// with the drain code and a hint, and /healthz says 503.
func (st *stage) probeDuringDrain(ctx context.Context, f *RestartFinding) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e := Event{Client: -1, Who: "a newcomer", Code: closecode.AbnormalClosure, Sender: SentLocally}
	c, resp, err := websocket.Dial(ctx, "ws://"+st.addr+"/echo", nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err == nil {
		_, _, err = c.Read(ctx)
		c.CloseNow()
	}
	var ce *websocket.CloseError
	var he *websocket.HandshakeError
	switch {
	case errors.As(err, &ce):
		e.Code, e.Reason = ce.Code, ce.Reason
		e.Sender = SentByClient
		if ce.Remote {
			e.Sender = SentByServer
		}
	case errors.As(err, &he):
		e.Code, e.Sender, e.Reason = 0, SentOverHTTP, fmt.Sprintf("HTTP %d", he.StatusCode)
	}
	if h, ok := closecode.ParseRetryHint(e.Reason); ok {
		e.Hint = h
	}
	st.event(e)
	f.Newcomer = e

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+st.addr+"/healthz", nil)
	if err != nil {
		return
	}
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		f.Health = "unreachable: " + err.Error()
		return
	}
	body, _ := io.ReadAll(io.LimitReader(hr.Body, 200))
	hr.Body.Close()
	f.Health = fmt.Sprintf("%d %s", hr.StatusCode, strings.TrimSpace(string(body)))
}

func waitAllOpen(ctx context.Context, clients []*reconnect.Client) error {
	for {
		open := 0
		for _, c := range clients {
			if c.State() == reconnect.StateOpen {
				open++
			}
		}
		if open == len(clients) {
			return nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("%d of %d open: %w", open, len(clients), err)
		}
	}
}

// MissingExtension is the last chapter: a client that requires
// permessage-deflate meets a server with compression on (it works), then
// the crowd's server, which has compression off: the client ends the
// connection with 1010 Mandatory Extension, names what was missing, and
// does not retry.
type MissingExtension struct{}

// Name implements Chapter.
func (MissingExtension) Name() string { return "extension" }

// Title implements Chapter.
func (MissingExtension) Title() string { return "missing extension" }

func (MissingExtension) play(ctx context.Context, st *stage) (Finding, error) {
	off := st.server(mainServer)
	if off == nil {
		return nil, errors.New("the server is not running: the missing-extension chapter needs the main server")
	}
	ctx, cancel := context.WithTimeout(ctx, st.dur(10*time.Second)+20*time.Second)
	defer cancel()
	const ext = "permessage-deflate"
	req := []websocket.Requirement{{Extension: ext}}
	f := &MissingExtensionFinding{Required: ext, Fix: closecode.Lookup(closecode.MandatoryExtension).Fix}
	if err := sleep(ctx, st.dur(time.Second)); err != nil {
		return nil, err
	}

	// Against a server with compression on, the requirement is met.
	on, err := st.startServer("compression on", server.Config{Addr: "127.0.0.1:0", Compression: &websocket.CompressionOptions{}})
	if err != nil {
		return nil, err
	}
	c, _, err := websocket.Dial(ctx, "ws://"+on.Addr()+"/echo", &websocket.DialOptions{Require: req})
	if err != nil {
		return nil, fmt.Errorf("a client requiring %s against a server with compression on: %w", ext, err)
	}
	f.Negotiated = c.Extensions()
	c.Close(closecode.NormalClosure, "requirement met")
	st.event(Event{Client: -1, Who: "the client requiring " + ext, Code: closecode.NormalClosure, Sender: SentByClient, Reason: "requirement met"})
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	err = st.stopServer(sctx, "compression on")
	scancel()
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, st.dur(time.Second)); err != nil {
		return f, err
	}

	// Against the crowd's server, compression off: 1010, and no retry.
	var mu sync.Mutex
	var closed *reconnect.Event
	rc, err := reconnect.New(ctx, "ws://"+st.addr+"/echo", &reconnect.Options{
		Dial: &websocket.DialOptions{Require: req},
		OnEvent: func(e reconnect.Event) {
			mu.Lock()
			defer mu.Unlock()
			switch e.State {
			case reconnect.StateClosed:
				if closed == nil {
					closed = &e
				}
				st.event(Event{At: e.Time.Sub(st.start), Client: -1, Who: "the client requiring " + ext, Code: e.Code, Sender: senderOf(e), Reason: e.Reason})
			case reconnect.StateWaiting:
				f.Retried = true
			}
		},
	})
	if err != nil {
		return f, err
	}
	select {
	case <-rc.Done():
	case <-ctx.Done():
		rc.Close(closecode.GoingAway, "")
		return f, ctx.Err()
	}
	mu.Lock()
	ev := closed
	mu.Unlock()
	var me *websocket.MandatoryExtensionError
	if ev == nil || ev.Code != closecode.MandatoryExtension || !errors.As(ev.Err, &me) {
		got := "no close"
		if ev != nil {
			got = fmt.Sprintf("%v (%v)", ev.Code, ev.Err)
		}
		return f, fmt.Errorf("a client requiring %s against a server without it ended with %s: want 1010 Mandatory Extension", ext, got)
	}
	f.Missing, f.Offered, f.Answered, f.Error = me.Missing, me.Offered, me.Answered, me.Error()
	// The server receives the client's 1010 and echoes it in the close
	// handshake; it counts both once the connection's handler returns.
	for range 200 {
		stats := off.Shedder().Stats()
		f.ServerReceived = stats.CloseReceived[closecode.MandatoryExtension] > 0
		f.ServerEchoed = stats.CloseSent[closecode.MandatoryExtension] > 0
		if f.ServerReceived {
			break
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return f, err
		}
	}
	if err := sleep(ctx, st.dur(time.Second)); err != nil {
		return f, err
	}
	return f, nil
}
