package demo

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestBalancer checks the scale-out chapter's load balancer: a new
// backend enters the rotation only after its health checks pass, each new
// connection goes to the backend holding the fewest (the first added on a
// tie), a backend whose /healthz fails leaves the rotation, and close cuts
// what is still proxied.
func TestBalancer(t *testing.T) {
	t.Parallel()
	var aDown, bDown atomic.Bool
	bDown.Store(true)
	backend := func(name string, down *atomic.Bool) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" && down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, name)
		}))
	}
	a, b := backend("A", &aDown), backend("B", &bDown)
	defer a.Close()
	defer b.Close()

	up := make(chan string, 4)
	lb, err := newBalancer(20*time.Millisecond, 2, func(name string) { up <- name })
	if err != nil {
		t.Fatal(err)
	}
	defer lb.close()
	lb.add("A", a.Listener.Addr().String(), true)
	lb.add("B", b.Listener.Addr().String(), false)

	// who opens a connection through the balancer, asks which backend it
	// reached, and keeps the connection open.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	who := func() string {
		t.Helper()
		c, err := net.DialTimeout("tcp", lb.Addr(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: demo\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}
	route := func(n int) string {
		var s strings.Builder
		for range n {
			s.WriteString(who())
		}
		return s.String()
	}

	if got := route(3); got != "AAA" {
		t.Errorf("before B's checks pass: routed to %s, want AAA", got)
	}
	bDown.Store(false)
	select {
	case name := <-up:
		if name != "B" {
			t.Fatalf("%s came up, want B", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("B never entered the rotation")
	}
	// Least connections: B until it holds as many as A, then A on the tie.
	if got := route(4); got != "BBBA" {
		t.Errorf("with A holding 3 and B none: routed to %s, want BBBA", got)
	}
	// A's checks fail: it leaves the rotation, whatever it holds.
	aDown.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		lb.mu.Lock()
		aUp := lb.backends[0].up
		lb.mu.Unlock()
		if !aUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A stayed in the rotation with /healthz answering 503")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := route(2); got != "BB" {
		t.Errorf("with A out of the rotation: routed to %s, want BB", got)
	}

	// close cuts the proxied connections.
	if err := lb.close(); err != nil {
		t.Fatal(err)
	}
	held[0].SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := held[0].Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("a proxied connection after close: read %v, want it closed", err)
	}
	if _, err := net.DialTimeout("tcp", lb.Addr(), time.Second); err == nil {
		t.Error("the balancer still accepts connections after close")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
