// Package probe performs one WebSocket handshake and reports what the
// server answered, the engine behind "ebb probe": the HTTP status and the
// headers that matter, the subprotocol, each extension offered against
// what was accepted, the timings, a refusal (HTTP 503/429 with
// Retry-After, or an upgrade followed at once by a Close frame such as
// 1013 with its retry hint), and whether a client requiring an extension
// would close with 1010 Mandatory Extension.
//
// Run returns a Report with WriteText and WriteJSON methods; it never
// prints to the process's standard streams, reads flags or exits. A probe
// costs one connection, closed with 1000 (never 1010) once it is done.
package probe

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/explain"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/websocket"
)

// DefaultListen is how long a probe waits after the upgrade for a Close
// frame that refuses the client (shed's 1013 comes at once, usually in the
// same read as the 101).
const DefaultListen = 300 * time.Millisecond

// Options configure a probe. The zero value offers permessage-deflate,
// requires nothing, gives the handshake handshake.DefaultTimeout (10 s)
// and listens DefaultListen for an immediate Close frame.
type Options struct {
	// Dial shapes the upgrade request: headers, subprotocols, TLS. Its
	// Compression is offered (the defaults when nil, unless NoCompress);
	// its Require is ignored: use Require. It is not modified.
	Dial *websocket.DialOptions
	// Require lists extensions a client requires: the report says whether
	// such a client would close with 1010. The probe itself never does.
	Require []websocket.Requirement
	// NoCompress offers no permessage-deflate. It cannot be combined with
	// Require.
	NoCompress bool
	// Timeout bounds the handshake; zero or negative means
	// handshake.DefaultTimeout.
	Timeout time.Duration
	// Listen is how long to wait after the upgrade for an immediate Close
	// frame; zero means DefaultListen, negative does not wait.
	Listen time.Duration
}

// Report is what a probe found; its JSON form is the --json output.
// Durations are milliseconds rounded to 0.1 ms (0 when no TCP connection
// was made); absent parts are omitted.
type Report struct {
	URL             string            `json:"url"`
	RemoteAddr      string            `json:"remote_addr,omitempty"`
	ConnectMillis   float64           `json:"connect_ms"`
	TLSMillis       float64           `json:"tls_ms,omitempty"`
	TLS             string            `json:"tls,omitempty"`
	HandshakeMillis float64           `json:"handshake_ms"`
	Status          int               `json:"status,omitempty"` // 0: no response at all
	StatusText      string            `json:"status_text,omitempty"`
	Headers         map[string]string `json:"headers,omitempty"`
	RetryAfter      string            `json:"retry_after,omitempty"`
	Body            string            `json:"body,omitempty"`
	Subprotocol     string            `json:"subprotocol,omitempty"`
	Offered         string            `json:"offered_extensions"`
	// Accepted and Extensions compare the offer with the answer; they are
	// set only when the server upgraded (a 101 response).
	Accepted       string      `json:"accepted_extensions,omitempty"`
	Extensions     []Extension `json:"extensions,omitempty"`
	ImmediateClose *Close      `json:"immediate_close,omitempty"`
	Required       []Verdict   `json:"required,omitempty"`
	Verdict        string      `json:"verdict"`
	OK             bool        `json:"ok"`
	Error          string      `json:"error,omitempty"`
}

// Extension is one offered (or answered) extension with its parameters.
type Extension struct {
	Name     string            `json:"name"`
	Offered  map[string]string `json:"offered,omitempty"`
	Accepted map[string]string `json:"accepted,omitempty"`
	// Status is "accepted", "declined" or "answered without an offer
	// (protocol error)".
	Status string `json:"status"`
}

// Close is a Close frame the server sent right after the upgrade.
type Close struct {
	Code        int      `json:"code"`
	Name        string   `json:"name"`
	Reason      string   `json:"reason"`
	RetryAfterS *float64 `json:"retry_after_s,omitempty"`
	Summary     string   `json:"summary"`
	Fix         string   `json:"fix"`
}

