package websocket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// Offers that real clients send (checked against their sources):
// Chromium, Node ws and Python websockets all offer client_max_window_bits
// without a value; Firefox offers the bare extension.
const (
	offerChromium = "permessage-deflate; client_max_window_bits"
	offerFirefox  = "permessage-deflate"
	offerNodeWS   = "permessage-deflate; client_max_window_bits"
	offerPython   = "permessage-deflate; client_max_window_bits"
	// RFC 7692 §7.1.3's example of an offer with a fallback.
	offerRFCFallback = "permessage-deflate; client_max_window_bits; server_max_window_bits=10, permessage-deflate; client_max_window_bits"
)

// dparams builds negotiated parameters for a test.
func dparams(sNCT, cNCT bool, sBits, cBits int) *deflateParams {
	return &deflateParams{serverNoContextTakeover: sNCT, clientNoContextTakeover: cNCT, serverMaxWindowBits: sBits, clientMaxWindowBits: cBits}
}

func TestNegotiateDeflateServer(t *testing.T) {
	t.Parallel()
	def := &CompressionOptions{}
	tests := []struct {
		name    string
		headers []string
		opts    *CompressionOptions
		want    string // "" = declined
		params  *deflateParams
	}{
		{"chromium, defaults", []string{offerChromium}, def, "permessage-deflate", dparams(false, false, 15, 15)},
		{"firefox, defaults", []string{offerFirefox}, def, "permessage-deflate", dparams(false, false, 15, 15)},
		{"node ws, defaults", []string{offerNodeWS}, def, "permessage-deflate", dparams(false, false, 15, 15)},
		{"python, defaults", []string{offerPython}, def, "permessage-deflate", dparams(false, false, 15, 15)},
		{"chromium, client window limited", []string{offerChromium}, &CompressionOptions{ClientMaxWindowBits: 10},
			"permessage-deflate; client_max_window_bits=10", dparams(false, false, 15, 10)},
		{"firefox cannot be limited", []string{offerFirefox}, &CompressionOptions{ClientMaxWindowBits: 10},
			"permessage-deflate", dparams(false, false, 15, 15)},
		{"firefox, client no context takeover", []string{offerFirefox}, &CompressionOptions{ClientNoContextTakeover: true},
			"permessage-deflate; client_no_context_takeover", dparams(false, true, 15, 15)},
		{"python, server window limited", []string{offerPython}, &CompressionOptions{ServerMaxWindowBits: 12},
			"permessage-deflate; server_max_window_bits=12", dparams(false, false, 12, 15)},
		{"server no context takeover", []string{offerChromium}, &CompressionOptions{ServerNoContextTakeover: true},
			"permessage-deflate; server_no_context_takeover", dparams(true, false, 15, 15)},
		{"all server options", []string{offerChromium}, &CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true, ServerMaxWindowBits: 9, ClientMaxWindowBits: 11},
			"permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=11", dparams(true, true, 9, 11)},
		{"client asks server window", []string{"permessage-deflate; server_max_window_bits=10"}, def,
			"permessage-deflate; server_max_window_bits=10", dparams(false, false, 10, 15)},
		{"client asks server window 15 (still answered)", []string{"permessage-deflate; server_max_window_bits=15"}, def,
			"permessage-deflate; server_max_window_bits=15", dparams(false, false, 15, 15)},
		{"server's own limit is smaller", []string{"permessage-deflate; server_max_window_bits=10"}, &CompressionOptions{ServerMaxWindowBits: 9},
			"permessage-deflate; server_max_window_bits=9", dparams(false, false, 9, 15)},
		{"client's limit is smaller", []string{"permessage-deflate; server_max_window_bits=10"}, &CompressionOptions{ServerMaxWindowBits: 12},
			"permessage-deflate; server_max_window_bits=10", dparams(false, false, 10, 15)},
		{"client asks server window 8 (honoured exactly)", []string{"permessage-deflate; server_max_window_bits=8"}, def,
			"permessage-deflate; server_max_window_bits=8", dparams(false, false, 8, 15)},
		{"server never asks a client for 8", []string{offerChromium}, &CompressionOptions{ClientMaxWindowBits: 8},
			"permessage-deflate; client_max_window_bits=9", dparams(false, false, 15, 9)},
		{"client announces 8 itself", []string{"permessage-deflate; client_max_window_bits=8"}, def,
			"permessage-deflate; client_max_window_bits=8", dparams(false, false, 15, 8)},
		{"client value above server limit", []string{"permessage-deflate; client_max_window_bits=12"}, &CompressionOptions{ClientMaxWindowBits: 10},
			"permessage-deflate; client_max_window_bits=10", dparams(false, false, 15, 10)},
		{"client value below server limit", []string{"permessage-deflate; client_max_window_bits=10"}, &CompressionOptions{ClientMaxWindowBits: 12},
			"permessage-deflate; client_max_window_bits=10", dparams(false, false, 15, 10)},
		{"client value 15 needs no answer", []string{"permessage-deflate; client_max_window_bits=15"}, def,
			"permessage-deflate", dparams(false, false, 15, 15)},
		{"quoted client value", []string{`permessage-deflate; client_max_window_bits="12"`}, def,
			"permessage-deflate; client_max_window_bits=12", dparams(false, false, 15, 12)},
		{"client asks server no context takeover", []string{"permessage-deflate; server_no_context_takeover"}, def,
			"permessage-deflate; server_no_context_takeover", dparams(true, false, 15, 15)},
		{"client offers client no context takeover", []string{"permessage-deflate; client_no_context_takeover"}, def,
			"permessage-deflate; client_no_context_takeover", dparams(false, true, 15, 15)},
		{"RFC 7692 fallback offer: first accepted", []string{offerRFCFallback}, def,
			"permessage-deflate; server_max_window_bits=10", dparams(false, false, 10, 15)},
		{"first offer malformed, second taken", []string{"permessage-deflate; foo=1, permessage-deflate; client_max_window_bits"}, &CompressionOptions{ClientMaxWindowBits: 12},
			"permessage-deflate; client_max_window_bits=12", dparams(false, false, 15, 12)},
		{"offers across header lines", []string{"x-webkit-deflate-frame", offerChromium}, def, "permessage-deflate", dparams(false, false, 15, 15)},
		{"unknown extension only", []string{"x-webkit-deflate-frame; no_context_takeover"}, def, "", nil},
		{"no header", nil, def, "", nil},
		{"compression off", []string{offerChromium}, nil, "", nil},
		{"name is case-sensitive", []string{"Permessage-Deflate"}, def, "", nil},
		{"unknown parameter", []string{"permessage-deflate; foo"}, def, "", nil},
		{"repeated parameter", []string{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}, def, "", nil},
		{"repeated window", []string{"permessage-deflate; client_max_window_bits; client_max_window_bits=10"}, def, "", nil},
		{"flag with value", []string{"permessage-deflate; server_no_context_takeover=1"}, def, "", nil},
		{"server window without value", []string{"permessage-deflate; server_max_window_bits"}, def, "", nil},
		{"server window 7", []string{"permessage-deflate; server_max_window_bits=7"}, def, "", nil},
		{"server window 16", []string{"permessage-deflate; server_max_window_bits=16"}, def, "", nil},
		{"leading zero", []string{"permessage-deflate; server_max_window_bits=08"}, def, "", nil},
		{"plus sign", []string{"permessage-deflate; client_max_window_bits=+9"}, def, "", nil},
		{"not a number", []string{"permessage-deflate; client_max_window_bits=abc"}, def, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, p, err := negotiateDeflateServer(tt.headers, tt.opts)
			if err != nil {
				t.Fatalf("negotiateDeflateServer(%q): %v", tt.headers, err)
			}
			if resp != tt.want {
				t.Errorf("response = %q, want %q", resp, tt.want)
			}
			if (p == nil) != (tt.params == nil) || (p != nil && *p != *tt.params) {
				t.Errorf("params = %+v, want %+v", p, tt.params)
			}
			if resp != "" {
				checkServerAnswer(t, tt.headers, resp, p)
			}
		})
	}
}

