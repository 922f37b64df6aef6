// Package reconnect keeps a WebSocket link up the way ebb's design asks: it
// reconnects only when the close code's retry class says that can help,
// waits with capped exponential backoff that is jittered on every attempt,
// honours a server's retry hint as a floor, and resets its attempt counter
// only after a connection has stayed up for a stable period.
//
// The package has two layers. The policy (Backoff, Policy, Decision,
// Schedule, ParseRetryAfter) imports no WebSocket code, so users of other Go
// WebSocket libraries can adopt ebb's reconnect rules by feeding it the close
// code and reason or the HTTP answer they saw. The Client wraps
// websocket.Dial with that policy, reports every state change as an Event,
// and queues messages written while the link is down, up to a bound.
package reconnect
