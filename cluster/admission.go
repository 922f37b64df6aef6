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
// formula shed uses for one node. It costs one pass over the members.
func Advise(v View, local Load, p Policy) Advice {
	p = p.withDefaults()
	v = v.withSelf(local)
	t := v.Totals()
	a := Advice{Verdict: Admit, OtherHeadroom: otherHeadroom(v)}
	capacity, finite := t.Limit, !t.Unlimited
	if p.MaxConns > 0 && (!finite || p.MaxConns < capacity) {
		capacity, finite = p.MaxConns, true
	}
	if finite && capacity > 0 {
		a.Overload = t.Demand / float64(capacity)
	}
	nodeFull := local.Limit > 0 && local.Conns >= local.Limit
	clusterFull := finite && t.Conns >= capacity
	switch {
	case clusterFull, nodeFull && a.OtherHeadroom == 0:
		ratio := 1.0
		if capacity > 0 {
			ratio = max(1, (t.Demand+1)/float64(capacity))
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

// otherHeadroom sums the headroom of the serving members other than self.
func otherHeadroom(v View) int {
	h := 0
	for _, m := range v.Members {
		if m.Self || !m.serving() {
			continue
		}
		r := m.Load.headroom()
		if r == math.MaxInt {
			return math.MaxInt
		}
		h += r
	}
	return h
}
