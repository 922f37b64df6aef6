package hostile

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// finding is one row of the report: an attack, its bound and what was
// measured. Tests fill in what applies to them.
type finding struct {
	test   string
	attack string
	bound  string

	honest *availability

	// Server memory, bytes; 0 when not measured.
	rssBase, rssPeak, rssAfter int64
	heapBase, heapUnder        int64 // before, and while the attack holds
	heapAfter                  int64

	notes  []string // other measurements: "1009 after 2 ms", "client exited after 2.1 s"
	result string   // "pass" or "FAIL", set when the test ends
}

// reportOrder is the order of the report's rows: the table, then
// the attacks that already held.
var reportOrder = []string{
	"TestHostileSlowloris",
	"TestHostileIdleKeepAlive",
	"TestHostileAnnouncedFrames",
	"TestHostileContinuationOverflow",
	"TestHostileInflateIdle",
	"TestHostileDeflateBombs",
	"TestHostilePerIPHammer",
	"TestHostileStormAftermath",
	"TestHostileBroadcastLaggard",
	"TestHostileClientBlackHole",
	"TestHostileClientHugeHeaders",
	"TestHostileClientSlowStdout",
	"TestHostileClientRetryHint",
	"TestHostileBadHandshakes",
	"TestHostileFramingViolations",
	"TestHostilePingFlood",
	"TestHostileSlowReader",
	"TestHostileBombPerMessage",
}

var (
	reportMu sync.Mutex
	findings []*finding
)

// report starts the report row of test t. The row's result is set when the
// test ends, so a row is in the report whether its bound held or not.
func report(t *testing.T, attack, bound string) *finding {
	t.Helper()
	f := &finding{test: t.Name(), attack: attack, bound: bound}
	reportMu.Lock()
	findings = append(findings, f)
	reportMu.Unlock()
	t.Cleanup(func() {
		reportMu.Lock()
		defer reportMu.Unlock()
		f.result = "pass"
		if t.Failed() {
			f.result = "**FAIL**"
		}
		if t.Skipped() {
			f.result = "skipped"
		}
	})
	return f
}

// note adds a measurement to the row and logs it.
func (f *finding) note(t *testing.T, format string, args ...any) {
	t.Helper()
	s := fmt.Sprintf(format, args...)
	t.Log(s)
	reportMu.Lock()
	f.notes = append(f.notes, s)
	reportMu.Unlock()
}

func (f *finding) memory() string {
	var parts []string
	if f.rssPeak > 0 {
		parts = append(parts, fmt.Sprintf("RSS %s → peak %s (+%s)", mb(f.rssBase), mb(f.rssPeak), mb(f.rssPeak-f.rssBase)))
	}
	if f.rssAfter > 0 {
		parts = append(parts, "after "+mb(f.rssAfter))
	}
	if f.heapUnder > 0 {
		parts = append(parts, fmt.Sprintf("heap %s → %s under attack", size(f.heapBase), size(f.heapUnder)))
	}
	if f.heapAfter > 0 {
		parts = append(parts, fmt.Sprintf("heap %s → %s after", size(f.heapBase), size(f.heapAfter)))
	}
	return strings.Join(parts, "; ")
}

// writeReport writes the findings as a Markdown table to path ("" writes
// nothing).
func writeReport(path string) error {
	if path == "" {
		return nil
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	if len(findings) == 0 {
		return nil
	}
	// The rows first, in its order, then the attacks that
	// already held.
	rank := func(f *finding) int {
		name, _, _ := strings.Cut(f.test, "/")
		if i := slices.Index(reportOrder, name); i >= 0 {
			return i
		}
		return len(reportOrder)
	}
	slices.SortStableFunc(findings, func(a, b *finding) int { return rank(a) - rank(b) })
	var b strings.Builder
	fmt.Fprintf(&b, "<!-- written by `EBB_HOSTILE_REPORT=%s go test -run Hostile -v ./cmd/ebb/internal/hostile` on %s -->\n\n", path, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("| attack | bound | honest clients | server memory | other | result | test |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }
	for _, f := range findings {
		h := "—"
		if f.honest != nil {
			h = f.honest.String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | `%s` |\n",
			cell(f.attack), cell(f.bound), cell(h), cell(orDash(f.memory())), cell(orDash(strings.Join(f.notes, "; "))), f.result, f.test)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
