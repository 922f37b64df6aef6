package shed

import (
	"bufio"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/ebb-ws/ebb/closecode"
)

// otherCode is where close codes outside every valid range are counted
// (label code="other"), so that a hostile peer cannot grow the tables.
const otherCode closecode.Code = 0

// counters are the cumulative counts behind Stats.
type counters struct {
	admitted atomic.Uint64
	refused  [numReasons + 1][numModes + 1]atomic.Uint64
	shed     atomic.Uint64
	drained  atomic.Uint64
	forced   atomic.Uint64

	hardEntered    atomic.Uint64 // times hard mode started
	pending        atomic.Int64  // Listeners' pending connections
	idle           atomic.Int64  // Listeners' idle keep-alive connections
	pendingWaits   atomic.Uint64
	probation      atomic.Uint64
	listenerClosed [numCloseWhys]atomic.Uint64

	codesMu  sync.Mutex
	sent     map[closecode.Code]uint64
	received map[closecode.Code]uint64
}

func (c *counters) init() {
	c.sent = make(map[closecode.Code]uint64)
	c.received = make(map[closecode.Code]uint64)
}

func (c *counters) recordCode(code closecode.Code, dir Direction) {
	if !countable(code) {
		code = otherCode
	}
	c.codesMu.Lock()
	if dir == Received {
		c.received[code]++
	} else {
		c.sent[code]++
	}
	c.codesMu.Unlock()
}

// countable reports whether code gets a label of its own: codes valid on
// the wire and the local-only codes an application may report.
func countable(code closecode.Code) bool {
	return closecode.ValidOnWire(code) || code == closecode.NoStatusReceived ||
		code == closecode.AbnormalClosure || code == closecode.TLSHandshake
}

// RecordClose counts a close code sent or received on a connection shed
// does not see closing itself. See the package-level RecordClose for use
// inside a handler.
func (s *Shedder) RecordClose(code closecode.Code, dir Direction) {
	s.stats.recordCode(code, dir)
}

// Refusal is a (reason, mode) pair, the key of Stats.Refused.
type Refusal struct {
	Reason Reason // which limit refused
	Mode   Mode   // how the client was told
}

// Stats is a snapshot of a Shedder's gauges and counters. Counters are
// cumulative since New.
type Stats struct {
	// Connections is the number of admitted requests whose handler is
	// still running (or that have not called release).
	Connections int
	// InFlight is the number of those still in their handshake.
	InFlight int
	// Pressure is the last sampled runtime pressure ratio (1 = at a
	// pressure limit); 0 when no pressure limit is set.
	Pressure float64
	// Draining is true once Shutdown has started.
	Draining bool
	// Limits are the admission limits in force (see SetLimits): with
	// Connections, Demand and Pressure, what a cluster's load report
	// needs (the node's limit, MaxConns, and its admission rate, Rate).
	Limits Limits
	// Demand is the connections plus the refusals of the last
	// Options.DemandWindow that more capacity could have admitted
	// (per-IP and pending-place refusals do not count; see
	// Limits.HardDemand). Hints grow with it.
	Demand float64
	// HardMode is true while demand is past Limits.HardDemand: refusals
	// are 503s. It starts at HardDemand and ends below three quarters of
	// it.
	HardMode bool
	// HardModeEntered counts the times hard mode started.
	HardModeEntered uint64

	// Pending is the connections pending at the Shedder's Listeners:
	// receiving a request, or being handled before the response begins.
	Pending int
	// IdleHTTP is the idle keep-alive HTTP connections at its Listeners.
	IdleHTTP int
	// PendingWaits counts connections that waited for a pending place:
	// accepted ones with every place taken, and keep-alive ones whose
	// next request found none free.
	PendingWaits uint64
	// HeaderTimeouts counts connections a Listener closed because their
	// request headers took longer than the header time
	// (ListenerOptions.HeaderTimeout, shrinking as places fill): with a
	// 408, or with a 503 and a retry hint when the time had shrunk.
	HeaderTimeouts uint64
	// Evicted counts connections a Listener answered 503 and closed to
	// give their place to a new connection from another address: every
	// place was taken and they had been sending their request for the
	// grace time (ListenerOptions.MinHeaderTimeout / 4).
	Evicted uint64
	// Probation counts connections accepted on probation: every place
	// was taken, at least half by connections slow to send their request,
	// so the new one was handed to the server without a place, to get one
	// (from the slowest) as soon as its request head is in.
	Probation uint64
	// ProbationTimeouts counts connections on probation answered 503 and
	// closed because their request head was not in within 25 ms.
	ProbationTimeouts uint64
	// IdleTimeouts counts idle keep-alive connections closed after the
	// idle time (ListenerOptions.IdleTimeout, shrinking as places fill).
	IdleTimeouts uint64
	// IdleEvicted counts idle keep-alive connections closed because
	// ListenerOptions.MaxIdle others were idle.
	IdleEvicted uint64
	// NoPlace counts connections closed because their request (the next
	// one on a keep-alive connection, or the first of one on probation)
	// found no pending place within ListenerOptions.PendingWait. One on
	// probation is answered with the canned 503 (counted in Refused as
	// in_flight, http); a keep-alive one is closed without an answer, so
	// that the client retries on a new connection.
	NoPlace uint64

	// Admitted counts upgrade requests admitted.
	Admitted uint64
	// Refused counts refusals by reason and mode; pairs never seen are
	// absent. A Listener's refusals have mode http; those for an
	// address's share of pending places have reason pending_per_ip.
	Refused map[Refusal]uint64
	// RefusedTotal is the sum of Refused.
	RefusedTotal uint64
	// Shed counts connections closed with 1013 by shedding.
	Shed uint64
	// Drained counts connections closed with the drain code by Shutdown.
	Drained uint64
	// ForceClosed counts connections dropped when Shutdown's context
	// ended before they closed.
	ForceClosed uint64
	// CloseSent counts close codes sent, by code: shed's own (refusals,
	// shedding, drain), those of connections from Accept, and those
	// reported with RecordClose. Codes outside the valid ranges are
	// counted under 0.
	CloseSent map[closecode.Code]uint64
	// CloseReceived counts close codes received from clients, the same
	// way (refused clients' answers included).
	CloseReceived map[closecode.Code]uint64
}

