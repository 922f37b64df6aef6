package demo

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/shed"
)

// mainServer is the name of the server the crowd talks to; it keeps its
// address across a restart.
const mainServer = "main"

// The script's timings at pace 1. The drain hint is what makes the restart
// chapter read right with a server that keeps its port open while it
// drains (refusing newcomers with 1012): every 1012 tells its client to
// come back only after the drain window and the restart pause, so no
// client knocks on a draining or stopped server.
const (
	retryBase   = 1 * time.Second // 1013 hint for a server just at capacity
	retryMax    = 4 * time.Second // cap of the 1013 hint before jitter
	drainWindow = 3 * time.Second
	restartGap  = 1500 * time.Millisecond // port closed → server up again
	drainHint   = drainWindow + restartGap + 500*time.Millisecond
)

// stage is what chapters play on: the servers, the clock, the recorder.
// Its methods are safe for concurrent use.
type stage struct {
	opts  Options
	start time.Time
	live  *liveLine
	addr  string // the main server's address, kept across restarts

	sampling context.CancelFunc
	sampler  sync.WaitGroup
	serving  sync.WaitGroup // Serve goroutines
	closed   bool

	mu       sync.Mutex
	servers  map[string]*server.Server
	chapter  string
	chapters []ChapterReport
	marks    []Mark
	events   []Event
	waits    []Wait
	opens    []open
	samples  []Sample
	states   []reconnect.State // crowd client → its last state
	counts   ServerCounts
}

// open is a crowd client's connection that opened.
type open struct {
	at      time.Duration
	client  int
	attempt int
	chapter string
}

func newStage(opts Options, progress io.Writer) *stage {
	return &stage{
		opts:    opts,
		start:   time.Now(),
		live:    newLiveLine(progress, opts.Live),
		servers: map[string]*server.Server{},
		states:  make([]reconnect.State, opts.Crowd),
		counts:  ServerCounts{Sent: map[closecode.Code]uint64{}, Received: map[closecode.Code]uint64{}},
	}
}

// dur scales a duration of the script by the pace.
func (st *stage) dur(d time.Duration) time.Duration { return time.Duration(float64(d) * st.opts.Pace) }

func (st *stage) since() time.Duration { return time.Since(st.start) }

// sleep waits d (already paced) or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// mainConfig is the crowd's server: admission at limit, 1013 hints from
// retryBase to retryMax (jittered by shed's default +0–50 %), and a drain
// whose 1012s send clients past the restart.
func (st *stage) mainConfig(limit int) server.Config {
	return server.Config{
		Addr: st.addr,
		Shed: shed.Options{
			Limits:      shed.Limits{MaxConns: limit},
			RetryBase:   st.dur(retryBase),
			RetryMax:    st.dur(retryMax),
			DrainWindow: st.dur(drainWindow),
			DrainHint:   st.dur(drainHint),
		},
		Listener: shed.ListenerOptions{MaxPending: server.DefaultMaxPending},
	}
}

func (st *stage) startMain() error {
	st.addr = "127.0.0.1:0"
	s, err := st.startServer(mainServer, st.mainConfig(st.opts.Limit))
	if err != nil {
		return err
	}
	st.addr = s.Addr()
	return nil
}

// startServer starts a server and samples it until stopServer.
func (st *stage) startServer(name string, cfg server.Config) (*server.Server, error) {
	s, err := server.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("starting the %s server on %s: %w", name, cfg.Addr, err)
	}
	st.serving.Go(func() { _ = s.Serve() })
	st.mu.Lock()
	st.servers[name] = s
	st.mu.Unlock()
	return s, nil
}

// server returns the running server of that name, or nil.
func (st *stage) server(name string) *server.Server {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.servers[name]
}

// stopServer drains the named server (Shutdown: the listener stays open,
// refusing newcomers, until the last connection is gone) and keeps sampling
// it until it has stopped; its close-code counters join the report.
func (st *stage) stopServer(ctx context.Context, name string) error {
	s := st.server(name)
	if s == nil {
		return nil
	}
	err := s.Shutdown(ctx)
	if err != nil {
		_ = s.Close()
	}
	st.retire(name, s)
	return err
}

// closeServer stops the named server at once (Close: whatever is still
// connected is dropped). It is for a server whose clients have gone: a
// cluster node's Shutdown would first wait for the cluster's drain turn.
func (st *stage) closeServer(name string) error {
	s := st.server(name)
	if s == nil {
		return nil
	}
	err := s.Close()
	st.retire(name, s)
	return err
}

// retire stops sampling a stopped server; its close-code counters join
// the report.
func (st *stage) retire(name string, s *server.Server) {
	stats := s.Shedder().Stats()
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.servers, name)
	for c, n := range stats.CloseSent {
		st.counts.Sent[c] += n
	}
	for c, n := range stats.CloseReceived {
		st.counts.Received[c] += n
	}
}

func (st *stage) setChapter(name string) {
	st.mu.Lock()
	st.chapter = name
	st.mu.Unlock()
}

func (st *stage) mark(name, label string) {
	st.mu.Lock()
	st.marks = append(st.marks, Mark{At: st.since(), Name: name, Label: label})
	st.mu.Unlock()
}

// markAt returns the time of the named mark in the current run.
func (st *stage) markAt(name string) (time.Duration, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, m := range st.marks {
		if m.Name == name {
			return m.At, true
		}
	}
	return 0, false
}

