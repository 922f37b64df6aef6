package server

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Restarter runs one server after another on the same address, for load
// tests that restart the server under their clients (loadgen's Restarter,
// `ebb bench storm --restart`): Start runs a new server with Config (the
// address of the first one is kept, so clients reconnect to the same
// place), Stop drains it and waits until it no longer serves.
type Restarter struct {
	Config Config
	s      *Server
	served chan error
}

// Start runs a server and returns its /echo URL. The previous server's
// port may take a moment to be free again: Start retries for about a
// second.
func (r *Restarter) Start(ctx context.Context) (string, error) {
	var err error
	for range 50 {
		if r.s, err = New(r.Config); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err != nil {
		return "", fmt.Errorf("cannot start the in-process server: %w", err)
	}
	r.Config.Addr = r.s.Addr()
	r.served = make(chan error, 1)
	go func(s *Server, served chan<- error) { served <- s.Serve() }(r.s, r.served)
	return "ws://" + r.s.Addr() + "/echo", nil
}

// Stop drains the server started last (Server.Shutdown with ctx) and
// waits until it no longer serves.
func (r *Restarter) Stop(ctx context.Context) error {
	if r.s == nil {
		return errors.New("server: Restarter.Stop without a running server")
	}
	err := r.s.Shutdown(ctx)
	<-r.served
	r.s = nil
	return err
}
