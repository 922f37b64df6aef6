package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit statuses shared by every command.
const (
	exitOK          = 0
	exitFailure     = 1   // the work failed (connection refused, abnormal close, …)
	exitUsage       = 2   // bad flag, bad argument, unknown close code
	exitInterrupted = 130 // stopped by Ctrl-C (128 + SIGINT)
)

// env is what a command may touch: its streams. Commands never use os.Stdin,
// os.Stdout or os.Stderr directly, so tests can run them with buffers.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// usageError is a mistake in how the command was called. run prints it with
// the command's usage and exits with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitError ends a command with a given status after the command itself has
// already reported what happened; run prints nothing more for it unless msg
// is set.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string {
	if e.msg != "" {
		return e.msg
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// newRootCmd builds the ebb command tree. Subcommands live in their own
// files as newXxxCmd(e *env) *cobra.Command and are added here.
func newRootCmd(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "ebb",
		Short: "WebSocket toolkit: serve, connect, probe, load-test, explain close codes",
		Long: `ebb is the command-line side of the ebb WebSocket stack.

It runs a WebSocket server that refuses overload with 1013 and drains with
1012, talks to servers (connect, probe), load-tests them (bench), shows
the whole story in one run (demo), and explains close codes from ebb's
registry: what a code means, who sends it, whether to retry, how to fix it.

Results go to standard output, progress and diagnostics to standard error.
Exit status: 0 on success, 1 when the work failed, 2 for a usage error,
130 when interrupted.`,
		Example: `  ebb explain 1013
  ebb serve --addr :8080
  echo hello | ebb connect ws://localhost:8080/echo
  ebb help connect`,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
		SilenceErrors:              true,
		// Without subcommand: print help rather than an error.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
					return usagef("unknown command %q: did you mean %q?", args[0], s[0])
				}
				return usagef("unknown command %q: run 'ebb help' for the list of commands", args[0])
			}
			return cmd.Help()
		},
		Args: cobra.ArbitraryArgs,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	root.AddCommand(
		newExplainCmd(e),
		newConnectCmd(e),
		newServeCmd(e),
		newBenchCmd(e),
		newDemoCmd(e),
		newProbeCmd(e),
	)
	return root
}

// run executes ebb with args (without the program name) and returns the
// process exit status. Results go to stdout, diagnostics to stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "ebb: %v\n\n", ue.err)
		if cmd == nil {
			cmd = root
		}
		fmt.Fprint(stderr, cmd.UsageString())
		return exitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "ebb: %s\n", ee.msg)
		}
		return ee.code
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "ebb: interrupted")
		return exitInterrupted
	default:
		fmt.Fprintf(stderr, "ebb: %s\n", strings.TrimPrefix(err.Error(), "ebb: "))
		return exitFailure
	}
}
