// Package servers puts each WebSocket library under test behind one small
// adapter: a constructor that returns an http.Handler serving an echo
// endpoint, written the way that library's own documentation recommends
// for a server. Every adapter echoes each message back with the same
// message type and keeps one goroutine per connection.
package servers

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
)

// Compression modes for Options.Compression.
const (
	CompressionOff        = ""           // permessage-deflate not negotiated
	CompressionNoTakeover = "notakeover" // both directions reset per message
	CompressionTakeover   = "takeover"   // sliding window kept between messages
)

// Options selects how an adapter configures its library.
type Options struct {
	// Compression is one of the Compression* constants.
	Compression string
	// WindowBits is the server's LZ77 window (8–15) for takeover mode; 0
	// keeps the library's default (15).
	WindowBits int
	// Limit caps open connections through admission control, for the
	// storm measure; 0 means no limit. Only ebb (with package shed) has
	// admission control; adapters of libraries without it reject Limit.
	Limit int
	// ReadLimit is the largest message the server must accept.
	ReadLimit int64
	// HardDemand is shed's hard ceiling (Limits.HardDemand) with Limit;
	// 0 leaves it off. Past it shed answers 503 instead of 1013.
	HardDemand int
	// Guard puts shed's Listener in front of the server with Limit, so
	// that connections past the hard ceiling (or past MaxPending) are
	// answered with a canned 503 in the accept loop.
	Guard bool
	// MaxPending bounds connections accepted but not yet admitted, at
	// shed's Listener (with Guard); 0 means no bound.
	MaxPending int
}

// ListenerWrapper is implemented by handlers that also want to see the
// server's listener (ebb with shed's Listener guard); the serve command
// wraps its listener with it before serving.
type ListenerWrapper interface {
	WrapListener(net.Listener) net.Listener
}

// Constructor builds a library's echo handler.
type Constructor func(o Options) (http.Handler, error)

// Names lists the libraries in report order; ebb comes first because every
// ratio is taken against it.
var Names = []string{"ebb", "gorilla", "coder", "gws", "gobwas"}

var registry = map[string]Constructor{
	"ebb":     newEbb,
	"gorilla": newGorilla,
	"coder":   newCoder,
	"gws":     newGws,
	"gobwas":  newGobwas,
}

// Versions records the module version of each library, for the report.
var Versions = map[string]string{
	"ebb":     "working tree",
	"gorilla": "github.com/gorilla/websocket v1.5.3",
	"coder":   "github.com/coder/websocket v1.8.15",
	"gws":     "github.com/lxzan/gws v1.8.9",
	"gobwas":  "github.com/gobwas/ws v1.5.0",
}

// compressionSupport says which compression modes each library's server
// can negotiate. gorilla implements permessage-deflate without context
// takeover only; gobwas has no server-side permessage-deflate in its
// high-level API.
var compressionSupport = map[string][]string{
	"ebb":     {CompressionNoTakeover, CompressionTakeover},
	"gorilla": {CompressionNoTakeover},
	"coder":   {CompressionNoTakeover, CompressionTakeover},
	"gws":     {CompressionNoTakeover, CompressionTakeover},
}

// Supports reports whether lib can serve with compression mode mode.
func Supports(lib, mode string) bool {
	if mode == CompressionOff {
		_, ok := registry[lib]
		return ok
	}
	if lib == "ebb" && !ebbCompressionReady {
		return false
	}
	return slices.Contains(compressionSupport[lib], mode)
}

// New returns lib's echo handler configured by o.
func New(lib string, o Options) (http.Handler, error) {
	ctor, ok := registry[lib]
	if !ok {
		return nil, fmt.Errorf("servers: unknown library %q: want one of %v", lib, Names)
	}
	if !Supports(lib, o.Compression) {
		return nil, fmt.Errorf("servers: %s does not support compression mode %q", lib, o.Compression)
	}
	if o.ReadLimit <= 0 {
		o.ReadLimit = 64 << 20
	}
	return ctor(o)
}

// open counts connections currently held by an adapter.
var open atomic.Int64

// Open returns how many WebSocket connections the adapters hold right now.
func Open() int64 { return open.Load() }

// track counts a connection until the returned func is called.
func track() func() {
	open.Add(1)
	return func() { open.Add(-1) }
}

func noLimit(lib string, o Options) error {
	if o.Limit > 0 {
		return fmt.Errorf("servers: %s has no admission control; run it with Limit 0", lib)
	}
	return nil
}
