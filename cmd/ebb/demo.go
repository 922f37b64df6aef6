package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
	"github.com/ebb-ws/ebb/websocket"
)

// demoOptions holds the flags of "ebb demo".
type demoOptions struct {
	plot   string
	quick  bool
	crowd  int
	limit  int
	asJSON bool
}

func newDemoCmd(e *env) *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "A one-minute tour: overload (1013), restart (1012) and a missing extension (1010)",
		Long: `Demo runs an ebb server and a crowd of ebb clients on loopback and shows,
in about a minute, what ebb does at the two hard edges of WebSocket:

  1. Overload. The server admits --limit connections; a crowd of --crowd
     clients arrives at once. The surplus is refused with 1013 Try Again
     Later and a jittered "retry-after" hint; clients back off (1 s,
     doubling, jittered, never sooner than the hint) and get in as admitted
     clients finish and free their slots.
  2. Restart. The whole crowd is connected; the server drains, closing
     every connection with 1012 Service Restart spread over a window, and
     comes back after a pause. The clients return spread out, not in a
     stampede.
  3. Missing extension. A client that requires permessage-deflate meets a
     server with compression off: it closes with 1010 Mandatory Extension,
     says what was missing, and does not retry.

Everything runs on 127.0.0.1 and stops by itself. A live line shows the
progress; the summary at the end explains every close code seen, and a PNG
timeline (connections and close codes over time) is written to --plot.`,
		Example: `  ebb demo
  ebb demo --quick --plot /tmp/timeline.png`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.crowd < 2 || o.limit < 1 || o.limit >= o.crowd {
				return usagef("demo: want --limit ≥ 1 and --crowd > --limit (got limit %d, crowd %d)", o.limit, o.crowd)
			}
			if o.plot == "" {
				o.plot = filepath.Join(os.TempDir(), "ebb-demo-timeline.png")
			}
			return runDemo(cmd.Context(), e, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.plot, "plot", "", "where to write the PNG timeline (default: ebb-demo-timeline.png in the temp directory)")
	f.BoolVar(&o.quick, "quick", false, "shorter sessions and windows: about 25 seconds")
	f.IntVar(&o.crowd, "crowd", 48, "clients in the crowd")
	f.IntVar(&o.limit, "limit", 12, "connections the server admits at once in the overload phase")
	f.BoolVar(&o.asJSON, "json", false, "print the summary as JSON")
	return cmd
}

// demo is one run: the timings of its phases and everything it observed.
type demo struct {
	e     *env
	o     *demoOptions
	pace  float64 // scales every duration of the script
	start time.Time
	rec   *demoRecorder
	live  *liveLine
	addr  string
	srv   atomic.Pointer[server.Server]
}

func (d *demo) dur(x time.Duration) time.Duration { return time.Duration(float64(x) * d.pace) }

func runDemo(ctx context.Context, e *env, o *demoOptions) error {
	d := &demo{e: e, o: o, pace: 1, start: time.Now(), rec: newDemoRecorder()}
	if o.quick {
		d.pace = 0.45
	}
	d.live = newLiveLine(e.stderr)
	defer d.live.stop()

	srv, err := d.startServer("127.0.0.1:0", o.limit, nil)
	if err != nil {
		return err
	}
	d.addr = srv.Addr()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() { d.sample(sampleCtx) })
	defer func() {
		stopSampling()
		sampler.Wait()
	}()

	fmt.Fprintf(e.stderr, "ebb demo: server on ws://%s/echo, admitting %d connections; a crowd of %d clients\n", d.addr, o.limit, o.crowd)
	phases := []struct {
		name string
		run  func(context.Context) error
	}{
		{"1/3 overload: 1013 Try Again Later", d.overload},
		{"2/3 restart: 1012 Service Restart", d.restart},
		{"3/3 missing extension: 1010 Mandatory Extension", d.mandatory},
	}
	for _, p := range phases {
		d.live.phase(p.name)
		if err := p.run(ctx); err != nil {
			d.live.stop()
			d.shutdownServer()
			if ctx.Err() != nil {
				fmt.Fprintln(e.stderr, "ebb demo: interrupted; what was seen so far:")
				d.report()
				return ctx.Err()
			}
			return fmt.Errorf("%s: %w", p.name, err)
		}
	}
	d.shutdownServer()
	d.live.stop()
	stopSampling()
	sampler.Wait()
	if err := writeTimeline(o.plot, d.rec, d.start); err != nil {
		fmt.Fprintf(e.stderr, "ebb demo: could not write the timeline: %v\n", err)
	} else {
		d.rec.plotPath = o.plot
	}
	return d.report()
}