// checkServerAnswer checks the rules of RFC 7692 §7.1 between the offer the
// server answered (the first acceptable one in headers) and its response,
// and that params describe the response.
func checkServerAnswer(t testing.TB, headers []string, resp string, p *deflateParams) {
	t.Helper()
	exts, err := parseExtensions([]string{resp})
	if err != nil || len(exts) != 1 || exts[0].name != deflateName {
		t.Fatalf("response %q does not parse as one permessage-deflate: %v", resp, err)
	}
	got, err := decodeDeflateParams(exts[0], false)
	if err != nil {
		t.Fatalf("response %q is not a valid permessage-deflate response: %v", resp, err)
	}
	offers, _ := parseExtensions(headers)
	var req deflateRequest
	found := false
	for _, o := range offers {
		if o.name != deflateName {
			continue
		}
		if r, err := decodeDeflateParams(o, true); err == nil {
			req, found = r, true
			break
		}
	}
	if !found {
		t.Fatalf("response %q to %q, which has no acceptable offer", resp, headers)
	}
	if req.serverNoContextTakeover && !got.serverNoContextTakeover {
		t.Errorf("offer asked server_no_context_takeover; response %q lacks it", resp)
	}
	if req.serverMaxWindowBits != 0 && (got.serverMaxWindowBits == 0 || got.serverMaxWindowBits > req.serverMaxWindowBits) {
		t.Errorf("offer asked server_max_window_bits=%d; response %q does not honour it", req.serverMaxWindowBits, resp)
	}
	if got.clientMaxWindowBits != 0 {
		if req.clientMaxWindowBits == 0 && !req.clientBitsNoValue {
			t.Errorf("response %q has client_max_window_bits the offer did not allow", resp)
		}
		if req.clientMaxWindowBits != 0 && got.clientMaxWindowBits > req.clientMaxWindowBits {
			t.Errorf("response %q raises client_max_window_bits above the offered %d", resp, req.clientMaxWindowBits)
		}
	}
	want := deflateParams{
		serverNoContextTakeover: got.serverNoContextTakeover,
		clientNoContextTakeover: got.clientNoContextTakeover,
		serverMaxWindowBits:     bitsOrDefault(got.serverMaxWindowBits),
		clientMaxWindowBits:     bitsOrDefault(max(got.clientMaxWindowBits, 0)),
	}
	if got.clientMaxWindowBits == 0 && req.clientMaxWindowBits != 0 {
		want.clientMaxWindowBits = req.clientMaxWindowBits
	}
	if *p != want {
		t.Errorf("params %+v do not describe response %q to offer %q (want %+v)", *p, resp, headers, want)
	}
}

func TestNegotiateDeflateServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		headers []string
		opts    *CompressionOptions
		want    string
	}{
		{"broken syntax", []string{"permessage-deflate;"}, &CompressionOptions{}, "malformed Sec-WebSocket-Extensions"},
		{"broken second line", []string{offerChromium, `x; a="`}, &CompressionOptions{}, "unterminated quoted string"},
		{"bad level", []string{offerChromium}, &CompressionOptions{Level: 10}, "invalid CompressionOptions.Level 10"},
		{"bad window", []string{offerChromium}, &CompressionOptions{ServerMaxWindowBits: 7}, "invalid CompressionOptions.ServerMaxWindowBits 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			resp, p, err := negotiateDeflateServer(tt.headers, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("negotiateDeflateServer(%q) = %q, %+v, %v; want error containing %q", tt.headers, resp, p, err, tt.want)
			}
		})
	}
	// With compression off the header is not even looked at.
	if _, _, err := negotiateDeflateServer([]string{"permessage-deflate;"}, nil); err != nil {
		t.Fatalf("compression off: %v", err)
	}
}

func TestCompressionOptionsValidate(t *testing.T) {
	t.Parallel()
	valid := []CompressionOptions{
		{}, {Level: 1}, {Level: 9}, {Level: -1}, {Level: -2}, {Threshold: -1}, {Threshold: 1 << 20},
		{ServerMaxWindowBits: 8, ClientMaxWindowBits: 15}, {ServerMaxWindowBits: 15, ClientMaxWindowBits: 8},
	}
	for _, o := range valid {
		if err := o.validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	invalid := map[string]CompressionOptions{
		"Level -3":                {Level: -3},
		"Level 10":                {Level: 10},
		"ServerMaxWindowBits 7":   {ServerMaxWindowBits: 7},
		"ServerMaxWindowBits 16":  {ServerMaxWindowBits: 16},
		"ClientMaxWindowBits -1":  {ClientMaxWindowBits: -1},
		"ClientMaxWindowBits 100": {ClientMaxWindowBits: 100},
	}
	for want, o := range invalid {
		err := o.validate()
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "websocket: ") {
			t.Errorf("%+v: got %v, want an error naming %q", o, err, want)
		}
	}
	if got := compressionThreshold(nil); got != 128 {
		t.Errorf("default threshold = %d, want 128", got)
	}
	if got := compressionThreshold(&CompressionOptions{Threshold: -5}); got != 0 {
		t.Errorf("negative threshold = %d, want 0 (compress everything)", got)
	}
	if got := compressionThreshold(&CompressionOptions{Threshold: 1000}); got != 1000 {
		t.Errorf("threshold = %d, want 1000", got)
	}
}

