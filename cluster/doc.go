// Package cluster makes several ebb servers one cluster on NATS: each
// node publishes its load and keeps the cluster's view, so that 1013
// refusals and 1012 drains are cluster decisions; broadcasts reach every
// node in one numbered order, with a bounded history from which a
// reconnecting client resumes without loss. It prints nothing, reads no
// flags and never exits; ebb serve wires it into admission and drain.
//
// # NATS, two ways
//
// By default Join starts a nats-server inside the process (JetStream on, a
// temporary store, clients on a random loopback port): one ebb process
// needs no install step. Several ebb processes form one cluster by routing
// their embedded servers together: the first sets Embedded.ClusterAddr,
// the others put its Node.RouteURL in Embedded.Routes ("--join"); the
// servers find the rest among themselves. Joining as a NATS client of
// another node's server was rejected: that server's restart would take
// NATS away from every node. With Options.NATSURL the node uses an
// existing NATS deployment instead — the production choice, since that
// NATS outlives every ebb restart.
//
// # What survives a restart
//
// History and drain lease live in JetStream with min(3, servers)
// replicas, raised as servers join (never lowered). In an embedded
// three-node cluster any one node can restart: the other two keep a
// quorum, the stream leader moves (the leaving server steps down first),
// and the restarted server — same Options.Name, its store empty or kept —
// catches up from its peers. AcquireDrainTurn waits, by default, until
// every replica is current again, so a rolling restart never takes away
// a second copy before the first is rebuilt. Trade-offs: a clustered
// embedded server has no JetStream until a second server joins (the view
// works at once; Publish, Subscribe and drain turns wait, see Ready); two
// nodes lose the quorum while either restarts; a standalone node's
// history lasts only as long as its store (a temporary one by default),
// and resuming clients are then told of a gap: a new history numbers its
// messages from the time it was created, in microseconds, past every
// number an older one gave out. For
// production, run NATS as its own three-server cluster (or embedded in
// processes that are not restarted with ebb) and use NATSURL.
//
// # Subjects and what is published
//
// ebb.<cluster>.load.<node>: every ReportInterval (250 ms) each node
// publishes a small JSON report (core NATS, not stored): its Load —
// connections, limit, admission rate, demand, pressure, draining, public
// address, counters, and the client addresses over a threshold (HeavyIPs)
// — with an incarnation ID that changes on every Join. Each node keeps
// the last report of every member, timed by its own clock; a member
// silent for StaleAfter (4 intervals) is stale and its capacity is not
// counted, and is forgotten after ForgetAfter; a node that leaves cleanly
// says so and is dropped at once. Advise and PlanDrain are pure functions
// of a View, so every node computes the same hints from the same view.
//
// ebb.<cluster>.bcast: broadcasts, stored in the stream EBB_<cluster>_BCAST
// (limits: 100 000 messages, 64 MiB, 10 minutes by default; oldest out
// first). The stream sequence is the global order; it starts at the
// stream's creation time in microseconds since 1970 (about 1.8·10^15, well
// inside JavaScript's exact integers), never at 1, so that no number is
// ever given to two messages. Publish waits for the
// store and retries with a de-duplication ID, so a retry through a leader
// change stores the message once. Each node reads the stream with one
// ordered consumer, keeps the newest messages in memory (8 MiB), and fans
// them out to its Subscriptions, each bounded in bytes (a slow reader is
// cut off with a *LagError, never buffered without bound). A Subscription
// from a sequence replays the missed messages from that cache or the
// stream (batched direct gets, answered by any current replica), queuing
// live messages from the moment it starts and de-duplicating by sequence,
// so the hand-over loses and repeats nothing. A sequence the history no
// longer holds gives a *GapError: nothing is skipped silently.
//
// The drain lease is the key "turn" in the key-value bucket
// ebb_<cluster>_drain (TTL LeaseTTL, 5 s): created only if absent,
// refreshed every TTL/3 with a revision check, deleted on release; a
// crashed holder's turn expires after the TTL.
//
// # Failure modes
//
// A node cut off from NATS stops hearing reports: after StaleAfter its
// view holds only itself, so it decides alone (as ebb does without a
// cluster), and the others count it stale. Its drain turn, if any, is
// lost after LeaseTTL (DrainTurn.Lost). Without a JetStream quorum,
// Publish blocks until its context ends and resumes fail with an error
// (not a silent skip); the view is unaffected. A broadcast subscriber
// whose node restarts gets ErrClosed and resumes on another node from its
// last sequence.
package cluster
