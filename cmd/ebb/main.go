// Command ebb is the command-line side of the ebb WebSocket stack: it explains
// close codes from the registry and talks to WebSocket servers.
//
// Run "ebb help" for the list of commands and "ebb help COMMAND" for the
// flags and an example of each.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Ctrl-C and SIGTERM cancel the context; commands finish their work
	// cleanly (a connection is closed with a Close frame) and report.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