func TestDeflateOffer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		opts CompressionOptions
		want string
	}{
		{CompressionOptions{}, "permessage-deflate; client_max_window_bits"},
		{CompressionOptions{Level: 9, Threshold: 10}, "permessage-deflate; client_max_window_bits"},
		{CompressionOptions{ServerNoContextTakeover: true}, "permessage-deflate; server_no_context_takeover; client_max_window_bits"},
		{CompressionOptions{ClientNoContextTakeover: true}, "permessage-deflate; client_no_context_takeover; client_max_window_bits"},
		{CompressionOptions{ServerMaxWindowBits: 10}, "permessage-deflate; server_max_window_bits=10; client_max_window_bits"},
		{CompressionOptions{ServerMaxWindowBits: 8}, "permessage-deflate; server_max_window_bits=9; client_max_window_bits"},
		{CompressionOptions{ClientMaxWindowBits: 8}, "permessage-deflate; client_max_window_bits=8"},
		{CompressionOptions{ServerMaxWindowBits: 15, ClientMaxWindowBits: 15}, "permessage-deflate; client_max_window_bits"},
	}
	for _, tt := range tests {
		if got := deflateOffer(&tt.opts); got != tt.want {
			t.Errorf("deflateOffer(%+v) = %q, want %q", tt.opts, got, tt.want)
		}
	}
}

