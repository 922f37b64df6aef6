package cluster

import (
	"fmt"
	"math"
	"time"
)

// Defaults for the zero values of Policy fields. RetryBase and RetryMax
// match shed's defaults, so a cluster's hints read like a single node's.
const (
	DefaultRetryBase = 2 * time.Second
	DefaultRetryMax  = 60 * time.Second
	DefaultShortHint = 500 * time.Millisecond
)

// Policy is the cluster-wide admission policy. Every node of a cluster
// should use the same one, so that they all tell a refused crowd the
// same story.
type Policy struct {
	// RetryBase is the hint for a cluster just at capacity (overload
	// ratio 1); hints grow in proportion to the overload ratio, as
	// shed's do. Default 2 s.
	RetryBase time.Duration
	// RetryMax caps the hint. Default 60 s.
	RetryMax time.Duration
	// ShortHint is the hint when this node is full but others have room:
	// the retry, routed elsewhere by the load balancer, should come soon.
	// Default 500 ms. Jitter it (shed does) so retries do not come back
	// in step.
	ShortHint time.Duration
	// MaxConns is a cluster-wide connection limit on top of each node's
	// own; 0 means the sum of the serving nodes' limits.
	MaxConns int
}

func (p Policy) withDefaults() Policy {
	if p.RetryBase <= 0 {
		p.RetryBase = DefaultRetryBase
	}
	if p.RetryMax <= 0 {
		p.RetryMax = max(DefaultRetryMax, p.RetryBase)
	}
	if p.ShortHint <= 0 {
		p.ShortHint = DefaultShortHint
	}
	return p
}

// Verdict is the outcome of Advise.
type Verdict int

// Verdicts.
const (
	// Admit: this node and the cluster have room.
	Admit Verdict = iota + 1
	// NodeFull: this node is at its limit, other nodes have room. Refuse
	// with the short hint; the load balancer routes the retry elsewhere.
	NodeFull
	// ClusterFull: the cluster is at its limit. Refuse with the hint from
	// the cluster's overload, the same on every node.
	ClusterFull
)

// String returns "admit", "node_full" or "cluster_full" (metric labels).
func (v Verdict) String() string {
	switch v {
	case Admit:
		return "admit"
	case NodeFull:
		return "node_full"
	case ClusterFull:
		return "cluster_full"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Advice is what the cluster says about one upgrade request.
type Advice struct {
	Verdict Verdict
	// Hint is the retry hint before jitter; 0 when admitted.
	Hint time.Duration
	// Reason is the human part of the close reason, e.g. "node at
	// capacity, cluster has room"; empty when admitted.
	Reason string
	// Overload is the cluster's overload ratio (demand over capacity).
	Overload float64
	// OtherHeadroom is how many more connections the other serving nodes
	// can take (math.MaxInt when one of them has no limit).
	OtherHeadroom int
}

// Human reasons. With a "; retry-after=N" hint they fit in a close
// reason's 123 bytes.
const (
	ReasonNodeFull    = "node at capacity, cluster has room"
	ReasonClusterFull = "cluster at capacity"
)

// Advise decides, from a view and this node's current load (fresher than
// its last report, so it replaces it), whether a new connection may be
// admitted, and with which hint it is refused otherwise. It is a pure
// function: every node computes the same cluster-full hint from the same
// view, min(RetryMax, RetryBase·max(1, (demand+1)/capacity)) — the
// formula shed uses for one node. It costs one pass over the members; an
// admission path that asks per request should Prepare the view once
// instead.
func Advise(v View, local Load, p Policy) Advice {
	return Prepare(v, p).Advise(local)
}

// Prepared is a view summed up for Advise: the other members' totals,
// computed once, so that each decision costs a few additions and no
// allocation. Prepare it again when the view changes (Node.Changed).
type Prepared struct {
	p         Policy
	conns     int     // live others' connections
	demand    float64 // live others' demand
	limit     int     // serving others' limits
	unlimited bool    // a serving other has no limit
	headroom  int     // serving others' headroom (math.MaxInt: unlimited)
}

// Prepare sums up v (all members but v.Self) for Advise under p.
func Prepare(v View, p Policy) Prepared {
	pr := Prepared{p: p.withDefaults()}
	for _, m := range v.Members {
		if m.Self || m.Name == v.Self || !m.live() {
			continue
		}
		pr.conns += m.Load.Conns
		pr.demand += m.Load.demand()
		if !m.serving() {
			continue
		}
		if m.Load.Limit <= 0 {
			pr.unlimited = true
		} else {
			pr.limit += m.Load.Limit
		}
		if pr.headroom != math.MaxInt {
			h := m.Load.headroom()
			if h == math.MaxInt || pr.headroom > math.MaxInt-h {
				pr.headroom = math.MaxInt
			} else {
				pr.headroom += h
			}
		}
	}
	return pr
}

// Advise is Advise(v, local, p) for the view and policy pr was prepared
// from.
func (pr Prepared) Advise(local Load) Advice {
	p := pr.p
	conns := pr.conns + local.Conns
	demand := pr.demand + local.demand()
	capacity, unlimited := pr.limit, pr.unlimited
	if !local.Draining {
		if local.Limit <= 0 {
			unlimited = true
		} else {
			capacity += local.Limit
		}
	}
	finite := !unlimited
	a := Advice{Verdict: Admit, OtherHeadroom: pr.headroom}
	if p.MaxConns > 0 && (!finite || p.MaxConns < capacity) {
		capacity, finite = p.MaxConns, true
	}
	if finite && capacity > 0 {
		a.Overload = demand / float64(capacity)
	}
	nodeFull := local.Limit > 0 && local.Conns >= local.Limit
	clusterFull := finite && conns >= capacity
	switch {
	case clusterFull, nodeFull && a.OtherHeadroom == 0:
		ratio := 1.0
		if capacity > 0 {
			ratio = max(1, (demand+1)/float64(capacity))
		}
		a.Verdict, a.Reason, a.Hint = ClusterFull, ReasonClusterFull, hintFor(ratio, p)
	case nodeFull:
		a.Verdict, a.Reason, a.Hint = NodeFull, ReasonNodeFull, p.ShortHint
	}
	return a
}

// hintFor is min(RetryMax, RetryBase·ratio).
func hintFor(ratio float64, p Policy) time.Duration {
	if math.IsNaN(ratio) || ratio < 1 {
		ratio = 1
	}
	return time.Duration(min(float64(p.RetryBase)*ratio, float64(p.RetryMax)))
}
