package cluster

import (
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
)

// Defaults for the zero values of Options fields.
const (
	DefaultReportInterval = 250 * time.Millisecond
	DefaultStaleReports   = 4 // a member is stale after this many missed intervals
	DefaultForgetAfter    = 30 * time.Second
	DefaultLeaseTTL       = 5 * time.Second
	DefaultHistoryMsgs    = 100_000
	DefaultHistoryBytes   = 64 << 20
	DefaultHistoryAge     = 10 * time.Minute
	DefaultCacheBytes     = 8 << 20
	DefaultCacheMsgs      = 20_000
	DefaultMaxMessage     = 1 << 20
	DefaultClientAddr     = "127.0.0.1:0"
	maxReplicas           = 3
)

// nameRE is what cluster and node names may look like: they become NATS
// subject tokens, stream and bucket names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Options configure a Node. The zero value of every field but Cluster is a
// working default: an embedded, standalone NATS server on a random
// loopback port with a temporary store.
type Options struct {
	// Cluster is the cluster's name (letters, digits, '-' and '_', at most
	// 64): nodes with the same name on the same NATS see each other. It
	// names the subjects (ebb.<Cluster>.…), the history stream
	// (EBB_<Cluster>_BCAST) and the drain lease bucket (ebb_<Cluster>_drain).
	Cluster string

	// Name is this node's name, unique in the cluster (same alphabet as
	// Cluster). A restarted node should keep its name: the embedded NATS
	// server uses it as its JetStream peer name, so a node that comes
	// back under the same name takes its old place in the replica groups
	// instead of leaving a dead peer behind. Default: the host name plus a
	// random suffix (fine for one-off runs, wrong for rolling restarts).
	Name string

	// NATSURL connects to an existing NATS deployment (comma-separated
	// URLs, e.g. "nats://n1:4222,nats://n2:4222") instead of embedding a
	// server. The deployment must have JetStream enabled. This is the
	// production setup: the NATS cluster outlives every ebb node.
	NATSURL string
	// NATSOptions are extra options for the NATS connection (credentials,
	// TLS, …). Reconnection is already set to retry forever.
	NATSOptions []nats.Option

	// Embedded configures the in-process NATS server used when NATSURL is
	// empty.
	Embedded Embedded

	// ReportInterval is how often the node publishes its Load. Default
	// 250 ms. Each report is one small JSON message per node.
	ReportInterval time.Duration
	// StaleAfter is how long a member may go without reporting before it
	// is marked stale and its capacity no longer counts. Default 4 ×
	// ReportInterval.
	StaleAfter time.Duration
	// ForgetAfter is how long a stale member stays in the View (flagged)
	// before it is dropped. Default 30 s.
	ForgetAfter time.Duration

	// Load is called every ReportInterval, from one goroutine, to get
	// what this node publishes. It must be fast and safe to call while
	// the server runs (read counters, do not wait). Nil publishes a zero
	// Load (no connections, no limit).
	Load func() Load

	// History bounds the broadcast history.
	History History

	// LeaseTTL is how long a drain turn outlives its holder: the holder
	// refreshes it every LeaseTTL/3, and a crashed holder's turn passes
	// to the next node after at most LeaseTTL. Default 5 s.
	LeaseTTL time.Duration

	// Replicas is the number of JetStream replicas of the history and
	// the drain lease. 0 (auto) is min(3, NATS servers the connection
	// knows of), raised — never lowered — as servers join, so that an
	// embedded three-node cluster keeps its history through the restart
	// of any one node.
	Replicas int

	// Logger receives the node's log (and the embedded server's, at
	// debug level for its notices). Nil is silent.
	Logger *slog.Logger
}

// Embedded configures the in-process NATS server.
//
// Without ClusterAddr and Routes the server is standalone: right for one
// ebb process, and its history lasts only as long as StoreDir. With
// ClusterAddr and/or Routes, the servers of several ebb nodes form one
// NATS cluster (routes) with clustered JetStream; see the package
// documentation for what survives a restart.
type Embedded struct {
	// ClientAddr is where the server accepts NATS clients, host:port.
	// Default "127.0.0.1:0" (loopback, random port; see Node.ClientURL).
	ClientAddr string
	// ClusterAddr is where the server accepts routes from the other
	// nodes' servers, host:port (port 0 picks a free port). Set it on
	// every node of a multi-node cluster; it defaults to a random
	// loopback port when Routes are given and all point to loopback.
	ClusterAddr string
	// Routes are the route URLs of servers already in the cluster
	// ("nats-route://host:port" or "host:port"), e.g. the first node's
	// Node.RouteURL. One is enough: the servers tell each other about the
	// rest. Joining this way (rather than connecting to another node's
	// server as a client) keeps every node's NATS up while any one node
	// restarts.
	Routes []string
	// StoreDir is where JetStream keeps its files. Default: a new
	// temporary directory, removed on Leave. Set a directory that
	// survives restarts to keep a standalone node's history across them
	// and to spare a clustered node a full catch-up from its peers.
	StoreDir string
}

