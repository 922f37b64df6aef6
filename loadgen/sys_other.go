//go:build !unix

package loadgen

import "time"

// fileLimit is unknown on this system.
func fileLimit() (soft, hard uint64) { return 0, 0 }

// processCPU is unknown on this system; the bottleneck check then relies
// on dial errors alone.
func processCPU() time.Duration { return 0 }
