package clustertest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// section is one test's part of the report: its setting and its figures,
// each with the target it is held to.
type section struct {
	test    string
	setting string
	rows    []row
	notes   []string
	result  string // pass or FAIL
}

type row struct{ figure, value, target string }

var (
	reportMu sync.Mutex
	sections []*section
)

// newSection starts t's section; its result is set when t ends.
func newSection(t *testing.T, setting string) *section {
	s := &section{test: t.Name(), setting: setting}
	reportMu.Lock()
	sections = append(sections, s)
	reportMu.Unlock()
	t.Cleanup(func() {
		reportMu.Lock()
		defer reportMu.Unlock()
		s.result = "pass"
		if t.Failed() {
			s.result = "FAIL"
		}
	})
	return s
}

// add records a figure, and logs it.
func (s *section) add(t *testing.T, figure, value, target string) {
	t.Helper()
	reportMu.Lock()
	s.rows = append(s.rows, row{figure, value, target})
	reportMu.Unlock()
	if target != "" {
		t.Logf("%s: %s (target %s)", figure, value, target)
	} else {
		t.Logf("%s: %s", figure, value)
	}
}

// note records a line of context, and logs it.
func (s *section) note(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	reportMu.Lock()
	s.notes = append(s.notes, line)
	reportMu.Unlock()
	t.Log(line)
}

// writeReport writes the sections as Markdown to path ("" writes nothing).
func writeReport(path string) error {
	if path == "" {
		return nil
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	if len(sections) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- written by `EBB_CLUSTER_REPORT=%s go test -run '%s' -v ./cmd/ebb/internal/clustertest` on %s -->\n",
		path, "TestRollingRestart|TestClusterOverload", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	for _, s := range sections {
		fmt.Fprintf(&b, "\n### %s (%s)\n\n%s\n\n", s.test, s.result, s.setting)
		b.WriteString("| figure | measured | target |\n|---|---|---|\n")
		for _, r := range s.rows {
			t := r.target
			if t == "" {
				t = "—"
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", cell(r.figure), cell(r.value), cell(t))
		}
		if len(s.notes) > 0 {
			b.WriteString("\n")
			for _, n := range s.notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}
