package shed

import (
	"fmt"
	"net/netip"
	"time"
)

// Advisor lets a Shedder's connection limits take more than this process
// into account, typically a cluster of servers behind one load balancer:
// when this server is full but others have room, a refused client should
// be told to come back soon (the balancer will send it elsewhere); when
// the whole cluster is full, every server should give a refused crowd the
// same hint; and a cluster-wide connection limit or per-address limit
// may refuse a client this server alone would admit.
//
// shed calls Advise, at most once per upgrade request and only when its
// answer can change the decision: when the request reaches the
// connection-limit check (after the per-address, hard-ceiling and
// pressure checks; whether or not this server is at Limits.MaxConns), and
// when Limits.MaxConnsPerIP is set and the client is under it here.
// Requests refused earlier, refused by a Listener, or arriving during a
// drain never reach it. shed's own limits always hold: an advice to admit
// never lifts Limits.MaxConns.
//
// Advise runs on the request's goroutine while the Shedder holds its
// lock (the decision and the count it changes must be one step), so it
// must be fast, must not block, and must not call the Shedder's methods.
// A cluster's view of its members, read from memory, is the intended
// source; a network round trip per request is not.
type Advisor interface {
	Advise(AdviceRequest) Advice
}

// AdvisorFunc adapts a function to Advisor.
type AdvisorFunc func(AdviceRequest) Advice

// Advise calls f(r).
func (f AdvisorFunc) Advise(r AdviceRequest) Advice { return f(r) }

// AdviceRequest is this server's state at the moment of a decision, what
// an Advisor combines with what it knows of the others.
type AdviceRequest struct {
	// ClientIP is the address the per-address limit counts the request
	// under (see Options.TrustedProxies and Options.IPv6PrefixBits), and
	// IPConns the connections it holds here.
	ClientIP netip.Addr
	IPConns  int
	// MaxConnsPerIP is Limits.MaxConnsPerIP (0: off).
	MaxConnsPerIP int
	// Conns is the connections holding a slot here; MaxConns is
	// Limits.MaxConns (0: no limit).
	Conns    int
	MaxConns int
	// Rate is Limits.Rate, the handshakes admitted per second (0: no
	// limit).
	Rate float64
	// Demand is Stats.Demand: connections plus the refusals of the last
	// DemandWindow that more capacity could have admitted.
	Demand float64
	// Pressure is the runtime pressure ratio (1 = at a pressure limit; 0
	// when no pressure limit is set).
	Pressure float64
}

// Verdict is an Advisor's answer about one upgrade request.
type Verdict int

// Verdicts. The zero value, VerdictNone, leaves the decision to shed
// alone, as if there were no Advisor.
const (
	// VerdictNone: no opinion; shed decides alone.
	VerdictNone Verdict = iota
	// VerdictAdmit: room here and in the cluster. shed still applies its
	// own limits.
	VerdictAdmit
	// VerdictNodeFull: this server is full and others have room. The
	// request is refused with ReasonNodeFull and the advice's (short)
	// hint: the load balancer should route the retry elsewhere.
	VerdictNodeFull
	// VerdictClusterFull: the cluster is full (or at a cluster-wide
	// limit). The request is refused with ReasonClusterFull and the
	// advice's hint, the same on every server.
	VerdictClusterFull
	// VerdictAddrFull: the client's address holds its share of
	// connections across the cluster. Refused with ReasonPerIP, as the
	// local per-address limit does; like those, it does not count toward
	// demand.
	VerdictAddrFull
	numVerdicts = iota
)

var verdictNames = [...]string{"none", "admit", "node_full", "cluster_full", "addr_full"}

// String returns the verdict's name, e.g. "cluster_full".
func (v Verdict) String() string {
	if v >= 0 && int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Advice is what an Advisor says about one upgrade request.
type Advice struct {
	Verdict Verdict
	// Hint is the retry hint for a refusal, before shed's jitter, capped
	// at Options.RetryMax. 0 means shed's own hint for the reason (from
	// its local overload).
	Hint time.Duration
	// Text is the human part of the close reason (or 503 body), e.g.
	// "node at capacity, cluster has room". Empty means the reason's
	// own Text. It is shortened if it does not fit a close reason with
	// the hint.
	Text string
}

// adviceLocked asks the Advisor about the request d (once; later calls
// return the first answer). The caller holds s.mu.
func (s *Shedder) adviceLocked(d *decision, asked *bool, adv *Advice, ratio, demand float64) Advice {
	if s.opts.Advisor == nil || *asked {
		return *adv
	}
	*asked = true
	l := &s.limits
	a := s.opts.Advisor.Advise(AdviceRequest{
		ClientIP:      d.ip,
		IPConns:       s.perIP[d.ip],
		MaxConnsPerIP: l.MaxConnsPerIP,
		Conns:         s.conns,
		MaxConns:      l.MaxConns,
		Rate:          l.Rate,
		Demand:        demand,
		Pressure:      ratio,
	})
	if a.Verdict < 0 || a.Verdict >= numVerdicts {
		a = Advice{} // an Advisor's bug must not refuse everyone
	}
	*adv = a
	return a
}

// refuseAdvisedLocked fills in d as a 1013 refusal for reason with the
// Advisor's hint and text; fallback is the overload ratio for shed's own
// hint when the advice has none.
func (s *Shedder) refuseAdvisedLocked(d *decision, reason Reason, mode Mode, a Advice, fallback float64) {
	s.refuseLocked(d, reason, mode, fallback)
	if a.Hint > 0 {
		d.hint = s.jitterLocked(min(a.Hint, s.opts.RetryMax))
	}
	d.text = a.Text
}
