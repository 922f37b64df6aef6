package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

// probeOptions holds the flags of "ebb probe".
type probeOptions struct {
	connectOptions
	noCompress bool
	timeout    time.Duration
	listen     time.Duration
}

func newProbeCmd(e *env) *cobra.Command {
	var o probeOptions
	cmd := &cobra.Command{
		Use:   "probe URL",
		Short: "Report on a server's WebSocket handshake: status, headers, extensions, and whether required ones would end in 1010",
		Long: `Probe performs one WebSocket handshake with URL and reports what the
server answered: the HTTP status and the headers that matter, the negotiated
subprotocol, each extension offered against what was accepted (with its
parameters), and how long the connection, TLS and upgrade took.

It ends with a verdict. With --require EXT, it says whether a client that
requires EXT would connect or close with 1010 Mandatory Extension, and why;
probe itself never sends 1010 (it closes with 1000). It also reports a
refusal: an HTTP 503/429 with Retry-After, or an upgrade followed at once by a
Close frame such as 1013 Try Again Later with its retry hint.

Probe offers permessage-deflate unless --no-compress. It works against any
WebSocket server. The exit status is 0 when the handshake succeeded and
every required extension was accepted, 1 otherwise.`,
		Example: `  ebb probe ws://localhost:8080/echo
  ebb probe --require permessage-deflate wss://example.com/socket
  ebb probe --json ws://localhost:8080/echo`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("want exactly one URL, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkURL(args[0]); err != nil {
				return err
			}
			if o.timeout <= 0 {
				return usagef("probe: --timeout must be positive")
			}
			return probe(cmd.Context(), e, args[0], &o)
		},
	}
	f := cmd.Flags()
	o.addHandshakeFlags(f)
	f.StringArrayVar(&o.require, "require", nil, "extension a client requires: the verdict says whether it would end in 1010 (repeatable)")
	f.BoolVar(&o.noCompress, "no-compress", false, "do not offer permessage-deflate")
	f.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "bound on the whole handshake")
	f.DurationVar(&o.listen, "listen", 300*time.Millisecond, "after the upgrade, how long to wait for an immediate Close frame (a refusal such as 1013)")
	return cmd
}

// probeReport is what probe found, also its --json form.
type probeReport struct {
	URL             string            `json:"url"`
	RemoteAddr      string            `json:"remote_addr,omitempty"`
	ConnectMillis   float64           `json:"connect_ms"`
	TLSMillis       float64           `json:"tls_ms,omitempty"`
	TLS             string            `json:"tls,omitempty"`
	HandshakeMillis float64           `json:"handshake_ms"`
	Status          int               `json:"status"`
	StatusText      string            `json:"status_text"`
	Headers         map[string]string `json:"headers"`
	RetryAfter      string            `json:"retry_after,omitempty"`
	Body            string            `json:"body,omitempty"`
	Subprotocol     string            `json:"subprotocol"`
	Offered         string            `json:"offered_extensions"`
	Accepted        string            `json:"accepted_extensions"`
	Extensions      []probeExtension  `json:"extensions"`
	ImmediateClose  *probeClose       `json:"immediate_close,omitempty"`
	Required        []probeVerdict    `json:"required,omitempty"`
	Verdict         string            `json:"verdict"`
	OK              bool              `json:"ok"`
	Error           string            `json:"error,omitempty"`
}

type probeExtension struct {
	Name     string            `json:"name"`
	Offered  map[string]string `json:"offered"`
	Accepted map[string]string `json:"accepted,omitempty"`
	Status   string            `json:"status"` // accepted, declined
}

type probeClose struct {
	Code   int     `json:"code"`
	Name   string  `json:"name"`
	Reason string  `json:"reason"`
	Hint   float64 `json:"retry_after_seconds,omitempty"`
	Fix    string  `json:"fix"`
}

type probeVerdict struct {
	Extension string `json:"extension"`
	Would1010 bool   `json:"would_close_1010"`
	Why       string `json:"why"`
}

