// Package loadgen measures a WebSocket server from the client side, ebb or
// any other: echo throughput and latency, handshake rate, reconnect storms
// (across a server restart too) and idle memory per connection. It is the
// engine behind `ebb bench`; programs and tests import it to get the same
// figures as data.
//
// Each mode is one function that runs for Options.Duration (or until its
// context ends) and returns a *Report:
//
//   - Echo: Conns connections send Size-byte messages and time the echoes,
//     in a closed loop or at a fixed Rate (latency then counts from when a
//     message was due, so a stalled server is not hidden);
//   - Connect: Conns workers open and close connections as fast as the
//     server allows;
//   - Storm: Conns clients connect at once and reconnect by a Policy; with
//     RestartOptions, across a server restart that a Restarter performs;
//   - Idle: Conns connections stay open and idle, and the report gives the
//     memory they cost per connection, from the server's /metrics gauges or
//     from this process.
//
// Every connection's end is counted by close code with the closecode
// registry's name and retry class; refused handshakes by HTTP status;
// failed dials by kind. Latencies are HDR histograms (1 µs to 10 min, 0.1%
// precision, about 30 KiB each); the timeline has 100 ms slots. A run costs
// what its connections cost (a goroutine each, plus their buffers) and one
// lock per connection event; message traffic is counted per connection
// without locks and merged when the connection ends.
//
// # What the numbers mean
//
// Rates are per second of the run's wall time (Run.Seconds). Handshakes
// count upgrades: Completed includes refusals by upgrade-then-close (1013
// Try Again Later), which then appear among the close codes with "by
// server"; Failed counts dials without a 101 answer; Errors the failed
// dials that were not the server's refusals (HTTP 429 or 503): no answer,
// a TLS failure, or an HTTP answer that is not a WebSocket endpoint's;
// CutOff counts dials the run's own end interrupted, which are neither
// completed nor failed. PeakPerSecond is the busiest 100 ms (a
// sliding window) scaled to a second. Echo latency is from the send (or the
// due time, with a Rate) to the echo's arrival. Memory per connection is the
// growth of heap plus goroutine stacks divided by the connections held, and
// is withheld, with the reason, when the growth is not clearly above the
// measurement's noise (Memory.Withheld).
//
// Report.WriteText prints the report for people, Report.WriteJSON as JSON
// (schema "ebb-bench/1", see Schema), and Report.Check turns it into an
// error when nothing was measured or too many handshakes failed.
//
// The package never prints, reads flags or exits; progress goes to the
// Options.Progress callback.
package loadgen
