package websocket

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// mkExt, mkFlag and mkVal build parsed extension elements for tests.
func mkExt(name string, params ...extensionParam) extensionOffer {
	return extensionOffer{name: name, params: params}
}

func mkFlag(name string) extensionParam { return extensionParam{name: name} }

func mkVal(name, value string) extensionParam {
	return extensionParam{name: name, value: value, hasValue: true}
}

func TestParseExtensions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		headers []string
		want    []extensionOffer
	}{
		{"no header", nil, nil},
		{"empty header", []string{""}, nil},
		{"blank header", []string{"  \t "}, nil},
		{"bare name", []string{"permessage-deflate"}, []extensionOffer{mkExt("permessage-deflate")}},
		{"chromium", []string{"permessage-deflate; client_max_window_bits"},
			[]extensionOffer{mkExt("permessage-deflate", mkFlag("client_max_window_bits"))}},
		{"values and flags", []string{"permessage-deflate; server_no_context_takeover; server_max_window_bits=10"},
			[]extensionOffer{mkExt("permessage-deflate", mkFlag("server_no_context_takeover"), mkVal("server_max_window_bits", "10"))}},
		{"no whitespace", []string{"a;b=1;c,d"},
			[]extensionOffer{mkExt("a", mkVal("b", "1"), mkFlag("c")), mkExt("d")}},
		{"lots of whitespace", []string{" \ta \t; \tb \t= \t1 \t, \td\t "},
			[]extensionOffer{mkExt("a", mkVal("b", "1")), mkExt("d")}},
		{"quoted value", []string{`a; b="10"`}, []extensionOffer{mkExt("a", mkVal("b", "10"))}},
		{"quoted value with escape", []string{`a; b="1\0"`}, []extensionOffer{mkExt("a", mkVal("b", "10"))}},
		{"empty list elements", []string{", a ,, b ,"}, []extensionOffer{mkExt("a"), mkExt("b")}},
		{"several header lines", []string{"x-webkit-deflate-frame", "permessage-deflate; client_max_window_bits, permessage-deflate"},
			[]extensionOffer{mkExt("x-webkit-deflate-frame"), mkExt("permessage-deflate", mkFlag("client_max_window_bits")), mkExt("permessage-deflate")}},
		{"token punctuation", []string{"!#$%&'*+-.^_`|~09AZaz; p=!#$%&'*+-.^_`|~"},
			[]extensionOffer{mkExt("!#$%&'*+-.^_`|~09AZaz", mkVal("p", "!#$%&'*+-.^_`|~"))}},
		{"repeated params are kept", []string{"a; b; b=2"}, []extensionOffer{mkExt("a", mkFlag("b"), mkVal("b", "2"))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseExtensions(tt.headers)
			if err != nil {
				t.Fatalf("parseExtensions(%q): %v", tt.headers, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseExtensions(%q)\n got %#v\nwant %#v", tt.headers, got, tt.want)
			}
		})
	}
}

func TestParseExtensionsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header string
		want   string // in the error
	}{
		{"trailing semicolon", "permessage-deflate;", "expected a parameter name, found the end"},
		{"leading semicolon", "; a", `expected an extension name, found ';'`},
		{"empty param", "a;;b", `expected a parameter name, found ';'`},
		{"missing value", "a; b=", "expected a parameter value"},
		{"missing value before comma", "a; b=, c", `expected a parameter value, found ','`},
		{"space inside name", "permessage deflate", `expected ';' or ','`},
		{"unterminated quote", `a; b="10`, "unterminated quoted string"},
		{"escape at end", `a; b="1\`, "unterminated quoted string"},
		{"quoted non-token", `a; b="1 0"`, `quoted value "1 0" is not a token`},
		{"empty quoted", `a; b=""`, `quoted value "" is not a token`},
		{"separator in name", "a/b", `expected ';' or ','`},
		{"value with slash", "a; b=1/2", `expected ';' or ','`},
		{"control character", "a;\x01", "expected a parameter name"},
		{"non-ASCII", "permessage-deflaté", `expected ';' or ','`},
		{"garbage after quote", `a; b="1"x`, `expected ';' or ','`},
		{"equals without name", "a; =1", "expected a parameter name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseExtensions([]string{"ok", tt.header})
			if err == nil {
				t.Fatalf("parseExtensions(%q) = %#v, want an error", tt.header, got)
			}
			msg := err.Error()
			for _, want := range []string{"websocket: ", tt.want, fmt.Sprintf("%q", tt.header)} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not contain %q", msg, want)
				}
			}
		})
	}
}

func TestFormatExtension(t *testing.T) {
	t.Parallel()
	tests := []struct {
		e    extensionOffer
		want string
	}{
		{mkExt("permessage-deflate"), "permessage-deflate"},
		{mkExt("permessage-deflate", mkFlag("client_max_window_bits")), "permessage-deflate; client_max_window_bits"},
		{mkExt("a", mkVal("b", "1"), mkFlag("c")), "a; b=1; c"},
		{mkExt("a", mkVal("b", "x y")), `a; b="x y"`},
		{mkExt("a", mkVal("b", `q"\`)), `a; b="q\"\\"`},
	}
	for _, tt := range tests {
		if got := formatExtension(tt.e); got != tt.want {
			t.Errorf("formatExtension(%#v) = %q, want %q", tt.e, got, tt.want)
		}
	}
	// Token values round-trip through the parser.
	e := mkExt("permessage-deflate", mkFlag("server_no_context_takeover"), mkVal("client_max_window_bits", "12"))
	got, err := parseExtensions([]string{formatExtension(e)})
	if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], e) {
		t.Fatalf("round trip of %#v: got %#v, %v", e, got, err)
	}
}
