// Package websocket implements the WebSocket protocol (RFC 6455) with
// permessage-deflate compression (RFC 7692) for servers on net/http and for
// clients.
//
// Accept upgrades an HTTP request to a WebSocket connection; Dial opens one.
// A Conn is safe for one reader and any number of concurrent writers: every
// message is written whole, and control frames (ping, pong, close) are
// interleaved safely between the frames of a fragmented message.
//
// Every way a connection can end is reported as a *CloseError carrying the
// close code (see package closecode) and whether the peer or this endpoint
// sent it. A client that requires an extension the server did not accept
// closes with 1010 Mandatory Extension and returns a *MandatoryExtensionError.
//
// # Hostile peers
//
// What a peer can make a Conn hold is bounded by what it actually sent and
// by stated limits, all on by default:
//
//   - Message size: the read limit (AcceptOptions.ReadLimit,
//     DialOptions.ReadLimit, Conn.SetReadLimit; default DefaultReadLimit,
//     32 MiB) bounds a message after decompression. An uncompressed message
//     whose frame headers announce more is refused with 1009 before any of
//     its payload is read; a compressed one once it has inflated one byte
//     past the limit. Frame lengths up to 2^63-1 and their sums cannot wrap
//     around. A negative limit removes it; the memory budget below still
//     bounds Read and ReadInto.
//   - Memory follows bytes received, never sizes announced: Read and
//     ReadInto allocate a message's announced size at once only up to
//     BudgetFreeBytes (16 KiB), or in the caller's buffer. Larger messages
//     gather in chunks as their bytes arrive (stored, buffered, or, on
//     Linux, received by the socket), at most about twice what arrived and
//     never more than the read limit plus one byte, and are copied once
//     into a slice of their own. Reader streams and holds nothing.
//   - Messages in flight share a MemoryBudget (AcceptOptions.MemoryBudget,
//     DialOptions.MemoryBudget; default DefaultMemoryBudget: a quarter of
//     GOMEMLIMIT when set, else 256 MiB). Buffers up to BudgetFreeBytes per
//     message do not count, so small messages never wait. When the budget
//     is spent, a large message stops reading (TCP slows its sender) and
//     waits, at most MemoryBudgetMaxWait (5 s) and no longer than its
//     read's context; then it is refused with 1013 Try Again Later and a
//     retry-after= hint. A message larger than the whole budget is refused
//     with 1009 at once. When all messages holding part of the budget wait
//     for more, the one holding most goes on past it: the budget is then
//     exceeded by at most one message (see MemoryBudget). Peak heap for
//     messages can reach about twice that (chunks wait in pools, copies
//     for the garbage collector), and with the default GOGC a process's
//     RSS under a flood of large messages 2.5–3 × the budget; GOMEMLIMIT
//     caps it (see NewMemoryBudget). ReadHeld keeps a delivered message
//     counted until the application lets it go (an echo, a queue).
//   - Control frames are read into a fixed 125-byte buffer.
//   - Between messages a Conn holds no read buffer (on plain sockets) and
//     nothing of the last message: pooled chunks are freed by the garbage
//     collector when unused.
//   - Dial reads at most DialOptions.MaxResponseHeaderBytes (default
//     DefaultMaxResponseHeaderBytes, 1 MiB) of handshake response headers,
//     from the server or a proxy, and the handshake is bounded by its
//     context.
//
// Time is not bounded by this package: a peer that sends slowly keeps what
// it sent for as long as it keeps the connection. Give reads a context
// with a deadline, or let package shed close idle and slow connections.
package websocket
