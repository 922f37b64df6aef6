package websocket

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// benchJSON returns n different JSON messages of about 2 KiB each, the
// kind of traffic (same keys, changing values) permessage-deflate is for.
func benchJSON(n int) [][]byte {
	rng := rand.New(rand.NewPCG(42, 42))
	type item struct {
		ID     int     `json:"id"`
		Symbol string  `json:"symbol"`
		Price  float64 `json:"price"`
		Volume int     `json:"volume"`
		Side   string  `json:"side"`
		Venue  string  `json:"venue"`
	}
	type update struct {
		Type     string `json:"type"`
		Sequence int    `json:"sequence"`
		Channel  string `json:"channel"`
		Items    []item `json:"items"`
	}
	symbols := []string{"BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "DOT-USD"}
	msgs := make([][]byte, n)
	for i := range msgs {
		u := update{Type: "book_update", Sequence: 1_000_000 + i, Channel: "level2"}
		for len(u.Items) < 22 {
			u.Items = append(u.Items, item{
				ID: rng.IntN(1e9), Symbol: symbols[rng.IntN(len(symbols))], Price: float64(rng.IntN(1e7)) / 100,
				Volume: rng.IntN(1e5), Side: []string{"buy", "sell"}[rng.IntN(2)], Venue: "exchange-" + fmt.Sprint(rng.IntN(4)),
			})
		}
		msgs[i], _ = json.Marshal(u)
	}
	return msgs
}

type benchMode struct {
	name     string
	takeover bool
	bits     int
}

func benchModes() []benchMode {
	var modes []benchMode
	for _, takeover := range []bool{true, false} {
		for _, bits := range []int{9, 12, 15} {
			name := fmt.Sprintf("takeover/bits=%d", bits)
			if !takeover {
				name = fmt.Sprintf("no_takeover/bits=%d", bits)
			}
			modes = append(modes, benchMode{name, takeover, bits})
		}
	}
	return modes
}

// BenchmarkDeflateMemoryPerConn measures what one connection keeps between
// messages in each mode: it creates many server-side codecs, has each send
// and receive 2 KiB JSON messages (one, or enough to fill a 32 KiB window),
// and reports the live heap per connection afterwards. Pools are emptied by
// two collections first, so only per-connection state counts.
func BenchmarkDeflateMemoryPerConn(b *testing.B) {
	const conns = 500
	msgs := benchJSON(20) // 20 × 2 KiB fills even a 32 KiB window
	for _, m := range benchModes() {
		for _, rounds := range []int{1, len(msgs)} {
			name := m.name + "/msgs=1"
			if rounds > 1 {
				name = m.name + "/msgs=fill"
			}
			b.Run(name, func(b *testing.B) {
				p := dparams(!m.takeover, !m.takeover, m.bits, m.bits)
				peer := newDeflateState(p, false, nil)
				incoming := make([][]byte, rounds)
				for i := range incoming {
					incoming[i] = compressMsg(b, peer, msgs[i], 0)
				}
				var perConn float64
				for b.Loop() {
					states := make([]*deflateState, conns)
					var before, after runtime.MemStats
					runtime.GC()
					runtime.GC()
					runtime.ReadMemStats(&before)
					for i := range states {
						d := newDeflateState(p, true, nil)
						for j := range rounds {
							w := d.startMessage(io.Discard)
							w.Write(msgs[j])
							if err := d.finishMessage(); err != nil {
								b.Fatal(err)
							}
							r := d.startInflate(bytes.NewReader(incoming[j]))
							if _, err := io.Copy(io.Discard, r); err != nil {
								b.Fatal(err)
							}
							d.finishInflate()
						}
						states[i] = d
					}
					// What a connection keeps once idle: a busy takeover
					// connection holds its compressor until keepIdle.
					for _, d := range states {
						d.wmu.Lock()
						d.keepIdle = 0
						if d.fw != nil && !d.timerArmed {
							d.armIdleTimerLocked(0)
						}
						d.wmu.Unlock()
					}
					for _, d := range states {
						for keptCompressor(d) {
							time.Sleep(time.Millisecond)
						}
					}
					runtime.GC()
					runtime.GC()
					runtime.ReadMemStats(&after)
					perConn = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / conns
					runtime.KeepAlive(states)
				}
				b.ReportMetric(perConn, "B/conn")
			})
		}
	}
}

// BenchmarkDeflateCompress compresses a stream of different ~2 KiB JSON
// messages on one connection.
func BenchmarkDeflateCompress(b *testing.B) {
	msgs := benchJSON(64)
	modes := benchModes()
	// A connection that primes a pooled compressor per message: past the
	// bound on kept compressors, or sending only now and then.
	modes = append(modes, benchMode{"takeover/bits=15/primed", true, 15})
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			d := newDeflateState(dparams(!m.takeover, !m.takeover, m.bits, m.bits), true, nil)
			if strings.HasSuffix(m.name, "/primed") {
				d.keep = false
			}
			var out bytes.Buffer
			var raw, compressed int64
			b.SetBytes(int64(len(msgs[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				msg := msgs[i%len(msgs)]
				i++
				out.Reset()
				w := d.startMessage(&out)
				w.Write(msg)
				if err := d.finishMessage(); err != nil {
					b.Fatal(err)
				}
				raw += int64(len(msg))
				compressed += int64(out.Len())
			}
			b.ReportMetric(float64(compressed)/float64(raw), "ratio")
		})
	}
}

// BenchmarkDeflateDecompress decompresses the same stream. With takeover a
// message can only be decoded after the ones before it, so the codec starts
// over with every pass through the 64 prepared messages.
func BenchmarkDeflateDecompress(b *testing.B) {
	msgs := benchJSON(64)
	for _, m := range benchModes() {
		b.Run(m.name, func(b *testing.B) {
			p := dparams(!m.takeover, !m.takeover, m.bits, m.bits)
			sender := newDeflateState(p, true, nil)
			payloads := make([][]byte, len(msgs))
			for i, msg := range msgs {
				payloads[i] = compressMsg(b, sender, msg, 0)
			}
			var d *deflateState
			var src bytes.Reader
			buf := make([]byte, 4096)
			b.SetBytes(int64(len(msgs[0])))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i%len(payloads) == 0 {
					d = newDeflateState(p, false, nil)
				}
				src.Reset(payloads[i%len(payloads)])
				i++
				r := d.startInflate(&src)
				for {
					_, err := r.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
				d.finishInflate()
			}
		})
	}
}
