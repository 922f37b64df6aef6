// Package clustertest holds the integration tests of an ebb cluster behind
// a real load balancer: three (then four) nodes of the server `ebb serve`
// runs, in this process, with their embedded NATS servers routed
// together, behind HAProxy (Debian's /usr/sbin/haproxy, started as a child
// process with a configuration written for the test), and a crowd of
// reconnecting, resuming clients (package reconnect) that reach the nodes
// only through HAProxy.
//
// TestRollingRestart restarts the three nodes one after another while a
// publisher sends a steady rate of broadcasts, and checks what the issue
// asks for: every client back, no 1013 while the cluster had headroom, no
// broadcast lost or repeated for any resuming client, each node's
// handshakes within its admission rate, and the time to full recovery.
// TestClusterOverload fills a cluster past its capacity, checks that
// exactly its capacity is admitted and the rest refused with the
// cluster's hint, then adds a fourth node and times the refused clients
// getting in. TestNginxDrain puts the nginx configuration docs/scaling.md
// documents in front of three nodes and checks that clients dialled while
// one drains all get in; TestDocumentedConfigs has haproxy -c and nginx -t
// check the documented files.
//
// The scale is set by environment variables (EBB_CLUSTER_CLIENTS,
// EBB_CLUSTER_RATE, …; see README.md in this directory) so that the
// default fits `go test -race` in CI and the scale (3,000
// clients, 200 broadcasts a second) can be measured without -race;
// EBB_CLUSTER_REPORT=path writes the figures as a Markdown table. Without
// HAProxy (or nginx) the tests skip, saying how to install it, except under
// CI (CI=true), where a missing balancer fails them. -short skips the
// heavy ones too.
//
// The package has no API: everything lives in its _test.go files.
package clustertest