// Stats returns a snapshot of the counters and gauges.
func (s *Shedder) Stats() Stats {
	st := Stats{
		Admitted:      s.stats.admitted.Load(),
		Refused:       make(map[Refusal]uint64),
		Shed:          s.stats.shed.Load(),
		Drained:       s.stats.drained.Load(),
		ForceClosed:   s.stats.forced.Load(),
		CloseSent:     make(map[closecode.Code]uint64),
		CloseReceived: make(map[closecode.Code]uint64),

		HardModeEntered:   s.stats.hardEntered.Load(),
		Pending:           int(s.stats.pending.Load()),
		IdleHTTP:          int(s.stats.idle.Load()),
		PendingWaits:      s.stats.pendingWaits.Load(),
		HeaderTimeouts:    s.stats.listenerClosed[whyHeaderTimeout].Load(),
		Evicted:           s.stats.listenerClosed[whyEvicted].Load(),
		Probation:         s.stats.probation.Load(),
		ProbationTimeouts: s.stats.listenerClosed[whyProbation].Load(),
		IdleTimeouts:      s.stats.listenerClosed[whyIdleTimeout].Load(),
		IdleEvicted:       s.stats.listenerClosed[whyIdleLimit].Load(),
		NoPlace:           s.stats.listenerClosed[whyNoPlace].Load(),
	}
	for r := Reason(1); r <= numReasons; r++ {
		for m := Mode(1); m <= numModes; m++ {
			if n := s.stats.refused[r][m].Load(); n > 0 {
				st.Refused[Refusal{r, m}] = n
				st.RefusedTotal += n
			}
		}
	}
	s.stats.codesMu.Lock()
	for c, n := range s.stats.sent {
		st.CloseSent[c] = n
	}
	for c, n := range s.stats.received {
		st.CloseReceived[c] = n
	}
	s.stats.codesMu.Unlock()
	now := s.now()
	s.mu.Lock()
	st.Connections, st.InFlight, st.Draining = s.conns, s.inflight, s.draining
	st.Limits = s.limits
	st.Demand, _ = s.demandLocked(now)
	st.HardMode = s.hardDemandLocked(st.Demand)
	s.mu.Unlock()
	st.HardModeEntered = s.stats.hardEntered.Load() // Stats may have started it
	st.Pressure = s.PressureRatio()
	return st
}

// HeavyAddrs returns the client addresses (as the per-address limit counts
// them) holding at least threshold connections, with their counts: at
// most limit of them, the largest first; nil when there is none. A cluster
// publishes them so that a per-address limit can hold across servers
// without publishing every address. It walks every address under the
// Shedder's lock, O(addresses): call it a few times a second, not per
// request.
func (s *Shedder) HeavyAddrs(threshold, limit int) map[netip.Addr]int {
	if limit <= 0 {
		return nil
	}
	threshold = max(threshold, 1)
	type kv struct {
		a netip.Addr
		n int
	}
	var heavy []kv
	s.mu.Lock()
	for a, n := range s.perIP {
		if n >= threshold {
			heavy = append(heavy, kv{a, n})
		}
	}
	s.mu.Unlock()
	if len(heavy) == 0 {
		return nil
	}
	if len(heavy) > limit {
		slices.SortFunc(heavy, func(x, y kv) int {
			if x.n != y.n {
				return y.n - x.n
			}
			return x.a.Compare(y.a)
		})
		heavy = heavy[:limit]
	}
	out := make(map[netip.Addr]int, len(heavy))
	for _, e := range heavy {
		out[e.a] = e.n
	}
	return out
}

