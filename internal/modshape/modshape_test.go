// Package modshape holds the test that keeps the library's module light: a
// program that imports every library package must get
// github.com/klauspost/compress and nothing else. The CLI, the interop
// tests, the benchmarks and the cluster live in modules of their own.
package modshape

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// libraryPackages are the packages a user of ebb imports.
var libraryPackages = []string{"closecode", "websocket", "shed", "reconnect", "web"}

// TestLibraryModuleRequiresOnlyCompress builds the module graph of a fresh
// program that imports every library package, the way a user's `go get`
// would, and checks it holds klauspost/compress alone besides ebb itself.
func TestLibraryModuleRequiresOnlyCompress(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var imports strings.Builder
	for _, p := range libraryPackages {
		imports.WriteString("\t_ \"github.com/ebb-ws/ebb/" + p + "\"\n")
	}
	write(t, filepath.Join(dir, "main.go"), "package main\n\nimport (\n"+imports.String()+")\n\nfunc main() {}\n")
	write(t, filepath.Join(dir, "go.mod"), "module example.com/user\n\ngo 1.26\n\n"+
		"require github.com/ebb-ws/ebb v0.0.0-00010101000000-000000000000\n\n"+
		"replace github.com/ebb-ws/ebb => "+root+"\n")

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(goBin, args...)
		cmd.Dir = dir
		// The user's program is not in ebb's workspace; -mod=mod lets the
		// go command fill in go.sum from the module cache or proxy.
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	got := strings.Fields(run("list", "-m", "-f", "{{.Path}}", "all"))
	want := []string{"example.com/user", "github.com/ebb-ws/ebb", "github.com/klauspost/compress"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("a program importing %v gets these modules:\n  %s\nwant only:\n  %s\n"+
			"A library package imports something new, or the root go.mod requires more than klauspost/compress: "+
			"move the dependency to a nested module (cmd/ebb, interop, bench, …).",
			libraryPackages, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
