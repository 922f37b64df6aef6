package cluster

import (
	"testing"

	"github.com/ebb-ws/ebb/internal/leakcheck"
)

// TestMain checks for leaked goroutines; see IgnoreEmbeddedNATSStores for
// the two of nats-server's own it leaves out.
func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m, leakcheck.IgnoreEmbeddedNATSStores()) }
