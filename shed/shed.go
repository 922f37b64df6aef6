package shed

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Defaults for the zero values of Options fields.
const (
	DefaultRetryBase      = 2 * time.Second
	DefaultRetryMax       = 60 * time.Second
	DefaultJitter         = 0.5
	DefaultDemandWindow   = 2 * time.Second
	DefaultRefusalLinger  = time.Second
	DefaultSampleInterval = 250 * time.Millisecond
	DefaultDrainWindow    = 5 * time.Second
	DefaultDrainHint      = time.Second
)

// Options configure a Shedder. The zero value is usable: no limits (every
// upgrade is admitted, but counted), 1013 refusals with hints from 2 s to
// 60 s plus up to 50% jitter, and a 5 s drain with 1012. New copies the
// Options; changing them afterwards has no effect (use SetLimits for the
// limits).
type Options struct {
	// Limits are the admission limits in force at start. Change them at run
	// time with SetLimits.
	Limits Limits

	// TrustedProxies lists the networks of reverse proxies whose
	// X-Forwarded-For header is believed. When the direct peer is in one of
	// them, the client address is the rightmost X-Forwarded-For entry that
	// is not itself a trusted proxy. Empty means X-Forwarded-For is ignored
	// and RemoteAddr is the client, which is the only safe choice when
	// clients can reach the server directly (they could forge the header).
	TrustedProxies []netip.Prefix

	// IPv6PrefixBits groups IPv6 clients by their first bits for the
	// per-IP limit; 64 is a good value because one host usually owns a
	// whole /64. 0 means the whole address.
	IPv6PrefixBits int

	// RetryBase is the retry hint for a server just at capacity (overload
	// ratio 1). Hints grow in proportion to the overload ratio. Default 2 s.
	RetryBase time.Duration
	// RetryMax caps the hint before jitter is added. Default 60 s.
	RetryMax time.Duration
	// Jitter spreads every hint upward by a random fraction in [0, Jitter):
	// hint × (1 + Jitter·U), so that a refused crowd does not come back in
	// step. It applies at the cap too. Default 0.5; a negative value turns
	// jitter off (for tests that want exact hints).
	Jitter float64
	// DemandWindow is how long a refusal counts toward demand, the
	// measure of how far over capacity shed is (hints grow with it, and
	// Limits.HardDemand is compared with it): demand is the connections
	// plus the refusals of the last DemandWindow, counted in slots of an
	// eighth of it. It is also about how long hard mode outlasts a storm.
	// Shorter reacts faster and forgets a crowd whose hints send it back
	// later than the window; longer keeps hard mode on longer after the
	// storm. Default 2 s.
	DemandWindow time.Duration

	// RefusalLinger bounds how long a refused, upgraded connection waits
	// for the client's answering Close frame before the TCP connection is
	// closed anyway. It keeps the handler goroutine at most this long.
	// Default 1 s.
	RefusalLinger time.Duration

	// Pressure is an optional signal from the application (queue depth,
	// downstream latency, …), compared with Limits.Pressure. It is called
	// at most once per SampleInterval, not per request, and must be safe
	// for concurrent use.
	Pressure func() float64
	// SampleInterval is how often runtime pressure (heap, scheduler
	// latency, Pressure) is sampled when a pressure limit is set. Reading
	// runtime/metrics costs microseconds, too much for every handshake.
	// Default 250 ms.
	SampleInterval time.Duration

	// Shed turns on shedding of existing connections; nil means never shed.
	Shed *ShedPolicy

	// Advisor, when set, is consulted on connection-limit decisions so
	// that they are a cluster's, not only this process's: refusals then
	// carry reason node_full (this server is full, others have room: a
	// short hint) or cluster_full (the cluster is full: every server's
	// hint from the cluster's overload), and a cluster-wide connection or
	// per-address limit can refuse what this server alone would admit.
	// See Advisor for when it is called and what it must not do. Nil
	// means this server decides alone.
	Advisor Advisor

	// DrainWindow is how long Shutdown spreads the closing of existing
	// connections over. A context deadline sooner than the window shortens
	// it to three quarters of the time left. Default 5 s.
	DrainWindow time.Duration
	// DrainCode is the code Shutdown closes connections with:
	// closecode.ServiceRestart (1012, the default: "come back soon") or
	// closecode.GoingAway (1001: the service is leaving for longer).
	DrainCode closecode.Code
	// DrainHint is the retry hint sent with drain closes and drain-time
	// refusals, before jitter. Default 1 s.
	DrainHint time.Duration
	// DrainMode says how upgrades arriving during Shutdown are refused:
	// ModeClose (the default) upgrades and closes with DrainCode, ModeHTTP
	// answers 503.
	DrainMode Mode

	// OnState, when set, is called synchronously on every admission state
	// change (see State). It must be fast and must not block.
	OnState func(Event)
	// Logger receives decisions: refusals at Debug (a storm must not flood
	// the log), shedding and drain at Info. Nil means silent.
	Logger *slog.Logger

	// Now is the clock for the token bucket, the demand window, pressure
	// sampling and shedding decisions; nil means time.Now. Tests inject a
	// fake clock. Network deadlines and drain timers always use real time.
	Now func() time.Time
	// Rand is the source of jitter; nil means the goroutine-safe global
	// source of math/rand/v2. A *rand.Rand is not safe for concurrent use;
	// shed only uses it under its own lock. Tests inject a seeded one.
	Rand *rand.Rand
}