func probe(ctx context.Context, e *env, rawURL string, o *probeOptions) error {
	d, err := o.dialOptions()
	if err != nil {
		return err
	}
	reqs := d.Require
	d.Require = nil // probe predicts 1010; it never sends it
	if o.noCompress {
		if len(reqs) > 0 {
			return usagef("probe: --require permessage-deflate needs the offer; drop --no-compress")
		}
		d.Compression = nil
	} else if d.Compression == nil {
		d.Compression = &websocket.CompressionOptions{}
	}
	rep := &probeReport{URL: rawURL, Headers: map[string]string{}, Offered: websocket.OfferFor(d.Compression, reqs)}

	var dialStart, connected, tlsDone time.Time
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dialStart = time.Now()
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		connected = time.Now()
		if err == nil {
			rep.RemoteAddr = c.RemoteAddr().String()
		}
		return c, err
	}
	if strings.HasPrefix(rawURL, "wss://") {
		if d.TLSConfig == nil {
			d.TLSConfig = &tls.Config{}
		}
		d.TLSConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			tlsDone = time.Now()
			rep.TLS = fmt.Sprintf("%s, %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
			if len(cs.PeerCertificates) > 0 {
				cert := cs.PeerCertificates[0]
				rep.TLS += fmt.Sprintf(", certificate %q valid until %s", cert.Subject.CommonName, cert.NotAfter.Format("2006-01-02"))
			}
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	start := time.Now()
	c, resp, err := websocket.Dial(ctx, rawURL, d)
	done := time.Now()
	if !connected.IsZero() {
		rep.ConnectMillis = millis(connected.Sub(dialStart))
		rep.HandshakeMillis = millis(done.Sub(start))
	}
	if !tlsDone.IsZero() {
		rep.TLSMillis = millis(tlsDone.Sub(connected))
	}
	if resp != nil {
		rep.Status = resp.StatusCode
		rep.StatusText = http.StatusText(resp.StatusCode)
		for _, h := range []string{"Upgrade", "Connection", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Server", "Retry-After", "Sec-WebSocket-Version", "Via"} {
			if v := resp.Header.Values(h); len(v) > 0 {
				rep.Headers[h] = strings.Join(v, ", ")
			}
		}
		rep.RetryAfter = resp.Header.Get("Retry-After")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			rep.Body = strings.TrimSpace(string(b))
		}
		rep.Accepted = strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", ")
	}
	rep.Extensions = compareExtensions(rep.Offered, rep.Accepted)
	var refused *websocket.CloseError
	switch {
	case errors.As(err, &refused) && refused.Remote:
		// Upgraded, then closed at once: Dial reports the server's close.
		rep.ImmediateClose = describeClose(refused)
		rep.Verdict = immediateVerdict(rep.ImmediateClose)
	case err != nil:
		rep.Error = err.Error()
		rep.Verdict = refusalVerdict(rep, err)
	default:
		rep.Subprotocol = c.Subprotocol()
		rep.ImmediateClose = listenForClose(c, o.listen)
		rep.Verdict, rep.OK = "handshake succeeded", true
		if ic := rep.ImmediateClose; ic != nil {
			rep.OK = false
			rep.Verdict = immediateVerdict(ic)
		}
		if len(reqs) > 0 && resp != nil {
			missing, cerr := websocket.CheckRequirements(d.Compression, reqs, resp.Header.Values("Sec-WebSocket-Extensions"))
			for _, r := range reqs {
				v := probeVerdict{Extension: r.String(), Why: "accepted by the server"}
				for _, m := range missing {
					if strings.HasPrefix(m, r.String()) {
						v.Would1010, v.Why = true, m
					}
				}
				if cerr != nil {
					v.Would1010, v.Why = true, cerr.Error()
				}
				if v.Would1010 {
					rep.OK = false
					rep.Verdict = "handshake succeeded, but a client requiring " + r.String() + " would close with 1010 Mandatory Extension"
				}
				rep.Required = append(rep.Required, v)
			}
		}
		c.Close(closecode.NormalClosure, "probe done")
	}
	if o.asJSON {
		if err := writeJSON(e.stdout, rep); err != nil {
			return err
		}
	} else {
		printProbe(e.stdout, rep)
	}
	if !rep.OK {
		return &exitError{code: exitFailure}
	}
	return nil
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// listenForClose reads briefly after the upgrade: a server that refuses
// after upgrading (1013 from shed, for example) closes at once.
func listenForClose(c *websocket.Conn, d time.Duration) *probeClose {
	if d <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_, _, err := c.Read(ctx)
	var ce *websocket.CloseError
	if err == nil || !errors.As(err, &ce) || !ce.Remote {
		return nil
	}
	return describeClose(ce)
}

func describeClose(ce *websocket.CloseError) *probeClose {
	info := closecode.Lookup(ce.Code)
	pc := &probeClose{Code: int(ce.Code), Name: info.Name, Reason: ce.Reason, Fix: info.Fix}
	if h, ok := closecode.ParseRetryHint(ce.Reason); ok {
		pc.Hint = h.Seconds()
	}
	return pc
}

func immediateVerdict(ic *probeClose) string {
	v := fmt.Sprintf("upgraded, then closed at once with %d %s", ic.Code, ic.Name)
	if ic.Hint > 0 {
		v += fmt.Sprintf(": retry after %.1f s", ic.Hint)
	}
	return v
}

