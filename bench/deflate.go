package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ebb-ws/ebb/bench/servers"
	"github.com/ebb-ws/ebb/bench/wsclient"
)

// jsonMessages returns n realistic JSON messages of roughly 1–2 KiB: the
// kind of event a trading or chat backend pushes, similar in structure
// from one message to the next but with varying values, so that context
// takeover has something to gain and compression something to do.
func jsonMessages(n int) [][]byte {
	rng := rand.New(rand.NewPCG(7, 9))
	words := []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"}
	type user struct {
		ID       int64    `json:"id"`
		Name     string   `json:"name"`
		Email    string   `json:"email"`
		Roles    []string `json:"roles"`
		LastSeen string   `json:"last_seen"`
	}
	type level struct {
		Price float64 `json:"price"`
		Size  float64 `json:"size"`
	}
	type event struct {
		Type      string            `json:"type"`
		Seq       int64             `json:"seq"`
		Timestamp string            `json:"timestamp"`
		Channel   string            `json:"channel"`
		User      user              `json:"user"`
		Bids      []level           `json:"bids"`
		Asks      []level           `json:"asks"`
		Message   string            `json:"message"`
		Tags      []string          `json:"tags"`
		Meta      map[string]string `json:"meta"`
	}
	out := make([][]byte, n)
	for i := range out {
		w := func() string { return words[rng.IntN(len(words))] }
		e := event{
			Type:      "book_update",
			Seq:       1_000_000 + int64(i)*7 + rng.Int64N(7),
			Timestamp: time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC).Add(time.Duration(i) * 137 * time.Millisecond).Format(time.RFC3339Nano),
			Channel:   "market." + w() + "-usd",
			User: user{ID: rng.Int64N(1e9), Name: w() + " " + w(), Email: w() + "." + w() + "@example.com",
				Roles: []string{"trader", w()}, LastSeen: time.Date(2026, 11, 26, 13, rng.IntN(60), rng.IntN(60), 0, time.UTC).Format(time.RFC3339)},
			Message: fmt.Sprintf("%s %s %s %s %s %s", w(), w(), w(), w(), w(), w()),
			Tags:    []string{w(), w(), w()},
			Meta:    map[string]string{"region": w(), "gateway": fmt.Sprintf("gw-%d", rng.IntN(16)), "trace": fmt.Sprintf("%016x", rng.Uint64())},
		}
		for range 8 {
			e.Bids = append(e.Bids, level{Price: 41000 + float64(rng.IntN(100000))/100, Size: float64(rng.IntN(100000)) / 1000})
			e.Asks = append(e.Asks, level{Price: 41000 + float64(rng.IntN(100000))/100, Size: float64(rng.IntN(100000)) / 1000})
		}
		b, _ := json.MarshalIndent(e, "", " ")
		out[i] = b
	}
	return out
}

// deflateEcho sends count messages (cycling through msgs) on every
// connection, compressed when the connection negotiated it, and checks
// that each echo inflates to what was sent.
func deflateEcho(conns []*wsclient.Conn, msgs [][]byte, count int) error {
	return onEveryConn(conns, 30*time.Second, func(i int, c *wsclient.Conn) error {
		var buf []byte
		for k := range count {
			var err error
			if buf, err = deflateRoundTrip(c, msgs[(i+k)%len(msgs)], buf); err != nil {
				return err
			}
		}
		return nil
	})
}

func deflateRoundTrip(c *wsclient.Conn, msg, buf []byte) ([]byte, error) {
	z, err := c.Deflate.Compress(msg)
	if err != nil {
		return buf, err
	}
	if err := c.WriteFrame(wsclient.OpText, true, z); err != nil {
		return buf, err
	}
	_, rsv1, _, got, err := c.ReadMessage(true, buf)
	if err != nil {
		return got, err
	}
	if rsv1 {
		got2, err := c.Deflate.Decompress(got)
		if err != nil {
			return got, err
		}
		if !bytes.Equal(got2, msg) {
			return got, fmt.Errorf("bench: compressed echo inflated to %d bytes that differ from the %d sent", len(got2), len(msg))
		}
	} else if !bytes.Equal(got, msg) {
		return got, fmt.Errorf("bench: uncompressed echo of %d bytes differs from the %d sent", len(got), len(msg))
	}
	return got, nil
}

// deflateCase is one compression configuration of one library.
type deflateCase struct {
	lib, mode string
	window    int
	offer     string
}

