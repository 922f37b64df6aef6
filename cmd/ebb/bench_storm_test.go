package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/reconnect"
)

// TestStormRestart is issue 6's storm test at a smaller scale: 300
// clients on an in-process ebb server that closes them all with 1012 and
// comes back on the same address. ebb's jittered backoff must offer a
// lower peak rate of connection attempts than clients that reconnect at
// once and than clients with backoff but no jitter, and every client must
// come back. The assertion is on attempts, which the clients' policy
// alone decides: completed handshakes also depend on how fast the server
// (sharing two cores with 300 clients, and slowed tenfold under -race)
// gets through them, so their peak is only logged.
func TestStormRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("300 clients across a server restart, three times")
	}
	const clients = 300
	o := &benchOptions{conns: clients, duration: 15 * time.Second, dialTimeout: 5 * time.Second}
	if err := o.check(2); err != nil {
		t.Fatal(err)
	}
	dopts, err := o.dialOptions(false)
	if err != nil {
		t.Fatal(err)
	}
	sc := stormConfig{
		Clients: clients,
		Backoff: reconnect.Backoff{Base: 2 * time.Second, Cap: 4 * time.Second},
		Restart: &restartConfig{Addr: "127.0.0.1:0", Settle: 100 * time.Millisecond, Gap: 200 * time.Millisecond},
	}
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	rep, err := runStorms(context.Background(), e, o, sc, []string{policyBackoff, policyImmediate, policyNoJitter}, dopts)
	if err != nil {
		t.Fatal(err)
	}
	peaks := map[string]float64{}
	for _, rr := range rep.Runs {
		rs := rr.Restart
		if rs == nil {
			t.Fatalf("%s: no restart report (the clients never all connected?)", rr.Name)
		}
		if rs.FullReconnect == nil {
			t.Errorf("%s: not every client came back within %v", rr.Name, o.duration)
		}
		if n := codeCountOf(rr, 1012, "server"); n < clients {
			t.Errorf("%s: %d closes with 1012 from the server, want at least %d", rr.Name, n, clients)
		}
		peaks[rr.Name] = rs.PeakAttemptsPerSecond
		t.Logf("%-9s peak %5.0f attempts/s, %5.0f handshakes/s, all back %s after the drain, %d reconnect attempts",
			rr.Name, rs.PeakAttemptsPerSecond, rs.PeakPerSecond, optSeconds(rs.FullReconnect), rr.Reconnect.Attempts)
	}
	for _, other := range []string{policyImmediate, policyNoJitter} {
		if peaks[policyBackoff] >= peaks[other] {
			t.Errorf("peak attempt rate: backoff %.0f/s, %s %.0f/s; want backoff lower", peaks[policyBackoff], other, peaks[other])
		}
	}
}
