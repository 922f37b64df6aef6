package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// Defaults for the zero fields of the options.
const (
	DefaultConns            = 10
	DefaultDuration         = 10 * time.Second
	DefaultDialTimeout      = 10 * time.Second
	DefaultSize             = 1024
	DefaultSettle           = time.Second
	DefaultProgressInterval = 250 * time.Millisecond
)

// Options are the settings every mode shares. The zero value, with a URL,
// is a 10-second run over 10 connections.
type Options struct {
	// URL is the ws:// or wss:// URL to load. Storm with RestartOptions
	// takes it from the Restarter instead.
	URL string

	// Conns is how many connections Echo and Idle hold, how many workers
	// Connect runs, and how many clients Storm starts at once. 0 means
	// DefaultConns. Each costs a goroutine and a file descriptor, and the
	// process's open-file limit must allow them (the caller raises it).
	Conns int

	// Duration bounds the run; 0 means DefaultDuration. The run also ends
	// when the context passed to the mode ends (the report then says
	// Interrupted), and early when nothing can connect (Run.StoppedEarly).
	Duration time.Duration

	// DialTimeout bounds one connection attempt (TCP, TLS and the HTTP
	// upgrade); 0 means DefaultDialTimeout.
	DialTimeout time.Duration

	// Dial configures every connection: headers, TLS, compression (a
	// non-nil Compression offers permessage-deflate and adds a Compression
	// section to the report). It is copied, never modified. A nil Proxy
	// means no proxy, unlike websocket.Dial's default: a load test through
	// a proxy measures the proxy. Set Proxy to http.ProxyFromEnvironment to
	// go through one anyway.
	Dial *websocket.DialOptions

	// Progress, when set, is called every ProgressInterval from a goroutine
	// of the run with a snapshot of it, and never after the mode returns.
	// It must return quickly; it is how a command shows a live line.
	Progress func(Progress)

	// ProgressInterval is how often Progress is called; 0 means
	// DefaultProgressInterval.
	ProgressInterval time.Duration
}

// Progress is a snapshot of a run in progress.
type Progress struct {
	// Mode is "echo", "connect", "storm" or "idle"; Run is the run's name
	// (the policy, for a storm).
	Mode, Run string
	// Phase is the run's stage: for a restart storm "connecting",
	// "connected", "draining", "down", "back" or "closing"; for Idle
	// "connecting", "settling", "measuring", then "holding" once the
	// figures are taken (a caller may end the run then); "" otherwise.
	Phase string
	// Elapsed is the time since the run started; Duration its bound.
	Elapsed, Duration time.Duration
	// Open is how many connections are open now, Target how many the run
	// aims at.
	Open, Target int
	// Handshakes, Failures and Closes count completed upgrades, failed
	// dials and ended connections so far; Messages counts echoes received.
	Handshakes, Failures, Closes, Messages uint64
}

// String is the progress as one line, e.g. for a terminal's status line.
func (p Progress) String() string {
	s := fmt.Sprintf("%5.1fs/%v  open %d/%d  handshakes %d  failed %d  closed %d  msgs %d",
		p.Elapsed.Seconds(), p.Duration, p.Open, p.Target, p.Handshakes, p.Failures, p.Closes, p.Messages)
	switch {
	case p.Mode == "storm":
		s = fmt.Sprintf("%s [%s] %s", p.Run, p.Phase, s)
	case p.Phase != "":
		s = fmt.Sprintf("[%s] %s", p.Phase, s)
	}
	return s
}

// EchoOptions configures Echo.
type EchoOptions struct {
	Options

	// Size is the message size in bytes; 0 means DefaultSize. With a Rate
	// it must be at least StampSize, to carry the send time.
	Size int

	// Rate is the messages per second all connections together send, on a
	// fixed schedule; 0 means a closed loop, where each connection sends
	// its next message when the echo of the last one arrived (the most the
	// server and this client can do).
	Rate float64

	// Binary sends binary messages of bytes that do not compress, instead
	// of text that compresses roughly like JSON.
	Binary bool
}

// StampSize is the length of the send time stamped at the front of each
// message at a fixed Rate (16 hex digits, valid in a text message).
const StampSize = 16

// MaxSize bounds EchoOptions.Size: larger messages measure memory copies,
// not a WebSocket server.
const MaxSize = 64 << 20

// ConnectOptions configures Connect.
type ConnectOptions struct {
	Options

	// Rate caps the connection attempts per second over all workers, to
	// find the rate at which a server starts refusing; 0 means no cap.
	Rate float64
}

// Policy is how a storm's clients reconnect.
type Policy string