func TestParseDeflateResponse(t *testing.T) {
	t.Parallel()
	def := &CompressionOptions{}
	tests := []struct {
		name    string
		opts    *CompressionOptions
		headers []string
		params  *deflateParams // nil with wantErr "": no compression
		wantErr string
	}{
		{"no header", def, nil, nil, ""},
		{"empty header", def, []string{""}, nil, ""},
		{"plain accept", def, []string{"permessage-deflate"}, dparams(false, false, 15, 15), ""},
		{"server adds server_no_context_takeover", def, []string{"permessage-deflate; server_no_context_takeover"}, dparams(true, false, 15, 15), ""},
		{"server adds client_no_context_takeover", def, []string{"permessage-deflate; client_no_context_takeover"}, dparams(false, true, 15, 15), ""},
		{"server adds server_max_window_bits", def, []string{"permessage-deflate; server_max_window_bits=10"}, dparams(false, false, 10, 15), ""},
		{"server window 8", def, []string{"permessage-deflate; server_max_window_bits=8"}, dparams(false, false, 8, 15), ""},
		{"server limits client", def, []string{"permessage-deflate; client_max_window_bits=10"}, dparams(false, false, 15, 10), ""},
		{"server limits client to 8", def, []string{"permessage-deflate; client_max_window_bits=8"}, dparams(false, false, 15, 8), ""},
		{"quoted value", def, []string{`permessage-deflate; client_max_window_bits="9"`}, dparams(false, false, 15, 9), ""},
		{"everything", def, []string{"permessage-deflate;server_no_context_takeover;client_no_context_takeover;server_max_window_bits=9;client_max_window_bits=12"}, dparams(true, true, 9, 12), ""},
		{"whitespace and empty elements", def, []string{" , permessage-deflate ; client_max_window_bits = 11 ,"}, dparams(false, false, 15, 11), ""},

		{"requested server window answered", &CompressionOptions{ServerMaxWindowBits: 10}, []string{"permessage-deflate; server_max_window_bits=10"}, dparams(false, false, 10, 15), ""},
		{"requested server window answered smaller", &CompressionOptions{ServerMaxWindowBits: 10}, []string{"permessage-deflate; server_max_window_bits=9"}, dparams(false, false, 9, 15), ""},
		{"server window 8 requested as 9", &CompressionOptions{ServerMaxWindowBits: 8}, []string{"permessage-deflate; server_max_window_bits=9"}, dparams(false, false, 9, 15), ""},
		{"requested server no context takeover", &CompressionOptions{ServerNoContextTakeover: true}, []string{"permessage-deflate; server_no_context_takeover"}, dparams(true, false, 15, 15), ""},
		{"client window offered, not answered", &CompressionOptions{ClientMaxWindowBits: 10}, []string{"permessage-deflate"}, dparams(false, false, 15, 10), ""},
		{"client window offered, answered smaller", &CompressionOptions{ClientMaxWindowBits: 10}, []string{"permessage-deflate; client_max_window_bits=9"}, dparams(false, false, 15, 9), ""},
		{"client no context takeover holds unanswered", &CompressionOptions{ClientNoContextTakeover: true}, []string{"permessage-deflate"}, dparams(false, true, 15, 15), ""},

		{"broken syntax", def, []string{"permessage-deflate;"}, nil, "malformed Sec-WebSocket-Extensions"},
		{"not offered at all", nil, []string{"permessage-deflate"}, nil, `server accepted extension "permessage-deflate", which the client did not offer`},
		{"unknown extension", def, []string{"x-webkit-deflate-frame"}, nil, `server accepted extension "x-webkit-deflate-frame", which the client did not offer`},
		{"unknown extension after deflate", def, []string{"permessage-deflate, x-foo"}, nil, `"x-foo", which the client did not offer`},
		{"deflate twice", def, []string{"permessage-deflate, permessage-deflate"}, nil, "more than once"},
		{"deflate twice across lines", def, []string{"permessage-deflate", "permessage-deflate; server_no_context_takeover"}, nil, "more than once"},
		{"unknown parameter", def, []string{"permessage-deflate; foo"}, nil, `unknown parameter "foo"`},
		{"repeated parameter", def, []string{"permessage-deflate; server_no_context_takeover; server_no_context_takeover"}, nil, `"server_no_context_takeover" appears twice`},
		{"repeated window", def, []string{"permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"}, nil, "appears twice"},
		{"flag with value", def, []string{"permessage-deflate; client_no_context_takeover=true"}, nil, "takes no value"},
		{"client window without value", def, []string{"permessage-deflate; client_max_window_bits"}, nil, "client_max_window_bits needs a value"},
		{"server window without value", def, []string{"permessage-deflate; server_max_window_bits"}, nil, "server_max_window_bits needs a value"},
		{"client window 16", def, []string{"permessage-deflate; client_max_window_bits=16"}, nil, `client_max_window_bits="16" is not a window size`},
		{"server window 7", def, []string{"permessage-deflate; server_max_window_bits=7"}, nil, `server_max_window_bits="7" is not a window size`},
		{"leading zero", def, []string{"permessage-deflate; server_max_window_bits=010"}, nil, "not a window size"},
		{"server window larger than requested", &CompressionOptions{ServerMaxWindowBits: 10}, []string{"permessage-deflate; server_max_window_bits=11"}, nil, "server_max_window_bits=11 is larger than the 10 requested"},
		{"requested server window missing", &CompressionOptions{ServerMaxWindowBits: 10}, []string{"permessage-deflate"}, nil, "server_max_window_bits=10 was requested and is missing"},
		{"requested server no context takeover missing", &CompressionOptions{ServerNoContextTakeover: true}, []string{"permessage-deflate"}, nil, "server_no_context_takeover was requested and is missing"},
		{"client window larger than offered", &CompressionOptions{ClientMaxWindowBits: 10}, []string{"permessage-deflate; client_max_window_bits=12"}, nil, "client_max_window_bits=12 is larger than the 10 offered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := parseDeflateResponse(tt.headers, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "websocket: ") {
					t.Fatalf("parseDeflateResponse(%q) = %+v, %v; want error containing %q", tt.headers, p, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseDeflateResponse(%q): %v", tt.headers, err)
			}
			if (p == nil) != (tt.params == nil) || (p != nil && *p != *tt.params) {
				t.Fatalf("params = %+v, want %+v", p, tt.params)
			}
		})
	}
}

