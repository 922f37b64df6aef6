// Package interop tests ebb against WebSocket implementations that no one
// here wrote: Node's ws (npm, pinned in package-lock.json) and Python's
// websockets (Debian's python3-websockets), each as client and as server.
//
// The package has no API; its tests drive the peer scripts in node/ and
// python/, which report what they saw as JSON lines (protocol in README.md).
// Set EBB_INTEROP_TABLE=path to record the results, then turn them into the
// README's table with go run ./interop/cmd/table path.
package interop
