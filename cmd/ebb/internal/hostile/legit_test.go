package hostile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/websocket"
)

// sessionDeadline is how long an honest client's echo session (dial,
// handshake, one message and its echo) may take: DESIGN.md's promise is
// "honest clients served within 2 s under every attack".
const sessionDeadline = 2 * time.Second

// honestEvery is how often the honest client starts a session during an
// attack.
const honestEvery = 200 * time.Millisecond

// honestFrom are the addresses honest clients dial from: never the
// attackers' 127.0.0.1, so per-IP limits and fair shares see them apart.
var honestFrom = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// echoSession dials ws://addr/echo from the address from, sends one text
// message and waits for its echo, all within sessionDeadline. It returns
// how long that took, or why it failed.
func echoSession(ctx context.Context, addr, from string, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, sessionDeadline)
	defer cancel()
	start := time.Now()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/echo", &websocket.DialOptions{
		NetDialContext: d.DialContext,
		Proxy:          func(*http.Request) (*url.URL, error) { return nil, nil },
	})
	if err != nil {
		return 0, err
	}
	defer c.CloseNow()
	msg := fmt.Appendf(nil, "honest %d from %s", n, from)
	if err := c.Write(ctx, websocket.MessageText, msg); err != nil {
		return 0, err
	}
	_, got, err := c.Read(ctx)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(got, msg) {
		return 0, fmt.Errorf("echo %q, want %q", got, msg)
	}
	took := time.Since(start)
	// Close properly, off the clock; Close is bounded by its own 5 s.
	c.Close(1000, "")
	return took, nil
}

// availability is what honest clients saw during an attack.
type availability struct {
	Sessions int
	OK       int
	Latency  []time.Duration // of the sessions that succeeded, sorted
	Failures map[string]int  // failed sessions by kind: "HTTP 503", "1013", "timeout"…
	First    string          // the first failure's error, for messages
	FirstAt  time.Duration   // when the first failed session started, from the first session
}

func (a *availability) ratio() float64 {
	if a.Sessions == 0 {
		return 0
	}
	return float64(a.OK) / float64(a.Sessions)
}

func (a *availability) quantile(q float64) time.Duration {
	if len(a.Latency) == 0 {
		return 0
	}
	return a.Latency[min(len(a.Latency)-1, int(q*float64(len(a.Latency))))]
}

func (a *availability) String() string {
	if a.Sessions == 0 {
		return "no honest sessions ran"
	}
	s := fmt.Sprintf("%d/%d echoes within %s (%.0f %%)", a.OK, a.Sessions, sessionDeadline, 100*a.ratio())
	if a.OK > 0 {
		s += fmt.Sprintf(", p50 %s, p99 %s", round(a.quantile(0.5)), round(a.quantile(0.99)))
	}
	if len(a.Failures) > 0 {
		s += fmt.Sprintf("; first failure %s in", round(a.FirstAt))
		var kinds []string
		for k, n := range a.Failures {
			kinds = append(kinds, fmt.Sprintf("%d× %s", n, k))
		}
		sort.Strings(kinds)
		s += ": " + strings.Join(kinds, ", ")
	}
	return s
}

// failureKind names why a session failed, for the report.
func failureKind(err error) string {
	var he *websocket.HandshakeError
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &he) && he.StatusCode != 0:
		return fmt.Sprintf("HTTP %d", he.StatusCode)
	case errors.As(err, &ce) && ce.Code != 1006:
		return fmt.Sprintf("close %d", int(ce.Code))
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timeout") || strings.Contains(err.Error(), "deadline"):
		return "timeout"
	case strings.Contains(err.Error(), "connection reset"), strings.Contains(err.Error(), "EOF"):
		return "connection dropped"
	}
	return "other error"
}

// honest runs echo sessions against addr every honestEvery, rotating
// through honestFrom, until stop is called; stop waits for the sessions in
// flight and returns what they saw.
func honest(addr string) (stop func() *availability) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu   sync.Mutex
		a    = &availability{Failures: map[string]int{}}
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	begun := time.Now()
	go func() {
		defer close(done)
		t := time.NewTicker(honestEvery)
		defer t.Stop()
		for i := 0; ; i++ {
			from := honestFrom[i%len(honestFrom)]
			at := time.Since(begun)
			wg.Go(func() {
				took, err := echoSession(context.Background(), addr, from, i)
				mu.Lock()
				defer mu.Unlock()
				a.Sessions++
				if err != nil {
					a.Failures[failureKind(err)]++
					if a.First == "" || at < a.FirstAt {
						a.First, a.FirstAt = err.Error(), at
					}
					return
				}
				a.OK++
				a.Latency = append(a.Latency, took)
			})
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() *availability {
		cancel()
		<-done
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(a.Latency)
		return a
	}
}

// honestGet fetches http://addr+path from the address from, within
// sessionDeadline, and returns the status code. It speaks HTTP by hand:
// the overload guard answers 503 before it reads a request, which
// net/http's client would log as an unsolicited response.
func honestGet(addr, path, from string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionDeadline)
	defer cancel()
	c, err := dialFrom(ctx, from, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(sessionDeadline))
	go io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// round keeps three significant figures at most, for messages and the
// report.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
