package cluster

import (
	"math"
	"slices"
	"sort"
	"time"
)

// Load is what a node publishes about itself every ReportInterval. Every
// field is optional; zero means "none" or "unknown" as stated.
type Load struct {
	// Conns is the number of connections the node holds now.
	Conns int `json:"conns"`
	// Limit is the node's own connection limit; 0 means no limit (the
	// cluster then has no finite capacity while the node is live).
	Limit int `json:"limit,omitempty"`
	// Rate is how many new connections per second the node can admit
	// (its handshake rate limit); 0 means unknown.
	Rate float64 `json:"rate,omitempty"`
	// Demand is connections plus recent refusals, decayed, as the node's
	// admission counts it for its own hints; 0 means "same as Conns".
	Demand float64 `json:"demand,omitempty"`
	// Pressure is the node's runtime pressure ratio (1 = at a pressure
	// limit).
	Pressure float64 `json:"pressure,omitempty"`
	// Draining is true while the node is draining (its capacity no longer
	// counts; its connections are about to move).
	Draining bool `json:"draining,omitempty"`
	// Addr is the node's public address, for operators and dashboards.
	Addr string `json:"addr,omitempty"`
	// Admitted and Refused are the node's cumulative admission counters.
	Admitted uint64 `json:"admitted,omitempty"`
	Refused  uint64 `json:"refused,omitempty"`
	// HeavyIPs are the client addresses holding at least a threshold of
	// connections on this node (see HeavyIPs), so that per-address limits
	// can be cluster-wide without publishing every address.
	HeavyIPs map[string]int `json:"heavy_ips,omitempty"`
}

// demand is l.Demand, or l.Conns when the node does not report demand.
func (l Load) demand() float64 {
	return max(l.Demand, float64(l.Conns))
}

// headroom is how many more connections the node can take; math.MaxInt
// without a limit.
func (l Load) headroom() int {
	if l.Limit <= 0 {
		return math.MaxInt
	}
	return max(0, l.Limit-l.Conns)
}

// Member is one node as this node sees it.
type Member struct {
	// Name is the node's name.
	Name string
	// Load is the node's last report.
	Load Load
	// Seen is when this node last received a report from it (its own
	// clock, so clock skew between nodes does not matter).
	Seen time.Time
	// Joined is when this node first heard from the member's current
	// incarnation (a restarted node starts a new one).
	Joined time.Time
	// Incarnation changes every time the node joins.
	Incarnation string
	// Stale is true when the member has not reported for StaleAfter: it
	// may have crashed or be cut off, and its capacity does not count.
	Stale bool
	// Self is true for this node's own entry.
	Self bool
}

// live reports whether m counts: reporting and not stale.
func (m Member) live() bool { return !m.Stale }

// serving reports whether m's capacity counts: live and not draining.
func (m Member) serving() bool { return !m.Stale && !m.Load.Draining }

// View is a node's picture of the cluster at one instant. Views are values:
// they do not change after Node.View returns them.
type View struct {
	// Cluster is the cluster's name; Self is this node's name.
	Cluster, Self string
	// At is when the view was taken.
	At time.Time
	// Members are the nodes heard from and not yet forgotten, sorted by
	// name, this node included.
	Members []Member
}

// Member returns the member named name.
func (v View) Member(name string) (Member, bool) {
	i, ok := slices.BinarySearchFunc(v.Members, name, func(m Member, n string) int {
		switch {
		case m.Name < n:
			return -1
		case m.Name > n:
			return 1
		}
		return 0
	})
	if !ok {
		return Member{}, false
	}
	return v.Members[i], true
}

// Live returns the members that are not stale, draining ones included.
func (v View) Live() []Member {
	var out []Member
	for _, m := range v.Members {
		if m.live() {
			out = append(out, m)
		}
	}
	return out
}

// Totals sums a View's live members.
type Totals struct {
	// Members counts every member; Live those not stale; Serving those
	// live and not draining; Draining those live and draining; Stale
	// the rest.
	Members, Live, Serving, Draining, Stale int
	// Conns is the connections held by live members, draining ones
	// included: their clients are about to need a place elsewhere.
	Conns int
	// Limit is the sum of the serving members' limits. It is meaningless
	// when Unlimited is true.
	Limit int
	// Unlimited is true when a serving member has no limit.
	Unlimited bool
	// Headroom is Limit - Conns, at least 0 (math.MaxInt when Unlimited).
	Headroom int
	// Demand is the live members' demand (connections plus recent
	// refusals).
	Demand float64
	// Overload is Demand / Limit: below 1 the cluster has room; 0 when
	// Unlimited or Limit is 0.
	Overload float64
	// Rate is the sum of the serving members' admission rates (members
	// reporting none count 0).
	Rate float64
}

// Totals sums the view. A stale member counts in nothing but Members and
// Stale: its capacity cannot be relied on, and its clients, if it really
// died, are reconnecting and will be counted where they land.
func (v View) Totals() Totals {
	var t Totals
	t.Members = len(v.Members)
	for _, m := range v.Members {
		if !m.live() {
			t.Stale++
			continue
		}
		t.Live++
		t.Conns += m.Load.Conns
		t.Demand += m.Load.demand()
		if m.Load.Draining {
			t.Draining++
			continue
		}
		t.Serving++
		t.Rate += m.Load.Rate
		if m.Load.Limit <= 0 {
			t.Unlimited = true
		} else {
			t.Limit += m.Load.Limit
		}
	}
	switch {
	case t.Unlimited:
		t.Headroom = math.MaxInt
	default:
		t.Headroom = max(0, t.Limit-t.Conns)
		if t.Limit > 0 {
			t.Overload = t.Demand / float64(t.Limit)
		}
	}
	return t
}

// IPConns returns how many connections the other live members report
// for the client address ip (a key of Load.HeavyIPs). Members publish
// only addresses at or above their threshold, so the sum undercounts by
// at most (threshold-1) per other member. Add this node's own count.
func (v View) IPConns(ip string) int {
	n := 0
	for _, m := range v.Members {
		if m.Self || !m.live() {
			continue
		}
		n += m.Load.HeavyIPs[ip]
	}
	return n
}

// HeavyIPs picks the addresses to publish in Load.HeavyIPs from a node's
// per-address counts: those with at least threshold connections, the
// largest max of them. A threshold of about a tenth of the per-address
// limit keeps reports small (at most max entries) while the cluster-wide
// count stays within (nodes-1)·(threshold-1) of the truth.
func HeavyIPs(counts map[string]int, threshold, max int) map[string]int {
	if threshold < 1 {
		threshold = 1
	}
	type kv struct {
		k string
		v int
	}
	var heavy []kv
	for k, v := range counts {
		if v >= threshold {
			heavy = append(heavy, kv{k, v})
		}
	}
	if len(heavy) == 0 || max <= 0 {
		return nil
	}
	if len(heavy) > max {
		sort.Slice(heavy, func(i, j int) bool {
			if heavy[i].v != heavy[j].v {
				return heavy[i].v > heavy[j].v
			}
			return heavy[i].k < heavy[j].k
		})
		heavy = heavy[:max]
	}
	out := make(map[string]int, len(heavy))
	for _, e := range heavy {
		out[e.k] = e.v
	}
	return out
}
