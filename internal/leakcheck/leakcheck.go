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
func VerifyTestMain(m *testing.M, opts ...Option) {
	code := m.Run()
	if code == 0 {
		if err := Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines still running after the tests passed:\n%v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// An Option narrows what Find counts as a leak.
type Option func(*config)

type config struct{ ignoredCreators []string }

// IgnoreCreatedBy leaves out goroutines started by the named function (as
// the stack's "created by" line spells it, e.g.
// "github.com/nats-io/nats-server/v2/server.newFileStoreWithCreatedAndMode").
// It is for a dependency's own goroutines that the code under test cannot
// stop; each use says which upstream bug it stands for.
func IgnoreCreatedBy(function string) Option {
	return func(c *config) { c.ignoredCreators = append(c.ignoredCreators, function) }
}

// Find returns an error listing the goroutines other than the caller's and
// the runtime's own that are still running after the grace period, or nil.
func Find(opts ...Option) error {
	var c config
	for _, o := range opts {
		o(&c)
	}
	deadline := time.Now().Add(grace)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		leaked := running(c)
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
func running(c config) []string {
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
		if i == 0 || expected(s) || c.ignored(s) { // the first stack is the caller's own
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

// ignored reports whether the goroutine was created by one of the functions
// IgnoreCreatedBy named.
func (c config) ignored(stack string) bool {
	_, creator, ok := strings.Cut(stack, "\ncreated by ")
	if !ok {
		return false
	}
	creator, _, _ = strings.Cut(creator, " in goroutine")
	creator, _, _ = strings.Cut(creator, "\n")
	for _, fn := range c.ignoredCreators {
		if creator == fn {
			return true
		}
	}
	return false
}

// IgnoreEmbeddedNATSStores leaves out the two goroutines an embedded
// nats-server (v2.15.2) can leave behind after Shutdown and
// WaitForShutdown have returned: the flush loop of a stream's file store
// that was opened while the server was shutting down (seen about one run in
// two when parallel tests stop three-node clusters that are still placing
// their streams), and the access-time ticker that store keeps registered.
// Neither is started by ebb, and ebb cannot reach the store to stop it;
// every other goroutine, nats.go's and ebb's included, still counts.
func IgnoreEmbeddedNATSStores() Option {
	return func(c *config) {
		IgnoreCreatedBy("github.com/nats-io/nats-server/v2/server.newFileStoreWithCreatedAndMode")(c)
		IgnoreCreatedBy("github.com/nats-io/nats-server/v2/server/ats.Register")(c)
	}
}
