package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ebb-ws/ebb/bench/fanout"
	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
	"github.com/ebb-ws/ebb/websocket"
)

// ebbStubMain is `bench ebbstub`: a stand-in for an `ebb serve --cluster`
// node, written on package cluster and package websocket, so that the
// cluster measure's ebb side (resume protocol, publisher, drain with
// 1012) can run before ebb serve has its cluster mode. It is NOT ebb
// serve: no admission control (shed), no metrics, a plain drain. Its
// figures validate the harness; they are not ebb's. The measure runs it
// only when asked (--cluster-systems ebb-stub).
//
// /broadcast speaks the resume protocol (subprotocol ebb.resume.v1,
// ?from=, "<seq>\n" envelope, !live, !gap); a message a client sends is
// published to all. /healthz answers 200, or 503 while draining. On
// SIGTERM the node refuses new upgrades with 503, closes its connections
// with 1012 spread over --drain, leaves the cluster and exits.
func ebbStubMain(args []string) error {
	fs := flag.NewFlagSet("ebbstub", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	name := fs.String("name", "", "node name")
	clusterName := fs.String("cluster", "bench", "cluster name")
	natsURL := fs.String("nats", "", "NATS URL (JetStream on)")
	drain := fs.Duration("drain", 5*time.Second, "drain window")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	node, err := cluster.Join(jctx, cluster.Options{Cluster: *clusterName, Name: *name, NATSURL: *natsURL})
	cancel()
	if err != nil {
		return err
	}
	select {
	case <-node.Ready():
	case <-time.After(30 * time.Second):
		return errors.New("cluster node not ready within 30 s")
	}
	s := &stubServer{node: node, conns: map[*websocket.Conn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/broadcast", s.broadcast)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if s.isDraining() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	<-ctx.Done()
	s.drain(*drain)
	lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	node.Leave(lctx)
	cancel()
	srv.Close()
	return node.Close()
}

type stubServer struct {
	node     *cluster.Node
	mu       sync.Mutex
	draining bool
	conns    map[*websocket.Conn]struct{}
	wg       sync.WaitGroup
}

func (s *stubServer) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// drain closes every connection with 1012, spread evenly over window.
func (s *stubServer) drain(window time.Duration) {
	s.mu.Lock()
	s.draining = true
	conns := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for i, c := range conns {
		if i > 0 {
			time.Sleep(window / time.Duration(len(conns)))
		}
		c.Close(closecode.ServiceRestart, "restarting; retry-after=1")
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

func (s *stubServer) broadcast(w http.ResponseWriter, r *http.Request) {
	var from uint64
	if v := r.URL.Query().Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			http.Error(w, fmt.Sprintf("from=%q: want a decimal sequence number ≥ 1", v), http.StatusBadRequest)
			return
		}
		from = n
	}
	if s.isDraining() {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "draining", http.StatusServiceUnavailable)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{fanout.ResumeProtocol}})
	if err != nil {
		return
	}
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
		c.CloseNow()
	}()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	last := s.node.LastSeq()
	sub, err := s.node.Subscribe(ctx, from, cluster.SubscribeOptions{})
	var ge *cluster.GapError
	if errors.As(err, &ge) {
		next := ge.Oldest
		if ge.Requested > ge.Newest+1 {
			next = ge.Newest + 1
		}
		c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "!gap %d %d", from, next))
		from = next
		sub, err = s.node.Subscribe(ctx, from, cluster.SubscribeOptions{})
	}
	if err != nil {
		c.Close(closecode.TryAgainLater, "history unavailable; retry-after=1")
		return
	}
	defer sub.Close()
	live := false
	if from == 0 || from > last {
		live = true
		c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "!live %d", max(last+1, from)))
	}
	go func() {
		defer cancel()
		for {
			typ, p, err := c.Read(ctx)
			if err != nil {
				return
			}
			t := cluster.Text
			if typ == websocket.MessageBinary {
				t = cluster.Binary
			}
			if _, err := s.node.Publish(ctx, t, p); err != nil {
				return
			}
		}
	}()
	var buf []byte
	for {
		m, err := sub.Next(ctx)
		if err != nil {
			var le *cluster.LagError
			if errors.As(err, &le) {
				c.Close(closecode.TryAgainLater, "fell behind; retry-after=1")
			}
			return
		}
		buf = strconv.AppendUint(buf[:0], m.Seq, 10)
		buf = append(append(buf, '\n'), m.Data...)
		typ := websocket.MessageText
		if m.Type == cluster.Binary {
			typ = websocket.MessageBinary
		}
		if err := c.Write(ctx, typ, buf); err != nil {
			return
		}
		if !live && m.Seq >= last {
			live = true
			c.Write(ctx, websocket.MessageText, fmt.Appendf(nil, "!live %d", m.Seq+1))
		}
	}
}
