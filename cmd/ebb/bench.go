package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/benchplot"
	"github.com/ebb-ws/ebb/loadgen"
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
	maxErrors   float64
}

// defaultMaxErrors is --max-errors' default: a tenth of the attempts may
// fail with errors before the bench exits with status 1.
const defaultMaxErrors = 0.1

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
--json writes the same as JSON (schema "` + loadgen.Schema + `"); --plot FILE.png
draws connections, handshakes, close codes and latency over time.

Exit status 1 when the run measured nothing (no echo, no handshake, no
idle connection) or when more than --max-errors of the attempts failed
with errors: no answer, a failed TLS handshake, or an HTTP answer that is
not a WebSocket endpoint's. Refusals (HTTP 429/503, 1013) are the server's
answers and never count. When the first --conns attempts all fail and none
completes, the bench stops at once instead of waiting out --duration. The
report is printed either way.

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
			return usagef("name a mode: echo, connect, storm or idle (see 'ebb bench --help')")
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
	f.Float64Var(&o.maxErrors, "max-errors", defaultMaxErrors, "exit with status 1 when more than this share (0 to 1) of the attempts fail with errors")
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
	switch {
	case o.conns < 1:
		return usagef("--conns %d: want at least 1", o.conns)
	case o.duration <= 0 || o.duration > maxBenchDuration:
		return usagef("--duration %v: want a duration in (0, %v]", o.duration, maxBenchDuration)
	case o.dialTimeout <= 0:
		return usagef("--dial-timeout %v: want a positive duration", o.dialTimeout)
	case o.plot != "" && !strings.HasSuffix(strings.ToLower(o.plot), ".png"):
		return usagef("--plot %q: want a file name ending in .png", o.plot)
	case !(o.maxErrors >= 0 && o.maxErrors <= 1):
		return usagef("--max-errors %v: want a share of the attempts from 0 to 1 (0.1: one in ten)", o.maxErrors)
	}
	return checkFileLimit(o.conns * fdsPerConn)
}

// benchURLArgs accepts exactly one ws:// or wss:// URL.
func benchURLArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("want exactly one URL, got %d arguments", len(args))
	}
	return checkBenchURL(args[0])
}

// checkBenchURL rejects a URL Dial would refuse later less clearly.
func checkBenchURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return usagef("%q is not a URL: %v", raw, err)
	case u.Scheme != "ws" && u.Scheme != "wss":
		return usagef("URL %q has scheme %q: want ws:// or wss://", raw, u.Scheme)
	case u.Host == "":
		return usagef("URL %q has no host: want ws://host[:port]/path", raw)
	}
	return nil
}

// options turns the shared flags into loadgen's, with a live line on
// stderr when it is a terminal.
func (o *benchOptions) options(e *env, rawURL string, compress bool) (loadgen.Options, *benchLive, error) {
	h := http.Header{}
	for _, kv := range o.headers {
		name, value, ok := strings.Cut(kv, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return loadgen.Options{}, nil, usagef(`header %q is not of the form "Name: value"`, kv)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	d := &websocket.DialOptions{Header: h}
	if o.insecure {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	if compress {
		d.Compression = &websocket.CompressionOptions{}
	}
	live := &benchLive{w: e.stderr}
	lo := loadgen.Options{URL: rawURL, Conns: o.conns, Duration: o.duration, DialTimeout: o.dialTimeout, Dial: d}
	if isTerminal(e.stderr) {
		lo.Progress = live.show
	}
	return lo, live, nil
}

// benchLive is the progress line on a terminal's stderr.
type benchLive struct {
	w     io.Writer
	shown atomic.Bool
}

func (l *benchLive) show(p loadgen.Progress) {
	l.shown.Store(true)
	fmt.Fprintf(l.w, "\r\x1b[K%s", p)
}

// erase clears the line once the run is over.
func (l *benchLive) erase() {
	if l.shown.Load() {
		fmt.Fprint(l.w, "\r\x1b[K")
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// output prints the report (table or JSON), draws the plot, and turns the
// run into an exit status: 130 when interrupted, 1 when it measured
// nothing or too many attempts failed. cmd is the mode's command, for the
// prefix of warnings.
func (o *benchOptions) output(e *env, cmd *cobra.Command, rep *loadgen.Report, live *benchLive, runErr error) error {
	live.erase()
	if runErr != nil {
		return runErr
	}
	if o.asJSON {
		if err := rep.WriteJSON(e.stdout); err != nil {
			return fmt.Errorf("cannot write the JSON report: %w", err)
		}
	} else if err := rep.WriteText(e.stdout); err != nil {
		return fmt.Errorf("cannot write the report: %w", err)
	}
	for _, rr := range rep.Runs {
		if c := rr.Compression; c != nil && c.Declined > 0 {
			fmt.Fprintf(e.stderr, "%s: warning: --compress: the server declined permessage-deflate on %d of %s; those connections ran without compression\n",
				cmd.CommandPath(), c.Declined, plural(int(c.Negotiated+c.Declined), "connection"))
		}
	}
	if o.plot != "" {
		if err := benchplot.WriteFile(o.plot, rep); err != nil {
			return fmt.Errorf("cannot draw %s: %w", o.plot, err)
		}
		fmt.Fprintf(e.stderr, "%s: plot written to %s\n", cmd.CommandPath(), o.plot)
	}
	if rep.Interrupted {
		return &exitError{code: exitInterrupted, msg: "interrupted; the report above covers what was measured until then"}
	}
	if err := rep.Check(o.maxErrors); err != nil {
		var ce *loadgen.CheckError
		if errors.As(err, &ce) && !ce.Nothing {
			return fmt.Errorf("%w (--max-errors %g)", err, o.maxErrors)
		}
		return err
	}
	return nil
}