// refusalVerdict explains a failed handshake.
func refusalVerdict(rep *probeReport, err error) string {
	var he *websocket.HandshakeError
	switch {
	case errors.As(err, &he) && (he.StatusCode == http.StatusServiceUnavailable || he.StatusCode == http.StatusTooManyRequests):
		v := fmt.Sprintf("refused with HTTP %d before the upgrade: the server is overloaded or throttling", he.StatusCode)
		if he.RetryAfter > 0 {
			v += fmt.Sprintf(" (Retry-After %s)", he.RetryAfter)
		}
		return v + "; a browser sees only 1006 here"
	case errors.As(err, &he) && he.StatusCode != 0:
		return fmt.Sprintf("not upgraded: HTTP %d %s", he.StatusCode, http.StatusText(he.StatusCode))
	case errors.As(err, &he):
		return "upgraded, but the response breaks RFC 6455: " + he.Reason
	}
	return "no handshake: " + err.Error()
}

// compareExtensions lists each offered extension with its parameters,
// against what the server accepted.
func compareExtensions(offered, accepted string) []probeExtension {
	var out []probeExtension
	offers, _ := websocket.ParseExtensions([]string{offered})
	answers, _ := websocket.ParseExtensions([]string{accepted})
	for _, off := range offers {
		pe := probeExtension{Name: off.Name, Offered: params(off), Status: "declined"}
		for _, a := range answers {
			if a.Name == off.Name {
				pe.Accepted, pe.Status = params(a), "accepted"
			}
		}
		out = append(out, pe)
	}
	for _, a := range answers {
		known := false
		for _, off := range offers {
			known = known || off.Name == a.Name
		}
		if !known {
			out = append(out, probeExtension{Name: a.Name, Accepted: params(a), Status: "answered without an offer (protocol error)"})
		}
	}
	return out
}

func params(e websocket.Extension) map[string]string {
	m := map[string]string{}
	for _, p := range e.Params {
		m[p.Name] = p.Value
	}
	return m
}

func printProbe(w io.Writer, r *probeReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "URL\t%s\n", r.URL)
	if r.RemoteAddr != "" {
		fmt.Fprintf(tw, "address\t%s\n", r.RemoteAddr)
	}
	fmt.Fprintf(tw, "timing\tconnect %.1f ms", r.ConnectMillis)
	if r.TLSMillis > 0 {
		fmt.Fprintf(tw, ", TLS %.1f ms", r.TLSMillis)
	}
	fmt.Fprintf(tw, ", whole handshake %.1f ms\n", r.HandshakeMillis)
	if r.TLS != "" {
		fmt.Fprintf(tw, "TLS\t%s\n", r.TLS)
	}
	if r.Status != 0 {
		fmt.Fprintf(tw, "status\t%d %s\n", r.Status, r.StatusText)
	}
	for _, h := range []string{"Upgrade", "Connection", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Retry-After", "Server", "Via", "Sec-WebSocket-Version"} {
		if v, ok := r.Headers[h]; ok {
			fmt.Fprintf(tw, "  %s\t%s\n", h, v)
		}
	}
	if r.Body != "" {
		fmt.Fprintf(tw, "body\t%s\n", r.Body)
	}
	if r.Status == http.StatusSwitchingProtocols {
		fmt.Fprintf(tw, "subprotocol\t%s\n", orNone(r.Subprotocol))
	}
	fmt.Fprintf(tw, "extensions\toffered %s\n", orNone(r.Offered))
	fmt.Fprintf(tw, "\tanswered %s\n", orNone(r.Accepted))
	for _, x := range r.Extensions {
		fmt.Fprintf(tw, "  %s\t%s; offered %s", x.Name, x.Status, formatParams(x.Offered))
		if x.Accepted != nil {
			fmt.Fprintf(tw, ", accepted %s", formatParams(x.Accepted))
		}
		fmt.Fprintln(tw)
	}
	if ic := r.ImmediateClose; ic != nil {
		fmt.Fprintf(tw, "closed at once\t%d %s %q\n", ic.Code, ic.Name, ic.Reason)
		fmt.Fprintf(tw, "  fix\t%s\n", ic.Fix)
	}
	for _, v := range r.Required {
		if v.Would1010 {
			fmt.Fprintf(tw, "required\t%s: would close with 1010 Mandatory Extension: %s\n", v.Extension, v.Why)
		} else {
			fmt.Fprintf(tw, "required\t%s: ok, %s\n", v.Extension, v.Why)
		}
	}
	if r.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", r.Error)
	}
	fmt.Fprintf(tw, "verdict\t%s\n", r.Verdict)
	tw.Flush()
	for _, v := range r.Required {
		if v.Would1010 {
			fmt.Fprintf(w, "\nFix for 1010: %s\n", closecode.Lookup(closecode.MandatoryExtension).Fix)
			break
		}
	}
}

func formatParams(m map[string]string) string {
	if len(m) == 0 {
		return "(no parameters)"
	}
	var parts []string
	for k, v := range m {
		if v == "" {
			parts = append(parts, k)
		} else {
			parts = append(parts, k+"="+v)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}