// History bounds the broadcast history (a JetStream stream). The first
// node to create the stream sets its limits; later nodes keep them. All
// limits apply together; the oldest messages go first.
type History struct {
	// MaxMsgs is the most messages kept. Default 100 000.
	MaxMsgs int64
	// MaxBytes is the most bytes kept. Default 64 MiB.
	MaxBytes int64
	// MaxAge is how long a message is kept. Default 10 minutes.
	MaxAge time.Duration
	// MaxMessage is the largest message Publish accepts. Default 1 MiB
	// (the NATS default payload limit).
	MaxMessage int
	// CacheBytes and CacheMsgs bound the node's in-memory copy of the
	// newest messages, from which most resumes are served without a round
	// trip to JetStream. Default 8 MiB and 20 000 messages.
	CacheBytes int
	CacheMsgs  int
}

func (o *Options) setDefaults() error {
	if !nameRE.MatchString(o.Cluster) {
		return fmt.Errorf("cluster: Options.Cluster is %q: want 1 to 64 letters, digits, '-' or '_'", o.Cluster)
	}
	if o.Name == "" {
		o.Name = defaultName()
	}
	if !nameRE.MatchString(o.Name) {
		return fmt.Errorf("cluster: Options.Name is %q: want 1 to 64 letters, digits, '-' or '_'", o.Name)
	}
	durs := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"ReportInterval", &o.ReportInterval, DefaultReportInterval},
		{"LeaseTTL", &o.LeaseTTL, DefaultLeaseTTL},
		{"ForgetAfter", &o.ForgetAfter, DefaultForgetAfter},
		{"History.MaxAge", &o.History.MaxAge, DefaultHistoryAge},
	}
	for _, d := range durs {
		if *d.v < 0 {
			return fmt.Errorf("cluster: Options.%s is %v: want 0 (default %v) or a positive duration", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if o.StaleAfter < 0 {
		return fmt.Errorf("cluster: Options.StaleAfter is %v: want 0 (default %d × ReportInterval) or a positive duration", o.StaleAfter, DefaultStaleReports)
	}
	if o.StaleAfter == 0 {
		o.StaleAfter = DefaultStaleReports * o.ReportInterval
	}
	if o.StaleAfter < o.ReportInterval {
		return fmt.Errorf("cluster: Options.StaleAfter %v is shorter than ReportInterval %v: every member would flap to stale between reports", o.StaleAfter, o.ReportInterval)
	}
	if o.LeaseTTL < 300*time.Millisecond {
		return fmt.Errorf("cluster: Options.LeaseTTL is %v: want at least 300ms (it is refreshed every third of it)", o.LeaseTTL)
	}
	if o.Replicas < 0 || o.Replicas > 5 {
		return fmt.Errorf("cluster: Options.Replicas is %d: want 0 (auto) or 1 to 5", o.Replicas)
	}
	h := &o.History
	ints := []struct {
		name string
		v    *int64
		def  int64
	}{
		{"History.MaxMsgs", &h.MaxMsgs, DefaultHistoryMsgs},
		{"History.MaxBytes", &h.MaxBytes, DefaultHistoryBytes},
	}
	for _, f := range ints {
		if *f.v < 0 {
			return fmt.Errorf("cluster: Options.%s is %d: want 0 (default %d) or a positive number", f.name, *f.v, f.def)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	small := []struct {
		name string
		v    *int
		def  int
	}{
		{"History.MaxMessage", &h.MaxMessage, DefaultMaxMessage},
		{"History.CacheBytes", &h.CacheBytes, DefaultCacheBytes},
		{"History.CacheMsgs", &h.CacheMsgs, DefaultCacheMsgs},
	}
	for _, f := range small {
		if *f.v < 0 {
			return fmt.Errorf("cluster: Options.%s is %d: want 0 (default %d) or a positive number", f.name, *f.v, f.def)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if h.MaxMessage > 64<<20 {
		return fmt.Errorf("cluster: Options.History.MaxMessage is %d: want at most 64 MiB (NATS payload limit)", h.MaxMessage)
	}
	if o.NATSURL == "" {
		if o.Embedded.ClientAddr == "" {
			o.Embedded.ClientAddr = DefaultClientAddr
		}
		if _, _, err := net.SplitHostPort(o.Embedded.ClientAddr); err != nil {
			return fmt.Errorf("cluster: Options.Embedded.ClientAddr is %q: want host:port (%v)", o.Embedded.ClientAddr, err)
		}
	}
	return nil
}
