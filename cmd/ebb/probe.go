package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/handshake"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/probe"
)

// probeOptions holds the flags of "ebb probe".
type probeOptions struct {
	handshakeFlags
	noCompress bool
	asJSON     bool
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
parameters), and how long the connection, TLS and upgrade took. URL is
ws:// or wss://; http:// and https:// are taken as ws:// and wss://, and a
URL without scheme as ws://.

It ends with a verdict. With --require EXT, it says whether a client that
requires EXT would connect or close with 1010 Mandatory Extension, and why;
probe itself never sends 1010 (it closes with 1000). It also reports a
refusal: an HTTP 503/429 with Retry-After, or an upgrade followed at once by a
Close frame such as 1013 Try Again Later with its retry hint. When no
handshake response arrived (connection refused, --timeout reached) it says
so, and judges no extension.

Probe offers permessage-deflate unless --no-compress. It works against any
WebSocket server. The exit status is 0 when the handshake succeeded and
every required extension was accepted, 1 otherwise.`,
		Example: `  ebb probe ws://localhost:8080/echo
  ebb probe --require permessage-deflate wss://example.com/socket
  ebb probe --json localhost:8080/echo`,
		Args: oneURL,
		RunE: func(cmd *cobra.Command, args []string) error {
			u, note, err := wsURL(args[0])
			if err != nil {
				return err
			}
			if o.noCompress && len(o.require) > 0 {
				return usagef("--require permessage-deflate needs the offer: drop --no-compress")
			}
			if o.listen < 0 {
				return usagef("--listen %v: want 0 (do not wait) or a positive duration such as 300ms", o.listen)
			}
			d, err := o.dialOptions(!o.noCompress)
			if err != nil {
				return err
			}
			if note != "" {
				fmt.Fprintf(e.stderr, "%s: %s\n", cmd.CommandPath(), note)
			}
			po := &probe.Options{Dial: d, Require: d.Require, NoCompress: o.noCompress, Timeout: o.timeout, Listen: o.listen}
			if o.listen == 0 {
				po.Listen = -1
			}
			rep, err := probe.Run(cmd.Context(), u, po)
			if err != nil {
				return err
			}
			if o.asJSON {
				err = rep.WriteJSON(e.stdout)
			} else {
				err = rep.WriteText(e.stdout)
			}
			switch {
			case err != nil:
				return fmt.Errorf("writing the report: %w", err)
			case cmd.Context().Err() != nil:
				return cmd.Context().Err()
			case !rep.OK:
				return &exitError{code: exitFailure}
			}
			return nil
		},
	}
	f := cmd.Flags()
	o.add(f)
	f.StringArrayVar(&o.require, "require", nil, "extension a client requires: the verdict says whether it would end in 1010 (repeatable)")
	f.BoolVar(&o.noCompress, "no-compress", false, "do not offer permessage-deflate")
	f.BoolVar(&o.asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&o.timeout, "timeout", handshake.DefaultTimeout, "bound on the whole handshake")
	f.DurationVar(&o.listen, "listen", probe.DefaultListen, "after the upgrade, how long to wait for an immediate Close frame (a refusal such as 1013); 0 does not wait")
	return cmd
}
