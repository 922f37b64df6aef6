package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

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
		{name: "typo gets a suggestion", args: []string{"explian"}, wantCode: exitUsage, wantStderr: []string{`unknown command "explian"`, `did you mean "explain"`, "Usage:"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage, wantStderr: []string{`unknown command "frobnicate"`, "ebb help"}},
		{name: "unknown flag", args: []string{"--frob"}, wantCode: exitUsage, wantStderr: []string{"unknown flag: --frob", "Usage:"}},
		{name: "help of a subcommand shows an example", args: []string{"help", "explain"}, wantCode: exitOK, wantStdout: []string{"Examples:", "ebb explain 1013"}},
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
