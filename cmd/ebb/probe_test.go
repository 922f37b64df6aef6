package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/cmd/ebb/internal/server"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/wstest"
	"github.com/ebb-ws/ebb/shed"
)

// The report itself is tested in package probe; these tests hold what
// package main adds: flags, URLs, exit statuses.

func TestProbeCommand(t *testing.T) {
	t.Parallel()
	s, err := server.New(server.Config{Addr: "127.0.0.1:0", Shed: shed.Options{}})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	ok := "ws://" + s.Addr() + "/echo"
	ctx := context.Background()

	r := runCmd(t, ctx, nil, "probe", ok)
	if r.code != exitOK || !strings.Contains(r.stdout, "verdict") || !strings.Contains(r.stdout, "handshake succeeded") {
		t.Errorf("probe of a working server: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Without scheme, and as http://: the same server, a note on stderr.
	for _, arg := range []string{strings.TrimPrefix(ok, "ws://"), "http://" + strings.TrimPrefix(ok, "ws://")} {
		r = runCmd(t, ctx, nil, "probe", "--json", arg)
		var rep struct {
			URL string `json:"url"`
			OK  bool   `json:"ok"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != exitOK || rep.URL != ok || !rep.OK || !strings.HasPrefix(r.stderr, "ebb probe: ") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("probe %s: exit %d, report %+v (%v), stderr %q; want ok for %s and one note", arg, r.code, rep, err, r.stderr, ok)
		}
	}
	r = runCmd(t, ctx, nil, "probe", strings.TrimSuffix(wstest.Refused(t), "/"))
	if r.code != exitFailure || !strings.Contains(r.stdout, "no handshake response: connection refused") {
		t.Errorf("probe of a closed port: exit %d\n%s", r.code, r.stdout)
	}
}

func TestProbeUsage(t *testing.T) {
	t.Parallel()
	u := "ws://127.0.0.1:1/"
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "ftp scheme", args: []string{"ftp://x/"}, want: `has scheme "ftp": want ws:// or wss://`},
		{name: "zero timeout", args: []string{"--timeout", "0s", u}, want: "--timeout 0s: want a positive duration"},
		{name: "negative listen", args: []string{"--listen", "-1s", u}, want: "--listen -1s"},
		{name: "require without offer", args: []string{"--no-compress", "--require", "permessage-deflate", u}, want: "drop --no-compress"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wantUsage(t, runCmd(t, context.Background(), nil, append([]string{"probe"}, tt.args...)...), "probe", tt.want)
		})
	}
}
