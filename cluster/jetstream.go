package cluster

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// hdrType carries a broadcast's message type ("binary"; absent for text).
const hdrType = "Ebb-Type"

// jetStreamLoop sets up the history stream, the lease bucket and the live
// feed, retrying until JetStream answers, then keeps the replica count in
// step with the number of NATS servers.
func (n *Node) jetStreamLoop() {
	defer n.wg.Done()
	wait := 100 * time.Millisecond
	// A JetStream request sent before this node's server has found the
	// meta leader (it has just joined or restarted) gets no answer at
	// all, only a timeout: the first attempts give up soon, so that one
	// lost request does not keep the history unusable for the whole
	// setupTimeout (5 s, measured after every restart of the seed node).
	timeout := firstSetupTimeout
	for {
		err := n.setup(timeout)
		if err == nil {
			break
		}
		n.log.Debug("cluster: JetStream not ready, retrying", slog.Duration("in", wait), slog.Duration("timeout", timeout), slog.Any("err", err))
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
		timeout = min(2*timeout, setupTimeout)
	}
	close(n.ready)
	n.log.Info("cluster: history and drain lease ready", slog.String("stream", n.stream), slog.Int("replicas", n.currentReplicas()))
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
			if err := n.scaleReplicas(); err != nil {
				n.log.Debug("cluster: raising replicas failed, will retry", slog.Any("err", err))
			}
		}
	}
}

func (n *Node) currentReplicas() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.replicas
}

// wantReplicas is Options.Replicas, or min(3, servers known).
func (n *Node) wantReplicas() int {
	if n.opts.Replicas > 0 {
		return n.opts.Replicas
	}
	return max(1, min(maxReplicas, len(n.nc.Servers())))
}

// Bounds of one setup attempt: the first, then doubling up to the last.
const (
	firstSetupTimeout = time.Second
	setupTimeout      = 5 * time.Second
)

// setup creates (or finds) the stream and bucket and starts the feed,
// within timeout.
func (n *Node) setup(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(n.ctx, timeout)
	defer cancel()
	want := n.wantReplicas()
	h := n.opts.History
	scfg := jetstream.StreamConfig{
		Name:        n.stream,
		Description: "ebb cluster " + n.opts.Cluster + ": broadcast history",
		Subjects:    []string{n.subjBcast},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     h.MaxMsgs,
		MaxBytes:    h.MaxBytes,
		MaxAge:      h.MaxAge,
		MaxMsgSize:  int32(h.MaxMessage + 1024),
		Storage:     jetstream.FileStorage,
		Replicas:    want,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
		// A new history starts numbering at the time, in microseconds:
		// a history that is created again (a standalone node restarted
		// without its store, a whole cluster restarted) never reuses a
		// number a client has seen, so a resuming client gets a plain
		// gap instead of old numbers for new messages. 2^53 (safe in
		// JavaScript) is reached in the year 2255.
		FirstSeq: uint64(time.Now().UnixMicro()),
	}
	st, err := n.js.CreateStream(ctx, scfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = n.js.Stream(ctx, n.stream)
	}
	if err != nil {
		return err
	}
	kcfg := jetstream.KeyValueConfig{
		Bucket:      n.bucket,
		Description: "ebb cluster " + n.opts.Cluster + ": drain turns",
		History:     1,
		TTL:         n.opts.LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    want,
	}
	kv, err := n.js.CreateKeyValue(ctx, kcfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = n.js.KeyValue(ctx, n.bucket)
	}
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	cons, err := n.js.OrderedConsumer(ctx, n.stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       last + 1,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return err
	}
	// Heartbeats every 500 ms: when the server holding this node's
	// consumer goes away (another node restarting), the missed
	// heartbeats make the ordered consumer move within about a second
	// instead of the default 30 s expiry.
	feed, err := cons.Messages(jetstream.PullMaxMessages(256), jetstream.PullExpiry(2*time.Second), jetstream.PullHeartbeat(500*time.Millisecond))
	if err != nil {
		return err
	}
	n.mu.Lock()
	if n.left {
		n.mu.Unlock()
		feed.Stop()
		return nil
	}
	n.kv, n.feed, n.last = kv, feed, last
	n.cache.reset(last + 1)
	n.replicas = info.Config.Replicas
	n.mu.Unlock()
	n.wg.Add(1)
	go n.feedLoop(feed)
	if err := n.scaleReplicas(); err != nil {
		n.log.Debug("cluster: raising replicas failed, will retry", slog.Any("err", err))
	}
	return nil
}

// scaleReplicas raises the replicas of the stream and the bucket when more
// NATS servers have appeared. It never lowers them: a server that is away
// is most likely restarting.
func (n *Node) scaleReplicas() error {
	want := n.wantReplicas()
	if want <= n.currentReplicas() {
		return nil
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	got := want
	for _, name := range []string{n.stream, "KV_" + n.bucket} {
		st, err := n.js.Stream(ctx, name)
		if err != nil {
			return err
		}
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.Config.Replicas >= want {
			got = min(got, info.Config.Replicas)
			continue
		}
		cfg := info.Config
		cfg.Replicas = want
		if _, err := n.js.UpdateStream(ctx, cfg); err != nil {
			return err
		}
		n.log.Info("cluster: raised replicas", slog.String("stream", name), slog.Int("replicas", want))
	}
	n.mu.Lock()
	n.replicas = got
	n.mu.Unlock()
	return nil
}

// feedLoop delivers the stream, in order, to the cache and subscriptions.
func (n *Node) feedLoop(feed jetstream.MessagesContext) {
	defer n.wg.Done()
	for {
		msg, err := feed.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || n.ctx.Err() != nil {
				return
			}
			n.log.Debug("cluster: broadcast feed hiccup", slog.Any("err", err))
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		meta, err := msg.Metadata()
		if err != nil {
			continue
		}
		n.deliver(Message{
			Seq:  meta.Sequence.Stream,
			Type: typeOf(msg.Headers().Get(hdrType)),
			Data: msg.Data(),
			Time: meta.Timestamp,
		})
	}
}
