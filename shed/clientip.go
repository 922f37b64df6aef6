package shed

import (
	"net/http"
	"net/netip"
	"strings"
)

// clientIP returns the address the per-IP limit counts r under: the direct
// peer, or, when the peer is a trusted proxy, the rightmost untrusted
// X-Forwarded-For entry. IPv4-mapped IPv6 addresses count as IPv4, and
// IPv6 addresses are cut to Options.IPv6PrefixBits when set.
func (s *Shedder) clientIP(r *http.Request) netip.Addr {
	addr := parseHostPort(r.RemoteAddr)
	if len(s.trust) > 0 && s.trusted(addr) {
		addr = s.forwardedFor(r.Header["X-Forwarded-For"], addr)
	}
	return s.group(addr)
}

// forwardedFor walks X-Forwarded-For from the right (the entry added by the
// nearest proxy) and returns the first address that is not a trusted
// proxy. Entries to its left were written by the client and prove nothing.
// An unparsable entry stops the walk: the last address known good is used.
func (s *Shedder) forwardedFor(lines []string, peer netip.Addr) netip.Addr {
	addr := peer
	for i := len(lines) - 1; i >= 0; i-- {
		line := lines[i]
		for line != "" {
			var entry string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				entry, line = line[j+1:], line[:j]
			} else {
				entry, line = line, ""
			}
			a := parseHostPort(strings.TrimSpace(entry))
			if !a.IsValid() {
				return addr
			}
			addr = a
			if !s.trusted(a) {
				return a
			}
		}
	}
	return addr
}

func (s *Shedder) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range s.trust {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *Shedder) group(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if bits := s.opts.IPv6PrefixBits; bits > 0 && a.Is6() {
		if p, err := a.Prefix(bits); err == nil {
			return p.Addr()
		}
	}
	return a
}

// parseHostPort reads "ip:port", "[ip]:port" or a bare IP. It returns the
// zero Addr for anything else; all such peers share one per-IP count.
func parseHostPort(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("")
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.WithZone("")
	}
	return netip.Addr{}
}
