package clustertest

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// sampleEvery is the sampler's period: fine enough to see a node's
// handshakes per second and HAProxy's state changes.
const sampleEvery = 100 * time.Millisecond

// sample is the cluster, the balancer and the crowd at one instant.
type sample struct {
	at        time.Time
	nodes     []nodeSample // by slot
	lb        map[string]serverStat
	connected int // clients with an open connection
	live      int // clients live (replay done)
	headroom  int // the cluster's headroom as a serving node sees it; -1 unknown
}

type nodeSample struct {
	inc      *node  // the incarnation sampled; nil before the slot's start
	admitted uint64 // its cumulative admissions
	conns    int
	draining bool
}

// sampler samples every sampleEvery until stopped.
type sampler struct {
	ns    *nodeSet
	lb    *haproxy
	crowd *crowd

	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

func startSampler(ns *nodeSet, lb *haproxy, cr *crowd) *sampler {
	s := &sampler{ns: ns, lb: lb, crowd: cr, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *sampler) run() {
	defer close(s.done)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		s.take()
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
	}
}

func (s *sampler) take() {
	sm := sample{at: time.Now(), headroom: -1}
	s.ns.mu.Lock()
	nodes := append([]*node(nil), s.ns.nodes...)
	s.ns.mu.Unlock()
	for _, n := range nodes {
		var x nodeSample
		if n != nil {
			st := n.srv.Shedder().Stats()
			x = nodeSample{inc: n, admitted: st.Admitted, conns: st.Connections, draining: st.Draining}
			if sm.headroom < 0 && !st.Draining {
				if t := n.srv.Node().View().Totals(); !t.Unlimited {
					sm.headroom = t.Headroom
				}
			}
		}
		sm.nodes = append(sm.nodes, x)
	}
	if s.lb != nil {
		sm.lb, _ = s.lb.stats()
	}
	if s.crowd != nil {
		sm.connected = int(s.crowd.connected.Load())
		sm.live = s.crowd.liveCount()
	}
	s.mu.Lock()
	s.samples = append(s.samples, sm)
	s.mu.Unlock()
}

// finish stops the sampler and returns its samples.
func (s *sampler) finish() []sample {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples
}

// peakPerSecond is, for slot i, the most admissions in any one-second
// window (sliding by sampleEvery), counted per incarnation.
func peakPerSecond(samples []sample, i int) (peak int, at time.Time) {
	type pt struct {
		at time.Time
		n  uint64 // admissions since the sampler began, across incarnations
	}
	var pts []pt
	var cum uint64
	var prev nodeSample
	for k, s := range samples {
		x := s.nodes[i]
		switch {
		case x.inc == nil:
		case k == 0:
			// The sampler's start is the baseline.
		case x.inc == prev.inc:
			cum += x.admitted - prev.admitted
		default:
			cum += x.admitted // a new incarnation counts from 0
		}
		prev = x
		if x.inc != nil {
			pts = append(pts, pt{s.at, cum})
		}
	}
	j := 0
	for k := range pts {
		for pts[k].at.Sub(pts[j].at) > time.Second {
			j++
		}
		if n := int(pts[k].n - pts[j].n); n > peak {
			peak, at = n, pts[k].at
		}
	}
	return peak, at
}

// headroomAt is the cluster's headroom sampled last before t (-1 unknown).
func headroomAt(samples []sample, t time.Time) int {
	h := -1
	for _, s := range samples {
		if s.at.After(t) {
			break
		}
		h = s.headroom
	}
	return h
}

// lbChanges lists when HAProxy's status of server name changed.
func lbChanges(samples []sample, name string) []lbChange {
	var out []lbChange
	prev := ""
	for _, s := range samples {
		st, ok := s.lb[name]
		if !ok {
			continue
		}
		up := "DOWN"
		if st.up() {
			up = "UP"
		}
		if up != prev {
			out = append(out, lbChange{s.at, up})
			prev = up
		}
	}
	return out
}

type lbChange struct {
	at    time.Time
	state string // UP or DOWN
}

// cpuClock is CPU time used so far by this process and by another one.
type cpuClock struct {
	at    time.Time
	self  time.Duration
	other time.Duration // -1 if it cannot be read
}

// readCPU reads this process's CPU time and pid's (from /proc).
func readCPU(pid int) cpuClock {
	c := cpuClock{at: time.Now(), other: -1}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name, which ends with ')'.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 13 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				const hz = 100 // USER_HZ on Linux
				c.other = time.Duration(ut+st) * time.Second / hz
			}
		}
	}
	return c
}

// cores is the CPU used between a and b, in cores, for this process and
// the other one (NaN when unknown).
func cores(a, b cpuClock) (self, other float64) {
	wall := b.at.Sub(a.at).Seconds()
	self = (b.self - a.self).Seconds() / wall
	other = math.NaN()
	if a.other >= 0 && b.other >= 0 {
		other = (b.other - a.other).Seconds() / wall
	}
	return self, other
}
