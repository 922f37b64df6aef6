// Command releasecheck builds a module proxy on disk from a copy of the
// repository, released as the version given, so that .ci/install-check can
// run `go install github.com/ebb-ws/ebb/cmd/ebb@latest` against it: the
// proof that the module shape (a light library module, nested modules
// that require it by version, no replace directives) installs the way a
// user's `go install` would once RELEASING.md's steps are followed.
//
// Usage: go run . -src DIR -proxy DIR -version vX.Y.Z MODULE_DIR...
// Each MODULE_DIR (relative to -src, in dependency order) is zipped as
// its module path at the version; the go.mod files of later modules must
// already require the earlier ones at that version.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/zip"
)

func main() {
	src := flag.String("src", "", "copy of the repository")
	proxy := flag.String("proxy", "", "proxy directory to write")
	version := flag.String("version", "", "version to release, e.g. v0.9.0")
	flag.Parse()
	if *src == "" || *proxy == "" || *version == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: releasecheck -src DIR -proxy DIR -version vX.Y.Z MODULE_DIR...")
		os.Exit(2)
	}
	for _, dir := range flag.Args() {
		if err := publish(filepath.Join(*src, dir), *proxy, *version); err != nil {
			fmt.Fprintf(os.Stderr, "releasecheck: %s: %v\n", dir, err)
			os.Exit(1)
		}
	}
}

// publish writes dir's module at version into the proxy layout:
// <path>/@v/{list,<v>.info,<v>.mod,<v>.zip}.
func publish(dir, proxy, version string) error {
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return err
	}
	f, err := modfile.ParseLax("go.mod", gomod, nil)
	if err != nil {
		return err
	}
	for _, r := range f.Replace {
		return fmt.Errorf("go.mod replaces %s: go install refuses modules with replace directives", r.Old.Path)
	}
	mv := module.Version{Path: f.Module.Mod.Path, Version: version}
	esc, err := module.EscapePath(mv.Path)
	if err != nil {
		return err
	}
	at := filepath.Join(proxy, esc, "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		return err
	}
	z, err := os.Create(filepath.Join(at, version+".zip"))
	if err != nil {
		return err
	}
	if err := zip.CreateFromDir(z, mv, dir); err != nil {
		z.Close()
		return err
	}
	if err := z.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(at, version+".mod"), gomod, 0o644); err != nil {
		return err
	}
	info, _ := json.Marshal(struct{ Version, Time string }{version, time.Now().UTC().Format(time.RFC3339)})
	if err := os.WriteFile(filepath.Join(at, version+".info"), info, 0o644); err != nil {
		return err
	}
	fmt.Printf("published %s@%s (%s)\n", mv.Path, version, strings.TrimPrefix(dir, proxy))
	return os.WriteFile(filepath.Join(at, "list"), []byte(version+"\n"), 0o644)
}
