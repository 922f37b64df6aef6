package websocket

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/ebb-ws/ebb/closecode"
)

// Requirement is an extension a client will not work without. Put it in
// DialOptions.Require: when the server's handshake response does not accept
// the extension with the parameters required, Dial sends a Close frame with
// 1010 Mandatory Extension naming what is missing and returns a
// *MandatoryExtensionError; it never falls back to a connection without it.
//
// A requirement implies an offer: requiring permessage-deflate offers it
// even when DialOptions.Compression is nil, and a required limit is offered
// as that limit.
//
// For example, a client on a metered link that must get compressed traffic
// from the server, in a window of at most 4 KiB:
//
//	websocket.Requirement{Extension: "permessage-deflate", MaxServerWindowBits: 12}
type Requirement struct {
	// Extension is the extension token, e.g. "permessage-deflate". ebb
	// implements only permessage-deflate, so it is the only one Dial
	// accepts: a server cannot accept an extension the client did not
	// offer.
	Extension string

	// MaxServerWindowBits, if not 0, requires the server to compress with
	// a window of at most 2^MaxServerWindowBits bytes (9 to 15): this
	// bounds what the client keeps per connection to decompress. 8 is not
	// accepted because ebb never asks a peer for a 256-byte window (see
	// CompressionOptions).
	MaxServerWindowBits int

	// MaxClientWindowBits, if not 0, requires the negotiated client window
	// to be at most 2^MaxClientWindowBits bytes (8 to 15).
	MaxClientWindowBits int

	// ServerNoContextTakeover requires the server to compress each message
	// on its own, so that the client keeps no window for the server
	// between messages.
	ServerNoContextTakeover bool

	// ClientNoContextTakeover requires the negotiated parameters to have
	// the client compress each message on its own.
	ClientNoContextTakeover bool
}

// String renders r the way error messages name it, e.g.
// "permessage-deflate with server_max_window_bits<=12".
func (r Requirement) String() string {
	var conds []string
	if r.MaxServerWindowBits != 0 {
		conds = append(conds, paramServerMaxWindowBits+"<="+strconv.Itoa(r.MaxServerWindowBits))
	}
	if r.MaxClientWindowBits != 0 {
		conds = append(conds, paramClientMaxWindowBits+"<="+strconv.Itoa(r.MaxClientWindowBits))
	}
	if r.ServerNoContextTakeover {
		conds = append(conds, paramServerNoContextTakeover)
	}
	if r.ClientNoContextTakeover {
		conds = append(conds, paramClientNoContextTakeover)
	}
	if len(conds) == 0 {
		return r.Extension
	}
	return r.Extension + " with " + strings.Join(conds, ", ")
}

// requirementNames renders each requirement for
// MandatoryExtensionError.Required.
func requirementNames(reqs []Requirement) []string {
	names := make([]string, len(reqs))
	for i, r := range reqs {
		names[i] = r.String()
	}
	return names
}

// requiresDeflate reports whether reqs require permessage-deflate, which
// makes the client offer it even without DialOptions.Compression.
func requiresDeflate(reqs []Requirement) bool {
	for _, r := range reqs {
		if r.Extension == deflateName {
			return true
		}
	}
	return false
}

// validateRequirements reports a requirement Dial cannot honour.
func validateRequirements(reqs []Requirement) error {
	for _, r := range reqs {
		if r.Extension != deflateName {
			return fmt.Errorf("websocket: cannot require extension %q: ebb implements only %s, and a server never accepts an extension the client did not offer", r.Extension, deflateName)
		}
		if v := r.MaxServerWindowBits; v != 0 && (v < minPeerWindowBits || v > maxWindowBits) {
			return fmt.Errorf("websocket: invalid Requirement.MaxServerWindowBits %d for %s: want 9 to 15, or 0 for no limit (ebb never asks a server for a 256-byte window: zlib-based servers cannot compress with one)", v, r.Extension)
		}
		if v := r.MaxClientWindowBits; v != 0 && (v < minWindowBits || v > maxWindowBits) {
			return fmt.Errorf("websocket: invalid Requirement.MaxClientWindowBits %d for %s: want 8 to 15, or 0 for no limit", v, r.Extension)
		}
	}
	return nil
}

