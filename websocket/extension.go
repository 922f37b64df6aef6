package websocket

import (
	"fmt"
	"strings"
)

// This file parses and formats the Sec-WebSocket-Extensions header
// (RFC 6455 §9.1):
//
//	Sec-WebSocket-Extensions = extension-list
//	extension-list  = 1#extension
//	extension       = extension-token *( ";" extension-param )
//	extension-token = token
//	extension-param = token [ "=" (token | quoted-string) ]
//
// with the list rules of RFC 7230 §7 (optional whitespace around the
// separators, empty list elements ignored) and the rule of RFC 6455 §9.1
// that a quoted-string value must be a token once unescaped. Several header
// lines are one list, in order.

// extensionOffer is one element of an extension list: an extension name with
// its parameters, in the order they were sent. The same type serves offers
// (client) and responses (server).
type extensionOffer struct {
	name   string
	params []extensionParam
}

// extensionParam is one extension parameter. hasValue distinguishes
// "client_max_window_bits" from "client_max_window_bits=15".
type extensionParam struct {
	name, value string
	hasValue    bool
}

// parseExtensions parses every Sec-WebSocket-Extensions header line as one
// list. It is strict: anything that is not a token where a token belongs, an
// unterminated quoted string, or a quoted value that is not a token is an
// error that quotes the offending header line and says where it went wrong.
// Empty list elements ("a, , b") and empty header lines are ignored, as
// RFC 7230 §7 requires.
func parseExtensions(headerValues []string) ([]extensionOffer, error) {
	var out []extensionOffer
	for _, h := range headerValues {
		p := extParser{s: h}
		list, err := p.list()
		if err != nil {
			return nil, fmt.Errorf("websocket: malformed Sec-WebSocket-Extensions header %q: %s at byte %d; expected a comma-separated list of 'name; param; param=value' elements (RFC 6455 §9.1)", h, err, p.pos)
		}
		out = append(out, list...)
	}
	return out, nil
}

// extParser is a cursor over one header line.
type extParser struct {
	s   string
	pos int
}

// extSyntaxError is what extParser reports; parseExtensions adds the context.
type extSyntaxError string

func (e extSyntaxError) Error() string { return string(e) }

func (p *extParser) list() ([]extensionOffer, error) {
	var out []extensionOffer
	for {
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.peek() == ',' { // empty list element
			p.pos++
			continue
		}
		e, err := p.extension()
		if err != nil {
			return nil, err
		}
		out = append(out, e)
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.peek() != ',' {
			return nil, extSyntaxError(fmt.Sprintf("unexpected %q after extension %q", p.peek(), e.name))
		}
		p.pos++
	}
}

func (p *extParser) extension() (extensionOffer, error) {
	name := p.token()
	if name == "" {
		return extensionOffer{}, p.expected("an extension name")
	}
	e := extensionOffer{name: name}
	for {
		p.skipOWS()
		if p.eof() || p.peek() == ',' {
			return e, nil
		}
		if p.peek() != ';' {
			return extensionOffer{}, p.expected("';' or ','")
		}
		p.pos++
		p.skipOWS()
		pname := p.token()
		if pname == "" {
			return extensionOffer{}, p.expected("a parameter name")
		}
		param := extensionParam{name: pname}
		p.skipOWS()
		if !p.eof() && p.peek() == '=' {
			p.pos++
			p.skipOWS()
			v, err := p.value()
			if err != nil {
				return extensionOffer{}, err
			}
			param.value, param.hasValue = v, true
		}
		e.params = append(e.params, param)
	}
}

// value reads a token or a quoted string whose content is a token.
func (p *extParser) value() (string, error) {
	if p.eof() || p.peek() != '"' {
		v := p.token()
		if v == "" {
			return "", p.expected("a parameter value")
		}
		return v, nil
	}
	start := p.pos
	p.pos++ // opening quote
	var b strings.Builder
	for {
		if p.eof() {
			p.pos = start
			return "", extSyntaxError("unterminated quoted string")
		}
		c := p.s[p.pos]
		p.pos++
		switch {
		case c == '"':
			v := b.String()
			if v == "" || !extIsToken(v) {
				p.pos = start
				return "", extSyntaxError(fmt.Sprintf("quoted value %q is not a token", v))
			}
			return v, nil
		case c == '\\':
			if p.eof() {
				p.pos = start
				return "", extSyntaxError("unterminated quoted string")
			}
			b.WriteByte(p.s[p.pos])
			p.pos++
		default:
			b.WriteByte(c)
		}
	}
}

func (p *extParser) token() string {
	start := p.pos
	for p.pos < len(p.s) && extTokenChar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

func (p *extParser) expected(what string) error {
	if p.eof() {
		return extSyntaxError("expected " + what + ", found the end of the header")
	}
	return extSyntaxError(fmt.Sprintf("expected %s, found %q", what, p.peek()))
}

func (p *extParser) skipOWS() {
	for p.pos < len(p.s) && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
	}
}

func (p *extParser) eof() bool  { return p.pos >= len(p.s) }
func (p *extParser) peek() byte { return p.s[p.pos] }

// formatExtension renders e as one element of a Sec-WebSocket-Extensions
// list, e.g. "permessage-deflate; server_no_context_takeover;
// client_max_window_bits=12". Values that are not tokens are quoted, so the
// result always parses back to e.
func formatExtension(e extensionOffer) string {
	var b strings.Builder
	b.WriteString(e.name)
	for _, p := range e.params {
		b.WriteString("; ")
		b.WriteString(p.name)
		if p.hasValue {
			b.WriteByte('=')
			if extIsToken(p.value) {
				b.WriteString(p.value)
			} else {
				b.WriteString(extQuote(p.value))
			}
		}
	}
	return b.String()
}

// extQuote renders s as an RFC 7230 quoted-string.
func extQuote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// extIsToken reports whether s is a non-empty RFC 7230 token.
func extIsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !extTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// extTokenChar reports whether c is an RFC 7230 tchar:
// "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" /
// "`" / "|" / "~" / DIGIT / ALPHA.
func extTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