// Verdict says whether a client requiring Extension would close with 1010.
type Verdict struct {
	Extension string `json:"extension"`
	Would1010 bool   `json:"would_close_1010"`
	Why       string `json:"why"`
}

// Run probes url. It returns an error only for options that cannot work
// (Require with NoCompress); everything the server did, refusals and
// failures included, is in the Report, with OK false.
func Run(ctx context.Context, url string, opts *Options) (*Report, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.NoCompress && len(o.Require) > 0 {
		return nil, errors.New("requiring an extension needs the offer: permessage-deflate cannot be both required and not offered")
	}
	if o.Listen == 0 {
		o.Listen = DefaultListen
	}
	var d websocket.DialOptions
	if o.Dial != nil {
		d = *o.Dial
	}
	d.Require = nil // the probe predicts 1010; it never sends it
	if o.NoCompress {
		d.Compression = nil
	} else if d.Compression == nil {
		d.Compression = &websocket.CompressionOptions{}
	}
	rep := &Report{URL: url, Headers: map[string]string{}, Offered: websocket.OfferFor(d.Compression, o.Require)}

	// The hooks write the report while Dial runs; the lock keeps that
	// plain for the race detector whichever goroutine Dial runs them on.
	var mu sync.Mutex
	var dialStart, connected, tlsDone time.Time
	dial := d.NetDialContext
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		start := time.Now()
		c, err := dial(ctx, network, addr)
		mu.Lock()
		defer mu.Unlock()
		dialStart, connected = start, time.Now()
		if err == nil {
			rep.RemoteAddr = c.RemoteAddr().String()
		} else {
			connected = time.Time{}
		}
		return c, err
	}
	if strings.HasPrefix(strings.ToLower(url), "wss://") {
		if d.TLSConfig == nil {
			d.TLSConfig = &tls.Config{}
		} else {
			d.TLSConfig = d.TLSConfig.Clone()
		}
		d.TLSConfig.VerifyConnection = func(cs tls.ConnectionState) error {
			mu.Lock()
			defer mu.Unlock()
			tlsDone = time.Now()
			rep.TLS = fmt.Sprintf("%s, %s", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
			if len(cs.PeerCertificates) > 0 {
				cert := cs.PeerCertificates[0]
				rep.TLS += fmt.Sprintf(", certificate %q valid until %s", cert.Subject.CommonName, cert.NotAfter.Format("2006-01-02"))
			}
			return nil
		}
	}
	start := time.Now()
	c, resp, err := handshake.Dial(ctx, url, &d, o.Timeout)
	done := time.Now()
	mu.Lock()
	if !connected.IsZero() {
		rep.ConnectMillis = millis(connected.Sub(dialStart))
		rep.HandshakeMillis = millis(done.Sub(start))
	}
	if !tlsDone.IsZero() {
		rep.TLSMillis = millis(tlsDone.Sub(connected))
	}
	mu.Unlock()
	if resp != nil {
		rep.Status = resp.StatusCode
		rep.StatusText = http.StatusText(resp.StatusCode)
		for _, h := range reportedHeaders {
			if v := resp.Header.Values(h); len(v) > 0 {
				rep.Headers[h] = strings.Join(v, ", ")
			}
		}
		rep.RetryAfter = resp.Header.Get("Retry-After")
		if resp.StatusCode != http.StatusSwitchingProtocols {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			rep.Body = strings.TrimSpace(string(b))
		} else {
			rep.Subprotocol = resp.Header.Get("Sec-WebSocket-Protocol")
			rep.Accepted = strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", ")
			rep.Extensions = compareExtensions(rep.Offered, rep.Accepted)
		}
	}
	var refused *websocket.CloseError
	switch {
	case rep.upgraded() && errors.As(err, &refused) && refused.Remote:
		// Upgraded, then closed at once: Dial reports the server's close.
		rep.ImmediateClose = describeClose(refused)
		rep.Verdict = immediateVerdict(rep.ImmediateClose)
	case err != nil:
		rep.Error = handshake.Explain(err)
		rep.Verdict = failedVerdict(rep, err)
	default:
		rep.Subprotocol = c.Subprotocol()
		rep.ImmediateClose = listenForClose(c, o.Listen)
		rep.Verdict, rep.OK = "handshake succeeded", true
		if ic := rep.ImmediateClose; ic != nil {
			rep.OK = false
			rep.Verdict = immediateVerdict(ic)
		}
		if len(o.Require) > 0 {
			rep.checkRequired(d.Compression, o.Require, resp.Header.Values("Sec-WebSocket-Extensions"))
		}
		// The probe is done; how the close handshake went says nothing
		// more about the server's handshake.
		_ = c.Close(closecode.NormalClosure, "probe done")
	}
	return rep, nil
}

