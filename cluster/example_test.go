package cluster_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ebb-ws/ebb/cluster"
)

// A single node with its embedded NATS server: publish a broadcast, and
// resume from a sequence as a reconnecting client would.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	n, err := cluster.Join(ctx, cluster.Options{
		Cluster: "demo",
		Name:    "node-1",
		Load:    func() cluster.Load { return cluster.Load{Conns: 10, Limit: 100} },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()

	first, err := n.Publish(ctx, cluster.Text, []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	if _, err := n.Publish(ctx, cluster.Text, []byte("world")); err != nil {
		log.Fatal(err)
	}
	// A client that last saw nothing resumes from the first sequence.
	sub, err := n.Subscribe(ctx, first, cluster.SubscribeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for range 2 {
		m, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%d %s\n", m.Seq-first+1, m.Data)
	}
	a := n.Advise(cluster.Load{Conns: 100, Limit: 100}, cluster.Policy{})
	fmt.Println(a.Verdict, a.Hint)
	// Output:
	// 1 hello
	// 2 world
	// cluster_full 2.02s
}

// Drain with a turn and a plan: wait for the turn, pace the closes to what
// the other nodes can admit, release.
func ExampleNode_AcquireDrainTurn() {
	ctx := context.Background()
	var n *cluster.Node // joined earlier
	if n == nil {
		return
	}
	turn, err := n.AcquireDrainTurn(ctx, cluster.DrainTurnOptions{MinServing: 3})
	if err != nil {
		log.Fatal(err)
	}
	defer turn.Release(ctx)
	conns := 1000
	plan := n.PlanDrain(conns, cluster.PlanOptions{})
	if plan.Shortfall > 0 {
		// Give the others a bounded time to make room, then drain anyway.
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _ = n.WaitView(wctx, func(v cluster.View) bool {
			return cluster.PlanDrain(v, conns, cluster.PlanOptions{}).Shortfall == 0
		})
		cancel()
		plan = n.PlanDrain(conns, cluster.PlanOptions{})
	}
	fmt.Println(plan.Window, plan.Batch, plan.Interval, plan.Hint, plan.Spread)
}