// TestNegotiationAgrees runs every combination of client and server
// options through offer, server negotiation and client validation: the
// server must accept ebb's own offers, and both sides must end up with the
// same parameters.
func TestNegotiationAgrees(t *testing.T) {
	t.Parallel()
	var all []CompressionOptions
	for _, sNCT := range []bool{false, true} {
		for _, cNCT := range []bool{false, true} {
			for _, sBits := range []int{0, 8, 9, 12, 15} {
				for _, cBits := range []int{0, 8, 9, 12, 15} {
					all = append(all, CompressionOptions{ServerNoContextTakeover: sNCT, ClientNoContextTakeover: cNCT, ServerMaxWindowBits: sBits, ClientMaxWindowBits: cBits})
				}
			}
		}
	}
	for _, c := range all {
		offer := deflateOffer(&c)
		for _, s := range all {
			resp, sp, err := negotiateDeflateServer([]string{offer}, &s)
			if err != nil || resp == "" {
				t.Fatalf("server %+v declined ebb's offer %q: %v", s, offer, err)
			}
			checkServerAnswer(t, []string{offer}, resp, sp)
			cp, err := parseDeflateResponse([]string{resp}, &c)
			if err != nil {
				t.Fatalf("client %+v rejected response %q of server %+v: %v", c, resp, s, err)
			}
			if *cp != *sp {
				t.Fatalf("client %+v and server %+v disagree: client %+v, server %+v (offer %q, response %q)", c, s, *cp, *sp, offer, resp)
			}
			// What each side asked for itself holds.
			if c.ClientNoContextTakeover && !cp.clientNoContextTakeover || s.ServerNoContextTakeover && !sp.serverNoContextTakeover {
				t.Fatalf("no-context-takeover option lost: client %+v server %+v -> %+v", c, s, *cp)
			}
			if cp.clientMaxWindowBits > c.clientBits() || sp.serverMaxWindowBits > s.serverBits() {
				t.Fatalf("window above own limit: client %+v server %+v -> %+v", c, s, *cp)
			}
			if cp.serverMaxWindowBits > max(c.serverBits(), minPeerWindowBits) {
				t.Fatalf("server window above the client's request: client %+v server %+v -> %+v", c, s, *cp)
			}
		}
	}
}