// The reconnect policies a storm compares.
const (
	// PolicyNone connects once and never reconnects.
	PolicyNone Policy = "none"
	// PolicyImmediate reconnects at once after anything, as naive clients
	// do.
	PolicyImmediate Policy = "immediate"
	// PolicyNoJitter waits base·2^n, capped, and honours the server's
	// retry hint, but without jitter, as many hand-written clients do.
	PolicyNoJitter Policy = "nojitter"
	// PolicyBackoff is ebb's reconnect policy (package reconnect): decided
	// by the close code's retry class, jittered on every attempt, the
	// server's hint as a floor.
	PolicyBackoff Policy = "backoff"
)

// Policies lists every Policy, in the order they are documented.
var Policies = []Policy{PolicyNone, PolicyImmediate, PolicyNoJitter, PolicyBackoff}

// ParsePolicy returns the Policy named s (case and surrounding spaces do
// not matter).
func ParsePolicy(s string) (Policy, error) {
	p := Policy(strings.ToLower(strings.TrimSpace(s)))
	for _, known := range Policies {
		if p == known {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown reconnect policy %q: want none, immediate, nojitter or backoff", s)
}

// StormOptions configures Storm.
type StormOptions struct {
	Options

	// Policies run one after the other, each a run of the report, for
	// Duration each; empty means PolicyBackoff alone.
	Policies []Policy

	// Backoff is the delay rule of PolicyBackoff and PolicyNoJitter; the
	// zero value is package reconnect's default (1 s, doubling, 30 s cap).
	Backoff reconnect.Backoff

	// Restart, when set, runs each policy across a server restart: once
	// every client is connected, the Restarter drains its server, and
	// starts it again after a gap.
	Restart *RestartOptions
}

// Restarter is the server a restart storm stops and starts again. The
// storm cannot start a server itself (it would have to import one); the
// caller provides it. ebb's command builds one on its own server.
type Restarter interface {
	// Start starts the server and returns the ws:// or wss:// URL of its
	// WebSocket endpoint. Each Start after the first must listen at the
	// same URL, since the clients keep dialing it.
	Start(ctx context.Context) (url string, err error)

	// Stop drains the server (closes its connections with the drain code,
	// spread over its drain window), stops listening, and returns once it
	// no longer serves. When ctx ends it closes what remains at once.
	Stop(ctx context.Context) error
}

// RestartOptions describe the restart of a restart storm.
type RestartOptions struct {
	// Server is the server to restart. It is started once per policy and
	// stopped when the policy's run ends.
	Server Restarter

	// Settle is how long every client stays connected before the drain.
	Settle time.Duration

	// Gap is how long no server listens between the end of the drain and
	// the restart.
	Gap time.Duration

	// DrainWindow is how long the Server spreads its closes over; Stop
	// gets that plus 5 seconds. DrainCode is the code it closes with (0
	// means 1012 Service Restart). Both go into the report as they are.
	DrainWindow time.Duration
	DrainCode   int

	// InProcess says that the Server runs in this process, so that the
	// report notes that client and server shared the cores.
	InProcess bool
}

// IdleOptions configures Idle.
type IdleOptions struct {
	Options

	// MetricsURL is the server's Prometheus text endpoint with ebb's
	// process gauges (MetricHeapBytes and MetricStacksBytes, as `ebb
	// serve` exposes them). Empty, or an endpoint without them, makes the
	// figures this process's own: what holding the connections costs a
	// client (and the server too, if it runs in this process).
	MetricsURL string

	// Settle is how long to wait after the last connection opened before
	// measuring; 0 means DefaultSettle, a negative value measures at once.
	Settle time.Duration
}

// normalize applies the defaults and checks the shared options.
func (o *Options) normalize(needURL bool) error {
	if o.Conns < 0 {
		return fmt.Errorf("loadgen: Conns %d: want 1 or more (0 for %d)", o.Conns, DefaultConns)
	}
	if o.Conns == 0 {
		o.Conns = DefaultConns
	}
	if o.Duration < 0 || o.DialTimeout < 0 || o.ProgressInterval < 0 {
		return fmt.Errorf("loadgen: Duration %v, DialTimeout %v, ProgressInterval %v: want durations of zero (the default) or more", o.Duration, o.DialTimeout, o.ProgressInterval)
	}
	if o.Duration == 0 {
		o.Duration = DefaultDuration
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if needURL {
		if err := checkURL(o.URL); err != nil {
			return err
		}
	}
	d := websocket.DialOptions{}
	if o.Dial != nil {
		d = *o.Dial
	}
	if d.Proxy == nil {
		d.Proxy = noProxy
	}
	o.Dial = &d
	return nil
}

// checkURL rejects a URL Dial would refuse later less clearly.
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("loadgen: %q is not a URL: %w", raw, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("loadgen: URL %q has scheme %q: want ws:// or wss://", raw, u.Scheme)
	}
	if u.Host == "" {
		return fmt.Errorf("loadgen: URL %q has no host: want ws://host[:port]/path", raw)
	}
	return nil
}

// noProxy keeps a load test direct.
func noProxy(*http.Request) (*url.URL, error) { return nil, nil }
