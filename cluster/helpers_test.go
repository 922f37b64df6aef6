package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// fast are the options tests use to keep time short.
func fast(cluster, name string) Options {
	o := Options{
		Cluster:        cluster,
		Name:           name,
		ReportInterval: 50 * time.Millisecond,
		LeaseTTL:       time.Second,
	}
	if os.Getenv("EBB_CLUSTER_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
	}
	return o
}

// natsServer starts a standalone NATS server with JetStream, as an
// "existing NATS" for nodes to connect to with Options.NATSURL.
func natsServer(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(), JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

func join(t *testing.T, o Options) *Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := Join(ctx, o)
	if err != nil {
		t.Fatalf("Join(%s): %v", o.Name, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// meshOptions returns options for node i of an embedded cluster whose
// first node listens for routes on seed (host:port) and keeps its store
// under dir, so that a node restarted with the same options comes back as
// the same JetStream peer.
func meshOptions(cluster string, i int, seed, dir string) Options {
	o := fast(cluster, fmt.Sprintf("n%d", i))
	o.Embedded.StoreDir = filepath.Join(dir, o.Name)
	if i == 0 {
		o.Embedded.ClusterAddr = seed
	} else {
		o.Embedded.ClusterAddr = "127.0.0.1:0"
		o.Embedded.Routes = []string{seed}
	}
	return o
}

// mesh starts k nodes, each embedding a NATS server, routed together.
func mesh(t *testing.T, cluster string, k int) ([]*Node, []Options) {
	t.Helper()
	port, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	seed := fmt.Sprintf("127.0.0.1:%d", port)
	dir := t.TempDir()
	nodes := make([]*Node, k)
	opts := make([]Options, k)
	for i := range k {
		opts[i] = meshOptions(cluster, i, seed, dir)
		nodes[i] = join(t, opts[i])
	}
	return nodes, opts
}

// waitReady waits until every node's JetStream side is ready.
func waitAllReady(t *testing.T, d time.Duration, nodes ...*Node) {
	t.Helper()
	deadline := time.After(d)
	for _, n := range nodes {
		select {
		case <-n.Ready():
		case <-deadline:
			t.Fatalf("node %s: JetStream not ready after %v", n.Name(), d)
		}
	}
}

// waitMembers waits until n sees exactly want live members.
func waitMembers(t *testing.T, n *Node, want int, d time.Duration) View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	v, err := n.WaitView(ctx, func(v View) bool { return len(v.Live()) == want && len(v.Members) == want })
	if err != nil {
		t.Fatalf("node %s: want %d live members, have %+v: %v", n.Name(), want, names(v), err)
	}
	return v
}

func names(v View) []string {
	var s []string
	for _, m := range v.Members {
		tag := ""
		if m.Stale {
			tag = "(stale)"
		}
		s = append(s, m.Name+tag)
	}
	return s
}