func TestDeflateParamsString(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		p    *deflateParams
		want string
	}{
		{dparams(false, false, 15, 15), "permessage-deflate"},
		{dparams(true, true, 9, 12), "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", *tt.p, got, tt.want)
		}
	}
}

func TestDecodeDeflateParamsWrapsSentinel(t *testing.T) {
	t.Parallel()
	_, err := decodeDeflateParams(mkExt(deflateName, mkFlag("bogus")), true)
	if !errors.Is(err, errDeflateParam) {
		t.Fatalf("error %v does not wrap errDeflateParam", err)
	}
	for bits := 8; bits <= 15; bits++ {
		got, ok := parseWindowBits(fmt.Sprint(bits))
		if !ok || got != bits {
			t.Errorf("parseWindowBits(%d) = %d, %v", bits, got, ok)
		}
	}
	for _, s := range []string{"", "0", "7", "16", "08", " 9", "9 ", "1e1", "-9", "99999999999999999999"} {
		if got, ok := parseWindowBits(s); ok {
			t.Errorf("parseWindowBits(%q) = %d, want rejection", s, got)
		}
	}
}

// ---- end to end, through Accept and Dial ----

// deflatePair runs Accept behind an httptest server and Dials it. The
// server's Conn arrives on the returned channel (closed if Accept fails).
func deflatePair(t *testing.T, ao *AcceptOptions, do *DialOptions) (client *Conn, server <-chan *Conn, dialErr error) {
	t.Helper()
	srv, conns := acceptingServer(t, ao)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, _, dialErr = Dial(ctx, wsURL(srv), do)
	if client != nil {
		t.Cleanup(func() { client.CloseNow() })
	}
	return client, conns, dialErr
}

func TestCompressedEchoEndToEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		server, client *CompressionOptions
		extensions     string
	}{
		{"defaults", &CompressionOptions{}, &CompressionOptions{}, "permessage-deflate"},
		{"small windows", &CompressionOptions{ServerMaxWindowBits: 9, ClientMaxWindowBits: 10}, &CompressionOptions{},
			"permessage-deflate; server_max_window_bits=9; client_max_window_bits=10"},
		{"window 8 both ways", &CompressionOptions{}, &CompressionOptions{ServerMaxWindowBits: 8, ClientMaxWindowBits: 8},
			"permessage-deflate; server_max_window_bits=9; client_max_window_bits=8"},
		{"no takeover", &CompressionOptions{ServerNoContextTakeover: true, ClientNoContextTakeover: true}, &CompressionOptions{Level: 9},
			"permessage-deflate; server_no_context_takeover; client_no_context_takeover"},
		{"client asks no server takeover", &CompressionOptions{Threshold: -1}, &CompressionOptions{ServerNoContextTakeover: true, Threshold: -1},
			"permessage-deflate; server_no_context_takeover"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, conns, err := deflatePair(t, &AcceptOptions{Compression: tt.server}, &DialOptions{Compression: tt.client})
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			server := <-conns
			defer server.CloseNow()
			if got := client.Extensions(); got != tt.extensions {
				t.Errorf("client.Extensions() = %q, want %q", got, tt.extensions)
			}
			if got := server.Extensions(); got != tt.extensions {
				t.Errorf("server.Extensions() = %q, want %q", got, tt.extensions)
			}
			done := make(chan error, 1)
			go func() {
				ctx := context.Background()
				for i := 0; ; i++ {
					typ, msg, err := server.Read(ctx)
					if err != nil {
						done <- err
						return
					}
					// Alternate compressed and uncompressed answers.
					if i%4 == 3 {
						err = server.WriteUncompressed(ctx, typ, msg)
					} else {
						err = server.Write(ctx, typ, msg)
					}
					if err != nil {
						done <- err
						return
					}
				}
			}()
			rng := rand.New(rand.NewPCG(1, 2))
			ctx := context.Background()
			for i := range 40 {
				size := []int{0, 5, 127, 128, 2000, 70_000, 1 << 20}[i%7]
				if raceEnabled {
					size = min(size, 100_000)
				}
				msg := jsonish(rng, size)
				if i%5 == 0 {
					msg = noise(rng, size)
				}
				typ := MessageText
				if i%5 == 0 {
					typ = MessageBinary
				}
				if i%6 == 5 {
					err = client.WriteUncompressed(ctx, typ, msg)
				} else {
					err = client.Write(ctx, typ, msg)
				}
				if err != nil {
					t.Fatalf("Write %d: %v", i, err)
				}
				gotTyp, got, err := client.Read(ctx)
				if err != nil || gotTyp != typ || !bytes.Equal(got, msg) {
					t.Fatalf("echo %d of %d B: got %d B, %v", i, size, len(got), err)
				}
			}
			if err := client.Close(closecode.NormalClosure, ""); err != nil {
				t.Fatalf("Close: %v", err)
			}
			<-done
		})
	}
}