// startServer runs an ebb server with a connection limit and optional
// compression.
func (d *demo) startServer(addr string, limit int, comp *websocket.CompressionOptions) (*server.Server, error) {
	s, err := server.New(server.Config{
		Addr: addr,
		Shed: shed.Options{
			Limits:      shed.Limits{MaxConns: limit},
			RetryBase:   d.dur(time.Second),
			RetryMax:    d.dur(4 * time.Second),
			DrainWindow: d.dur(3 * time.Second),
			DrainHint:   d.dur(time.Second),
		},
		Listener:    shed.ListenerOptions{MaxPending: server.DefaultMaxPending},
		Compression: comp,
	})
	if err != nil {
		return nil, err
	}
	go s.Serve()
	d.srv.Store(s)
	return s, nil
}

func (d *demo) shutdownServer() {
	if s := d.srv.Swap(nil); s != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		d.rec.mergeServer(s.Shedder().Stats())
	}
}

// sample records the server's connection count for the timeline.
func (d *demo) sample(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := -1 // no server running
			if s := d.srv.Load(); s != nil {
				n = s.Shedder().Stats().Connections
			}
			d.rec.sample(now, n)
			d.live.update(d.rec.status(n))
		}
	}
}

// crowdClient runs one reconnecting client. On every new connection it
// says hello; the echo of that hello is how the client knows the server
// really admitted it (a refused client is upgraded too, then closed at once
// with 1013).
func (d *demo) crowdClient(ctx context.Context, persistent bool) (*reconnect.Client, error) {
	policy := reconnect.Policy{
		Backoff:      reconnect.Backoff{Base: d.dur(time.Second), Cap: d.dur(4 * time.Second)},
		StablePeriod: d.dur(2 * time.Second),
		Persistent:   persistent,
		MaxElapsed:   2 * time.Minute,
	}
	return reconnect.New(ctx, "ws://"+d.addr+"/echo", &reconnect.Options{
		Policy:  policy,
		OnEvent: d.rec.clientEvent,
		OnConnect: func(ctx context.Context, c *websocket.Conn) error {
			return c.Write(ctx, websocket.MessageText, []byte("hello"))
		},
	})
}

