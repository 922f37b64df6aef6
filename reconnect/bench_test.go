package reconnect

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

func BenchmarkDelay(b *testing.B) {
	b.ReportAllocs()
	var bo Backoff
	r := seeded(1)
	for i := 0; b.Loop(); i++ {
		bo.Delay(i%8, 200*time.Millisecond, r)
	}
}

func BenchmarkDecide(b *testing.B) {
	b.ReportAllocs()
	var p Policy
	for b.Loop() {
		p.Decide(closecode.TryAgainLater, "server at capacity; retry-after=4.5")
	}
}

// BenchmarkEcho measures what the reconnecting layer costs on the hot path:
// a 1 KiB echo round trip through a Client against the same round trip on
// a bare websocket.Conn.
func BenchmarkEcho(b *testing.B) {
	srv := newServer(b, func(n int, w http.ResponseWriter, r *http.Request) {
		if c, err := websocket.Accept(w, r, nil); err == nil {
			echo(c)
		}
	})
	msg := make([]byte, 1024)
	ctx := context.Background()
	b.Run("conn", func(b *testing.B) {
		c, _, err := websocket.Dial(ctx, srv.url(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.CloseNow()
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		c, err := Dial(ctx, srv.url(), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close(closecode.NormalClosure, "")
		b.SetBytes(int64(len(msg)))
		b.ReportAllocs()
		for b.Loop() {
			if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
				b.Fatal(err)
			}
			if _, _, err := c.Read(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
