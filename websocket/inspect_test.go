package websocket

import (
	"strings"
	"testing"
)

func TestExportedCheckRequirements(t *testing.T) {
	t.Parallel()
	req := []Requirement{{Extension: "permessage-deflate"}}
	tests := []struct {
		name     string
		reqs     []Requirement
		answered []string
		missing  string
		err      bool
	}{
		{"accepted", req, []string{"permessage-deflate"}, "", false},
		{"accepted with parameters", req, []string{"permessage-deflate; server_no_context_takeover"}, "", false},
		{"not accepted", req, nil, "did not accept", false},
		{"window too large", []Requirement{{Extension: "permessage-deflate", MaxServerWindowBits: 10}}, []string{"permessage-deflate; server_max_window_bits=15"}, "server_max_window_bits", true},
		{"window met", []Requirement{{Extension: "permessage-deflate", MaxServerWindowBits: 10}}, []string{"permessage-deflate; server_max_window_bits=10"}, "", false},
		{"unknown extension answered", req, []string{"x-unknown"}, "", true},
	}
	for _, tt := range tests {
		missing, err := CheckRequirements(nil, tt.reqs, tt.answered)
		if tt.err {
			// A larger window than asked is itself a protocol error for
			// the client; either form of refusal is correct.
			if err == nil && len(missing) == 0 {
				t.Errorf("%s: accepted", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		got := strings.Join(missing, "; ")
		if (tt.missing == "") != (got == "") || !strings.Contains(got, tt.missing) {
			t.Errorf("%s: missing %q, want %q", tt.name, got, tt.missing)
		}
	}
	if got := OfferFor(nil, req); !strings.HasPrefix(got, "permessage-deflate") {
		t.Errorf("OfferFor = %q", got)
	}
	if got := OfferFor(nil, nil); got != "" {
		t.Errorf("OfferFor without compression = %q", got)
	}
	exts, err := ParseExtensions([]string{`permessage-deflate; client_max_window_bits="10", x-foo`})
	if err != nil || len(exts) != 2 || exts[0].Params[0].Value != "10" || exts[1].Name != "x-foo" {
		t.Fatalf("ParseExtensions = %+v, %v", exts, err)
	}
}