// ShedPolicy configures shedding: while runtime pressure stays at or above
// Threshold for Interval (or, after SetLimits lowered MaxConns, while there
// are more connections than the limit), shed closes a bounded fraction of
// the registered connections every Interval, each with 1013 and its own
// jittered retry hint.
type ShedPolicy struct {
	// Threshold is the pressure ratio (1 = at a pressure limit of Limits)
	// at which shedding starts counting. Default 1.
	Threshold float64
	// Interval is how long pressure must stay high before the first round
	// and the time between rounds. Default 1 s.
	Interval time.Duration
	// Fraction is the largest share of connections closed per round, in
	// (0, 1]; at least one connection is closed per round. Default 0.05.
	Fraction float64
	// Oldest sheds the oldest connections first instead of the newest.
	// Newest first is the default because young connections have the
	// least state to lose and their clients are most likely to be the
	// cause of the surge.
	Oldest bool
}

// A Shedder admits, refuses, tracks, sheds and drains WebSocket
// connections. Create one with New, put Middleware in front of the
// WebSocket handler, and call Shutdown when the server stops. All methods
// are safe for concurrent use.
type Shedder struct {
	opts  Options
	now   func() time.Time
	shed  ShedPolicy
	trust []netip.Prefix

	mu       sync.Mutex
	limits   Limits
	conns    int
	inflight int
	perIP    map[netip.Addr]int
	bucket   bucket
	demand   demandWindow
	hard     bool // past Limits.HardDemand (with hysteresis, see demand.go)
	rng      *rand.Rand
	head     *slot // oldest tracked connection
	tail     *slot // newest tracked connection
	draining bool
	plan     DrainPlan     // the drain's pacing and hints, set when it starts
	idle     chan struct{} // closed when conns reaches 0 while draining
	// shedding state, touched only by the shedding loop
	highSince time.Time
	lastShed  time.Time

	pressureOn atomic.Bool
	sampler    sampler
	stats      counters

	closers    sync.WaitGroup // goroutines running Closer.Close
	stopShed   chan struct{}
	shedDone   chan struct{}
	shutdownMu sync.Once
}

// New returns a Shedder configured by opts (nil means all defaults). It
// starts the shedding goroutine when opts.Shed is set; Shutdown stops it.
func New(opts *Options) (*Shedder, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	o.setDefaults()
	s := &Shedder{
		opts:  o,
		now:   o.Now,
		perIP: make(map[netip.Addr]int),
		rng:   o.Rand,
		idle:  make(chan struct{}),
	}
	s.trust = append([]netip.Prefix(nil), o.TrustedProxies...)
	for i, p := range s.trust {
		s.trust[i] = p.Masked()
	}
	s.demand.init(o.Now(), o.DemandWindow)
	s.sampler.init(o.Pressure, o.SampleInterval)
	s.stats.init()
	if err := s.SetLimits(o.Limits); err != nil {
		return nil, err
	}
	if o.Shed != nil {
		s.shed = *o.Shed
		if s.shed.Threshold == 0 {
			s.shed.Threshold = 1
		}
		if s.shed.Interval == 0 {
			s.shed.Interval = time.Second
		}
		if s.shed.Fraction == 0 {
			s.shed.Fraction = 0.05
		}
		s.stopShed = make(chan struct{})
		s.shedDone = make(chan struct{})
		go s.shedLoop()
	}
	return s, nil
}

