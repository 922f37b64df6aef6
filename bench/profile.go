package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ebb-ws/ebb/bench/wsclient"
)

// profileMain runs one library's server under closed-loop echo load (or
// holding idle connections, for kind "heap") and saves a pprof profile of
// the server process into dir.
func profileMain(lib, cs, kind, comp, dir string) error {
	var size, n int
	if _, err := fmt.Sscanf(cs, "%dx%d", &size, &n); err != nil {
		return fmt.Errorf("bench: --profile-case %q: want <size>x<conns>, e.g. 16384x100: %w", cs, err)
	}
	var args []string
	if kind == "heap" {
		args = []string{"--memprofilerate", "1"}
	}
	offer := ""
	if comp != "" {
		args = append(args, "--compression", comp)
		offer = "permessage-deflate; client_max_window_bits"
		if comp == "notakeover" {
			offer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"
		}
	}
	return withServer(lib, func(p *serverProc) error {
		if kind == "heap" {
			conns, err := dialMany(context.Background(), p.ws, n, 128, 4<<10, "")
			if err != nil {
				return err
			}
			defer closeAll(conns)
			if err := echoOnce(conns, wsclient.Frame(wsclient.OpBinary, false, payload(size)), size); err != nil {
				return err
			}
			time.Sleep(time.Second)
			p.Stats(true)
			path := filepath.Join(dir, fmt.Sprintf("%s-heap-%s.pprof", lib, cs))
			if err := p.fetch("/debug/pprof/heap", path); err != nil {
				return err
			}
			progress("heap profile of %s with %d idle connections: %s", lib, n, path)
			return nil
		}
		conns, err := dialMany(context.Background(), p.ws, n, 64, 64<<10, offer)
		if err != nil {
			return err
		}
		defer closeAll(conns)
		frame := wsclient.Frame(wsclient.OpBinary, false, payload(size))
		path := filepath.Join(dir, fmt.Sprintf("%s-cpu-%s%s.pprof", lib, cs, comp))
		errc := make(chan error, 1)
		go func() { errc <- p.Profile(context.Background(), 5*time.Second, path) }()
		var msgs, scpu, ccpu float64
		if comp != "" {
			msgs, scpu, ccpu, err = deflateLoop(conns, jsonMessages(64), 500*time.Millisecond, 5*time.Second, p)
		} else {
			msgs, scpu, ccpu, err = closedLoop(conns, frame, size, 500*time.Millisecond, 5*time.Second, p)
		}
		if err != nil {
			return err
		}
		if err := <-errc; err != nil {
			return err
		}
		progress("cpu profile of %s at %d B × %d conns (%.0f msgs/s, server CPU %.0f%%, client CPU %.0f%%): %s", lib, size, n, msgs, scpu*100, ccpu*100, path)
		return nil
	}, args...)
}
