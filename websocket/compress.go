package websocket

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/klauspost/compress/flate"
)

// deflateName is the extension token of RFC 7692's permessage-deflate.
const deflateName = "permessage-deflate"

// The four permessage-deflate parameters (RFC 7692 §7.1).
const (
	paramServerNoContextTakeover = "server_no_context_takeover"
	paramClientNoContextTakeover = "client_no_context_takeover"
	paramServerMaxWindowBits     = "server_max_window_bits"
	paramClientMaxWindowBits     = "client_max_window_bits"
)

const (
	minWindowBits = 8
	maxWindowBits = 15

	// minPeerWindowBits is the smallest window ebb ever asks a peer to
	// compress with. zlib cannot compress raw deflate with a 256-byte window
	// (window bits 8): old versions silently use 512 bytes, versions since
	// 1.2.9 refuse, so a peer built on zlib (browsers, Node ws, Python
	// websockets) either breaks the window it agreed to or fails the
	// connection. See CompressionOptions for the whole rule.
	minPeerWindowBits = 9

	defaultThreshold = 128
	defaultLevel     = flate.BestSpeed
)

// CompressionOptions configures permessage-deflate (RFC 7692). A nil
// *CompressionOptions in AcceptOptions or DialOptions turns compression off;
// a pointer to the zero value turns it on with the defaults below, which are
// the right choice for most applications. The options are read, never
// modified.
//
// # Memory
//
// With context takeover (the default) each side compresses a message with
// the previous messages as dictionary, which shrinks repetitive traffic
// (JSON with the same keys) several times more than per-message compression.
// The price is history kept per connection between messages: ebb keeps
// exactly one window of plain text per direction, 2^bits bytes (32 KiB at
// the default 15 bits, 4 KiB at 12, 512 B at 9), plus about 300 bytes of
// bookkeeping. Compressors and decompressors themselves are pooled and held
// only while a message is being written or read, with one exception: a
// busy connection sending at 15 bits.
//
// The price of keeping only plain text is CPU: before a message, a pooled
// compressor is primed with the history, re-hashing it. At most the last
// 8 KiB are used (an encoder may refer to less than the window, and the
// matches that pay are in the recent messages); for ~2 KiB JSON messages
// that makes compression with takeover two to three times as expensive as
// without. So at 15 bits a connection also keeps its compressor while it
// keeps sending, and gives it back after 100 ms without a message: busy
// connections compress at the cost of no takeover, idle ones keep only the
// history (BenchmarkDeflateCompress has the figures: 8.5 µs kept, 22 µs
// primed, 7.9 µs without takeover, per 2 KiB message). A kept compressor
// costs about 800 KiB, so at most 40 are kept in a process at a time
// (about 32 MiB); connections past that prime one per message.
// Decompression pays only a copy of the history.
//
// A server with many connections should pick the window by how they
// behave: 15 bits (the default) compresses best and fastest while
// connections are busy; ServerMaxWindowBits 12 keeps an eighth of the
// memory per idle connection and, for small messages, no worse a ratio.
//
// With no context takeover in a direction, nothing is kept for it between
// messages: a connection that is idle costs no compression memory at all.
// Compression is then per message, which is fine for large messages and
// poor for small ones.
//
// # Window bits 8
//
// RFC 7692 allows windows of 2^8 to 2^15 bytes. zlib, which most peers use,
// cannot compress raw deflate with a 256-byte window. ebb therefore:
//   - compresses with exactly 256 bytes when a peer asks it to (ebb uses
//     klauspost/compress, which honours any window size);
//   - never asks a peer for 8: a configured 8 for the peer's direction is
//     sent as 9 in offers and responses (each side may ask for any value
//     from 8 to 15, and 9 is the smallest window zlib really uses);
//   - keeps at least 512 bytes of history when decompressing, so a zlib
//     peer that agreed to 8 but silently uses 9 still decodes. RFC 7692's
//     window parameters limit only the sender; a receiver may remember
//     more.
type CompressionOptions struct {
	// Level is the compression effort: 1 (flate.BestSpeed) to 9
	// (flate.BestCompression), -1 for klauspost/compress's default (5), or
	// -2 (flate.HuffmanOnly) for entropy coding only, the cheapest option
	// for data that is already LZ-compressed. 0 means 1: WebSocket messages
	// are small and latency-bound, and level 1 gets most of the gain.
	// Level applies to messages compressed with a 32 KiB window; with a
	// smaller window the compressor is klauspost's windowed encoder, whose
	// effort is fixed (comparable to level 5). Other values are an error.
	Level int

	// Threshold is the size in bytes below which a message is sent
	// uncompressed: deflate's framing makes tiny messages larger, and
	// compressing them costs CPU for nothing. 0 means 128; a negative
	// value compresses every message. Messages sent uncompressed do not
	// enter the compression history, so the peer's window stays in sync.
	Threshold int

	// ServerNoContextTakeover makes the server compress every message on
	// its own (server_no_context_takeover). It saves the server's
	// compression history, 2^ServerMaxWindowBits bytes per connection on
	// the server and the same again on the client. On a client it is
	// offered as a request the server must accept.
	ServerNoContextTakeover bool

	// ClientNoContextTakeover makes the client compress every message on
	// its own (client_no_context_takeover). It saves the client's
	// compression history, 2^ClientMaxWindowBits bytes per connection on
	// the client and the same again on the server; a server sets it to
	// bound the memory many clients cost it.
	ClientNoContextTakeover bool

	// ServerMaxWindowBits is the base-2 logarithm of the largest window the
	// server compresses with: 8 to 15, 0 means 15 (32 KiB). A smaller window
	// costs less history per connection and compresses repetitive data
	// less. A server uses it as its own limit (and still honours a smaller
	// one asked by the client). A client offers it as server_max_window_bits
	// and fails the handshake if the server answers a larger window; a
	// server that does not support the parameter declines the extension.
	ServerMaxWindowBits int

	// ClientMaxWindowBits is the base-2 logarithm of the largest window the
	// client compresses with: 8 to 15, 0 means 15 (32 KiB). A server asks
	// for it with client_max_window_bits in its response, which only works
	// with clients that offer the parameter (Chromium, Node ws and Python
	// websockets do; Firefox does not, and then the client's window cannot
	// be limited). A client compresses with at most this window and tells
	// the server so in its offer.
	ClientMaxWindowBits int
}

