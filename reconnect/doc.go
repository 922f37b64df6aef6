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
//
// # Resuming a broadcast
//
// A client of a broadcast (ebb serve's /broadcast, cluster-wide) that
// reconnects after 1012, 1013 or a lost network would miss what was
// published while it was away. With Options.Resume the Client speaks
// ebb's resume protocol, the subprotocol ResumeSubprotocol
// ("ebb.resume.v1"), and gets every message it missed once, in order, or
// is told which ones are gone:
//
//   - it offers the subprotocol, and on every connection after it has a
//     position asks for the message after the last one it delivered
//     (the query parameter from=, ResumeFromParam; ResumeOptions.From sets
//     the first connection's, e.g. from LastSeq saved by an earlier run);
//   - the server numbers each message ("<seq>\n" before the payload) and
//     replays from its bounded history; the client strips the number, so
//     Read returns the original payloads with their frame types, and drops
//     any message numbered at or below the last it delivered (a duplicate
//     across a reconnection);
//   - where the stream has a hole, Read returns a *GapError, in order with
//     the messages and not final: the history no longer holds them
//     (GapTooOld, from the server's "!gap"), the server's numbering
//     restarted (GapReset, a "!live" below what the client asked for), or
//     the client could not ask (GapNoResume: the server did not select the
//     subprotocol, or the link broke before the client learned its
//     position). Handle it with errors.As and call Read again;
//   - "!live" (Live) says the replay is over; LastSeq says where the
//     application is;
//   - a server that does not select the subprotocol is reported at once
//     (the Open event's Resume is ResumeRefused, logged as a warning), and
//     its messages are delivered plain;
//   - a message that breaks the protocol ends the connection with 1008
//     Policy Violation (the message is valid WebSocket, so neither 1002
//     nor 1007 fits, and it is not a type mismatch, 1003) and the client
//     stops with a *GaveUpError wrapping a *MalformedResumeError: a new
//     connection would replay the same message.
//
// The backoff, hint and close-code rules do not change. The codec
// (AppendResumeData, AppendResumeGap, AppendResumeLive,
// ParseResumeMessage, ParseResumeFrom) is exported for servers and for
// clients built on other libraries.
package reconnect
