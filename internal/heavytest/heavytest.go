// Package heavytest lets the test suites that load the whole machine take
// it in turn. go test runs several packages' test binaries at once (one
// per core by default); the hostile-client suite, which asserts that
// honest clients keep echoing within 2 s while 50 deflate bombs inflate,
// and the cluster tests, which assert handshake rates behind HAProxy,
// would otherwise measure each other's load (and Chromium's, in interop)
// on a 2-core CI machine. Light packages still run alongside.
//
// The turn is an exclusive flock on one file in the temporary directory,
// so it spans test binaries and modules, and the kernel releases it when a
// binary exits, however it exits.
package heavytest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// lockName is the file every heavy suite locks.
const lockName = "ebb-heavy-tests.lock"

// RunExclusive runs the tests of m once no other heavy suite is running,
// and returns m.Run's code. A suite that waited says so on stderr (go test
// shows it with -v or on failure), since the wait counts toward the test
// binary's -timeout.
func RunExclusive(m *testing.M) int {
	start := time.Now()
	release, err := lock(filepath.Join(os.TempDir(), lockName))
	if err != nil {
		fmt.Fprintf(os.Stderr, "heavytest: running without the machine to itself: %v\n", err)
	} else {
		defer release()
	}
	if waited := time.Since(start); waited > time.Second {
		fmt.Fprintf(os.Stderr, "heavytest: waited %s for another heavy suite to finish\n", waited.Round(time.Second))
	}
	return m.Run()
}