// compressionForRequirements returns the compression options a client
// offers: opts tightened so that the offer asks for everything reqs
// require, or defaults when opts is nil and permessage-deflate is required.
// It returns opts itself when reqs ask for nothing more, and never
// modifies opts.
func compressionForRequirements(opts *CompressionOptions, reqs []Requirement) *CompressionOptions {
	var out *CompressionOptions
	tighten := func() *CompressionOptions {
		if out == nil {
			out = &CompressionOptions{}
			if opts != nil {
				*out = *opts
			}
		}
		return out
	}
	for _, r := range reqs {
		if r.Extension != deflateName {
			continue
		}
		if opts == nil {
			tighten()
		}
		if r.ServerNoContextTakeover && (opts == nil || !opts.ServerNoContextTakeover) {
			tighten().ServerNoContextTakeover = true
		}
		if r.ClientNoContextTakeover && (opts == nil || !opts.ClientNoContextTakeover) {
			tighten().ClientNoContextTakeover = true
		}
		if r.MaxServerWindowBits != 0 && (opts == nil || opts.serverBits() > r.MaxServerWindowBits) {
			o := tighten()
			o.ServerMaxWindowBits = min(o.serverBits(), r.MaxServerWindowBits)
		}
		if r.MaxClientWindowBits != 0 && (opts == nil || opts.clientBits() > r.MaxClientWindowBits) {
			o := tighten()
			o.ClientMaxWindowBits = min(o.clientBits(), r.MaxClientWindowBits)
		}
	}
	if out == nil {
		return opts
	}
	return out
}

// checkRequirements compares reqs with the outcome of the handshake: p is
// what parseDeflateResponse negotiated (nil: permessage-deflate was not
// accepted) and answered the raw Sec-WebSocket-Extensions of the response.
// It returns one entry per requirement not met, naming it and saying why,
// e.g. "permessage-deflate (server did not accept it)" or
// "permessage-deflate with server_max_window_bits<=10 (server answered 15)".
// Requirements for other extensions are checked by name against answered.
func checkRequirements(reqs []Requirement, p *deflateParams, answered string) (missing []string) {
	for _, r := range reqs {
		if r.Extension != deflateName {
			if !answeredExtension(answered, r.Extension) {
				missing = append(missing, r.String()+" (server did not accept it)")
			}
			continue
		}
		if p == nil {
			missing = append(missing, r.String()+" (server did not accept it)")
			continue
		}
		var why []string
		if r.MaxServerWindowBits != 0 && p.serverMaxWindowBits > r.MaxServerWindowBits {
			why = append(why, fmt.Sprintf("server answered %s=%d", paramServerMaxWindowBits, p.serverMaxWindowBits))
		}
		if r.MaxClientWindowBits != 0 && p.clientMaxWindowBits > r.MaxClientWindowBits {
			why = append(why, fmt.Sprintf("negotiated %s=%d", paramClientMaxWindowBits, p.clientMaxWindowBits))
		}
		if r.ServerNoContextTakeover && !p.serverNoContextTakeover {
			why = append(why, "server did not agree to "+paramServerNoContextTakeover)
		}
		if r.ClientNoContextTakeover && !p.clientNoContextTakeover {
			why = append(why, "negotiated without "+paramClientNoContextTakeover)
		}
		if len(why) > 0 {
			missing = append(missing, r.String()+" ("+strings.Join(why, "; ")+")")
		}
	}
	return missing
}

// answeredExtension reports whether the response header value names ext.
func answeredExtension(answered, ext string) bool {
	exts, err := parseExtensions([]string{answered})
	if err != nil {
		return false
	}
	for _, e := range exts {
		if e.name == ext {
			return true
		}
	}
	return false
}

// MandatoryExtensionError is returned by Dial when the server did not
// accept an extension the client requires (DialOptions.Require). The client
// has closed the connection with 1010 Mandatory Extension. Retrying fails
// the same way until the server's (or a proxy's) configuration, or the
// client's requirements, change.
type MandatoryExtensionError struct {
	// Required lists every requirement, as Requirement.String renders it.
	Required []string
	// Offered is the Sec-WebSocket-Extensions the client sent.
	Offered string
	// Answered is the raw Sec-WebSocket-Extensions of the server's
	// response, "" if it had none.
	Answered string
	// Missing lists the requirements not met, each with the reason.
	Missing []string
}

// Error says what was missing, what was offered and answered, and what to
// do about it.
func (e *MandatoryExtensionError) Error() string {
	var b strings.Builder
	b.WriteString("websocket: closed with ")
	b.WriteString(closecode.MandatoryExtension.String())
	b.WriteString(": required extension not accepted: ")
	b.WriteString(strings.Join(e.Missing, "; "))
	fmt.Fprintf(&b, "; offered %s; server answered %s. %s",
		headerOrNone(e.Offered), headerOrNone(e.Answered), closecode.Lookup(closecode.MandatoryExtension).Fix)
	return b.String()
}

func headerOrNone(v string) string {
	if v == "" {
		return "(none)"
	}
	return strconv.Quote(v)
}

// CloseReason returns the reason for the 1010 Close frame: the missing
// extensions, at most 123 bytes (RFC 6455 §7.4.1 asks the client to list
// them).
func (e *MandatoryExtensionError) CloseReason() string {
	return closecode.TruncateReason("missing extension: "+strings.Join(e.Missing, "; "), closecode.MaxReasonBytes)
}

// Code returns 1010 Mandatory Extension, the code the client closed with.
func (e *MandatoryExtensionError) Code() closecode.Code { return closecode.MandatoryExtension }
