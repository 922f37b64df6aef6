package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// balancer is the scale-out chapter's load balancer: a TCP proxy on
// loopback that does what HAProxy does with "balance leastconn" and
// "check inter <interval> rise <rise> fall <rise>", and nothing more. Each
// new client connection goes to the backend, among those in rotation,
// holding the fewest of the balancer's open connections (a WebSocket
// holds its connection for as long as it lives, so counting connections
// is the right measure of load: round robin would keep sending half the
// retries to the full node). A backend enters the rotation after rise
// health checks in a row answered 200 on /healthz, and leaves it after
// rise failures in a row; the checks run every interval. The balancer
// knows nothing of the cluster: it learns about a new node only from its
// health checks, so for a moment after a node joins, the cluster knows
// and the balancer does not — the full node's 1013 then says "node at
// capacity, cluster has room" with a short hint.
//
// It costs two goroutines per proxied connection and one per backend for
// the checks; bytes are copied with io.Copy's 32 KiB buffers.
type balancer struct {
	ln       net.Listener
	interval time.Duration
	rise     int
	check    *http.Client
	// onUp is called (without the lock) when a backend enters the
	// rotation; nil for none.
	onUp func(name string)

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop, checks, proxied connections

	mu       sync.Mutex
	backends []*backend
	conns    map[net.Conn]struct{} // both ends of every proxied connection
	closed   bool
}

// backend is one server behind the balancer.
type backend struct {
	name, addr string
	up         bool
	streak     int // checks in a row that disagree with up
	active     int // open proxied connections
}

// newBalancer listens on a free loopback port. Checks run every interval;
// rise checks in a row bring a backend in or take it out.
func newBalancer(interval time.Duration, rise int, onUp func(string)) (*balancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("the load balancer cannot listen on 127.0.0.1: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &balancer{
		ln: ln, interval: interval, rise: max(rise, 1), onUp: onUp,
		check:  &http.Client{Timeout: max(interval, 100*time.Millisecond), Transport: &http.Transport{DisableKeepAlives: true}},
		ctx:    ctx,
		cancel: cancel,
		conns:  map[net.Conn]struct{}{},
	}
	b.wg.Go(b.accept)
	return b, nil
}

// Addr is where clients connect.
func (b *balancer) Addr() string { return b.ln.Addr().String() }

// add puts a backend behind the balancer: in the rotation at once when up
// (a server it already routed to), else after rise good checks.
func (b *balancer) add(name, addr string, up bool) {
	be := &backend{name: name, addr: addr, up: up}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.backends = append(b.backends, be)
	b.mu.Unlock()
	b.wg.Go(func() { b.checks(be) })
}

// checks health-checks be every interval until the balancer closes.
func (b *balancer) checks(be *backend) {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		ok := b.healthy(be.addr)
		b.mu.Lock()
		if ok == be.up {
			be.streak = 0
		} else {
			be.streak++
		}
		cameUp := false
		if be.streak >= b.rise {
			be.up, be.streak = ok, 0
			cameUp = ok
		}
		b.mu.Unlock()
		if cameUp && b.onUp != nil {
			b.onUp(be.name)
		}
	}
}

// healthy reports whether GET /healthz answered 200.
func (b *balancer) healthy(addr string) bool {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := b.check.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 512))
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pick returns the backend in rotation with the fewest open connections
// (the first added on a tie) and counts the new connection, or nil when
// none is up.
func (b *balancer) pick() *backend {
	b.mu.Lock()
	defer b.mu.Unlock()
	var best *backend
	for _, be := range b.backends {
		if be.up && (best == nil || be.active < best.active) {
			best = be
		}
	}
	if best != nil {
		best.active++
	}
	return best
}

func (b *balancer) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return // closed
		}
		b.wg.Go(func() { b.proxy(c) })
	}
}

// proxy connects client c to a backend and copies both ways until either
// side is done. With no backend in rotation, or one that cannot be
// reached, it closes c (the client sees 1006, as behind a real balancer).
func (b *balancer) proxy(c net.Conn) {
	be := b.pick()
	if be == nil {
		c.Close()
		return
	}
	defer func() {
		b.mu.Lock()
		be.active--
		b.mu.Unlock()
	}()
	d := net.Dialer{Timeout: 2 * time.Second}
	s, err := d.DialContext(b.ctx, "tcp", be.addr)
	if err != nil {
		c.Close()
		return
	}
	if !b.track(c, s) {
		return
	}
	defer b.untrack(c, s)
	var wg sync.WaitGroup
	wg.Go(func() { pipe(s, c) })
	pipe(c, s)
	wg.Wait()
}

// pipe copies src to dst, then tells dst that nothing more comes (a TCP
// half-close, so that a close handshake in the other direction can still
// finish).
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// track registers a proxied pair so that close can cut it; false (and
// both closed) when the balancer is closing.
func (b *balancer) track(c, s net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		c.Close()
		s.Close()
		return false
	}
	b.conns[c], b.conns[s] = struct{}{}, struct{}{}
	return true
}

func (b *balancer) untrack(c, s net.Conn) {
	b.mu.Lock()
	delete(b.conns, c)
	delete(b.conns, s)
	b.mu.Unlock()
	c.Close()
	s.Close()
}

// close stops the balancer: no new connections, the checks stop, and what
// is still proxied is cut. It returns once every goroutine has ended.
func (b *balancer) close() error {
	b.mu.Lock()
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.cancel()
	err := b.ln.Close()
	b.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
