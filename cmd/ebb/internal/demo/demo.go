// Package demo is the scenario behind `ebb demo`: an ebb server and a crowd
// of reconnecting ebb clients on loopback, played as a list of chapters
// (overload → backoff, full node → scale out on a two-node cluster, drain
// → restart, missing extension), recorded as data (connections sampled
// per server, every close event with its code, sender and time, phase
// spans and marks) and rendered as a text summary, JSON and a PNG
// timeline.
//
// Run plays the chapters and returns a Report; the Report writes itself as
// text or JSON, and WriteTimeline draws it. The package never prints to the
// process's streams and reads no flags: progress goes to the io.Writer
// given to Run.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Defaults of Options: the tour the README describes.
const (
	DefaultCrowd = 48
	DefaultLimit = 12
)

// Options configure a run. The zero value is the README's tour: a crowd of
// DefaultCrowd clients against a server admitting DefaultLimit, at full
// length, every chapter, progress printed one line at a time.
type Options struct {
	// Crowd is the number of reconnecting clients (default DefaultCrowd).
	// In the scale-out chapter each cluster node admits two thirds of it,
	// so that one node cannot hold the crowd and two can.
	Crowd int
	// Limit is the number of connections the server admits at once in the
	// overload chapter (default DefaultLimit); it must be below Crowd, or
	// there is no overload to show.
	Limit int
	// Pace scales every duration of the script: 1 (the default) is the
	// full tour of about 40 s, 0.45 the quick one, tests use less. Below
	// about 0.15 the scheduler's own delays start to blur the story.
	Pace float64
	// Chapters are played in order (default DefaultChapters()). The first
	// chapter finds the server running with Limit.
	Chapters []Chapter
	// Live rewrites one status line in place (for a terminal); otherwise
	// progress is printed as whole lines, a status every few seconds.
	Live bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Crowd == 0 {
		o.Crowd = DefaultCrowd
	}
	if o.Limit == 0 {
		o.Limit = DefaultLimit
	}
	if o.Pace == 0 {
		o.Pace = 1
	}
	if o.Chapters == nil {
		o.Chapters = DefaultChapters()
	}
	switch {
	case o.Crowd < 2 || o.Crowd > 10000:
		return o, fmt.Errorf("demo: a crowd of %d clients: want 2 to 10000", o.Crowd)
	case o.Limit < 1 || o.Limit >= o.Crowd:
		return o, fmt.Errorf("demo: a limit of %d connections for a crowd of %d: want at least 1 and fewer than the crowd, or nobody is refused", o.Limit, o.Crowd)
	case !(o.Pace > 0 && o.Pace <= 10):
		return o, fmt.Errorf("demo: pace %v: want a factor above 0 and at most 10 (1 is the full tour, 0.45 the quick one)", o.Pace)
	}
	return o, nil
}

// Chapter is one part of the story: it runs against the stage Run sets up
// (the server on its fixed address, the recorder, the pace) and returns
// what it found. Chapters are written in this package (the interface is
// sealed), so that each can rely on the stage's invariants; add one by
// writing a type with these methods and listing it in DefaultChapters.
type Chapter interface {
	// Name is the chapter's identifier in the report and JSON, e.g.
	// "overload".
	Name() string
	// Title is its label on the timeline, e.g. "overload → backoff".
	Title() string
	// play runs the chapter. It returns a Finding even when it fails
	// half-way, when it has one, so an interrupted demo still reports.
	play(ctx context.Context, st *stage) (Finding, error)
}

// DefaultChapters returns the tour: Overload, ScaleOut, Restart,
// MissingExtension.
func DefaultChapters() []Chapter {
	return []Chapter{Overload{}, ScaleOut{}, Restart{}, MissingExtension{}}
}

// Finding is what a chapter found, in numbers; WriteText explains it in a
// paragraph of the summary. Each chapter's Finding is its own type
// (OverloadFinding, RestartFinding, MissingExtensionFinding); Find fetches
// one from a Report.
type Finding interface {
	WriteText(w io.Writer) error
}

// Find returns the Finding of type T in r, if a chapter produced one.
func Find[T Finding](r *Report) (T, bool) {
	for _, c := range r.Chapters {
		if f, ok := c.Finding.(T); ok {
			return f, true
		}
	}
	var zero T
	return zero, false
}

// Report is everything a run saw. Times are offsets from the start of the
// run. It is the data the summary, the JSON and the timeline are made of.
type Report struct {
	// Crowd, Limit and Pace are the options the run used.
	Crowd int
	Limit int
	Pace  float64
	// Duration is how long the run took.
	Duration time.Duration
	// Chapters are the chapters played, in order, with their spans.
	Chapters []ChapterReport
	// Marks are the moments the timeline labels (node B joins, the
	// balancer sends to it, all served; drain starts, port closed, server
	// up, all back), in time order.
	Marks []Mark
	// Events are the close events the clients saw, in time order: one per
	// connection or attempt that ended.
	Events []Event
	// Waits are the clients' backoff waits before their retries.
	Waits []Wait
	// Samples are the servers' live connection count (and the clients
	// waiting to retry), every SampleEvery.
	Samples []Sample
	// Server is what the servers counted, summed over every server the
	// run started.
	Server ServerCounts
	// Timeline is the path of the PNG timeline, when the caller wrote one
	// and set it (WriteTimeline does not).
	Timeline string
	// Interrupted is set when the run's context ended before the last
	// chapter did.
	Interrupted bool
}