// validate reports a configuration error in o. Accept and Dial call it
// before anything goes on the wire.
func (o *CompressionOptions) validate() error {
	if o == nil {
		return nil
	}
	if o.Level < flate.HuffmanOnly || o.Level > flate.BestCompression {
		return fmt.Errorf("websocket: invalid CompressionOptions.Level %d: want 1 (BestSpeed) to 9 (BestCompression), -1 (library default), -2 (HuffmanOnly) or 0 (default, 1)", o.Level)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"ServerMaxWindowBits", o.ServerMaxWindowBits}, {"ClientMaxWindowBits", o.ClientMaxWindowBits}} {
		if f.v != 0 && (f.v < minWindowBits || f.v > maxWindowBits) {
			return fmt.Errorf("websocket: invalid CompressionOptions.%s %d: want 8 to 15 (a window of 2^bits bytes), or 0 for 15", f.name, f.v)
		}
	}
	return nil
}

// level returns the flate level to compress with.
func (o *CompressionOptions) level() int {
	if o == nil || o.Level == 0 {
		return defaultLevel
	}
	return o.Level
}

// compressionThreshold returns the smallest message size that is sent
// compressed with opts (nil: the default).
func compressionThreshold(opts *CompressionOptions) int { return opts.threshold() }

// threshold returns the smallest message size that is compressed.
func (o *CompressionOptions) threshold() int {
	switch {
	case o == nil || o.Threshold == 0:
		return defaultThreshold
	case o.Threshold < 0:
		return 0
	}
	return o.Threshold
}

func (o *CompressionOptions) serverBits() int { return bitsOrDefault(o.ServerMaxWindowBits) }
func (o *CompressionOptions) clientBits() int { return bitsOrDefault(o.ClientMaxWindowBits) }

func bitsOrDefault(b int) int {
	if b == 0 {
		return maxWindowBits
	}
	return b
}

// deflateParams is the outcome of a permessage-deflate negotiation, from the
// point of view of the wire: what the server and the client each compress
// with. Window bits are always filled in (8 to 15), 15 where the
// negotiation left them open.
type deflateParams struct {
	serverNoContextTakeover bool
	clientNoContextTakeover bool
	serverMaxWindowBits     int
	clientMaxWindowBits     int
}

