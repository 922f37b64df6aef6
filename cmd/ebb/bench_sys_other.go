//go:build !unix

package main

import "time"

// fileLimit is unknown on this system.
func fileLimit() (soft, hard uint64) { return 0, 0 }

// checkFileLimit cannot check anything on this system; dials that run out
// of descriptors are reported as errors instead.
func checkFileLimit(int) error { return nil }

// processCPU is unknown on this system; the bottleneck check then relies
// on dial errors alone.
func processCPU() time.Duration { return 0 }