// ChapterReport is one chapter's span and finding.
type ChapterReport struct {
	Name, Title string
	Start, End  time.Duration
	// Finding is nil when the chapter failed before finding anything.
	Finding Finding
}

// Mark is a labelled moment of the timeline.
type Mark struct {
	At time.Duration
	// Name identifies the mark ("join", "routed", "served"; "drain",
	// "down", "up", "back"); Label is what the timeline prints.
	Name, Label string
}

// Sender says who put a close code on the connection: the server or the
// client with a Close frame, nobody (a code the client recorded locally,
// e.g. 1006 when the connection dropped without a Close frame), or an HTTP
// refusal before any WebSocket existed.
type Sender string

// The senders of Event.
const (
	SentByServer Sender = "server"
	SentByClient Sender = "client"
	SentLocally  Sender = "local"
	SentOverHTTP Sender = "http"
)

// Describe says who sent the code, in words for the summary.
func (s Sender) Describe() string {
	switch s {
	case SentByServer:
		return "server (Close frame)"
	case SentByClient:
		return "client (Close frame)"
	case SentLocally:
		return "local (no close frame)"
	case SentOverHTTP:
		return "HTTP refusal (no WebSocket)"
	}
	return string(s)
}

// Event is one connection or connection attempt that ended, as a client
// saw it.
type Event struct {
	At   time.Duration
	Code closecode.Code // 0 for a handshake refused over HTTP
	// Sender is who chose Code.
	Sender Sender
	// Client is the crowd client's number (0 … Crowd-1), or -1 for the
	// chapters' one-off clients (Who names them).
	Client int
	Who    string
	// Reason is the close reason as received; Hint its retry-after= (0
	// when none).
	Reason string
	Hint   time.Duration
	// Chapter is the name of the chapter it happened in.
	Chapter string
}

// Wait is one backoff wait of a crowd client before a retry.
type Wait struct {
	At      time.Duration
	Client  int
	Attempt int           // the attempt it waits for: 1, 2, …
	Delay   time.Duration // how long
	Hinted  bool          // the server's hint, not the backoff, set it
	Chapter string
}

// Sample is the state of the run at one moment.
type Sample struct {
	At time.Duration
	// Connections is the sum of the running servers' admitted
	// connections (a draining server's included).
	Connections int
	// Servers are the running servers' admitted connections by name:
	// "main" is the crowd's server; the scale-out chapter's nodes are
	// "node A" and "node B" (see ScaleOut).
	Servers map[string]int
	// Waiting is the number of crowd clients waiting to retry.
	Waiting int
	// Draining is true while a server drains.
	Draining bool
}

// SampleEvery is how often Run samples the servers: often enough that a
// drain over a few seconds shows as a decline, not a step.
const SampleEvery = 50 * time.Millisecond

// ServerCounts are the servers' own close-code counters (shed.Stats), by
// code. The server's Close frames include its echoes of the clients'
// closes: a client's 1000 or 1010 comes back as the server's 1000 or 1010.
type ServerCounts struct {
	Sent     map[closecode.Code]uint64
	Received map[closecode.Code]uint64
}

// Run plays the chapters of opts against an ebb server on 127.0.0.1 and
// returns what it saw. Progress goes to progress (nil for none). When ctx
// ends, Run stops the clients and servers and returns the report so far
// with Interrupted set, and ctx's error; when a chapter fails, the report
// so far and the error. Run takes about 40 s × opts.Pace; `ebb demo`
// peaks at about 50 MB resident, half of it the scale-out chapter's two
// embedded NATS servers.
func Run(ctx context.Context, opts Options, progress io.Writer) (*Report, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if progress == nil {
		progress = io.Discard
	}
	st := newStage(opts, progress)
	defer st.close()
	if err := st.startMain(); err != nil {
		return nil, err
	}
	st.live.printf("ebb demo: server on ws://%s/echo admitting %d connections; a crowd of %d clients\n", st.addr, opts.Limit, opts.Crowd)
	st.startSampling()

	var runErr error
	for i, ch := range opts.Chapters {
		st.live.phase(fmt.Sprintf("%d/%d %s", i+1, len(opts.Chapters), ch.Title()))
		st.setChapter(ch.Name())
		start := st.since()
		f, err := ch.play(ctx, st)
		st.chapters = append(st.chapters, ChapterReport{Name: ch.Name(), Title: ch.Title(), Start: start, End: st.since(), Finding: f})
		if err != nil {
			if ctx.Err() != nil {
				runErr = ctx.Err()
			} else {
				runErr = fmt.Errorf("chapter %q: %w", ch.Title(), err)
			}
			break
		}
	}
	st.live.stop()
	st.close()
	rep := st.report()
	rep.Interrupted = ctx.Err() != nil && errors.Is(runErr, ctx.Err())
	return rep, runErr
}