// WritePrometheus writes the metrics listed in the package documentation
// in the Prometheus text exposition format (version 0.0.4), for a
// /metrics handler:
//
//	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
//	_ = sh.WritePrometheus(w)
//
// Every reason and mode pair is written, zeros included, so that rate()
// works from the first refusal on.
func (s *Shedder) WritePrometheus(w io.Writer) error {
	st := s.Stats()
	bw := bufio.NewWriter(w)
	gauge := func(name, help string, v float64) {
		header(bw, name, help, "gauge")
		sample(bw, name, "", v)
	}
	counter := func(name, help string, v uint64) {
		header(bw, name, help, "counter")
		sample(bw, name, "", float64(v))
	}
	gauge("ebb_connections", "WebSocket connections holding an admission slot.", float64(st.Connections))
	gauge("ebb_handshakes_in_flight", "Admitted upgrade requests still in their handshake.", float64(st.InFlight))
	gauge("ebb_pressure_ratio", "Last sampled runtime pressure; 1 means at a pressure limit.", st.Pressure)
	draining := 0.0
	if st.Draining {
		draining = 1
	}
	gauge("ebb_draining", "1 once Shutdown has started, else 0.", draining)
	gauge("ebb_demand", "Connections plus the refusals of the last demand window that more capacity could have admitted.", st.Demand)
	hard := 0.0
	if st.HardMode {
		hard = 1
	}
	gauge("ebb_hard_mode", "1 while demand is past HardDemand and refusals are 503s, else 0.", hard)
	counter("ebb_hard_mode_entered_total", "Times demand reached HardDemand and hard mode started.", st.HardModeEntered)
	counter("ebb_admitted_total", "WebSocket upgrade requests admitted.", st.Admitted)

	header(bw, "ebb_refused_total", "WebSocket upgrade requests refused, by reason and mode (close: upgrade then Close frame; http: 503).", "counter")
	for r := Reason(1); r <= numReasons; r++ {
		for m := Mode(1); m <= numModes; m++ {
			sample(bw, "ebb_refused_total", `reason="`+r.String()+`",mode="`+m.String()+`"`, float64(st.Refused[Refusal{r, m}]))
		}
	}
	counter("ebb_shed_total", "Connections closed with 1013 by load shedding.", st.Shed)
	counter("ebb_drained_total", "Connections closed with the drain code (1012 or 1001) by Shutdown.", st.Drained)
	counter("ebb_force_closed_total", "Connections dropped without a closing handshake when Shutdown's context ended.", st.ForceClosed)

	gauge("ebb_listener_pending", "Connections at shed Listeners receiving a request or being handled before the response begins.", float64(st.Pending))
	gauge("ebb_listener_idle", "Idle keep-alive HTTP connections at shed Listeners.", float64(st.IdleHTTP))
	counter("ebb_listener_pending_waits_total", "Connections that waited for a pending place at a shed Listener.", st.PendingWaits)
	counter("ebb_listener_probation_total", "Connections a full shed Listener took on probation, without a place until their request head was in.", st.Probation)
	header(bw, "ebb_listener_closed_total", "Connections a shed Listener closed, by reason: header_timeout, evicted, probation, idle_timeout, idle_limit, no_place.", "counter")
	for why, v := range [numCloseWhys]uint64{st.HeaderTimeouts, st.Evicted, st.ProbationTimeouts, st.IdleTimeouts, st.IdleEvicted, st.NoPlace} {
		sample(bw, "ebb_listener_closed_total", `reason="`+closeWhyNames[why]+`"`, float64(v))
	}

	header(bw, "ebb_close_codes_total", "Close codes sent and received, by code and direction.", "counter")
	for _, dir := range []Direction{Sent, Received} {
		m := st.CloseSent
		if dir == Received {
			m = st.CloseReceived
		}
		codes := make([]closecode.Code, 0, len(m))
		for c := range m {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		for _, c := range codes {
			label := "other"
			if c != otherCode {
				label = strconv.Itoa(int(c))
			}
			sample(bw, "ebb_close_codes_total", `code="`+label+`",direction="`+dir.String()+`"`, float64(m[c]))
		}
	}
	return bw.Flush()
}

func header(w *bufio.Writer, name, help, typ string) {
	w.WriteString("# HELP " + name + " " + help + "\n# TYPE " + name + " " + typ + "\n")
}

func sample(w *bufio.Writer, name, labels string, v float64) {
	w.WriteString(name)
	if labels != "" {
		w.WriteString("{" + labels + "}")
	}
	w.WriteByte(' ')
	w.Write(strconv.AppendFloat(w.AvailableBuffer(), v, 'g', -1, 64))
	w.WriteByte('\n')
}
