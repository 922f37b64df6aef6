package main

import (
	"net/url"
	"strings"
)

// wsURL accepts what people type for a WebSocket URL: ws:// and wss:// as
// they are, http:// and https:// as ws:// and wss://, and a URL without
// scheme ("localhost:8080/echo") as ws://. note, when not empty, says what
// was assumed, for one line on stderr. Any other scheme, or no host, is a
// usage error that names what is accepted. Commands that take a WebSocket
// URL (connect, probe, and bench if it wants) share it so that they accept
// the same.
func wsURL(raw string) (u, note string, err error) {
	u = raw
	i := strings.Index(raw, "://")
	if i < 0 {
		u = "ws://" + strings.TrimPrefix(raw, "//")
	}
	p, perr := url.Parse(u)
	if perr != nil {
		if ue, ok := perr.(*url.Error); ok {
			perr = ue.Err // without url.Error's repetition of the URL
		}
		return "", "", usagef("%q is not a URL: %v", raw, perr)
	}
	switch p.Scheme {
	case "ws", "wss":
	case "http", "https":
		u = "ws" + strings.TrimPrefix(p.Scheme, "http") + raw[i:]
	default:
		return "", "", usagef("URL %q has scheme %q: want ws:// or wss:// (http:// and https:// are taken as ws:// and wss://, a URL without scheme as ws://)", raw, p.Scheme)
	}
	if p.Host == "" {
		return "", "", usagef("URL %q has no host: want ws://host[:port]/path", raw)
	}
	switch {
	case i < 0:
		note = "no scheme in " + raw + ": using " + u
	case u != raw:
		note = "using " + u + " for " + raw
	}
	return u, note, nil
}
