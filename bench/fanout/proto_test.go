package fanout

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPayloadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id  uint64
		ns  int64
		pad int
	}{{1, 0, 0}, {42, 123456789, 10}, {1 << 40, 1 << 60, 64}} {
		p := Payload(tc.id, tc.ns, tc.pad)
		if !json.Valid(p) {
			t.Fatalf("Payload(%d, %d, %d) = %q: not JSON", tc.id, tc.ns, tc.pad, p)
		}
		id, ns, ok := ParsePayload(p)
		if !ok || id != tc.id || ns != tc.ns {
			t.Errorf("ParsePayload(%q) = %d, %d, %v; want %d, %d, true", p, id, ns, ok, tc.id, tc.ns)
		}
	}
	for _, bad := range []string{"", "{}", `{"i":,"t":1}`, `{"i":1}`, `{"i":1,"t":}`, `{"i":x,"t":1}`, `1\n{"i":1,"t":2}`} {
		if _, _, ok := ParsePayload([]byte(bad)); ok {
			t.Errorf("ParsePayload(%q) succeeded, want failure", bad)
		}
	}
}

func TestParseResume(t *testing.T) {
	tests := []struct {
		text    bool
		in      string
		want    ResumeMsg
		wantErr string
	}{
		{true, "7\nhello", ResumeMsg{Kind: ResumeData, Seq: 7, Payload: []byte("hello")}, ""},
		{false, "12\n\x00\x01", ResumeMsg{Kind: ResumeData, Seq: 12, Payload: []byte("\x00\x01")}, ""},
		{true, "5\n", ResumeMsg{Kind: ResumeData, Seq: 5, Payload: []byte{}}, ""},
		{true, "!live 10", ResumeMsg{Kind: ResumeLive, Next: 10}, ""},
		{true, "!gap 3 9", ResumeMsg{Kind: ResumeGap, From: 3, Next: 9}, ""},
		{true, "!hello world", ResumeMsg{Kind: ResumeUnknown}, ""},
		{true, "!", ResumeMsg{Kind: ResumeUnknown}, ""},
		{true, "07\nx", ResumeMsg{}, "leading zeros"},
		{true, "0\nx", ResumeMsg{}, "≥ 1"},
		{true, "abc", ResumeMsg{}, "envelope"},
		{true, "x\nabc", ResumeMsg{}, "decimal"},
		{true, "!live", ResumeMsg{}, "!live <next>"},
		{true, "!live x", ResumeMsg{}, "decimal"},
		{true, "!gap 9 3", ResumeMsg{}, "before from"},
		{true, "!gap 3", ResumeMsg{}, "!gap <from> <next>"},
		{false, "!live 3", ResumeMsg{}, "binary frame"},
		{true, "99999999999999999999999\nx", ResumeMsg{}, "decimal"},
	}
	for _, tc := range tests {
		got, err := ParseResume(tc.text, []byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseResume(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseResume(%q): %v", tc.in, err)
			continue
		}
		if got.Kind != tc.want.Kind || got.Seq != tc.want.Seq || got.From != tc.want.From || got.Next != tc.want.Next || string(got.Payload) != string(tc.want.Payload) {
			t.Errorf("ParseResume(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestResumeTarget(t *testing.T) {
	if got := ResumeTarget("/broadcast", 0); got != "/broadcast" {
		t.Errorf("ResumeTarget(0) = %q", got)
	}
	if got := ResumeTarget("/broadcast", 17); got != "/broadcast?from=17" {
		t.Errorf("ResumeTarget(17) = %q", got)
	}
}

func TestCentCommands(t *testing.T) {
	var c struct {
		ID      int               `json:"id"`
		Connect map[string]string `json:"connect"`
	}
	if err := json.Unmarshal(CentConnect(1, "bench"), &c); err != nil || c.ID != 1 || c.Connect["name"] != "bench" {
		t.Fatalf("CentConnect = %s (%v)", CentConnect(1, "bench"), err)
	}
	var s struct {
		ID        int `json:"id"`
		Subscribe struct {
			Channel string  `json:"channel"`
			Recover bool    `json:"recover"`
			Offset  *uint64 `json:"offset"`
			Epoch   string  `json:"epoch"`
		} `json:"subscribe"`
	}
	if err := json.Unmarshal(CentSubscribe(2, "ch", false, 0, ""), &s); err != nil {
		t.Fatal(err)
	}
	if s.ID != 2 || s.Subscribe.Channel != "ch" || s.Subscribe.Recover || s.Subscribe.Offset != nil {
		t.Errorf("first subscribe = %+v, want channel only", s)
	}
	if err := json.Unmarshal(CentSubscribe(3, "ch", true, 41, "ep"), &s); err != nil {
		t.Fatal(err)
	}
	if !s.Subscribe.Recover || s.Subscribe.Offset == nil || *s.Subscribe.Offset != 41 || s.Subscribe.Epoch != "ep" {
		t.Errorf("recovering subscribe = %+v, want recover from 41 in ep", s)
	}
	var pb struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
		Key     *string         `json:"idempotency_key"`
	}
	if err := json.Unmarshal(CentPublishBody("ch", Payload(3, 4, 1), "k3"), &pb); err != nil || string(pb.Data) != string(Payload(3, 4, 1)) || pb.Key == nil || *pb.Key != "k3" {
		t.Errorf("CentPublishBody: %s key %v (%v)", pb.Data, pb.Key, err)
	}
	pb.Key = nil
	if err := json.Unmarshal(CentPublishBody("ch", Payload(3, 4, 1), ""), &pb); err != nil || pb.Key != nil {
		t.Errorf("CentPublishBody without a key sent one: %v (%v)", pb.Key, err)
	}
}

func TestParseCent(t *testing.T) {
	frame := `{"id":1,"connect":{"client":"c1","version":"6","ping":25,"pong":true}}
{"id":2,"subscribe":{"recoverable":true,"epoch":"e1","offset":9,"positioned":true,"was_recovering":true,"recovered":true,"publications":[{"data":{"i":1,"t":2},"offset":8},{"data":{"i":2,"t":3},"offset":9}]}}
{}
{"push":{"channel":"ch","pub":{"data":{"i":3,"t":4},"offset":10}}}
{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}
{"id":3,"error":{"code":108,"message":"not available"}}`
	var got []*CentReply
	if err := ParseCent([]byte(frame), func(r *CentReply) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Fatalf("got %d objects, want 6", len(got))
	}
	if got[0].Connect == nil || !got[0].Connect.Pong || got[0].Connect.Ping != 25 {
		t.Errorf("connect = %+v", got[0].Connect)
	}
	s := got[1].Subscribe
	if s == nil || s.Epoch != "e1" || s.Offset != 9 || !s.Recovered || len(s.Publications) != 2 || s.Publications[1].Offset != 9 {
		t.Errorf("subscribe = %+v", s)
	}
	if id, _, ok := ParsePayload(s.Publications[0].Data); !ok || id != 1 {
		t.Errorf("publication data %s does not parse as a payload", s.Publications[0].Data)
	}
	if !got[2].Ping() || got[1].Ping() {
		t.Errorf("ping detection wrong: {} → %v, subscribe → %v", got[2].Ping(), got[1].Ping())
	}
	if got[3].Push == nil || got[3].Push.Pub == nil || got[3].Push.Pub.Offset != 10 {
		t.Errorf("push = %+v", got[3].Push)
	}
	if got[4].Push.Disconnect == nil || got[4].Push.Disconnect.Code != 3001 {
		t.Errorf("disconnect = %+v", got[4].Push)
	}
	if got[5].Error == nil || got[5].Error.Code != 108 {
		t.Errorf("error = %+v", got[5].Error)
	}
	if err := ParseCent([]byte("{\"id\":1}\nnot json"), func(*CentReply) error { return nil }); err == nil {
		t.Error("ParseCent accepted a line that is not JSON")
	}
	stop := errors.New("stop")
	if err := ParseCent([]byte("{}\n{}"), func(*CentReply) error { return stop }); err != stop {
		t.Errorf("ParseCent did not return the callback's error: %v", err)
	}
}

func TestCentFastPub(t *testing.T) {
	for _, tc := range []struct {
		in     string
		data   string
		offset uint64
		ok     bool
	}{
		{`{"push":{"channel":"bench","pub":{"data":{"i":1,"t":2},"offset":7}}}`, `{"i":1,"t":2}`, 7, true},
		{`{"push":{"channel":"bench","pub":{"data":{"i":1,"t":2,"p":"x}{\"y"}}}}`, `{"i":1,"t":2,"p":"x}{\"y"}`, 0, true},
		{`{"push":{"channel":"a","pub":{"data":{"n":{"m":1}},"offset":12}}}`, `{"n":{"m":1}}`, 12, true},
		// Anything else falls back to encoding/json.
		{`{"push":{"channel":"a","pub":{"data":{"i":1},"info":{"user":"u"},"offset":3}}}`, "", 0, false},
		{`{"push":{"channel":"a","pub":{"data":"text","offset":3}}}`, "", 0, false},
		{`{"push":{"channel":"a\"b","pub":{"data":{},"offset":3}}}`, "", 0, false},
		{`{"push":{"channel":"a","pub":{"data":{"i":1},"offset":x}}}`, "", 0, false},
		{`{"push":{"channel":"a","pub":{"data":{"i":1`, "", 0, false},
		{`{"id":1,"connect":{}}`, "", 0, false},
	} {
		data, off, ok := centFastPub([]byte(tc.in))
		if ok != tc.ok || string(data) != tc.data || off != tc.offset {
			t.Errorf("centFastPub(%s) = %s, %d, %v; want %s, %d, %v", tc.in, data, off, ok, tc.data, tc.offset, tc.ok)
		}
		// Whatever the path, ParseCent agrees with encoding/json.
		var want CentReply
		if json.Unmarshal([]byte(tc.in), &want) != nil || want.Push == nil || want.Push.Pub == nil {
			continue
		}
		err := ParseCent([]byte(tc.in), func(r *CentReply) error {
			if r.Push == nil || r.Push.Pub == nil || !json.Valid(r.Push.Pub.Data) || r.Push.Pub.Offset != want.Push.Pub.Offset {
				t.Errorf("ParseCent(%s) = %+v, want %+v", tc.in, r.Push, want.Push)
			}
			return nil
		})
		if err != nil {
			t.Errorf("ParseCent(%s): %v", tc.in, err)
		}
	}
}

func TestCentReconnects(t *testing.T) {
	for code, want := range map[int]bool{1000: true, 1006: true, 1012: true, 3001: true, 3499: true, 3500: false, 3999: false, 4000: true, 4499: true, 4500: false, 4999: false, 5000: true} {
		if got := CentReconnects(code); got != want {
			t.Errorf("CentReconnects(%d) = %v, want %v", code, got, want)
		}
	}
}

func TestCentPolicy(t *testing.T) {
	p := NewCentPolicy()
	now := time.Now()
	// Attempt n waits in [200 ms, 200 ms·2^n], capped at 20 s; a connect resets.
	for n := 1; n <= 10; n++ {
		d, ok := p.Closed(now, 3001, "shutdown")
		hi := min(200*time.Millisecond<<n, 20*time.Second)
		if !ok || d < 200*time.Millisecond || d > hi {
			t.Fatalf("attempt %d: delay %v (retry %v), want in [200ms, %v]", n, d, ok, hi)
		}
	}
	p.Opened(now)
	if d, _ := p.Refused(now, 0, ""); d > 400*time.Millisecond {
		t.Errorf("first attempt after a connect waited %v, want ≤ 400ms", d)
	}
	if _, ok := p.Closed(now, 3501, "bad request"); ok {
		t.Error("3501 reconnected; centrifuge-go stops on 3500–3999")
	}
}

func TestEbbPolicy(t *testing.T) {
	now := time.Now()
	p := NewEbbPolicy(now)
	p.Opened(now)
	// 1012 after a stable connection: attempt 0, window [0.5 s, 1 s).
	d, ok := p.Closed(now.Add(time.Minute), 1012, "restarting")
	if !ok || d < 500*time.Millisecond || d >= time.Second {
		t.Errorf("1012: delay %v (retry %v), want in [500ms, 1s)", d, ok)
	}
	// A 1013 hint is a floor.
	d, ok = p.Closed(now.Add(time.Minute), 1013, "full; retry-after=4.5")
	if !ok || d < 4500*time.Millisecond {
		t.Errorf("1013 with retry-after=4.5: delay %v (retry %v), want ≥ 4.5s", d, ok)
	}
	// HTTP 503 with Retry-After retries no sooner.
	d, ok = p.Refused(now.Add(time.Minute), 503, "3")
	if !ok || d < 3*time.Second {
		t.Errorf("503 Retry-After 3: delay %v (retry %v), want ≥ 3s", d, ok)
	}
	if _, ok := p.Closed(now.Add(time.Minute), 1008, ""); ok {
		t.Error("1008 reconnected; it is permanent")
	}
}

func TestBitsetAndFormatCodes(t *testing.T) {
	var b, o bitset
	for _, id := range []uint64{1, 63, 64, 1000} {
		b.set(id)
	}
	o.set(5000)
	b.or(&o)
	got := b.ids(2)
	want := []uint64{63, 64, 1000, 5000}
	if len(got) != len(want) {
		t.Fatalf("ids(2) = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ids(2) = %v, want %v", got, want)
		}
	}
	if b.has(2) || !b.has(1) {
		t.Error("has is wrong")
	}
	if s := FormatCodes(map[string]int{"1006 no close frame": 2, "1012": 300}); s != "1012 ×300, 1006 no close frame ×2" {
		t.Errorf("FormatCodes = %q", s)
	}
	if s := FormatCodes(nil); s != "none" {
		t.Errorf("FormatCodes(nil) = %q", s)
	}
}
