package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestChildListen holds the LISTEN line parsing that startServer and
// startHelper share, and the errors they report.
func TestChildListen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		names   []string
		want    []string
		wantErr string
	}{
		{name: "server", out: "LISTEN 127.0.0.1:1 127.0.0.1:2\n", names: []string{"ws", "stats"}, want: []string{"127.0.0.1:1", "127.0.0.1:2"}},
		{name: "helper", out: "LISTEN nats://127.0.0.1:4222\n", names: []string{"addr"}, want: []string{"nats://127.0.0.1:4222"}},
		{name: "too few", out: "LISTEN 127.0.0.1:1\n", names: []string{"ws", "stats"}, wantErr: `bench: x printed "LISTEN 127.0.0.1:1\n", want "LISTEN <ws> <stats>"`},
		{name: "not LISTEN", out: "panic: boom\n", names: []string{"addr"}, wantErr: `bench: x printed "panic: boom\n", want "LISTEN <addr>"`},
		{name: "exited", out: "", names: []string{"addr"}, wantErr: `bench: x printed "", want "LISTEN <addr>"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := child{out: bufio.NewReader(strings.NewReader(tc.out))}
			got, err := c.listen("x", 10*time.Second, tc.names...)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("listen: got %v, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("listen: got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("silent", func(t *testing.T) {
		r, w := io.Pipe()
		defer w.Close() // ends the reading goroutine
		c := child{out: bufio.NewReader(r)}
		_, err := c.listen("x", time.Second, "addr")
		if want := "bench: x did not start within 1 s"; err == nil || err.Error() != want {
			t.Fatalf("listen: got %v, want %q", err, want)
		}
	})
}

// TestStartSelf runs this test binary as a child that prints a LISTEN line
// and exits once its stdin closes, as bench nats does.
func TestStartSelf(t *testing.T) {
	t.Setenv("BENCH_TEST_CHILD", "1")
	c, err := startSelf(nil, true, "-test.run=^TestChildProcess$")
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := c.listen("test child", 10*time.Second, "addr")
	if err != nil {
		c.kill()
		t.Fatal(err)
	}
	if !slices.Equal(addrs, []string{"pid"}) {
		t.Errorf("addresses: got %q, want [pid]", addrs)
	}
	c.finish(10 * time.Second)
	if !c.cmd.ProcessState.Success() {
		t.Errorf("child exit: %v, want success (it exits when its stdin closes, not killed)", c.cmd.ProcessState)
	}
}

// TestChildProcess is the child of TestStartSelf; it does nothing in a
// normal run.
func TestChildProcess(t *testing.T) {
	if os.Getenv("BENCH_TEST_CHILD") != "1" {
		t.Skip("only the child of TestStartSelf")
	}
	fmt.Println("LISTEN pid")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}
