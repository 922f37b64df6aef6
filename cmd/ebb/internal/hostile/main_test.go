package hostile

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/ebb-ws/ebb/internal/heavytest"
	"github.com/ebb-ws/ebb/internal/leakcheck"
)

// TestMain runs the suite, writes the report when EBB_HOSTILE_REPORT asks
// for one, removes the binary it built and fails the run if goroutines are
// left behind (leakcheck.VerifyTestMain, with the two steps in between).
func TestMain(m *testing.M) {
	code := heavytest.RunExclusive(m) // the machine to itself: see heavytest
	if err := writeReport(os.Getenv("EBB_HOSTILE_REPORT")); err != nil {
		fmt.Fprintf(os.Stderr, "hostile: %v\n", err)
		code = 1
	}
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	if code == 0 {
		if err := leakcheck.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines still running after the tests passed:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	builtDir  string
	ebbPath   string
	buildErr  error
)

// ebbBinary returns the ebb binary the suite attacks: $EBB_HOSTILE_EBB when
// set (to measure a given build), else one built once per run from ../..
// without -race, so that the memory figures are what users get.
func ebbBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("EBB_HOSTILE_EBB"); p != "" {
			ebbPath = p
			return
		}
		builtDir, buildErr = os.MkdirTemp("", "ebb-hostile-")
		if buildErr != nil {
			return
		}
		ebbPath = filepath.Join(builtDir, "ebb")
		cmd := exec.Command("go", "build", "-o", ebbPath, ".")
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build of ebb in ../..: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ebbPath
}

// heavy skips the test under -short and where the suite cannot run.
func heavy(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("hostile suite: starts ebb processes and attacks them for seconds (skipped with -short)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("hostile suite: needs Linux (/proc for memory, 127.0.0.2 and up on lo)")
	}
}