func (d deflateCase) name() string {
	if d.mode != servers.CompressionTakeover {
		return d.mode
	}
	// Name by the effective server window, so libraries line up: 0 means
	// the library's default, 15 for ebb and coder.
	w := d.window
	if w == 0 {
		w = 15
	}
	return fmt.Sprintf("takeover, window 2^%d", w)
}

func deflateCases(libs []string, quick bool) []deflateCase {
	const (
		noTakeover = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
		// The client offers to limit its own window, as browsers other
		// than Firefox do, so a server may bound both directions.
		takeover = "permessage-deflate; client_max_window_bits"
	)
	all := []deflateCase{
		{"ebb", servers.CompressionNoTakeover, 0, noTakeover},
		{"ebb", servers.CompressionTakeover, 0, takeover},
		{"ebb", servers.CompressionTakeover, 12, takeover},
		{"ebb", servers.CompressionTakeover, 10, takeover},
		{"gorilla", servers.CompressionNoTakeover, 0, noTakeover},
		{"coder", servers.CompressionNoTakeover, 0, noTakeover},
		{"coder", servers.CompressionTakeover, 0, takeover},
		{"gws", servers.CompressionNoTakeover, 0, noTakeover},
		{"gws", servers.CompressionTakeover, 12, takeover}, // gws's own default for takeover
		{"gws", servers.CompressionTakeover, 15, takeover},
	}
	var out []deflateCase
	for _, d := range all {
		if quick && d.window != 0 && d.window != 12 {
			continue // the smoke run keeps fewer cases
		}
		for _, l := range libs {
			if l == d.lib && servers.Supports(d.lib, d.mode) {
				out = append(out, d)
			}
		}
	}
	return out
}

// measureDeflate: compressed echo throughput and memory per connection.
func measureDeflate(cfg Config, res *results) error {
	msgs := jsonMessages(64)
	var raw int
	for _, m := range msgs {
		raw += len(m)
	}
	avg := raw / len(msgs)
	for rep := range cfg.Reps {
		for _, d := range deflateCases(cfg.Libs, cfg.Quick) {
			args := []string{"--compression", d.mode}
			if d.window > 0 {
				args = append(args, "--window", fmt.Sprint(d.window))
			}
			err := withServer(d.lib, func(p *serverProc) error {
				conns, err := dialMany(context.Background(), p.ws, cfg.DeflateConns, 64, 16<<10, d.offer)
				if err != nil {
					return err
				}
				msgsPerSec, scpu, ccpu, err := deflateLoop(conns, msgs, cfg.Warm, cfg.Dur, p)
				closeAll(conns)
				if err != nil {
					return err
				}
				time.Sleep(300 * time.Millisecond)
				m, err := idleCost(p, cfg.DeflateMem, d.offer, msgs, cfg.Settle)
				if err != nil {
					return err
				}
				m["msgs/s"] = msgsPerSec
				m["MB/s (uncompressed)"] = msgsPerSec * float64(avg) / 1e6
				m["server CPU %"] = scpu * 100
				m["client CPU %"] = ccpu * 100
				m["server CPU µs/msg"] = scpu / msgsPerSec * 1e6
				delete(m, "goroutines/conn")
				res.add("deflate", d.lib, d.name(), m)
				progress("deflate %d/%d %-7s %-28s %8.0f msgs/s  RSS %.1f KiB/conn  heap %.1f KiB/conn",
					rep+1, cfg.Reps, d.lib, d.name(), msgsPerSec, m["RSS KiB/conn"], m["heap KiB/conn"])
				return nil
			}, args...)
			if err != nil {
				return fmt.Errorf("bench: deflate, %s %s: %w", d.lib, d.name(), err)
			}
		}
	}
	return nil
}

// deflateLoop is closedLoop for compressed JSON messages.
func deflateLoop(conns []*wsclient.Conn, msgs [][]byte, warm, d time.Duration, srv *serverProc) (float64, float64, float64, error) {
	counts := make([]counter, len(conns))
	var stopped sync.WaitGroup
	stop := make(chan struct{})
	errs := make([]error, len(conns))
	for i, c := range conns {
		stopped.Add(1)
		go func() {
			defer stopped.Done()
			var buf []byte
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				buf, err = deflateRoundTrip(c, msgs[(i+k)%len(msgs)], buf)
				if err != nil {
					select {
					case <-stop:
					default:
						errs[i] = err
					}
					return
				}
				counts[i].n.Add(1)
			}
		}()
	}
	w := measureWindow(counts, warm, d, srv)
	close(stop)
	for _, c := range conns {
		c.NC.SetDeadline(time.Now())
	}
	stopped.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, 0, err
	}
	return w.msgsPerSec, w.serverCPU, w.clientCPU, nil
}