// event records a one-off client's close event.
func (st *stage) event(e Event) {
	st.mu.Lock()
	e.Chapter = st.chapter
	if e.At == 0 {
		e.At = st.since()
	}
	st.events = append(st.events, e)
	st.mu.Unlock()
}

// senderOf attributes a reconnect.Client's close: a code that never travels
// on the wire (1006, 1015, 1005) was recorded by the client itself.
func senderOf(e reconnect.Event) Sender {
	switch {
	case e.Code == 0 && e.Status != 0:
		return SentOverHTTP
	case !closecode.Lookup(e.Code).OnWire:
		return SentLocally
	case e.Remote:
		return SentByServer
	}
	return SentByClient
}

// clientEvents returns the OnEvent hook of crowd client i.
func (st *stage) clientEvents(i int) func(reconnect.Event) {
	return func(e reconnect.Event) {
		at := e.Time.Sub(st.start)
		st.mu.Lock()
		defer st.mu.Unlock()
		st.states[i] = e.State
		switch e.State {
		case reconnect.StateOpen:
			st.opens = append(st.opens, open{at, i, e.Attempt, st.chapter})
		case reconnect.StateClosed:
			ev := Event{At: at, Code: e.Code, Sender: senderOf(e), Client: i, Reason: e.Reason, Chapter: st.chapter}
			if h, ok := closecode.ParseRetryHint(e.Reason); ok {
				ev.Hint = h
			}
			st.events = append(st.events, ev)
		case reconnect.StateWaiting:
			st.waits = append(st.waits, Wait{At: at, Client: i, Attempt: e.Attempt, Delay: e.Delay, Hinted: e.Hinted, Chapter: st.chapter})
		}
	}
}

// opensSince counts the crowd clients that opened a connection at or after
// t (each client once).
func (st *stage) opensSince(t time.Duration) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	seen := map[int]bool{}
	for _, o := range st.opens {
		if o.at >= t {
			seen[o.client] = true
		}
	}
	return len(seen)
}

func (st *stage) startSampling() {
	ctx, cancel := context.WithCancel(context.Background())
	st.sampling = cancel
	st.sampler.Go(func() {
		t := time.NewTicker(SampleEvery)
		defer t.Stop()
		for n := 0; ; n++ {
			st.sample()
			if n%4 == 0 {
				st.live.update(st.status())
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
}

// sample records the servers' live connection count. A draining server is
// still sampled: its count falls as the drain closes connections.
func (st *stage) sample() {
	st.mu.Lock()
	servers := maps.Clone(st.servers)
	st.mu.Unlock()
	s := Sample{At: st.since(), Servers: make(map[string]int, len(servers))}
	for name, srv := range servers {
		stats := srv.Shedder().Stats()
		s.Connections += stats.Connections
		s.Servers[name] = stats.Connections
		s.Draining = s.Draining || stats.Draining
	}
	st.mu.Lock()
	for _, state := range st.states {
		if state == reconnect.StateWaiting {
			s.Waiting++
		}
	}
	st.samples = append(st.samples, s)
	st.mu.Unlock()
}

// status is the live progress line.
func (st *stage) status() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var s Sample
	if len(st.samples) > 0 {
		s = st.samples[len(st.samples)-1]
	}
	n := map[closecode.Code]int{}
	for _, e := range st.events {
		n[e.Code]++
	}
	server := "server: " + plural(s.Connections, "connection")
	if s.Draining {
		server += " (draining)"
	}
	// Several servers holding connections (the scale-out chapter's
	// nodes): each one's count.
	var busy []string
	for _, name := range slices.Sorted(maps.Keys(s.Servers)) {
		if n := s.Servers[name]; n > 0 {
			busy = append(busy, fmt.Sprintf("%s %d", name, n))
		}
	}
	if len(busy) > 1 {
		server = "servers: " + strings.Join(busy, ", ")
	}
	return fmt.Sprintf("%s, %s waiting to retry | 1013×%d 1012×%d 1010×%d",
		server, plural(s.Waiting, "client"), n[closecode.TryAgainLater], n[closecode.ServiceRestart], n[closecode.MandatoryExtension])
}

// close stops whatever still runs: sampling, then every server (what is
// still connected is dropped).
func (st *stage) close() {
	if st.closed {
		return
	}
	st.closed = true
	st.mu.Lock()
	names := slices.Collect(maps.Keys(st.servers))
	st.mu.Unlock()
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = st.stopServer(ctx, name)
		cancel()
	}
	if st.sampling != nil {
		st.sampling()
		st.sampler.Wait()
	}
	st.serving.Wait()
}

// report copies what was recorded, in time order.
func (st *stage) report() *Report {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := &Report{
		Crowd: st.opts.Crowd, Limit: st.opts.Limit, Pace: st.opts.Pace,
		Duration: st.since(),
		Chapters: slices.Clone(st.chapters),
		Marks:    slices.Clone(st.marks),
		Events:   slices.Clone(st.events),
		Waits:    slices.Clone(st.waits),
		Samples:  slices.Clone(st.samples),
		Server:   ServerCounts{Sent: maps.Clone(st.counts.Sent), Received: maps.Clone(st.counts.Received)},
	}
	sort.SliceStable(r.Marks, func(i, j int) bool { return r.Marks[i].At < r.Marks[j].At })
	sort.SliceStable(r.Events, func(i, j int) bool { return r.Events[i].At < r.Events[j].At })
	sort.SliceStable(r.Waits, func(i, j int) bool { return r.Waits[i].At < r.Waits[j].At })
	return r
}

// plural writes "1 connection", "2 connections".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
