//go:build race

package websocket

// raceEnabled trims the largest payloads of the compression tests: the race
// detector makes deflate some twenty times slower, and the same code paths
// are covered at a smaller size.
const raceEnabled = true
