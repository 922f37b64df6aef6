package servers_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/bench/servers"
	"github.com/ebb-ws/ebb/bench/wsclient"
)

// TestAdaptersEcho runs every adapter in every compression mode it
// supports and checks that text and binary messages, small and large,
// come back unchanged through the benchmark's own client.
func TestAdaptersEcho(t *testing.T) {
	t.Parallel()
	offers := map[string]string{
		servers.CompressionOff:        "",
		servers.CompressionNoTakeover: "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
		servers.CompressionTakeover:   "permessage-deflate; client_max_window_bits",
	}
	for _, lib := range servers.Names {
		for _, mode := range []string{servers.CompressionOff, servers.CompressionNoTakeover, servers.CompressionTakeover} {
			if !servers.Supports(lib, mode) {
				continue
			}
			t.Run(lib+"/"+mode, func(t *testing.T) {
				t.Parallel()
				h, err := servers.New(lib, servers.Options{Compression: mode})
				if err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewServer(h)
				defer srv.Close()
				addr := strings.TrimPrefix(srv.URL, "http://")
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				c, err := wsclient.Dial(ctx, addr, wsclient.Request(addr, offers[mode]), 4096)
				if err != nil {
					t.Fatal(err)
				}
				defer c.NC.Close()
				c.NC.SetDeadline(time.Now().Add(10 * time.Second))
				if mode != servers.CompressionOff {
					if c.Deflate, err = wsclient.NewDeflate(c.Extensions); err != nil || c.Deflate == nil {
						t.Fatalf("server answered extensions %q (%v), want permessage-deflate", c.Extensions, err)
					}
				}
				for _, m := range []struct {
					op byte
					p  []byte
				}{
					{wsclient.OpText, []byte("hello")},
					{wsclient.OpBinary, bytes.Repeat([]byte{1, 2, 3}, 30000)},
					{wsclient.OpText, bytes.Repeat([]byte(`{"a":1},`), 200)},
				} {
					payload, rsv1 := m.p, false
					if c.Deflate != nil {
						z, err := c.Deflate.Compress(m.p)
						if err != nil {
							t.Fatal(err)
						}
						payload, rsv1 = z, true
					}
					if err := c.WriteFrame(m.op, rsv1, payload); err != nil {
						t.Fatal(err)
					}
					op, gotRSV1, _, got, err := c.ReadMessage(true, nil)
					if err != nil {
						t.Fatal(err)
					}
					if gotRSV1 {
						if got, err = c.Deflate.Decompress(got); err != nil {
							t.Fatal(err)
						}
					}
					if op != m.op || !bytes.Equal(got, m.p) {
						t.Fatalf("echo of %d bytes (op %d) came back as %d bytes (op %d)", len(m.p), m.op, len(got), op)
					}
				}
				if n := servers.Open(); n < 1 {
					t.Errorf("Open() = %d while a connection is open", n)
				}
			})
		}
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		lib  string
		o    servers.Options
	}{
		{"unknown library", "nope", servers.Options{}},
		{"gorilla takeover", "gorilla", servers.Options{Compression: servers.CompressionTakeover}},
		{"gobwas compression", "gobwas", servers.Options{Compression: servers.CompressionNoTakeover}},
		{"limit without admission control", "gws", servers.Options{Limit: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := servers.New(tt.lib, tt.o); err == nil {
				t.Fatalf("New(%q, %+v) succeeded, want an error", tt.lib, tt.o)
			}
		})
	}
}
