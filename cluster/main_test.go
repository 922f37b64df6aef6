package cluster

import (
	"testing"

	"github.com/ebb-ws/ebb/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.VerifyTestMain(m) }