func (o *Options) validate() error {
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"RetryBase", o.RetryBase}, {"RetryMax", o.RetryMax},
		{"DemandWindow", o.DemandWindow}, {"RefusalLinger", o.RefusalLinger},
		{"SampleInterval", o.SampleInterval}, {"DrainWindow", o.DrainWindow},
		{"DrainHint", o.DrainHint},
	}
	for _, d := range durations {
		if d.d < 0 {
			return fmt.Errorf("shed: Options.%s is %v: want 0 (the default) or a positive duration", d.name, d.d)
		}
	}
	if o.RetryMax > 0 && o.RetryBase > o.RetryMax {
		return fmt.Errorf("shed: Options.RetryBase %v exceeds RetryMax %v: the cap must not be below the base hint", o.RetryBase, o.RetryMax)
	}
	if o.Jitter > 10 {
		return fmt.Errorf("shed: Options.Jitter is %v: want a fraction such as 0.5 (at most 10)", o.Jitter)
	}
	if o.IPv6PrefixBits < 0 || o.IPv6PrefixBits > 128 {
		return fmt.Errorf("shed: Options.IPv6PrefixBits is %d: want 0 (whole address) to 128", o.IPv6PrefixBits)
	}
	for _, p := range o.TrustedProxies {
		if !p.IsValid() {
			return fmt.Errorf("shed: Options.TrustedProxies holds an invalid prefix %q: parse them with netip.ParsePrefix", p)
		}
	}
	switch o.DrainCode {
	case 0, closecode.ServiceRestart, closecode.GoingAway:
	default:
		return fmt.Errorf("shed: Options.DrainCode is %v: want 1012 (Service Restart) or 1001 (Going Away)", o.DrainCode)
	}
	switch o.DrainMode {
	case 0, ModeClose, ModeHTTP:
	default:
		return fmt.Errorf("shed: Options.DrainMode is %d: want ModeClose or ModeHTTP", int(o.DrainMode))
	}
	if p := o.Shed; p != nil {
		if p.Threshold < 0 {
			return fmt.Errorf("shed: ShedPolicy.Threshold is %v: want a pressure ratio > 0 (1 = at the limit)", p.Threshold)
		}
		if p.Interval < 0 {
			return fmt.Errorf("shed: ShedPolicy.Interval is %v: want a positive duration", p.Interval)
		}
		if p.Fraction < 0 || p.Fraction > 1 {
			return fmt.Errorf("shed: ShedPolicy.Fraction is %v: want a share in (0, 1]", p.Fraction)
		}
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.RetryBase == 0 {
		o.RetryBase = DefaultRetryBase
	}
	if o.RetryMax == 0 {
		o.RetryMax = max(DefaultRetryMax, o.RetryBase)
	}
	if o.Jitter == 0 {
		o.Jitter = DefaultJitter
	} else if o.Jitter < 0 {
		o.Jitter = 0
	}
	if o.DemandWindow == 0 {
		o.DemandWindow = DefaultDemandWindow
	}
	if o.RefusalLinger == 0 {
		o.RefusalLinger = DefaultRefusalLinger
	}
	if o.SampleInterval == 0 {
		o.SampleInterval = DefaultSampleInterval
	}
	if o.DrainWindow == 0 {
		o.DrainWindow = DefaultDrainWindow
	}
	if o.DrainCode == 0 {
		o.DrainCode = closecode.ServiceRestart
	}
	if o.DrainHint == 0 {
		o.DrainHint = DefaultDrainHint
	}
	if o.DrainMode == 0 {
		o.DrainMode = ModeClose
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// SetLimits replaces the admission limits at once; requests decided after
// it returns see the new values. Connections above a lowered MaxConns are
// not closed here; with a ShedPolicy the shedding loop closes the excess
// gradually. It returns an error, and changes nothing, if a limit is
// negative.
func (s *Shedder) SetLimits(l Limits) error {
	if err := l.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.limits = l
	s.bucket.configure(l.Rate, l.Burst, s.now())
	s.mu.Unlock()
	s.pressureOn.Store(l.pressureLimited())
	return nil
}

// Limits returns the admission limits in force.
func (s *Shedder) Limits() Limits {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limits
}

// randFloat64 is the jitter source when Options.Rand is nil.
var randFloat64 = rand.Float64

func (s *Shedder) log() *slog.Logger { return s.opts.Logger }

func (s *Shedder) emit(ev Event) {
	if f := s.opts.OnState; f != nil {
		f(ev)
	}
}
