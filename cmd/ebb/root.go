package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// The command-line conventions every subcommand follows (README "The ebb
// command", and TestConventions holds them for every subcommand):
//
//   - exit status 0 on success, 1 when the work failed, 2 for a usage error
//     (bad flag, bad argument), 130 when interrupted (Ctrl-C, SIGTERM);
//   - an error is one line on stderr, "ebb <command>: <what happened>",
//     followed for a usage error by "Run 'ebb <command> --help' for usage."
//     and never by the flag list;
//   - results go to stdout, progress and diagnostics to stderr;
//   - errors returned by commands do not name the command themselves: run
//     adds the prefix.

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
  ebb help connect
  source <(ebb completion bash)   # tab completion for bash (zsh, fish, powershell too)`,
		Version:                    version(),
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
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	root.AddCommand(
		newExplainCmd(e),
		newConnectCmd(e),
		newServeCmd(e),
		newBenchCmd(e),
		newDemoCmd(e),
		newProbeCmd(e),
	)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	addCompletionCmd(root) // after SetOut: cobra's completion writes where Out was at this point
	argsAreUsage(root)
	return root
}

// argsAreUsage makes every argument check of every command (cobra's own
// NoArgs, ExactArgs, OnlyValidArgs included) report a usage error, so a
// wrong argument exits with exitUsage like a wrong flag.
func argsAreUsage(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			err := check(cmd, args)
			var ue *usageError
			if err != nil && !errors.As(err, &ue) {
				return &usageError{err: err}
			}
			return err
		}
	}
	for _, sub := range c.Commands() {
		argsAreUsage(sub)
	}
}

// addCompletionCmd adds cobra's "completion" command now rather than at
// Execute, so that it gets an example like every other command.
func addCompletionCmd(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			// Without a RunE of its own, an unknown shell prints help and
			// exits 0.
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(_ *cobra.Command, args []string) error {
				if len(args) == 0 {
					return usagef("name a shell: bash, zsh, fish or powershell")
				}
				return usagef("unknown shell %q: want bash, zsh, fish or powershell", args[0])
			}
			c.Example = `  source <(ebb completion bash)                 # this shell only
  ebb completion bash > /etc/bash_completion.d/ebb
  ebb completion zsh > "${fpath[1]}/_ebb"`
		}
	}
}

// version is the module version ebb was built from ("v0.4.0" after go
// install …@v0.4.0, "(devel)" in a checkout), with the commit and the Go
// version when the build recorded them.
func version() string {
	v := "(devel)"
	var rev, dirty string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " (" + rev + dirty + ")"
	}
	return v + " " + runtime.Version()
}

// run executes ebb with args (without the program name) and returns the
// process exit status. Results go to stdout, diagnostics to stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(e)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	if cmd == nil {
		cmd = root
	}
	prefix := cmd.CommandPath() // "ebb", "ebb connect", "ebb bench echo"
	var ue *usageError
	var ee *exitError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %s\n", prefix, oneLine(ue.err.Error()))
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", prefix)
		return exitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "%s: %s\n", prefix, oneLine(ee.msg))
		}
		return ee.code
	case errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "%s: interrupted\n", prefix)
		return exitInterrupted
	default:
		fmt.Fprintf(stderr, "%s: %s\n", prefix, oneLine(err.Error()))
		return exitFailure
	}
}

// oneLine folds a multi-line error (errors.Join, a wrapped response body)
// into one line, so every error is one line on stderr.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
