package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/session"
	"github.com/ebb-ws/ebb/reconnect"
	"github.com/ebb-ws/ebb/websocket"
)

// handshakeFlags are the flags that shape the upgrade request, shared by
// connect and probe.
type handshakeFlags struct {
	headers     []string
	subprotocol []string
	origin      string
	insecure    bool
	require     []string
	timeout     time.Duration
}

// add registers the flags both commands describe the same way.
func (h *handshakeFlags) add(f *pflag.FlagSet) {
	f.StringArrayVarP(&h.headers, "header", "H", nil, `extra request header "Name: value" (repeatable)`)
	f.StringArrayVar(&h.subprotocol, "subprotocol", nil, "subprotocol to offer, in order of preference (repeatable)")
	f.StringVar(&h.origin, "origin", "", "Origin header to send")
	f.BoolVar(&h.insecure, "insecure", false, "skip TLS certificate verification (testing only)")
}

// dialOptions turns the flags into websocket.DialOptions, the required
// extensions included; compress offers permessage-deflate.
func (h *handshakeFlags) dialOptions(compress bool) (*websocket.DialOptions, error) {
	if h.timeout <= 0 {
		return nil, usagef("--timeout %v: want a positive duration such as 10s", h.timeout)
	}
	hdr := http.Header{}
	for _, kv := range h.headers {
		name, value, ok := strings.Cut(kv, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, usagef(`header %q is not of the form "Name: value"`, kv)
		}
		hdr.Add(name, strings.TrimSpace(value))
	}
	if h.origin != "" {
		hdr.Set("Origin", h.origin)
	}
	d := &websocket.DialOptions{Header: hdr, Subprotocols: h.subprotocol}
	if h.insecure {
		d.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	}
	for _, name := range h.require {
		name = strings.TrimSpace(name)
		if name == "" {
			return nil, usagef("--require needs an extension name such as permessage-deflate")
		}
		if !strings.EqualFold(name, "permessage-deflate") {
			return nil, usagef("--require %q: ebb supports only the permessage-deflate extension", name)
		}
		compress = true
		d.Require = append(d.Require, websocket.Requirement{Extension: strings.ToLower(name)})
	}
	if compress {
		d.Compression = &websocket.CompressionOptions{}
	}
	return d, nil
}

// oneURL is the argument check of connect and probe.
func oneURL(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usagef("want exactly one URL, got %d arguments", len(args))
	}
	return nil
}

// connectOptions holds the flags of "ebb connect".
type connectOptions struct {
	handshakeFlags
	compress bool
	asJSON   bool
	linger   time.Duration

	// --reconnect and the policy flags that only apply with it.
	reconnect   bool
	maxAttempts int
	maxElapsed  time.Duration
	persistent  bool
	base        time.Duration
	cap         time.Duration
}

