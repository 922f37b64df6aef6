// Package shed is ebb's overload control for WebSocket servers: it decides
// per upgrade request whether the server can take one more connection, and
// when it cannot, it says so with close code 1013 Try Again Later and a
// computed, jittered retry hint instead of letting clients pile up.
// It also sheds existing connections gradually under sustained pressure and
// drains them with 1012 Service Restart on shutdown.
//
// # In front of any WebSocket library
//
// [Shedder.Middleware] wraps any http.Handler. Requests that are not
// WebSocket upgrades pass through untouched. For a refused upgrade, shed
// writes the 101 response and the Close frame itself with the standard
// library, so the handler behind it (ebb's websocket, gorilla/websocket,
// coder/websocket, …) never runs. Admitted requests hold a slot that is
// freed when the handler returns; handlers that call [Track] (or use
// [Accept] for ebb connections) also let shed close their connection with a
// code when it sheds load or drains.
//
// # Refusal modes
//
// Below the hard ceiling ([Limits.HardDemand], [Limits.HardPressure]) a
// refused client gets the upgrade and then at once a Close frame with 1013
// and a reason such as "server at capacity; retry-after=4.5" (see
// closecode.FormatRetryHint), so every client, browsers included, learns why
// and when to come back. Above the ceiling shed answers HTTP 503 with a
// Retry-After header before any upgrade, the cheapest answer there is (a
// browser only sees 1006 then).
//
// # Connect storms
//
// Refusing must not hurt the connections already admitted, and on a busy
// process Go's scheduler lets new connections' goroutines run ahead of
// established ones (pace.go explains how). [Shedder.Listener] wraps the
// server's net.Listener to prevent that: it bounds the connections between
// accept and admission (ListenerOptions.MaxPending; the rest wait in the
// kernel's listen queue), paces its accept loop during a burst so that
// established connections get the CPU first, and past the hard ceiling
// writes a pre-rendered 503 and closes the connection before net/http
// starts a goroutine or parses anything. Use it whenever a storm is
// possible:
//
//	sh, _ := shed.New(&shed.Options{Limits: shed.Limits{MaxConns: 10_000, HardDemand: 20_000}})
//	ln, _ := net.Listen("tcp", ":8080")
//	http.Serve(sh.Listener(ln, &shed.ListenerOptions{MaxPending: 16 * runtime.GOMAXPROCS(0)}), mux)
//
// # Hostile clients
//
// The same Listener keeps clients that hold connections without finishing
// requests from holding the server. Its bounds, all options of
// [ListenerOptions] with P = MaxPending:
//
//   - pending places: P connections receiving or being handled before the
//     response begins (default 0: no bound; ebb serve uses 16×GOMAXPROCS);
//   - request headers: 10 s (HeaderTimeout) while at most P/2 places are
//     used, shrinking linearly to 1 s (MinHeaderTimeout) with all P used;
//   - one address: while all places are taken, an address with
//     max(2, P/4) (MaxPendingPerIP) slow requests gets a 503 at once, and
//     its slow connections give their places to newcomers from other
//     addresses (after 250 ms, or at once to a newcomer whose request is
//     complete within 25 ms of its connection);
//   - idle keep-alive connections: none of the P places; at most
//     max(64, P) (MaxIdle), each kept 30 s (IdleTimeout), less as places
//     fill.
//
// [Shedder.Listener] says what an attacker can hold with N connections.
// Past a hard ceiling, demand that comes from one address over
// [Limits.MaxConnsPerIP] does not count, so one address cannot turn the
// server to 503s for everyone, and hard mode ends within
// [Options.DemandWindow] (2 s) of the end of a storm (see Stats.Demand
// and Limits.HardDemand).
//
// # In a cluster
//
// Behind a load balancer, one server's limit is only part of the story.
// [Options.Advisor] lets connection-limit decisions be the cluster's
// (ebb serve --cluster adapts its cluster view to it; shed itself knows
// nothing of clusters): when this server is full but others have room,
// the refusal says so ("node at capacity, cluster has room", reason
// node_full) with a short hint, since the balancer will route the retry
// elsewhere; when the cluster is full, the reason is cluster_full and the
// hint comes from the cluster's overload, the same on every server; a
// cluster-wide connection limit and per-address limit can refuse what
// this server alone would admit. shed's own limits always hold.
// [Stats] carries what a cluster's load report needs (connections,
// demand, pressure, and the Limits in force), and [Shedder.HeavyAddrs]
// the busiest client addresses.
//
// A drain in a cluster should not send away more clients than the
// others can admit at once: [Shedder.ShutdownWith] takes a [DrainPlan]
// (window, batch interval, hint and its spread) computed from their
// headroom and admission rate, in place of the Options' fixed window.
//
// # Metrics
//
// [Shedder.WritePrometheus] writes these metrics in the Prometheus text
// exposition format:
//
//	ebb_connections                      gauge    connections holding a slot (admitted, handler still running)
//	ebb_handshakes_in_flight             gauge    admitted requests that have not yet hijacked or registered
//	ebb_pressure_ratio                   gauge    last sampled runtime pressure, 1 = at a pressure limit
//	ebb_draining                         gauge    1 once Shutdown has started
//	ebb_demand                           gauge    connections plus the refusals of the last DemandWindow that more capacity could have admitted
//	ebb_hard_mode                        gauge    1 while demand is past HardDemand (refusals are 503s)
//	ebb_hard_mode_entered_total          counter  times hard mode started
//	ebb_admitted_total                   counter  upgrade requests admitted
//	ebb_refused_total{reason,mode}       counter  upgrade requests refused, by Reason and Mode
//	ebb_shed_total                       counter  connections closed with 1013 by shedding
//	ebb_drained_total                    counter  connections closed by Shutdown with the drain code
//	ebb_force_closed_total               counter  connections force-closed when Shutdown's context ended
//	ebb_listener_pending                 gauge    connections at Listeners receiving or being handled before the response begins
//	ebb_listener_idle                    gauge    idle keep-alive HTTP connections at Listeners
//	ebb_listener_pending_waits_total     counter  connections that waited for a pending place
//	ebb_listener_probation_total         counter  connections a full Listener took on probation
//	ebb_listener_closed_total{reason}    counter  connections a Listener closed, by reason
//	ebb_close_codes_total{code,direction} counter close codes sent and received (direction "sent" or "received")
//
// In ebb_refused_total, reason is one of conns, per_ip, rate, in_flight,
// memory, sched_latency, pressure, draining, pending_per_ip (a Listener's
// per-address share of pending places), node_full (at MaxConns while the
// cluster has room, as the Advisor said) or cluster_full (the cluster is
// full or at its own limit); per_ip also counts refusals for an
// address's share across the cluster. mode is close (upgrade, then Close
// frame) or http (503 before the upgrade). In
// ebb_listener_closed_total, reason is header_timeout (request headers
// past the header time; answered 408, or 503 with a retry hint when the
// time was cut short by contended places), evicted (slow request headers
// whose place went to a newcomer from another address; 503), probation (a
// connection on probation whose request head was not in within 25 ms;
// 503), idle_timeout, idle_limit (MaxIdle others were idle), or no_place
// (a request on a kept-alive or probation connection found no place
// within PendingWait). Codes outside the wire ranges are counted under
// code="other".
package shed
