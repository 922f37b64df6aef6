// Package hostile holds ebb's hostile-client suite: tests that attack the
// real `ebb serve` binary over raw loopback sockets (slowloris, idle
// keep-alives, announced-but-never-sent frames, deflate bombs, connect
// storms, per-IP hammering, broadcast laggards, framing violations, ping
// floods) and the `ebb connect` and `ebb probe` clients with hostile raw
// servers (black holes, endless headers, unread output, absurd retry
// hints).
//
// Every test states its bound as a constant and asserts two things while
// the attack runs: availability (an honest client, dialing from another
// loopback address, keeps completing echo sessions within a deadline) and
// memory (the attacked process's RSS from /proc, its heap from /metrics).
// README.md in this directory lists the attacks, their bounds and how to
// reproduce the figures; EBB_HOSTILE_REPORT=path writes them as a Markdown
// table.
//
// The package has no API: everything lives in its _test.go files. The
// suite is heavy (it builds ebb and starts a server per test), so -short
// skips it; it is Linux only, since it reads /proc and binds 127.0.0.2 and
// up.
package hostile