// String renders p as a permessage-deflate response element, listing only
// what differs from the defaults.
func (p *deflateParams) String() string {
	e := extensionOffer{name: deflateName}
	if p.serverNoContextTakeover {
		e.params = append(e.params, extensionParam{name: paramServerNoContextTakeover})
	}
	if p.clientNoContextTakeover {
		e.params = append(e.params, extensionParam{name: paramClientNoContextTakeover})
	}
	if p.serverMaxWindowBits < maxWindowBits {
		e.params = append(e.params, bitsParam(paramServerMaxWindowBits, p.serverMaxWindowBits))
	}
	if p.clientMaxWindowBits < maxWindowBits {
		e.params = append(e.params, bitsParam(paramClientMaxWindowBits, p.clientMaxWindowBits))
	}
	return formatExtension(e)
}

func bitsParam(name string, bits int) extensionParam {
	return extensionParam{name: name, value: strconv.Itoa(bits), hasValue: true}
}

// deflateRequest is a permessage-deflate offer's parameters, decoded.
// A window of 0 means the parameter was absent; clientBitsNoValue means
// "client_max_window_bits" was sent without a value.
type deflateRequest struct {
	serverNoContextTakeover bool
	clientNoContextTakeover bool
	serverMaxWindowBits     int
	clientMaxWindowBits     int
	clientBitsNoValue       bool
}

// errDeflateParam is wrapped by every error about a permessage-deflate
// parameter, so that callers can tell them from header syntax errors.
var errDeflateParam = errors.New("invalid permessage-deflate parameter")

// decodeDeflateParams checks the parameters of one permessage-deflate
// element. It is the same for offers and responses except that a response
// must give client_max_window_bits a value (RFC 7692 §7.1.2.2).
func decodeDeflateParams(e extensionOffer, isOffer bool) (deflateRequest, error) {
	var r deflateRequest
	seen := make(map[string]bool, len(e.params))
	for _, p := range e.params {
		if seen[p.name] {
			return r, fmt.Errorf("%w: %q appears twice in %q", errDeflateParam, p.name, formatExtension(e))
		}
		seen[p.name] = true
		switch p.name {
		case paramServerNoContextTakeover, paramClientNoContextTakeover:
			if p.hasValue {
				return r, fmt.Errorf("%w: %s takes no value, got %q", errDeflateParam, p.name, p.value)
			}
			if p.name == paramServerNoContextTakeover {
				r.serverNoContextTakeover = true
			} else {
				r.clientNoContextTakeover = true
			}
		case paramServerMaxWindowBits, paramClientMaxWindowBits:
			if !p.hasValue {
				if p.name == paramClientMaxWindowBits && isOffer {
					r.clientBitsNoValue = true
					continue
				}
				return r, fmt.Errorf("%w: %s needs a value from 8 to 15", errDeflateParam, p.name)
			}
			bits, ok := parseWindowBits(p.value)
			if !ok {
				return r, fmt.Errorf("%w: %s=%q is not a window size; want 8 to 15 without leading zeros", errDeflateParam, p.name, p.value)
			}
			if p.name == paramServerMaxWindowBits {
				r.serverMaxWindowBits = bits
			} else {
				r.clientMaxWindowBits = bits
			}
		default:
			return r, fmt.Errorf("%w: unknown parameter %q (RFC 7692 defines server_no_context_takeover, client_no_context_takeover, server_max_window_bits and client_max_window_bits)", errDeflateParam, p.name)
		}
	}
	return r, nil
}

// parseWindowBits parses a window-bits value: "8" to "15", no leading zeros
// or signs (RFC 7692 §7.1.2.1 ABNF).
func parseWindowBits(s string) (int, bool) {
	switch s {
	case "8", "9":
		return int(s[0] - '0'), true
	case "10", "11", "12", "13", "14", "15":
		return 10 + int(s[1]-'0'), true
	}
	return 0, false
}

