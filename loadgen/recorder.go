package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// bucketWidth is the resolution of the timeline: handshake rates are
// counted per 100 ms so that a storm's peak is not averaged away.
const bucketWidth = 100 * time.Millisecond

// Histogram bounds, in microseconds: 1 µs to 10 minutes at 3 significant
// digits (0.1% error), about 30 KiB per histogram.
const (
	histLowest  = 1
	histHighest = int64(10 * time.Minute / time.Microsecond)
	histDigits  = 3
)

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// recordDur records d in microseconds, clamped into the histogram's range
// so that an outlier is counted (as the maximum) rather than dropped.
func recordDur(h *hdrhistogram.Histogram, d time.Duration) {
	us := d.Microseconds()
	us = min(max(us, histLowest), histHighest)
	_ = h.RecordValue(us) // cannot fail: us is within range
}

// summarize turns a histogram of microseconds into percentiles in
// milliseconds. It returns nil for an empty histogram so that the JSON
// leaves the section out instead of reporting zeros.
func summarize(h *hdrhistogram.Histogram) *Latency {
	if h == nil || h.TotalCount() == 0 {
		return nil
	}
	ms := func(us int64) float64 { return roundMs(float64(us) / 1000) }
	return &Latency{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  roundMs(math.Round(h.Mean()) / 1000),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// msgBucket is one timeline slot of message traffic.
type msgBucket struct {
	msgs   uint64
	bytes  uint64
	latSum float64 // µs
	latN   uint64
	latMax int64 // µs
}

// add folds o into b.
func (b *msgBucket) add(o msgBucket) {
	b.msgs += o.msgs
	b.bytes += o.bytes
	b.latSum += o.latSum
	b.latN += o.latN
	b.latMax = max(b.latMax, o.latMax)
}

// msgStats is the message traffic of one connection. It belongs to the
// goroutine that drives the connection, so the hot path takes no lock; it
// is merged into the recorder when the connection ends.
type msgStats struct {
	start                    time.Time
	lat                      *hdrhistogram.Histogram
	sent, recv, sentB, recvB uint64
	buckets                  []msgBucket
	liveMsgs                 *atomic.Uint64
}

// newMsgStats starts the stats of one connection of a run that started at
// start; live counts echoes for the progress line.
func newMsgStats(start time.Time, live *atomic.Uint64) *msgStats {
	return &msgStats{start: start, lat: newHist(), liveMsgs: live}
}

func (m *msgStats) sentMsg(n int) {
	m.sent++
	m.sentB += uint64(n)
}

// received records an echoed message of n bytes that arrived at now and
// took lat since it was (or should have been) sent.
func (m *msgStats) received(now time.Time, n int, lat time.Duration) {
	m.recv++
	m.recvB += uint64(n)
	m.liveMsgs.Add(1)
	recordDur(m.lat, lat)
	i := max(int(now.Sub(m.start)/bucketWidth), 0)
	for len(m.buckets) <= i {
		m.buckets = append(m.buckets, msgBucket{})
	}
	us := max(lat.Microseconds(), 1)
	m.buckets[i].add(msgBucket{msgs: 1, bytes: uint64(n), latSum: float64(us), latN: 1, latMax: us})
}

// mergeFrom folds another half of the same connection's stats (the
// reader's, at a fixed rate) into m; o's goroutine has stopped.
func (m *msgStats) mergeFrom(o *msgStats) {
	m.lat.Merge(o.lat)
	m.recv += o.recv
	m.recvB += o.recvB
	for len(m.buckets) < len(o.buckets) {
		m.buckets = append(m.buckets, msgBucket{})
	}
	for i, ob := range o.buckets {
		m.buckets[i].add(ob)
	}
}

// bucket is one 100 ms slot of the timeline.
type bucket struct {
	attempts   uint64 // dials started
	handshakes uint64 // upgrades completed (101)
	failures   uint64 // dials or handshakes that failed
	closes     map[closecode.Code]uint64
	openEnd    int // connections open at the last event in the slot
	openMax    int
	touched    bool // an open/close event happened in the slot
	msgBucket
}

// codeKey groups connection endings by code and by who chose the code.
type codeKey struct {
	code closecode.Code
	by   string // "server", "client" (this run), or "local" (no Close frame)
}

// recorder collects what every connection and every attempt did. It is
// safe for concurrent use; connection events take a lock, message traffic
// arrives in per-connection msgStats batches.
type recorder struct {
	start  time.Time
	target int // connections the run aims to hold (for "all connected")

	// onNothing is called once, with the lock held, when target attempts
	// have failed with errors and none has completed: nothing can connect.
	onNothing func()

	// Live counters for the progress line.
	liveOpen       atomic.Int64
	liveHandshakes atomic.Uint64
	liveFailures   atomic.Uint64
	liveMsgs       atomic.Uint64
	liveCloses     atomic.Uint64

	mu          sync.Mutex
	open        int
	peakOpen    int
	buckets     []bucket
	codes       map[codeKey]uint64
	statuses    map[int]uint64
	errs        map[string]*ErrorCount
	exts        map[string]uint64 // negotiated Sec-WebSocket-Extensions per connection
	handshake   *hdrhistogram.Histogram
	lat         *hdrhistogram.Histogram
	delays      *hdrhistogram.Histogram
	sent, recv  uint64
	sentB       uint64
	recvB       uint64
	attempts    uint64 // dials started
	completed   uint64 // upgrades completed
	failures    uint64 // dials that failed
	errCount    uint64 // failed dials that were not the server's refusals
	cutOffs     uint64 // dials the run's end interrupted
	down        bool   // a restart storm's turbulence: failures are not errors
	nothing     bool   // onNothing has fired
	reconnects  uint64 // dials after the first one of a client
	gaveUp      uint64
	hsPerMs     []uint32  // completed handshakes per millisecond, for the sliding peak
	atPerMs     []uint32  // dials started per millisecond
	fullSince   time.Time // watch for "all connected" from here on; zero: off
	fullAt      time.Duration
	fullReached bool
}

func newRecorder(start time.Time, target int) *recorder {
	return &recorder{
		start:     start,
		target:    target,
		codes:     map[codeKey]uint64{},
		statuses:  map[int]uint64{},
		errs:      map[string]*ErrorCount{},
		exts:      map[string]uint64{},
		handshake: newHist(),
		lat:       newHist(),
		delays:    newHist(),
	}
}

// bucketLocked returns the timeline slot for t, growing the timeline.
func (r *recorder) bucketLocked(t time.Time) *bucket {
	i := max(int(t.Sub(r.start)/bucketWidth), 0)
	for len(r.buckets) <= i {
		r.buckets = append(r.buckets, bucket{})
	}
	return &r.buckets[i]
}

// attempt records that a dial started at t; reconnect says whether it is a
// client's second or later dial.
func (r *recorder) attempt(t time.Time, reconnect bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts++
	r.atPerMs = countMs(r.atPerMs, t.Sub(r.start))
	if reconnect {
		r.reconnects++
	}
	r.bucketLocked(t).attempts++
}

// opened records a completed upgrade at t that took d.
func (r *recorder) opened(t time.Time, d time.Duration) {
	r.liveOpen.Add(1)
	r.liveHandshakes.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	recordDur(r.handshake, d)
	r.completed++
	r.statuses[http.StatusSwitchingProtocols]++
	r.open++
	r.peakOpen = max(r.peakOpen, r.open)
	r.hsPerMs = countMs(r.hsPerMs, t.Sub(r.start))
	b := r.bucketLocked(t)
	b.handshakes++
	b.touched = true
	b.openEnd = r.open
	b.openMax = max(b.openMax, r.open)
	if !r.fullSince.IsZero() && !r.fullReached && r.open >= r.target && !t.Before(r.fullSince) {
		r.fullReached = true
		r.fullAt = t.Sub(r.start)
	}
}

// negotiated records the extensions a connection that stays open agreed
// on ("" for none).
func (r *recorder) negotiated(ext string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.exts[ext]++
}

// isRefusal reports whether an HTTP status is a server's overload refusal
// (which a run measures) rather than an error.
func isRefusal(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// failed records a dial or handshake that failed at t with err; resp is
// the HTTP answer when there was one.
func (r *recorder) failed(t time.Time, err error, resp *http.Response) {
	r.liveFailures.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures++
	r.bucketLocked(t).failures++
	status := 0
	var he *websocket.HandshakeError
	switch {
	case errors.As(err, &he) && he.StatusCode != 0:
		status = he.StatusCode
	case resp != nil && resp.StatusCode != http.StatusSwitchingProtocols:
		status = resp.StatusCode
	}
	if status != 0 {
		r.statuses[status]++
	} else {
		kind := errorKind(err)
		e := r.errs[kind]
		if e == nil {
			e = &ErrorCount{Kind: kind, Example: err.Error()}
			r.errs[kind] = e
		}
		e.Count++
	}
	if isRefusal(status) || r.down {
		return
	}
	r.errCount++
	if !r.nothing && r.completed == 0 && r.errCount >= uint64(r.target) && r.onNothing != nil {
		r.nothing = true
		r.onNothing()
	}
}

// cutOff records a dial that the run's end interrupted at t.
func (r *recorder) cutOff(time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutOffs++
}

// setDown marks a restart storm's turbulence, from the drain until every
// client is back: the server is down on purpose, then flooded by the
// clients' return (resets and refusals are what the storm measures), so
// failures then are not errors.
func (r *recorder) setDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// closed records that an open connection ended at t with code, chosen by
// "server", "client" or "local".
func (r *recorder) closed(t time.Time, code closecode.Code, by string) {
	r.liveOpen.Add(-1)
	r.liveCloses.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.codes[codeKey{code, by}]++
	r.open--
	b := r.bucketLocked(t)
	if b.closes == nil {
		b.closes = map[closecode.Code]uint64{}
	}
	b.closes[code]++
	b.touched = true
	b.openEnd = r.open
	b.openMax = max(b.openMax, r.open)
}

// waited records a reconnect delay a client chose.
func (r *recorder) waited(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	recordDur(r.delays, d)
}

// gaveUpOne records a client that stopped reconnecting because its policy
// said so.
func (r *recorder) gaveUpOne() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gaveUp++
}

// watchFull starts watching for the moment all target connections are
// open at once, from t on.
func (r *recorder) watchFull(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fullSince, r.fullReached = t, false
	if r.open >= r.target {
		r.fullReached, r.fullAt = true, t.Sub(r.start)
	}
}

// full reports whether every target connection has been open at once
// since watchFull, and when.
func (r *recorder) full() (time.Duration, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fullAt, r.fullReached
}

// merge adds one connection's message traffic.
func (r *recorder) merge(m *msgStats) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lat.Merge(m.lat)
	r.sent += m.sent
	r.recv += m.recv
	r.sentB += m.sentB
	r.recvB += m.recvB
	for i, mb := range m.buckets {
		if mb.msgs == 0 {
			continue
		}
		r.bucketLocked(r.start.Add(time.Duration(i) * bucketWidth)).add(mb)
	}
}

// progress is a snapshot for Options.Progress.
func (r *recorder) progress() Progress {
	return Progress{
		Open:       int(r.liveOpen.Load()),
		Target:     r.target,
		Handshakes: r.liveHandshakes.Load(),
		Failures:   r.liveFailures.Load(),
		Closes:     r.liveCloses.Load(),
		Messages:   r.liveMsgs.Load(),
	}
}

// Error kinds that mean the client machine, not the server, ran out.
const (
	errKindNoPorts = "no local address (EADDRNOTAVAIL)"
	errKindNoFiles = "too many open files (EMFILE)"
)

var errDialTimeout = errors.New("the handshake did not finish within the dial timeout")

// errorKind names the class of a dial error for the report. The classes
// that point at the client itself (no local ports, no file descriptors)
// get names the bottleneck check looks for.
func errorKind(err error) string {
	var (
		rhe tls.RecordHeaderError
		ae  tls.AlertError
		cve *tls.CertificateVerificationError
		uae x509.UnknownAuthorityError
		hne x509.HostnameError
		cie x509.CertificateInvalidError
	)
	switch {
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return errKindNoPorts
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return errKindNoFiles
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.As(err, &rhe), errors.As(err, &ae), errors.As(err, &cve),
		errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return "TLS handshake failed"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && !dnsErr.IsTimeout {
		return "host not found"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var me *websocket.MandatoryExtensionError
	if errors.As(err, &me) {
		return "mandatory extension missing (1010)"
	}
	var he *websocket.HandshakeError
	if errors.As(err, &he) {
		return "bad handshake"
	}
	if errors.Is(err, errDialTimeout) {
		return "timeout"
	}
	return "other"
}

// timelineLocked turns the buckets into report points, carrying the open
// count over slots without events.
func (r *recorder) timelineLocked(elapsed time.Duration) []Point {
	n := int((elapsed + bucketWidth - 1) / bucketWidth)
	n = max(n, len(r.buckets))
	points := make([]Point, n)
	open := 0
	perSec := float64(time.Second / bucketWidth)
	for i := range points {
		p := &points[i]
		p.T = roundSeconds(float64(i) * bucketWidth.Seconds())
		if i >= len(r.buckets) {
			p.Open, p.OpenMax = open, open
			continue
		}
		b := r.buckets[i]
		if b.touched {
			p.OpenMax = b.openMax
			open = b.openEnd
		} else {
			p.OpenMax = open
		}
		p.Open = open
		p.Attempts = b.attempts
		p.Handshakes = b.handshakes
		p.HandshakesPerSec = roundRate(float64(b.handshakes) * perSec)
		p.Failures = b.failures
		p.Messages = b.msgs
		if b.latN > 0 {
			p.LatencyMeanMs = roundMs(b.latSum / float64(b.latN) / 1000)
			p.LatencyMaxMs = roundMs(float64(b.latMax) / 1000)
		}
		if len(b.closes) > 0 {
			p.Closes = map[string]uint64{}
			for c, k := range b.closes {
				p.Closes[strconv.Itoa(int(c))] = k
			}
		}
	}
	return points
}

// countMs adds one event at offset d to a per-millisecond count.
func countMs(perMs []uint32, d time.Duration) []uint32 {
	ms := int(d / time.Millisecond)
	if ms < 0 {
		return perMs
	}
	for len(perMs) <= ms {
		perMs = append(perMs, 0)
	}
	perMs[ms]++
	return perMs
}

// peakWindow returns the most events within any 100 ms (bucketWidth)
// window that starts at or after from, as a rate per second, and when that
// window starts. A sliding window, unlike fixed buckets, does not halve a
// burst that straddles a bucket boundary.
func peakWindow(perMs []uint32, from time.Duration) (rate float64, at time.Duration) {
	w := int(bucketWidth / time.Millisecond)
	first := max(int(from/time.Millisecond), 0)
	if first >= len(perMs) {
		return 0, 0
	}
	var sum, best uint64
	bestAt := first
	for i := first; i < len(perMs); i++ {
		sum += uint64(perMs[i])
		if i-w >= first {
			sum -= uint64(perMs[i-w])
		}
		if sum > best {
			best = sum
			bestAt = max(i-w+1, first)
		}
	}
	return float64(best) * float64(time.Second/bucketWidth), time.Duration(bestAt) * time.Millisecond
}

// codesLocked returns connection endings sorted by count, then code.
func (r *recorder) codesLocked() []CloseCount {
	out := make([]CloseCount, 0, len(r.codes))
	for k, n := range r.codes {
		info := closecode.Lookup(k.code)
		out = append(out, CloseCount{Code: int(k.code), Name: info.Name, By: k.by, Retry: info.Retry.String(), Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		if out[i].Code != out[j].Code {
			return out[i].Code < out[j].Code
		}
		return out[i].By < out[j].By
	})
	return out
}

func (r *recorder) statusesLocked() []StatusCount {
	out := make([]StatusCount, 0, len(r.statuses))
	for s, n := range r.statuses {
		out = append(out, StatusCount{Status: s, Text: http.StatusText(s), Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Status < out[j].Status })
	return out
}

func (r *recorder) errorsLocked() []ErrorCount {
	out := make([]ErrorCount, 0, len(r.errs))
	for _, e := range r.errs {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// compressionLocked summarizes what the connections negotiated.
func (r *recorder) compressionLocked() *Compression {
	c := &Compression{Parameters: []ExtensionCount{}}
	for ext, n := range r.exts {
		if ext == "" {
			c.Declined += n
			continue
		}
		c.Negotiated += n
		c.Parameters = append(c.Parameters, ExtensionCount{Extensions: ext, Count: n})
	}
	sort.Slice(c.Parameters, func(i, j int) bool {
		if c.Parameters[i].Count != c.Parameters[j].Count {
			return c.Parameters[i].Count > c.Parameters[j].Count
		}
		return c.Parameters[i].Extensions < c.Parameters[j].Extensions
	})
	return c
}

// report builds the report of the run the recorder watched, elapsed long.
func (r *recorder) report(name string, elapsed time.Duration) Run {
	r.mu.Lock()
	defer r.mu.Unlock()
	secs := elapsed.Seconds()
	rr := Run{
		Name:         name,
		Seconds:      roundSeconds(secs),
		Connections:  Connections{Target: r.target, Peak: r.peakOpen, OpenAtEnd: r.open},
		CloseCodes:   r.codesLocked(),
		HTTPStatuses: r.statusesLocked(),
		Errors:       r.errorsLocked(),
		Timeline:     r.timelineLocked(elapsed),
	}
	rr.Handshakes = Handshakes{
		Attempts: r.attempts, Completed: r.completed, Failed: r.failures,
		Errors: r.errCount, CutOff: r.cutOffs, Latency: summarize(r.handshake),
	}
	if secs > 0 {
		rr.Handshakes.PerSecond = roundRate(float64(r.completed) / secs)
	}
	rate, at := peakWindow(r.hsPerMs, 0)
	rr.Handshakes.PeakPerSecond, rr.Handshakes.PeakAtSeconds = roundRate(rate), roundSeconds(at.Seconds())
	if r.sent > 0 || r.recv > 0 {
		rr.Messages = &Messages{Sent: r.sent, Received: r.recv}
		if secs > 0 {
			rr.Messages.PerSecond = roundRate(float64(r.recv) / secs)
			rr.Messages.BytesPerSecond = roundRate(float64(r.recvB) / secs)
		}
		rr.Latency = summarize(r.lat)
	}
	return rr
}