func newConnectCmd(e *env) *cobra.Command {
	var o connectOptions
	cmd := &cobra.Command{
		Use:   "connect URL",
		Short: "Connect to a WebSocket server and exchange messages (like wscat)",
		Long: `Connect opens a WebSocket connection to URL: ws:// or wss://; http:// and
https:// are taken as ws:// and wss://, and a URL without scheme
(localhost:8080/echo) as ws://.

Each line read from standard input is sent as a text message. Each message
received is printed to standard output: text as it is, binary as
"[binary N B] " followed by the payload in base64. When standard input ends,
connect keeps printing what arrives until the connection has been quiet
for --linger (answers to the last lines are usually in flight), then sends
Close 1000 and waits for the server's reply. When standard output is slow,
connect stops reading from the server (at most 4 MiB wait to be printed)
rather than buffer what it sends.

When the connection ends, the close code, who sent it, the reason, the
server's retry-after= hint and what the code means and how to fix it (from
ebb's close-code registry) are printed to standard error; a server that
upgrades only to close at once (1013 Try Again Later from an overloaded ebb
server) is reported the same way. The exit status is 0 when the connection
ended with 1000 Normal Closure or 1001 Going Away, 1 otherwise (a handshake
that fails or does not finish within --timeout too), 130 after Ctrl-C
(which closes with 1001).

--require EXT makes the extension mandatory: if the server does not accept
it, connect closes with 1010 Mandatory Extension and says what was offered
and what the server answered. --require permessage-deflate implies --compress.

With --json, every event (open, message, closed, error) is printed to
standard output as one JSON object per line; a closed event carries code,
name, by (server, client or nobody), reason and retry_after_s when the
server gave a hint.

--reconnect keeps the link up with ebb's reconnect policy: after a close
whose code says retrying can help (1001, 1006, 1011, 1012, 1013, 1014, an
HTTP 429 or 5xx answer), connect waits min(--cap, --base·2^n), jittered,
and never less than the server's retry-after= hint, then connects again.
A code that retrying cannot fix (1002, 1003, 1007–1010, most 4xx answers)
ends it at once; 1000 ends it too unless --persistent is set. Every state
change is printed to standard error with its reason, e.g.
  closed 1013 Try Again Later (retry-after=4.2) — retrying in 4.6s, attempt 3
--max-attempts and --max-elapsed bound the retries; --timeout bounds each
attempt. Lines read while the link is down are queued (up to 256 messages
or 1 MiB) and sent in order once it is up again; at the end of input
connect waits for the queue to go out before it lingers and closes. The
exit status follows the last close code, as without --reconnect. With
--json the state changes are JSON lines too (connecting, open, closed,
waiting, stopped).`,
		Example: `  echo hello | ebb connect ws://localhost:8080/echo
  ebb connect localhost:8080/echo
  ebb connect -H "Authorization: Bearer $TOKEN" --subprotocol chat.v1 wss://example.com/ws
  ebb connect --require permessage-deflate ws://localhost:8080/echo
  ebb connect --json ws://localhost:8080/echo < messages.txt
  ebb connect --reconnect --max-attempts 10 ws://localhost:8080/echo`,
		Args: oneURL,
		RunE: func(cmd *cobra.Command, args []string) error {
			u, note, err := wsURL(args[0])
			if err != nil {
				return err
			}
			dopts, err := o.dialOptions(o.compress)
			if err != nil {
				return err
			}
			if err := o.checkFlags(cmd.Flags().Changed); err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintf(e.stderr, "%s: %s\n", cmd.CommandPath(), note)
			}
			so := &session.Options{Dial: dopts, HandshakeTimeout: o.timeout, Linger: o.linger, JSON: o.asJSON}
			if o.linger == 0 {
				so.Linger = -1 // close at once
			}
			if o.reconnect {
				p := o.policy()
				so.Reconnect = &p
			}
			res := session.Run(cmd.Context(), u, e.stdin, e.stdout, e.stderr, so)
			switch {
			case res.Interrupted:
				return context.Canceled
			case res.Err != nil && !o.asJSON:
				return res.Err // one line; --json reported it as an event
			case !res.OK():
				return &exitError{code: exitFailure}
			}
			return nil
		},
	}
	f := cmd.Flags()
	o.add(f)
	f.DurationVar(&o.timeout, "timeout", handshake.DefaultTimeout, "bound on the handshake (on each attempt with --reconnect): a server that accepts TCP and never answers ends connect with exit status 1")
	f.BoolVar(&o.compress, "compress", false, "offer permessage-deflate compression")
	f.StringArrayVar(&o.require, "require", nil, "extension the server must accept, or close with 1010 (repeatable)")
	f.BoolVar(&o.asJSON, "json", false, "print events as JSON lines on stdout")
	f.DurationVar(&o.linger, "linger", session.DefaultLinger, "after stdin ends, keep printing messages until none arrived for this long (at most 10s), then close; 0 closes at once")
	f.BoolVar(&o.reconnect, "reconnect", false, "reconnect by ebb's policy (close code, backoff, server hint) instead of ending with the first connection")
	f.IntVar(&o.maxAttempts, "max-attempts", 0, "with --reconnect: give up after this many reconnect attempts in a row; 0 means no limit")
	f.DurationVar(&o.maxElapsed, "max-elapsed", 0, "with --reconnect: give up when the next attempt would start this long after the link was last stable; 0 means no limit")
	f.BoolVar(&o.persistent, "persistent", false, "with --reconnect: reconnect after 1000 Normal Closure too")
	f.DurationVar(&o.base, "base", reconnect.DefaultBase, "with --reconnect: nominal delay before the first reconnect attempt")
	f.DurationVar(&o.cap, "cap", reconnect.DefaultCap, "with --reconnect: longest nominal delay between attempts")
	return cmd
}

// reconnectFlags are the flags that mean nothing without --reconnect.
var reconnectFlags = []string{"max-attempts", "max-elapsed", "persistent", "base", "cap"}

// checkFlags rejects a negative --linger, policy flags given without
// --reconnect and values the policy cannot use. changed reports whether a
// flag was set on the command line.
func (o *connectOptions) checkFlags(changed func(name string) bool) error {
	if o.linger < 0 {
		return usagef("--linger %v: want 0 (close at once) or a positive duration such as 500ms", o.linger)
	}
	if !o.reconnect {
		for _, name := range reconnectFlags {
			if changed(name) {
				return usagef("--%s applies only with --reconnect: add --reconnect or drop --%s", name, name)
			}
		}
		return nil
	}
	switch {
	case o.maxAttempts < 0:
		return usagef("--max-attempts %d: want 0 (no limit) or a positive count", o.maxAttempts)
	case o.maxElapsed < 0:
		return usagef("--max-elapsed %v: want 0 (no limit) or a positive duration such as 5m", o.maxElapsed)
	case o.base <= 0:
		return usagef("--base %v: want a positive duration such as 1s", o.base)
	case o.cap <= 0:
		return usagef("--cap %v: want a positive duration such as 30s", o.cap)
	case o.cap < o.base:
		return usagef("--cap %v is below --base %v: the cap bounds the delays that start at the base", o.cap, o.base)
	}
	return nil
}

// policy turns the flags into the reconnect policy.
func (o *connectOptions) policy() reconnect.Policy {
	return reconnect.Policy{
		Backoff:     reconnect.Backoff{Base: o.base, Cap: o.cap},
		MaxAttempts: o.maxAttempts,
		MaxElapsed:  o.maxElapsed,
		Persistent:  o.persistent,
	}
}
