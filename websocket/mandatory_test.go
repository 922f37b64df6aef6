package websocket

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ebb-ws/ebb/closecode"
)

func TestCheckRequirements(t *testing.T) {
	t.Parallel()
	deflate := Requirement{Extension: deflateName}
	tests := []struct {
		name     string
		reqs     []Requirement
		p        *deflateParams
		answered string
		want     []string
	}{
		{"nothing required", nil, nil, "", nil},
		{"deflate accepted", []Requirement{deflate}, dparams(false, false, 15, 15), "permessage-deflate", nil},
		{"deflate not accepted", []Requirement{deflate}, nil, "", []string{"permessage-deflate (server did not accept it)"}},
		{"server window small enough", []Requirement{{Extension: deflateName, MaxServerWindowBits: 10}}, dparams(false, false, 10, 15), "permessage-deflate; server_max_window_bits=10", nil},
		{"server window too large", []Requirement{{Extension: deflateName, MaxServerWindowBits: 10}}, dparams(false, false, 15, 15), "permessage-deflate",
			[]string{"permessage-deflate with server_max_window_bits<=10 (server answered server_max_window_bits=15)"}},
		{"client window too large", []Requirement{{Extension: deflateName, MaxClientWindowBits: 9}}, dparams(false, false, 15, 12), "permessage-deflate; client_max_window_bits=12",
			[]string{"permessage-deflate with client_max_window_bits<=9 (negotiated client_max_window_bits=12)"}},
		{"server takeover refused", []Requirement{{Extension: deflateName, ServerNoContextTakeover: true}}, dparams(false, false, 15, 15), "permessage-deflate",
			[]string{"permessage-deflate with server_no_context_takeover (server did not agree to server_no_context_takeover)"}},
		{"client takeover", []Requirement{{Extension: deflateName, ClientNoContextTakeover: true}}, dparams(false, false, 15, 15), "permessage-deflate",
			[]string{"permessage-deflate with client_no_context_takeover (negotiated without client_no_context_takeover)"}},
		{"several reasons", []Requirement{{Extension: deflateName, MaxServerWindowBits: 9, ServerNoContextTakeover: true}}, dparams(false, false, 12, 15), "permessage-deflate; server_max_window_bits=12",
			[]string{"permessage-deflate with server_max_window_bits<=9, server_no_context_takeover (server answered server_max_window_bits=12; server did not agree to server_no_context_takeover)"}},
		{"everything met", []Requirement{{Extension: deflateName, MaxServerWindowBits: 12, MaxClientWindowBits: 12, ServerNoContextTakeover: true, ClientNoContextTakeover: true}},
			dparams(true, true, 9, 12), "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9; client_max_window_bits=12", nil},
		{"other extension answered", []Requirement{{Extension: "x-foo"}}, nil, "x-foo; a=1", nil},
		{"other extension missing", []Requirement{{Extension: "x-foo"}, deflate}, dparams(false, false, 15, 15), "permessage-deflate",
			[]string{"x-foo (server did not accept it)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := checkRequirements(tt.reqs, tt.p, tt.answered)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("checkRequirements = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRequirementHelpers(t *testing.T) {
	t.Parallel()
	reqs := []Requirement{{Extension: deflateName}, {Extension: deflateName, MaxServerWindowBits: 12, ClientNoContextTakeover: true}}
	if got, want := requirementNames(reqs), []string{"permessage-deflate", "permessage-deflate with server_max_window_bits<=12, client_no_context_takeover"}; !reflect.DeepEqual(got, want) {
		t.Errorf("requirementNames = %q, want %q", got, want)
	}
	if !requiresDeflate(reqs) || requiresDeflate(nil) || requiresDeflate([]Requirement{{Extension: "x"}}) {
		t.Error("requiresDeflate is wrong")
	}
	if err := validateRequirements(append(reqs, Requirement{Extension: deflateName, MaxServerWindowBits: 9, MaxClientWindowBits: 8})); err != nil {
		t.Errorf("validateRequirements: %v", err)
	}
	for _, bad := range []Requirement{{Extension: "x-webkit-deflate-frame"}, {Extension: ""}, {Extension: deflateName, MaxServerWindowBits: 16}, {Extension: deflateName, MaxServerWindowBits: 8}, {Extension: deflateName, MaxClientWindowBits: 7}} {
		if err := validateRequirements([]Requirement{bad}); err == nil || !strings.HasPrefix(err.Error(), "websocket: ") {
			t.Errorf("validateRequirements(%+v) = %v, want an error", bad, err)
		}
	}
}

func TestCompressionForRequirements(t *testing.T) {
	t.Parallel()
	user := &CompressionOptions{Level: 5, ServerMaxWindowBits: 10}
	tests := []struct {
		name string
		opts *CompressionOptions
		reqs []Requirement
		want *CompressionOptions
		same bool // the very opts pointer comes back
	}{
		{"nothing required, no compression", nil, nil, nil, true},
		{"nothing required keeps opts", user, nil, user, true},
		{"deflate required, no opts", nil, []Requirement{{Extension: deflateName}}, &CompressionOptions{}, false},
		{"deflate required, opts kept", user, []Requirement{{Extension: deflateName}}, user, true},
		{"requirement already met by opts", user, []Requirement{{Extension: deflateName, MaxServerWindowBits: 12}}, user, true},
		{"tightened", user, []Requirement{{Extension: deflateName, MaxServerWindowBits: 9, MaxClientWindowBits: 11, ServerNoContextTakeover: true, ClientNoContextTakeover: true}},
			&CompressionOptions{Level: 5, ServerMaxWindowBits: 9, ClientMaxWindowBits: 11, ServerNoContextTakeover: true, ClientNoContextTakeover: true}, false},
		{"from nil", nil, []Requirement{{Extension: deflateName, MaxServerWindowBits: 12}}, &CompressionOptions{ServerMaxWindowBits: 12}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := *user
			got := compressionForRequirements(tt.opts, tt.reqs)
			if *user != before {
				t.Fatal("compressionForRequirements modified its input")
			}
			if (got == nil) != (tt.want == nil) || (got != nil && *got != *tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if tt.same != (got == tt.opts) {
				t.Fatalf("returned the input pointer: %v, want %v", got == tt.opts, tt.same)
			}
			// An offer built from the result, answered by a server that
			// honours it, meets the requirements.
			if got == nil {
				return
			}
			resp, sp, err := negotiateDeflateServer([]string{deflateOffer(got)}, &CompressionOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cp, err := parseDeflateResponse([]string{resp}, got)
			if err != nil || *cp != *sp {
				t.Fatalf("negotiation: %+v vs %+v, %v", cp, sp, err)
			}
			if missing := checkRequirements(tt.reqs, cp, resp); missing != nil {
				t.Fatalf("a default server does not meet the requirements it was offered: %q", missing)
			}
		})
	}
}

func TestMandatoryExtensionError(t *testing.T) {
	t.Parallel()
	e := &MandatoryExtensionError{
		Required: []string{"permessage-deflate"},
		Offered:  "permessage-deflate; client_max_window_bits",
		Answered: "",
		Missing:  []string{"permessage-deflate (server did not accept it)"},
	}
	msg := e.Error()
	for _, want := range []string{
		"websocket: ",
		"1010 Mandatory Extension",
		"permessage-deflate (server did not accept it)",
		`offered "permessage-deflate; client_max_window_bits"`,
		"server answered (none)",
		closecode.Lookup(closecode.MandatoryExtension).Fix,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Error() = %q\nlacks %q", msg, want)
		}
	}
	e.Answered = "x-foo"
	if !strings.Contains(e.Error(), `server answered "x-foo"`) {
		t.Errorf("Error() = %q lacks the raw answer", e.Error())
	}
	if got := e.CloseReason(); got != "missing extension: permessage-deflate (server did not accept it)" {
		t.Errorf("CloseReason() = %q", got)
	}
	if e.Code() != closecode.MandatoryExtension {
		t.Errorf("Code() = %v", e.Code())
	}
	long := &MandatoryExtensionError{Missing: []string{
		"permessage-deflate with server_max_window_bits<=10, server_no_context_takeover (server answered server_max_window_bits=15; server did not agree to server_no_context_takeover)",
		"x-é-extension (server did not accept it)",
	}}
	r := long.CloseReason()
	if len(r) > closecode.MaxReasonBytes || !utf8.ValidString(r) || !strings.HasPrefix(r, "missing extension: permessage-deflate") {
		t.Fatalf("CloseReason() = %q (%d B), want at most %d valid UTF-8 bytes naming the extension", r, len(r), closecode.MaxReasonBytes)
	}
}

// A client that must not run without compression requires it. When the
// server does not accept it, Dial has already closed the connection with
// 1010 and says why; retrying would fail the same way.
func ExampleRequirement() {
	ctx := context.Background()
	conn, _, err := Dial(ctx, "wss://feed.example.com/prices", &DialOptions{
		// Offered even without Compression; the server must accept it,
		// compressing with a window of at most 4 KiB.
		Require: []Requirement{{Extension: "permessage-deflate", MaxServerWindowBits: 12}},
	})
	var merr *MandatoryExtensionError
	if errors.As(err, &merr) {
		fmt.Println("not retrying:", merr.Missing)
		return
	}
	if err != nil {
		fmt.Println("dial failed:", err)
		return
	}
	defer conn.CloseNow()
	fmt.Println("negotiated:", conn.Extensions())
}