func TestRequireDeflateEndToEnd(t *testing.T) {
	t.Parallel()
	t.Run("server without compression gets 1010", func(t *testing.T) {
		t.Parallel()
		client, conns, err := deflatePair(t, &AcceptOptions{}, &DialOptions{Require: []Requirement{{Extension: deflateName}}})
		var merr *MandatoryExtensionError
		if client != nil || !errors.As(err, &merr) {
			t.Fatalf("Dial = %v, %v; want a *MandatoryExtensionError", client, err)
		}
		if merr.Answered != "" || !strings.Contains(merr.Offered, deflateName) || len(merr.Missing) != 1 {
			t.Fatalf("error fields: %+v", merr)
		}
		server := <-conns
		defer server.CloseNow()
		_, _, rerr := server.Read(context.Background())
		var ce *CloseError
		if !errors.As(rerr, &ce) || ce.Code != closecode.MandatoryExtension || !ce.Remote || !strings.Contains(ce.Reason, deflateName) {
			t.Fatalf("server saw %v, want a remote 1010 naming %s", rerr, deflateName)
		}
	})
	t.Run("required window is offered and met", func(t *testing.T) {
		t.Parallel()
		client, conns, err := deflatePair(t, &AcceptOptions{Compression: &CompressionOptions{}},
			&DialOptions{Require: []Requirement{{Extension: deflateName, MaxServerWindowBits: 10}}})
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		server := <-conns
		defer server.CloseNow()
		if got := client.Extensions(); got != "permessage-deflate; server_max_window_bits=10" {
			t.Fatalf("Extensions() = %q", got)
		}
	})
	t.Run("required window refused", func(t *testing.T) {
		t.Parallel()
		// A server without compression cannot meet a parameter
		// requirement either; the error names the parameter.
		_, conns, err := deflatePair(t, &AcceptOptions{},
			&DialOptions{Require: []Requirement{{Extension: deflateName, ServerNoContextTakeover: true}}})
		var merr *MandatoryExtensionError
		if !errors.As(err, &merr) || !strings.Contains(merr.Error(), "server_no_context_takeover") {
			t.Fatalf("Dial error %v, want a 1010 naming server_no_context_takeover", err)
		}
		(<-conns).CloseNow()
	})
}

// TestDecompressedReadLimit: a small compressed message that inflates past
// the read limit ends the connection with 1009.
func TestDecompressedReadLimit(t *testing.T) {
	t.Parallel()
	client, conns, err := deflatePair(t, &AcceptOptions{Compression: &CompressionOptions{}, ReadLimit: 64 << 10},
		&DialOptions{Compression: &CompressionOptions{}})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	server := <-conns
	defer server.CloseNow()
	go client.Write(context.Background(), MessageBinary, make([]byte, 8<<20))
	_, _, rerr := server.Read(context.Background())
	if CloseStatus(rerr) != closecode.MessageTooBig {
		t.Fatalf("server Read = %v, want 1009", rerr)
	}
}
