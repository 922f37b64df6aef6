// Package readme holds the test that keeps the README's Go code honest:
// every Go block in README.md is the text between "// README:begin" and
// "// README:end" in a function of an example file, and that file has
// Example functions with an "// Output:" comment, which `go test` runs and
// checks. A snippet that stops compiling, or that panics or misbehaves,
// fails the tests.
package readme

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// marker ties the Go block after it to a function of an example file:
// <!-- snippet: websocket/readme_example_test.go readmeClient -->
var marker = regexp.MustCompile(`^<!-- snippet: (\S+) (\S+) -->$`)

// update rewrites README.md's blocks from their examples:
// go test ./internal/readme -update
var update = flag.Bool("update", false, "rewrite README.md's Go blocks from the example files")

func TestReadmeSnippetsAreExamples(t *testing.T) {
	root := "../.."
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	blocks := 0
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		blocks++
		start := i + 1
		end := start
		for end < len(lines) && strings.TrimSpace(lines[end]) != "```" {
			end++
		}
		block := strings.Join(lines[start:end], "\n")
		prev := ""
		for j := i - 1; j >= 0; j-- {
			if strings.TrimSpace(lines[j]) != "" {
				prev = strings.TrimSpace(lines[j])
				break
			}
		}
		m := marker.FindStringSubmatch(prev)
		if m == nil {
			t.Errorf("README.md:%d: a Go block without a snippet marker before it; "+
				"put the code in an example file between // README:begin and // README:end "+
				"and write <!-- snippet: FILE FUNC --> above the block", i+1)
			i = end
			continue
		}
		want, err := snippet(filepath.Join(root, m[1]), m[2])
		if err != nil {
			t.Errorf("README.md:%d: %v", i+1, err)
		} else if block != want && *update {
			lines = append(lines[:start], append(strings.Split(want, "\n"), lines[end:]...)...)
			end = start + strings.Count(want, "\n") + 1
		} else if block != want {
			t.Errorf("README.md:%d: the block differs from %s %s; copy it from there:\n--- README\n%s\n--- %s\n%s",
				i+1, m[1], m[2], block, m[1], want)
		}
		i = end
	}
	if blocks == 0 {
		t.Fatal("found no Go block in README.md; the test reads the wrong file")
	}
	if *update {
		if err := os.WriteFile(filepath.Join(root, "README.md"), []byte(strings.Join(lines, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// snippet returns the dedented lines between the README markers inside
// function name of file, after checking that the file has Example
// functions whose output go test checks.
func snippet(file, name string) (string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		return "", err
	}
	checked := false
	var fn *ast.FuncDecl
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		if fd.Name.Name == name {
			fn = fd
		}
		if strings.HasPrefix(fd.Name.Name, "Example") {
			body := string(src[fset.Position(fd.Pos()).Offset:fset.Position(fd.End()).Offset])
			checked = checked || strings.Contains(body, "// Output:")
		}
	}
	if fn == nil {
		return "", fmt.Errorf("%s has no function %s", file, name)
	}
	if !checked {
		return "", fmt.Errorf("%s has no Example with an // Output: comment, so go test would compile the snippet but never run it", file)
	}
	body := strings.Split(string(src[fset.Position(fn.Pos()).Offset:fset.Position(fn.End()).Offset]), "\n")
	begin, end := -1, -1
	for i, l := range body {
		switch strings.TrimSpace(l) {
		case "// README:begin":
			begin = i
		case "// README:end":
			end = i
		}
	}
	if begin < 0 || end < begin {
		return "", fmt.Errorf("%s %s has no // README:begin … // README:end region", file, name)
	}
	region := body[begin+1 : end]
	indent := body[begin][:len(body[begin])-len(strings.TrimLeft(body[begin], "\t"))]
	for i, l := range region {
		region[i] = strings.TrimPrefix(l, indent)
	}
	return strings.Join(region, "\n"), nil
}

// excerptOf names, for a block's info string, the file whose lines the
// block must quote: the load-balancer configurations that clustertest
// checks with haproxy -c and nginx -t and runs in front of real nodes.
var excerptOf = map[string]string{
	"haproxy": "docs/scaling/haproxy.cfg",
	"nginx":   "docs/scaling/nginx.conf",
}

// TestReadmeConfigsAreExcerpts keeps the README's HAProxy and nginx
// blocks true to the tested files: each line of such a block (but "...")
// must be a line of the file, in the file's order.
func TestReadmeConfigsAreExcerpts(t *testing.T) {
	root := "../.."
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	found := map[string]bool{}
	for i := 0; i < len(lines); i++ {
		file, ok := excerptOf[strings.TrimPrefix(strings.TrimSpace(lines[i]), "```")]
		if !ok || !strings.HasPrefix(strings.TrimSpace(lines[i]), "```") {
			continue
		}
		found[file] = true
		src, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		doc := strings.Split(string(src), "\n")
		at := 0
		for j := i + 1; j < len(lines) && strings.TrimSpace(lines[j]) != "```"; j++ {
			line := lines[j]
			if strings.TrimSpace(line) == "..." {
				continue
			}
			for at < len(doc) && strings.TrimSpace(doc[at]) != strings.TrimSpace(line) {
				at++
			}
			if at == len(doc) {
				t.Errorf("README.md:%d: %q is not in %s (after the block's earlier lines); quote the file", j+1, line, file)
				break
			}
			at++
			i = j
		}
	}
	for _, file := range excerptOf {
		if !found[file] {
			t.Errorf("README.md quotes no part of %s", file)
		}
	}
}
