package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/internal/leakcheck"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// result is what one run of the command produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs ebb with args and stdin, as main would, and captures both
// streams.
func runCmd(t *testing.T, ctx context.Context, stdin io.Reader, args ...string) result {
	t.Helper()
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	code := run(ctx, args, stdin, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// squash folds runs of white space so wrapped output can be compared with
// the registry's one-line texts.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func TestRootCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{name: "no args prints help", args: nil, wantCode: exitOK, wantStdout: []string{"Usage:", "explain", "connect", "Examples:"}},
		{name: "help flag", args: []string{"--help"}, wantCode: exitOK, wantStdout: []string{"Usage:", "explain"}},
		{name: "typo gets a suggestion", args: []string{"explian"}, wantCode: exitUsage, wantStderr: []string{`ebb: unknown command "explian"`, `did you mean "explain"`, "Run 'ebb --help' for usage."}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: []string{`unknown command "frobnicate"`, "ebb help"}},
		{name: "unknown flag", args: []string{"--frob"}, wantCode: exitUsage, wantStderr: []string{"ebb: unknown flag: --frob", "Run 'ebb --help' for usage."}},
		{name: "help of a subcommand shows an example", args: []string{"help", "explain"}, wantCode: exitOK, wantStdout: []string{"Examples:", "ebb explain 1013"}},
		{name: "version", args: []string{"--version"}, wantCode: exitOK, wantStdout: []string{"ebb ", "go1."}},
		{name: "completion", args: []string{"completion", "bash"}, wantCode: exitOK, wantStdout: []string{"bash completion", "__start_ebb"}},
		{name: "serve with a negative pending bound", args: []string{"serve", "--addr", "127.0.0.1:0", "--max-pending", "-1"}, wantCode: exitUsage, wantStderr: []string{"--max-pending -1: want 0 (no bound) or more"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, tt.args...)
			if r.code != tt.wantCode {
				t.Fatalf("exit status = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
				t.Errorf("stderr shows a stack trace:\n%s", r.stderr)
			}
		})
	}
}

func TestEveryCommandHasHelpWithExample(t *testing.T) {
	t.Parallel()
	root := newRootCmd(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	for _, c := range append(root.Commands(), root) {
		if c.Hidden || c.Name() == "help" {
			continue
		}
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("command %q: Short, Long and Example must all be set (Short=%q, Example=%q)", c.Name(), c.Short, c.Example)
		}
	}
}

// TestConventions holds the conventions written down in root.go for every
// command: a usage mistake exits with 2 and prints exactly two lines on
// stderr, "ebb <command>: <reason>" and a pointer to --help, and nothing on
// stdout; --help exits 0 with an example on stdout.
func TestConventions(t *testing.T) {
	t.Parallel()
	// A wrong argument for each command, besides the unknown flag every
	// command gets.
	badArgs := map[string][]string{
		"ebb":               {"frobnicate"},
		"ebb bench":         {"frobnicate"},
		"ebb bench connect": {},
		"ebb bench echo":    {},
		"ebb bench idle":    {},
		"ebb bench storm":   {},
		"ebb completion":    {"tcsh"},
		"ebb connect":       {},
		"ebb demo":          {"extra"},
		"ebb explain":       {"1x"},
		"ebb probe":         {},
		"ebb serve":         {"--max-pending", "-1"},
	}
	root := newRootCmd(&env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard})
	var paths []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" || strings.HasPrefix(c.CommandPath(), "ebb completion ") {
			return
		}
		paths = append(paths, c.CommandPath())
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	for _, path := range paths {
		args := strings.Fields(path)[1:]
		bad, ok := badArgs[path]
		if !ok {
			t.Errorf("%s: no bad-argument case in TestConventions; add one", path)
		}
		cases := map[string][]string{
			"unknown flag": append(append([]string{}, args...), "--no-such-flag"),
			"bad argument": append(append([]string{}, args...), bad...),
		}
		for name, argv := range cases {
			t.Run(path+"/"+name, func(t *testing.T) {
				t.Parallel()
				r := runCmd(t, context.Background(), nil, argv...)
				if r.code != exitUsage {
					t.Fatalf("ebb %s: exit status %d, want %d (usage)\nstderr:\n%s", strings.Join(argv, " "), r.code, exitUsage, r.stderr)
				}
				lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
				if len(lines) != 2 || !strings.HasPrefix(lines[0], path+": ") || lines[1] != "Run '"+path+" --help' for usage." {
					t.Errorf("ebb %s: stderr is not \"%s: <reason>\" and the --help pointer:\n%s", strings.Join(argv, " "), path, r.stderr)
				}
				if r.stdout != "" {
					t.Errorf("ebb %s: stdout not empty on a usage error:\n%s", strings.Join(argv, " "), r.stdout)
				}
			})
		}
		t.Run(path+"/help", func(t *testing.T) {
			t.Parallel()
			r := runCmd(t, context.Background(), nil, append(args, "--help")...)
			if r.code != exitOK || !strings.Contains(r.stdout, "Examples:") || r.stderr != "" {
				t.Errorf("ebb %s --help: exit %d, want 0 with examples on stdout and nothing on stderr\nstdout:\n%s\nstderr:\n%s", path, r.code, r.stdout, r.stderr)
			}
		})
	}
}