// negotiateDeflateServer picks the first permessage-deflate offer in the
// request's Sec-WebSocket-Extensions lines that the server can accept and
// returns the response element to send and the negotiated parameters.
//
// Offers of other extensions are ignored, and so is a permessage-deflate
// offer with parameters the server cannot accept (unknown, repeated or
// out-of-range ones): RFC 7692 §5 says to decline such an offer, and a
// later offer may still be acceptable. An empty response with nil params
// means no compression. err is non-nil only when a header line is not
// valid syntax (the caller answers 400 Bad Request) or opts is invalid.
//
// The response follows RFC 7692 §7.1: server_max_window_bits is answered
// whenever the client asked for it (with the smaller of its value and the
// server's), client_max_window_bits only when the client offered it, and
// the no-context-takeover flags the server's options add are allowed in
// any response.
func negotiateDeflateServer(headerValues []string, opts *CompressionOptions) (response string, params *deflateParams, err error) {
	if opts == nil {
		return "", nil, nil
	}
	if err := opts.validate(); err != nil {
		return "", nil, err
	}
	offers, err := parseExtensions(headerValues)
	if err != nil {
		return "", nil, err
	}
	for _, o := range offers {
		if o.name != deflateName {
			continue
		}
		req, err := decodeDeflateParams(o, true)
		if err != nil {
			continue // decline this offer; a later one may do
		}
		p := acceptDeflateOffer(req, opts)
		return p.responseFor(req), p, nil
	}
	return "", nil, nil
}

// acceptDeflateOffer decides the parameters for an offer the server accepts.
func acceptDeflateOffer(req deflateRequest, opts *CompressionOptions) *deflateParams {
	p := &deflateParams{
		serverNoContextTakeover: req.serverNoContextTakeover || opts.ServerNoContextTakeover,
		// A client that offers client_no_context_takeover is told yes:
		// it costs the server nothing and spares it the client's window.
		clientNoContextTakeover: req.clientNoContextTakeover || opts.ClientNoContextTakeover,
		serverMaxWindowBits:     opts.serverBits(),
		clientMaxWindowBits:     maxWindowBits,
	}
	if req.serverMaxWindowBits != 0 {
		p.serverMaxWindowBits = min(p.serverMaxWindowBits, req.serverMaxWindowBits)
	}
	want := max(opts.clientBits(), minPeerWindowBits)
	switch {
	case req.clientMaxWindowBits != 0:
		p.clientMaxWindowBits = min(want, req.clientMaxWindowBits)
	case req.clientBitsNoValue:
		p.clientMaxWindowBits = want
	}
	return p
}

// responseFor renders the response to req: server_max_window_bits is
// present whenever req carried it (RFC 7692 §7.1.2.1 makes that how the
// server accepts it) or the server limits itself; client_max_window_bits
// only when req carried it and the client's window is limited.
func (p *deflateParams) responseFor(req deflateRequest) string {
	e := extensionOffer{name: deflateName}
	if p.serverNoContextTakeover {
		e.params = append(e.params, extensionParam{name: paramServerNoContextTakeover})
	}
	if p.clientNoContextTakeover {
		e.params = append(e.params, extensionParam{name: paramClientNoContextTakeover})
	}
	if req.serverMaxWindowBits != 0 || p.serverMaxWindowBits < maxWindowBits {
		e.params = append(e.params, bitsParam(paramServerMaxWindowBits, p.serverMaxWindowBits))
	}
	if (req.clientMaxWindowBits != 0 || req.clientBitsNoValue) && p.clientMaxWindowBits < maxWindowBits {
		e.params = append(e.params, bitsParam(paramClientMaxWindowBits, p.clientMaxWindowBits))
	}
	return formatExtension(e)
}

// clientRequest is what deflateOffer(opts) asks for, decoded.
func clientRequest(opts *CompressionOptions) deflateRequest {
	r := deflateRequest{
		serverNoContextTakeover: opts.ServerNoContextTakeover,
		clientNoContextTakeover: opts.ClientNoContextTakeover,
	}
	if b := opts.serverBits(); b < maxWindowBits {
		r.serverMaxWindowBits = max(b, minPeerWindowBits)
	}
	// client_max_window_bits is always offered: ebb compresses with any
	// window the server picks.
	if b := opts.clientBits(); b < maxWindowBits {
		r.clientMaxWindowBits = b
	} else {
		r.clientBitsNoValue = true
	}
	return r
}

// deflateOffer returns the Sec-WebSocket-Extensions value a client sends to
// offer permessage-deflate with opts. It always includes
// client_max_window_bits, telling the server it may limit the client's
// window; the other parameters appear only when opts asks for them. opts
// must be valid and non-nil.
func deflateOffer(opts *CompressionOptions) string {
	r := clientRequest(opts)
	e := extensionOffer{name: deflateName}
	if r.serverNoContextTakeover {
		e.params = append(e.params, extensionParam{name: paramServerNoContextTakeover})
	}
	if r.clientNoContextTakeover {
		e.params = append(e.params, extensionParam{name: paramClientNoContextTakeover})
	}
	if r.serverMaxWindowBits != 0 {
		e.params = append(e.params, bitsParam(paramServerMaxWindowBits, r.serverMaxWindowBits))
	}
	if r.clientBitsNoValue {
		e.params = append(e.params, extensionParam{name: paramClientMaxWindowBits})
	} else {
		e.params = append(e.params, bitsParam(paramClientMaxWindowBits, r.clientMaxWindowBits))
	}
	return formatExtension(e)
}

