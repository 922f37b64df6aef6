package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/ebb-ws/ebb/bench/wsclient"
)

// dialMany opens n connections to addr, at most par at a time, offering ext.
func dialMany(ctx context.Context, addr string, n, par, bufSize int, ext string) ([]*wsclient.Conn, error) {
	req := wsclient.Request(addr, ext)
	conns := make([]*wsclient.Conn, n)
	errs := make([]error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			c, err := wsclient.Dial(dctx, addr, req, bufSize)
			if err == nil && ext != "" {
				c.Deflate, err = wsclient.NewDeflate(c.Extensions)
				if err == nil && c.Deflate == nil {
					err = fmt.Errorf("bench: server did not accept %q", ext)
				}
			}
			conns[i], errs[i] = c, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		closeAll(conns)
		return nil, fmt.Errorf("bench: opening %d connections: %w", n, err)
	}
	return conns, nil
}

func closeAll(conns []*wsclient.Conn) {
	for _, c := range conns {
		if c != nil {
			c.NC.Close()
		}
	}
}

// onEveryConn runs f on every connection at once, each with an I/O
// deadline of timeout, and joins their errors.
func onEveryConn(conns []*wsclient.Conn, timeout time.Duration, f func(i int, c *wsclient.Conn) error) error {
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			c.NC.SetDeadline(time.Now().Add(timeout))
			defer c.NC.SetDeadline(time.Time{})
			errs[i] = f(i, c)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// echoOnce sends frame on every connection and waits for every echo.
func echoOnce(conns []*wsclient.Conn, frame []byte, size int) error {
	return onEveryConn(conns, 20*time.Second, func(_ int, c *wsclient.Conn) error {
		if _, err := c.NC.Write(frame); err != nil {
			return err
		}
		_, _, n, _, err := c.ReadMessage(false, nil)
		if err == nil && n != size {
			err = fmt.Errorf("bench: echo of %d bytes came back with %d", size, n)
		}
		return err
	})
}

type counter struct {
	n atomic.Int64
	_ [56]byte
}

// closedLoop runs every connection in a closed loop (send, await echo,
// repeat) and returns messages per second over d after warm.
func closedLoop(conns []*wsclient.Conn, frame []byte, size int, warm, d time.Duration, srv *serverProc) (msgs float64, srvCPU, cliCPU float64, err error) {
	counts := make([]counter, len(conns))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := c.NC.Write(frame); err != nil {
					if !stop.Load() {
						firstErr.CompareAndSwap(nil, &err)
					}
					return
				}
				_, _, n, _, err := c.ReadMessage(false, nil)
				if err != nil {
					if !stop.Load() {
						firstErr.CompareAndSwap(nil, &err)
					}
					return
				}
				if n != size {
					err := fmt.Errorf("bench: echo of %d bytes came back with %d", size, n)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				counts[i].n.Add(1)
			}
		}()
	}
	w := measureWindow(counts, warm, d, srv)
	stop.Store(true)
	for _, c := range conns {
		c.NC.SetDeadline(time.Now())
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, 0, 0, *p
	}
	return w.msgsPerSec, w.serverCPU, w.clientCPU, nil
}

// window is what a closed-loop run measured over its window: echoes per
// second, and the CPU share of the server process and of this one.
type window struct {
	msgsPerSec, serverCPU, clientCPU float64
}

// measureWindow lets a closed-loop run warm up, then counts the echoes in
// counts and both processes' CPU time over d. The run keeps going; the
// caller stops it.
func measureWindow(counts []counter, warm, d time.Duration, srv *serverProc) window {
	sum := func() int64 {
		var s int64
		for i := range counts {
			s += counts[i].n.Load()
		}
		return s
	}
	time.Sleep(warm)
	s0, err0 := srv.Stats(false)
	c0, n0, t0 := cpuNanos(), sum(), time.Now()
	time.Sleep(d)
	n1, t1, c1 := sum(), time.Now(), cpuNanos()
	s1, err1 := srv.Stats(false)
	el := t1.Sub(t0)
	return window{
		msgsPerSec: float64(n1-n0) / el.Seconds(),
		serverCPU:  serverCPU(s0, s1, err0, err1),
		clientCPU:  float64(c1-c0) / float64(el),
	}
}

// fixedRate sends from every connection on a fixed schedule (rate messages
// per second in total) until stop is closed, and records each round trip
// from the moment the message was due (so a slow server cannot hide its
// queueing: no coordinated omission).
func fixedRate(conns []*wsclient.Conn, frame []byte, size int, rate float64, stop <-chan struct{}) (*hdrhistogram.Histogram, error) {
	interval := time.Duration(float64(time.Second) * float64(len(conns)) / rate)
	hists := make([]*hdrhistogram.Histogram, len(conns))
	errs := make([]error, len(conns))
	// Histograms first (about 400 KB each, zeroed on allocation, and the
	// allocation can start a GC): made after start, they delayed the first
	// messages' schedule by tens of ms and inflated p99.
	for i := range hists {
		hists[i] = hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	}
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range conns {
		h := hists[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			due := start.Add(time.Duration(rand.Int64N(int64(interval))))
			for {
				if w := time.Until(due); w > 0 {
					select {
					case <-stop:
						return
					case <-time.After(w):
					}
				}
				select {
				case <-stop:
					return
				default:
				}
				c.NC.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.NC.Write(frame); err != nil {
					errs[i] = err
					return
				}
				_, _, n, _, err := c.ReadMessage(false, nil)
				if err != nil {
					errs[i] = err
					return
				}
				if n != size {
					errs[i] = fmt.Errorf("bench: echo of %d bytes came back with %d", size, n)
					return
				}
				h.RecordValue(int64(time.Since(due) / time.Microsecond))
				due = due.Add(interval)
			}
		}()
	}
	wg.Wait()
	total := hdrhistogram.New(1, int64(30*time.Second/time.Microsecond), 3)
	for _, h := range hists {
		total.Merge(h)
	}
	return total, errors.Join(errs...)
}

// handshakeLoop opens and drops connections from workers goroutines for d
// and returns completed handshakes per second.
func handshakeLoop(addr string, workers int, d time.Duration) (float64, error) {
	req := wsclient.Request(addr, "")
	var total atomic.Int64
	var firstErr atomic.Pointer[error]
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err = wsclient.Handshake(ctx, nc, req, 512)
				cancel()
				nc.(*net.TCPConn).SetLinger(0)
				nc.Close()
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				total.Add(1)
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}

// serverCPU is the server's CPU share between two stats readings, or NaN
// when a reading failed (a server swamped by the load may not answer in
// time; that must not void the throughput figure).
func serverCPU(s0, s1 ServerStats, err0, err1 error) float64 {
	if err0 != nil || err1 != nil || s1.UptimeNs <= s0.UptimeNs {
		return math.NaN()
	}
	return float64(s1.CPUNanos-s0.CPUNanos) / float64(s1.UptimeNs-s0.UptimeNs)
}
