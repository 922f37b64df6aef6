package shed

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/websocket"
)

func TestWritePrometheus(t *testing.T) {
	t.Parallel()
	s := mustNew(t, &Options{Limits: Limits{MaxConns: 2, HardDemand: 2}, MemoryBudget: websocket.NewMemoryBudget(3 << 20)})
	slots := admitN(t, s, "10.0.0.1:1", 2)
	s.stats.admitted.Add(2) // admitN bypasses the middleware that counts
	rec := httptest.NewRecorder()
	s.Middleware(http.NotFoundHandler()).ServeHTTP(rec, upgradeRequest("10.0.0.2:1"))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503 at the hard ceiling", rec.Code)
	}
	s.RecordClose(closecode.Code(4001), Received)
	s.RecordClose(closecode.Code(999), Received) // invalid: counted as other
	s.RecordClose(closecode.NormalClosure, Sent)
	s.RecordClose(closecode.MandatoryExtension, Echoed)
	slots[0].release()

	var buf bytes.Buffer
	if err := s.WritePrometheus(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()

	sampleRE := regexp.MustCompile(`^([a-z_]+)(\{([a-z_]+="[^"]*")(,[a-z_]+="[^"]*")*\})? (\S+)$`)
	help, typ := map[string]int{}, map[string]int{}
	values := map[string]float64{}
	for i, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			help[strings.Fields(line)[2]]++
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(line)
			if len(f) != 4 || (f[3] != "gauge" && f[3] != "counter") {
				t.Fatalf("line %d: bad TYPE line %q", i, line)
			}
			typ[f[2]]++
		default:
			m := sampleRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("line %d: %q is not a sample line", i, line)
			}
			if help[m[1]] != 1 || typ[m[1]] != 1 {
				t.Fatalf("line %d: sample of %s without one HELP and TYPE before it", i, m[1])
			}
			v, err := strconv.ParseFloat(m[len(m)-1], 64)
			if err != nil {
				t.Fatalf("line %d: value %q: %v", i, m[len(m)-1], err)
			}
			values[strings.TrimSuffix(line, " "+m[len(m)-1])] = v
		}
	}
	want := map[string]float64{
		"ebb_connections":          1,
		"ebb_handshakes_in_flight": 1,
		"ebb_draining":             0,
		"ebb_admitted_total":       2,
		`ebb_refused_total{reason="conns",mode="http"}`:            1,
		`ebb_refused_total{reason="conns",mode="close"}`:           0,
		`ebb_refused_total{reason="draining",mode="close"}`:        0,
		`ebb_close_codes_total{code="4001",direction="received"}`:  1,
		`ebb_close_codes_total{code="other",direction="received"}`: 1,
		`ebb_close_codes_total{code="1000",direction="sent"}`:      1,
		`ebb_close_codes_total{code="1010",direction="echoed"}`:    1,
		"ebb_message_memory_limit_bytes":                           3 << 20,
		"ebb_message_memory_in_use_bytes":                          0,
		`ebb_message_memory_refused_total{code="1009"}`:            0,
		`ebb_message_memory_refused_total{code="1013"}`:            0,
		"ebb_shed_total":         0,
		"ebb_drained_total":      0,
		"ebb_force_closed_total": 0,
		"ebb_pressure_ratio":     0,
		// One connection plus the 503, which counts; 2 ≥ HardDemand 2
		// started hard mode, and it lasts until demand is below 1.5.
		"ebb_demand":                       2,
		"ebb_hard_mode":                    1,
		"ebb_hard_mode_entered_total":      1,
		"ebb_listener_pending":             0,
		"ebb_listener_idle":                0,
		"ebb_listener_pending_waits_total": 0,
		"ebb_listener_probation_total":     0,
		`ebb_refused_total{reason="pending_per_ip",mode="http"}`: 0,
	}
	for _, why := range closeWhyNames {
		want[`ebb_listener_closed_total{reason="`+why+`"}`] = 0
	}
	for k, v := range want {
		got, ok := values[k]
		if !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, v)
		}
	}
	if n := strings.Count(out, "ebb_refused_total{"); n != numReasons*numModes {
		t.Errorf("%d ebb_refused_total series, want every reason×mode (%d)", n, numReasons*numModes)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestStatsSnapshotIsACopy(t *testing.T) {
	t.Parallel()
	s := mustNew(t, nil)
	s.RecordClose(closecode.NormalClosure, Sent)
	st := s.Stats()
	st.CloseSent[closecode.NormalClosure] = 99
	if got := s.Stats().CloseSent[closecode.NormalClosure]; got != 1 {
		t.Fatalf("changing a snapshot changed the Shedder: %d", got)
	}
}
