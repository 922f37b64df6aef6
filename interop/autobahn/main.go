// Command autobahn runs ebb's client against the Autobahn|Testsuite
// fuzzing server, the standard RFC 6455 / RFC 7692 conformance suite:
//
//	wstest -m fuzzingserver -s fuzzingserver.json   # listens on :9001
//	go run ./interop/autobahn -url ws://127.0.0.1:9001
//
// It asks the server for the number of cases, runs each one as an echo
// client (every message is sent back unchanged, compression offered), and
// asks the server to write its report. To test ebb's server instead, point
// the suite's fuzzingclient at `ebb serve --compress --read-limit 16777216`
// (the /echo endpoint).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

func main() {
	base := flag.String("url", "ws://127.0.0.1:9001", "fuzzing server URL")
	agent := flag.String("agent", "ebb", "agent name in the report")
	only := flag.Int("case", 0, "run only this case number (1-based)")
	flag.Parse()
	if err := run(*base, *agent, *only); err != nil {
		fmt.Fprintln(os.Stderr, "autobahn:", err)
		os.Exit(1)
	}
}

func run(base, agent string, only int) error {
	n, err := caseCount(base)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d cases\n", n)
	for i := 1; i <= n; i++ {
		if only != 0 && i != only {
			continue
		}
		runCase(fmt.Sprintf("%s/runCase?case=%d&agent=%s", base, i, agent))
		if i%50 == 0 {
			fmt.Fprintf(os.Stderr, "%d/%d\n", i, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, base+"/updateReports?agent="+agent, nil)
	if err != nil {
		return fmt.Errorf("updating reports: %w", err)
	}
	c.Close(closecode.NormalClosure, "")
	return nil
}

func caseCount(base string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, base+"/getCaseCount", nil)
	if err != nil {
		return 0, fmt.Errorf("is the fuzzing server running? %w", err)
	}
	defer c.CloseNow()
	_, p, err := c.Read(ctx)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(p))
}

// runCase echoes until the server closes the connection.
func runCase(url string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Compression: &websocket.CompressionOptions{},
		ReadLimit:   64 << 20,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dial:", err)
		return
	}
	defer c.CloseNow()
	for {
		typ, p, err := c.Read(ctx)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				fmt.Fprintln(os.Stderr, "read:", err)
			}
			return
		}
		if err := c.Write(ctx, typ, p); err != nil {
			return
		}
	}
}