// upgraded reports whether the server answered 101 Switching Protocols.
func (rep *Report) upgraded() bool { return rep.Status == http.StatusSwitchingProtocols }

// reportedHeaders are the response headers a report shows, in this order.
var reportedHeaders = []string{"Upgrade", "Connection", "Sec-WebSocket-Accept", "Sec-WebSocket-Protocol", "Sec-WebSocket-Extensions", "Retry-After", "Server", "Via", "Sec-WebSocket-Version"}

// checkRequired predicts, for each required extension, whether a client
// requiring it would close with 1010.
func (rep *Report) checkRequired(comp *websocket.CompressionOptions, reqs []websocket.Requirement, answered []string) {
	missing, cerr := websocket.CheckRequirements(comp, reqs, answered)
	for _, r := range reqs {
		v := Verdict{Extension: r.String(), Why: "accepted by the server"}
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

// millis returns d in milliseconds rounded to 0.1 ms.
func millis(d time.Duration) float64 { return math.Round(float64(d)/1e5) / 10 }

// listenForClose reads briefly after the upgrade: a server that refuses
// after upgrading (1013 from shed, for example) closes at once.
func listenForClose(c *websocket.Conn, d time.Duration) *Close {
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

func describeClose(ce *websocket.CloseError) *Close {
	info := closecode.Lookup(ce.Code)
	pc := &Close{Code: int(ce.Code), Name: info.Name, Reason: ce.Reason, Summary: explain.Summary(ce.Code), Fix: info.Fix}
	if h, ok := closecode.ParseRetryHint(ce.Reason); ok {
		s := math.Round(h.Seconds()*1000) / 1000
		pc.RetryAfterS = &s
	}
	return pc
}

func immediateVerdict(ic *Close) string {
	v := fmt.Sprintf("upgraded, then closed at once with %d %s", ic.Code, ic.Name)
	if ic.RetryAfterS != nil {
		v += fmt.Sprintf(": retry after %v", time.Duration(*ic.RetryAfterS*float64(time.Second)).Round(time.Millisecond))
	}
	return v
}

// failedVerdict says what happened to a handshake that gave no connection.
// Without a 101 there is nothing to say about extensions.
func failedVerdict(rep *Report, err error) string {
	var he *websocket.HandshakeError
	switch {
	case errors.As(err, &he) && (he.StatusCode == http.StatusServiceUnavailable || he.StatusCode == http.StatusTooManyRequests):
		v := fmt.Sprintf("refused with HTTP %d before the upgrade: the server is overloaded or throttling", he.StatusCode)
		if he.RetryAfter > 0 {
			v += fmt.Sprintf(" (Retry-After %v)", he.RetryAfter)
		}
		return v + "; a browser sees only 1006 here"
	case errors.As(err, &he) && he.StatusCode != 0 && he.StatusCode != http.StatusSwitchingProtocols:
		return fmt.Sprintf("not upgraded: HTTP %d %s", he.StatusCode, http.StatusText(he.StatusCode))
	case rep.upgraded():
		return "upgraded, but the handshake failed: " + handshake.Explain(err)
	}
	return "no handshake response: " + handshake.Explain(err)
}

// compareExtensions lists each offered extension with its parameters,
// against what the server accepted.
func compareExtensions(offered, accepted string) []Extension {
	var out []Extension
	offers, _ := websocket.ParseExtensions([]string{offered})
	answers, _ := websocket.ParseExtensions([]string{accepted})
	for _, off := range offers {
		pe := Extension{Name: off.Name, Offered: params(off), Status: "declined"}
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
			out = append(out, Extension{Name: a.Name, Accepted: params(a), Status: "answered without an offer (protocol error)"})
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

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// WriteJSON writes the report as indented JSON, without HTML escaping.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteText writes the report for people, one aligned field per line,
// ending with the verdict.
func (rep *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "URL\t%s\n", rep.URL)
	if rep.RemoteAddr != "" {
		fmt.Fprintf(tw, "address\t%s\n", rep.RemoteAddr)
	}
	if rep.RemoteAddr != "" {
		fmt.Fprintf(tw, "timing\tconnect %.1f ms", rep.ConnectMillis)
		if rep.TLSMillis > 0 {
			fmt.Fprintf(tw, ", TLS %.1f ms", rep.TLSMillis)
		}
		fmt.Fprintf(tw, ", whole handshake %.1f ms\n", rep.HandshakeMillis)
	}
	if rep.TLS != "" {
		fmt.Fprintf(tw, "TLS\t%s\n", rep.TLS)
	}
	if rep.Status != 0 {
		fmt.Fprintf(tw, "status\t%d %s\n", rep.Status, rep.StatusText)
	}
	for _, h := range reportedHeaders {
		if v, ok := rep.Headers[h]; ok {
			fmt.Fprintf(tw, "  %s\t%s\n", h, v)
		}
	}
	if rep.Body != "" {
		fmt.Fprintf(tw, "body\t%s\n", rep.Body)
	}
	if rep.upgraded() {
		fmt.Fprintf(tw, "subprotocol\t%s\n", orNone(rep.Subprotocol))
		fmt.Fprintf(tw, "extensions\toffered %s\n", orNone(rep.Offered))
		fmt.Fprintf(tw, "\tanswered %s\n", orNone(rep.Accepted))
		for _, x := range rep.Extensions {
			fmt.Fprintf(tw, "  %s\t%s", x.Name, x.Status)
			if x.Offered != nil {
				fmt.Fprintf(tw, "; offered %s", formatParams(x.Offered))
			}
			if x.Accepted != nil {
				fmt.Fprintf(tw, ", accepted %s", formatParams(x.Accepted))
			}
			fmt.Fprintln(tw)
		}
	} else {
		// No upgrade: the offer went out, nothing answered it.
		fmt.Fprintf(tw, "extensions\toffered %s (no upgrade, so no answer)\n", orNone(rep.Offered))
	}
	if ic := rep.ImmediateClose; ic != nil {
		fmt.Fprintf(tw, "closed at once\t%d %s %q\n", ic.Code, ic.Name, ic.Reason)
		fmt.Fprintf(tw, "  means\t%s\n", ic.Summary)
		fmt.Fprintf(tw, "  fix\t%s\n", ic.Fix)
	}
	for _, v := range rep.Required {
		if v.Would1010 {
			fmt.Fprintf(tw, "required\t%s: would close with 1010 Mandatory Extension: %s\n", v.Extension, v.Why)
		} else {
			fmt.Fprintf(tw, "required\t%s: ok, %s\n", v.Extension, v.Why)
		}
	}
	if rep.Error != "" && !strings.Contains(rep.Verdict, rep.Error) {
		fmt.Fprintf(tw, "error\t%s\n", rep.Error)
	}
	fmt.Fprintf(tw, "verdict\t%s\n", rep.Verdict)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, v := range rep.Required {
		if v.Would1010 {
			_, err := fmt.Fprintf(w, "\nFix for 1010: %s\n", closecode.Lookup(closecode.MandatoryExtension).Fix)
			return err
		}
	}
	return nil
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
