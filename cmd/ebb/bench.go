package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// benchOptions holds the flags every bench mode shares.
type benchOptions struct {
	conns       int
	duration    time.Duration
	dialTimeout time.Duration
	headers     []string
	insecure    bool
	asJSON      bool
	plot        string
}

func newBenchCmd(e *env) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Load-test a WebSocket server: echo throughput, handshake rate, reconnect storms, idle memory",
		Long: `Bench measures a WebSocket server, ebb or any other, from the client side.

Modes:
  echo URL     N connections send messages and time the echoes
  connect URL  open and close connections as fast as the server allows
  storm [URL]  N clients connect at once and keep reconnecting by a policy
               (none, immediate, nojitter, backoff); with --restart, against
               an in-process ebb server that drains with 1012 and comes back
  idle URL     hold N idle connections and report memory per connection,
               from the server's /metrics when it has ebb's gauges

Every mode is bounded by --duration and --conns, stops by itself, and
stops cleanly on Ctrl-C, still printing what it measured. While it runs, a
live line on standard error shows progress (only when standard error is a
terminal). At the end a table goes to standard output: messages/s, bytes/s,
latency percentiles (p50, p90, p99, p99.9, max, from an HDR histogram),
handshake rates, how connections ended by close code with the registry's
name, HTTP statuses of refused handshakes, reconnect attempts and delays.
--json writes the same as JSON (schema "` + benchSchema + `"); --plot FILE.png
draws connections, handshakes, close codes and latency over time.

The bench checks the open-file limit before it starts and says when the
client, not the server, was the bottleneck (a busy client CPU, no free
local ports, no file descriptors).`,
		Example: `  ebb bench echo -c 100 -d 10s --size 1024 ws://localhost:8080/echo
  ebb bench connect -c 50 -d 5s ws://localhost:8080/echo
  ebb bench storm -c 200 --policy backoff,immediate ws://localhost:8080/echo
  ebb bench storm --restart -c 1000 --policy backoff,immediate,nojitter --plot storm.png
  ebb bench idle -c 5000 ws://localhost:8080/echo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("bench: name a mode: echo, connect, storm or idle (see 'ebb bench --help')")
		},
	}
	f := cmd.PersistentFlags()
	f.IntVarP(&o.conns, "conns", "c", 10, "connections (echo, idle), workers (connect) or clients (storm)")
	f.DurationVarP(&o.duration, "duration", "d", 10*time.Second, "longest time the bench runs (at most 1h)")
	f.DurationVar(&o.dialTimeout, "dial-timeout", 10*time.Second, "longest time one connection attempt may take")
	f.StringArrayVarP(&o.headers, "header", "H", nil, `extra request header "Name: value" (repeatable)`)
	f.BoolVar(&o.insecure, "insecure", false, "skip TLS certificate verification (testing only)")
	f.BoolVar(&o.asJSON, "json", false, "write the report as JSON on standard output")
	f.StringVar(&o.plot, "plot", "", "draw the run over time into this PNG file")
	cmd.AddCommand(
		newBenchEchoCmd(e, o),
		newBenchConnectCmd(e, o),
		newBenchStormCmd(e, o),
		newBenchIdleCmd(e, o),
	)
	return cmd
}

// maxBenchDuration bounds --duration: a bench is a measurement, not a soak.
const maxBenchDuration = time.Hour

// check validates the shared flags; fdsPerConn is how many file
// descriptors each connection needs in this process (2 when the server
// runs in-process).
func (o *benchOptions) check(fdsPerConn int) error {
	if o.conns < 1 {
		return usagef("bench: --conns %d: want at least 1", o.conns)
	}
	if o.duration <= 0 || o.duration > maxBenchDuration {
		return usagef("bench: --duration %v: want a duration in (0, %v]", o.duration, maxBenchDuration)
	}
	if o.dialTimeout <= 0 {
		return usagef("bench: --dial-timeout %v: want a positive duration", o.dialTimeout)
	}
	if o.plot != "" && !strings.HasSuffix(strings.ToLower(o.plot), ".png") {
		return usagef("bench: --plot %q: want a file name ending in .png", o.plot)
	}
	return checkFileLimit(o.conns * fdsPerConn)
}

// checkBenchURL rejects a URL Dial would refuse later less clearly.
func checkBenchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return usagef("bench: %q is not a URL: %v", raw, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return usagef("bench: URL %q has scheme %q: want ws:// or wss://", raw, u.Scheme)
	}
	if u.Host == "" {
		return usagef("bench: URL %q has no host: want ws://host[:port]/path", raw)
	}
	return nil
}

// dialOptions builds the websocket options shared by every connection.
func (o *benchOptions) dialOptions(compress bool) (*websocket.DialOptions, error) {
	h := http.Header{}
	for _, kv := range o.headers {
		name, value, ok := strings.Cut(kv, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, usagef(`bench: header %q is not of the form "Name: value"`, kv)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	d := &websocket.DialOptions{Header: h, Proxy: noProxy}
	if o.insecure {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if compress {
		d.Compression = &websocket.CompressionOptions{}
	}
	return d, nil
}

// noProxy keeps a bench direct: going through a proxy would measure the
// proxy.
func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// bench is one run of one mode: its recorder, its connections' common
// settings and its live line.
type bench struct {
	e       *env
	o       *benchOptions
	url     string
	dopts   *websocket.DialOptions
	rec     *recorder
	wg      sync.WaitGroup
	started time.Time
}

func newBench(e *env, o *benchOptions, rawURL string, dopts *websocket.DialOptions, target int) *bench {
	now := time.Now()
	return &bench{e: e, o: o, url: rawURL, dopts: dopts, rec: newRecorder(now, target), started: now}
}

// dialBounded is dial with at most cap(sem) dials in progress at once. It
// returns nil if the dial failed or ctx ended while waiting its turn.
func (b *bench) dialBounded(ctx context.Context, sem chan struct{}) *websocket.Conn {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-sem }()
	c, _, err := b.dial(ctx, false)
	if err != nil {
		return nil
	}
	return c
}

// dial opens one connection and records the attempt and its outcome. It
// reports the error only; a failure after ctx ended is not counted, since
// the bench, not the server, cut it short.
func (b *bench) dial(ctx context.Context, reconnect bool) (*websocket.Conn, *http.Response, error) {
	start := time.Now()
	b.rec.attempt(start, reconnect)
	dctx, cancel := context.WithTimeoutCause(ctx, b.o.dialTimeout, errDialTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(dctx, b.url, b.dopts)
	now := time.Now()
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Remote {
		// Upgraded, then closed at once: a refusal such as 1013.
		b.rec.opened(now, now.Sub(start))
		b.rec.closed(now, ce.Code, "server")
		return nil, resp, err
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, resp, ctx.Err()
		}
		if dctx.Err() != nil && !errors.Is(err, errDialTimeout) {
			err = fmt.Errorf("%w: %w", errDialTimeout, err)
		}
		b.rec.failed(now, err, resp)
		return nil, resp, err
	}
	b.rec.opened(now, now.Sub(start))
	return c, resp, nil
}

// ending is how a connection ended.
type ending struct {
	code   closecode.Code
	reason string
	by     string // "server", "client" (the bench closed it) or "local"
}

// benchConn is an open connection of a run. The goroutine that drives it
// also ends it (see end): closing from another goroutine while the driver
// may be between two reads would leave nobody to read the peer's answer.
type benchConn struct {
	*websocket.Conn
	closing atomic.Bool
}

// end closes the connection with 1000 as the bench's own choice.
func (bc *benchConn) end() {
	bc.closing.Store(true)
	_ = bc.Close(closecode.NormalClosure, "ebb bench finished")
}

// closeGrace bounds how long a driver may take to notice that the run
// ended (an echo that never comes back) before the connection is dropped.
const closeGrace = 2 * time.Second

// session runs work on an open connection until the connection ends, and
// records how it ended. work must return once ctx ends, after calling end;
// if it has not returned closeGrace later, the connection is dropped.
func (b *bench) session(ctx context.Context, c *websocket.Conn, work func(ctx context.Context, bc *benchConn) error) ending {
	bc := &benchConn{Conn: c}
	guard := context.AfterFunc(ctx, func() {
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		select {
		case <-c.Done():
		case <-t.C:
			_ = c.CloseNow()
		}
	})
	err := work(ctx, bc)
	guard()
	_ = c.CloseNow()
	end := ending{code: closecode.AbnormalClosure, by: "local"}
	var ce *websocket.CloseError
	switch {
	case bc.closing.Load():
		end = ending{code: closecode.NormalClosure, by: "client"}
	case errors.As(err, &ce):
		end.code, end.reason = ce.Code, ce.Reason
		switch {
		case ce.Remote:
			end.by = "server"
		case ce.Code != closecode.AbnormalClosure:
			end.by = "client"
		}
	}
	b.rec.closed(time.Now(), end.code, end.by)
	return end
}

// readAll reads and drops messages until the connection ends, answering
// pings and the close handshake; when ctx ends it closes the connection.
// Nothing else reads meanwhile, so Close's answer reaches this reader.
func readAll(ctx context.Context, bc *benchConn) error {
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(closed)
		bc.end()
	})
	var err error
	for {
		if _, _, err = bc.Read(context.Background()); err != nil {
			break
		}
	}
	if !stop() {
		<-closed
	}
	return err
}

// finish builds the report once the run is over.
func (b *bench) finish(ctx context.Context, mode string, runs []runReport, client clientReport) *benchReport {
	return &benchReport{
		Schema:      benchSchema,
		Mode:        mode,
		URL:         b.url,
		Started:     b.started.UTC().Round(time.Millisecond),
		Seconds:     round3(time.Since(b.started).Seconds()),
		Interrupted: ctx.Err() != nil,
		Client:      client,
		Runs:        runs,
	}
}

// output prints the report (table or JSON), draws the plot, and turns an
// interrupted run into exit status 130.
func (o *benchOptions) output(e *env, rep *benchReport) error {
	if o.asJSON {
		if err := rep.writeJSON(e.stdout); err != nil {
			return fmt.Errorf("cannot write the JSON report: %w", err)
		}
	} else {
		rep.writeTable(e.stdout)
	}
	if o.plot != "" {
		if err := writePlot(o.plot, rep); err != nil {
			return fmt.Errorf("cannot draw %s: %w", o.plot, err)
		}
		fmt.Fprintf(e.stderr, "ebb bench: plot written to %s\n", o.plot)
	}
	if rep.Interrupted {
		return &exitError{code: exitInterrupted, msg: "bench: interrupted; the report above covers what was measured until then"}
	}
	return nil
}

// cpuMeter measures the CPU the bench process uses while it runs.
type cpuMeter struct {
	wall time.Time
	cpu  time.Duration
}

func startCPU() cpuMeter { return cpuMeter{wall: time.Now(), cpu: processCPU()} }

// clientReport describes the client side and says whether it was the
// bottleneck, looking at CPU use and at the errors of every run.
func (m cpuMeter) clientReport(runs []runReport, inProcessServer bool) clientReport {
	wall := time.Since(m.wall)
	soft, hard := fileLimit()
	c := clientReport{
		CPUs:            runtime.NumCPU(),
		GOMAXPROCS:      runtime.GOMAXPROCS(0),
		FileLimit:       soft,
		FileLimitHard:   hard,
		InProcessServer: inProcessServer,
	}
	if wall > 0 {
		c.CPUCores = round3((processCPU() - m.cpu).Seconds() / wall.Seconds())
	}
	procs := float64(c.GOMAXPROCS)
	if c.CPUCores >= 0.9*procs {
		c.Bottleneck = true
		who := "the client"
		if inProcessServer {
			who = "client and server together (one process)"
		}
		c.Notes = append(c.Notes, fmt.Sprintf("%s used %.2f of %d usable cores (%.0f%%): the figures show the client's limit, not the server's; run the client on another machine or with fewer connections",
			who, c.CPUCores, c.GOMAXPROCS, 100*c.CPUCores/procs))
	} else if c.CPUCores >= 0.9 {
		c.Notes = append(c.Notes, fmt.Sprintf("the client used %.2f cores: on a machine shared with the server, the client takes CPU the server could have used", c.CPUCores))
	}
	for _, rr := range runs {
		for _, er := range rr.Errors {
			switch er.Kind {
			case errKindNoPorts:
				c.Bottleneck = true
				c.Notes = append(c.Notes, fmt.Sprintf("%d dials failed with EADDRNOTAVAIL: the client ran out of local ports (see net.ipv4.ip_local_port_range, or dial from more source addresses); the client is the bottleneck", er.Count))
			case errKindNoFiles:
				c.Bottleneck = true
				c.Notes = append(c.Notes, fmt.Sprintf("%d dials failed for lack of file descriptors (limit %d): raise it with 'ulimit -n'; the client is the bottleneck", er.Count, soft))
			}
		}
	}
	if inProcessServer {
		c.Notes = append(c.Notes, fmt.Sprintf("client and server ran in one process and shared %d cores", c.CPUs))
	}
	return c
}

// progress writes a single live line to stderr while a run goes on, when
// stderr is a terminal; otherwise it writes nothing.
type progress struct {
	w    io.Writer
	stop chan struct{}
	done chan struct{}
}

func startProgress(e *env, line func(elapsed time.Duration) string) *progress {
	p := &progress{w: e.stderr, stop: make(chan struct{}), done: make(chan struct{})}
	if !isTerminal(e.stderr) {
		close(p.done)
		return p
	}
	start := time.Now()
	go func() {
		defer close(p.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.w, "\r\x1b[K")
				return
			case <-t.C:
				fmt.Fprintf(p.w, "\r\x1b[K%s", line(time.Since(start)))
			}
		}
	}()
	return p
}

// end stops the live line and erases it.
func (p *progress) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// liveLine is the progress text most modes share.
func (r *recorder) liveLine(elapsed, total time.Duration) string {
	return fmt.Sprintf("%5.1fs/%v  open %d/%d  handshakes %d  failed %d  closed %d  msgs %d",
		elapsed.Seconds(), total, r.liveOpen.Load(), r.target, r.liveHandshakes.Load(),
		r.liveFailures.Load(), r.liveCloses.Load(), r.liveMsgs.Load())
}

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
