// Package leakcheck fails a test binary that leaves goroutines running
// after its tests end. It stands in for go.uber.org/goleak so that the
// library's module requires nothing but klauspost/compress: a user who
// imports ebb must not get its test dependencies.
//
// A goroutine is a leak when it is still running once every test has
// returned, except for the goroutines the runtime and the testing package
// keep for themselves. Goroutines that are on their way out get a grace
// period (retries up to a couple of seconds) before they count.
package leakcheck

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// grace is how long Find waits for goroutines that are still winding down.
const grace = 2 * time.Second

// VerifyTestMain runs the tests and then exits with status 1, listing the
// leaked goroutines, if the tests passed but left any behind. Use it as the
// whole body of TestMain:
//
//	func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := Find(); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines still running after the tests passed:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Find returns an error listing the goroutines other than the caller's and
// the runtime's own that are still running after the grace period, or nil.
func Find() error {
	deadline := time.Now().Add(grace)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		leaked := running()
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d leaked goroutine(s):\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(wait)
	}
}

// running returns the stacks of every goroutine but the caller's and the
// ones that belong to the runtime or the testing package.
func running() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := strings.Split(string(buf), "\n\n")
	var leaked []string
	for i, s := range stacks {
		if i == 0 || expected(s) { // the first stack is the caller's own
			continue
		}
		leaked = append(leaked, s)
	}
	return leaked
}

// expected reports whether a goroutine's stack belongs to the runtime or to
// the testing package rather than to the code under test.
func expected(stack string) bool {
	lines := strings.SplitN(stack, "\n", 3)
	if len(lines) < 2 {
		return true
	}
	top := lines[1] // the innermost function of the goroutine
	for _, fn := range []string{
		"testing.RunTests(",
		"testing.(*T).Run(",
		"testing.(*T).Parallel(",
		"testing.runFuzzing(",
		"testing.(*F).Fuzz(",
	} {
		if strings.HasPrefix(top, fn) {
			return true
		}
	}
	for _, frame := range []string{
		"os/signal.signal_recv",
		"os/signal.loop",
		"runtime.ensureSigM",
		"runtime/trace.Start",
	} {
		if strings.Contains(stack, frame) {
			return true
		}
	}
	return false
}