// overload: a crowd larger than the limit arrives at once; each admitted
// client holds its connection for a few seconds, then leaves.
func (d *demo) overload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.dur(45*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, d.o.crowd)
	for i := range d.o.crowd {
		wg.Go(func() {
			c, err := d.crowdClient(ctx, false)
			if err != nil {
				errs <- err
				return
			}
			hold := d.dur(time.Duration(3000+rand.IntN(2500)) * time.Millisecond)
			// The first echo says the server admitted this client.
			if _, _, err := c.Read(ctx); err != nil {
				errs <- fmt.Errorf("client %d never got in: %w", i, err)
				c.Close(closecode.GoingAway, "")
				return
			}
			go func() {
				for {
					if _, _, err := c.Read(ctx); err != nil {
						return
					}
				}
			}()
			d.rec.sessionStarted()
			tick := time.NewTicker(d.dur(500 * time.Millisecond))
			end := time.After(hold)
		loop:
			for {
				select {
				case <-tick.C:
					c.Write(ctx, websocket.MessageText, []byte("ping from the crowd"))
				case <-end:
					break loop
				case <-ctx.Done():
					break loop
				}
			}
			tick.Stop()
			c.Close(closecode.NormalClosure, "session over")
			d.rec.sessionDone()
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	d.rec.phaseEnd("overload", time.Since(d.start))
	return errors.Join(all...)
}

// restart: the whole crowd connected, the server drains with 1012 and comes
// back; the crowd returns spread out.
func (d *demo) restart(ctx context.Context) error {
	s := d.srv.Load()
	if err := s.Shedder().SetLimits(shed.Limits{MaxConns: 10 * d.o.crowd}); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.dur(45*time.Second))
	defer cancel()
	clients := make([]*reconnect.Client, d.o.crowd)
	for i := range clients {
		c, err := d.crowdClient(ctx, true)
		if err != nil {
			return err
		}
		clients[i] = c
		go func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		for _, c := range clients {
			c.Close(closecode.NormalClosure, "demo over")
		}
	}()
	if err := waitAllOpen(ctx, clients); err != nil {
		return fmt.Errorf("crowd did not connect: %w", err)
	}
	// Let the full house show on the timeline before the drain.
	select {
	case <-time.After(d.dur(1500 * time.Millisecond)):
	case <-ctx.Done():
		return ctx.Err()
	}
	d.rec.mark("drain")
	// Drain: every connection gets 1012 with a hint, spread over the window.
	d.shutdownServer()
	d.rec.mark("down")
	select {
	case <-time.After(d.dur(1500 * time.Millisecond)):
	case <-ctx.Done():
		return ctx.Err()
	}
	if _, err := d.startServer(d.addr, 10*d.o.crowd, nil); err != nil {
		return fmt.Errorf("restarting the server on %s: %w", d.addr, err)
	}
	d.rec.mark("up")
	up := time.Now()
	// Wait until every client has reconnected to the new server.
	for d.rec.reopened() < d.o.crowd {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d clients came back: %w", d.rec.reopened(), d.o.crowd, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.rec.backIn = time.Since(up)
	d.rec.phaseEnd("restart", time.Since(d.start))
	return nil
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
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d open: %w", open, len(clients), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mandatory: a client requiring permessage-deflate against a server with
// compression on (it works) and with compression off (1010).
func (d *demo) mandatory(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	req := []websocket.Requirement{{Extension: "permessage-deflate"}}
	on, err := server.New(server.Config{Addr: "127.0.0.1:0", Compression: &websocket.CompressionOptions{}})
	if err != nil {
		return err
	}
	go on.Serve()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		on.Shutdown(sctx)
	}()
	c, _, err := websocket.Dial(ctx, "ws://"+on.Addr()+"/echo", &websocket.DialOptions{Require: req})
	if err != nil {
		return fmt.Errorf("client requiring permessage-deflate against a server with compression on: %w", err)
	}
	d.rec.negotiated = c.Extensions()
	c.Close(closecode.NormalClosure, "")

	off := d.srv.Load()
	_, _, err = websocket.Dial(ctx, "ws://"+d.addr+"/echo", &websocket.DialOptions{Require: req})
	var me *websocket.MandatoryExtensionError
	if !errors.As(err, &me) {
		return fmt.Errorf("client requiring permessage-deflate against a server without it: got %v, want a 1010 MandatoryExtensionError", err)
	}
	d.rec.mandatory = me
	d.rec.event(time.Now(), closecode.MandatoryExtension, "client")
	// The server saw the client's 1010 too: wait for it to count it.
	for range 100 {
		if off.Shedder().Stats().CloseReceived[closecode.MandatoryExtension] > 0 {
			d.rec.serverSaw1010 = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	d.rec.phaseEnd("mandatory", time.Since(d.start))
	return nil
}
