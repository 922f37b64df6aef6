package shed

import (
	"bufio"
	"io"
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

	// Admitted counts upgrade requests admitted.
	Admitted uint64
	// Refused counts refusals by reason and mode; pairs never seen are
	// absent.
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
	s.mu.Lock()
	st.Connections, st.InFlight, st.Draining = s.conns, s.inflight, s.draining
	s.mu.Unlock()
	st.Pressure = s.PressureRatio()
	return st
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
