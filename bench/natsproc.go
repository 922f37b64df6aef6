package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// natsMain is `bench nats --store DIR`: one nats-server (JetStream on,
// its store in DIR) on a random loopback port, in a process of its own.
// It prints "LISTEN <nats-url>" once it accepts clients and runs until its
// standard input closes (the driver ends it that way, or dies).
//
// Both systems of the cluster measure use this one server: Centrifugo's
// NATS broker (core NATS PUB/SUB) and ebb's cluster (--nats, which keeps
// its broadcast history in JetStream). It is never restarted during a run,
// so neither system's history depends on the nodes that restart.
func natsMain(args []string) error {
	fs := flag.NewFlagSet("nats", flag.ContinueOnError)
	store := fs.String("store", "", "JetStream store directory (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *store == "" {
		return errors.New("--store is required")
	}
	s, err := natsserver.NewServer(&natsserver.Options{
		Host:      "127.0.0.1",
		Port:      natsserver.RANDOM_PORT,
		JetStream: true,
		StoreDir:  *store,
		NoSigs:    true,
		NoLog:     true,
		// Centrifugo and ebb both publish small messages; the defaults
		// (1 MiB payloads, 64 MiB pending per client) hold.
	})
	if err != nil {
		return fmt.Errorf("configuring nats-server: %w", err)
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		return errors.New("nats-server did not accept connections within 10 s")
	}
	fmt.Printf("LISTEN %s\n", s.ClientURL())
	io.Copy(io.Discard, os.Stdin)
	return nil
}