// parseDeflateResponse checks the server's Sec-WebSocket-Extensions
// response lines against the offer deflateOffer(opts) made (opts nil: no
// offer) and returns the negotiated parameters, or nil params and nil error
// when the server accepted no extension.
//
// It is strict, because a client that guesses wrong about the server's
// compression corrupts every later message: an extension that was not
// offered, permessage-deflate more than once, unknown, repeated or
// malformed parameters, a parameter the offer did not allow, a window larger
// than the one asked for, or a missing answer to server_no_context_takeover
// or server_max_window_bits the client asked for are errors that name the
// offending value. Everything RFC 7692 lets a server say is accepted,
// including server_no_context_takeover, client_no_context_takeover and
// server_max_window_bits the client did not ask for.
func parseDeflateResponse(headerValues []string, opts *CompressionOptions) (*deflateParams, error) {
	exts, err := parseExtensions(headerValues)
	if err != nil {
		return nil, err
	}
	if len(exts) == 0 {
		return nil, nil
	}
	answered := strings.Join(headerValues, ", ")
	var found *extensionOffer
	for i, e := range exts {
		if e.name != deflateName || opts == nil {
			return nil, fmt.Errorf("websocket: server accepted extension %q, which the client did not offer (Sec-WebSocket-Extensions: %q); the server is broken or a proxy rewrote the header", e.name, answered)
		}
		if found != nil {
			return nil, fmt.Errorf("websocket: server accepted permessage-deflate more than once (Sec-WebSocket-Extensions: %q); it must answer one offer", answered)
		}
		found = &exts[i]
	}
	resp, err := decodeDeflateParams(*found, false)
	if err != nil {
		return nil, fmt.Errorf("websocket: server's permessage-deflate response %q: %w", formatExtension(*found), err)
	}
	req := clientRequest(opts)
	bad := func(format string, args ...any) error {
		return fmt.Errorf("websocket: server's permessage-deflate response %q does not match the offer %q: %s", formatExtension(*found), deflateOffer(opts), fmt.Sprintf(format, args...))
	}
	p := &deflateParams{
		serverNoContextTakeover: resp.serverNoContextTakeover,
		clientNoContextTakeover: resp.clientNoContextTakeover || req.clientNoContextTakeover,
		serverMaxWindowBits:     maxWindowBits,
		clientMaxWindowBits:     maxWindowBits,
	}
	if req.serverNoContextTakeover && !resp.serverNoContextTakeover {
		return nil, bad("server_no_context_takeover was requested and is missing (RFC 7692 §7.1.1.1)")
	}
	switch {
	case resp.serverMaxWindowBits != 0:
		if req.serverMaxWindowBits != 0 && resp.serverMaxWindowBits > req.serverMaxWindowBits {
			return nil, bad("server_max_window_bits=%d is larger than the %d requested", resp.serverMaxWindowBits, req.serverMaxWindowBits)
		}
		p.serverMaxWindowBits = resp.serverMaxWindowBits
	case req.serverMaxWindowBits != 0:
		return nil, bad("server_max_window_bits=%d was requested and is missing (RFC 7692 §7.1.2.1)", req.serverMaxWindowBits)
	}
	switch {
	case resp.clientMaxWindowBits != 0:
		if !req.clientBitsNoValue && req.clientMaxWindowBits == 0 {
			return nil, bad("client_max_window_bits was not offered (RFC 7692 §7.1.2.2)")
		}
		if req.clientMaxWindowBits != 0 && resp.clientMaxWindowBits > req.clientMaxWindowBits {
			return nil, bad("client_max_window_bits=%d is larger than the %d offered", resp.clientMaxWindowBits, req.clientMaxWindowBits)
		}
		p.clientMaxWindowBits = resp.clientMaxWindowBits
	case req.clientMaxWindowBits != 0:
		// The offer promised this limit; it holds without an answer.
		p.clientMaxWindowBits = req.clientMaxWindowBits
	}
	return p, nil
}
