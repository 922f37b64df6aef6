package demo

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/reconnect"
)

// TestSenderOf checks the attribution of a reconnect.Client's closes.
func TestSenderOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		e    reconnect.Event
		want Sender
	}{
		{"refused with 1013", reconnect.Event{Code: closecode.TryAgainLater, Remote: true}, SentByServer},
		{"drained with 1012", reconnect.Event{Code: closecode.ServiceRestart, Remote: true}, SentByServer},
		{"client ends its session", reconnect.Event{Code: closecode.NormalClosure}, SentByClient},
		{"client's own 1010", reconnect.Event{Code: closecode.MandatoryExtension}, SentByClient},
		{"dropped without a close frame", reconnect.Event{Code: closecode.AbnormalClosure}, SentLocally},
		{"1006 never comes from the server", reconnect.Event{Code: closecode.AbnormalClosure, Remote: true}, SentLocally},
		{"empty close frame", reconnect.Event{Code: closecode.NoStatusReceived, Remote: true}, SentLocally},
		{"HTTP 503", reconnect.Event{Status: 503}, SentOverHTTP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := senderOf(tt.e); got != tt.want {
				t.Errorf("senderOf(%+v) = %q, want %q", tt.e, got, tt.want)
			}
		})
	}
}

// TestWriteText checks the summary's attributions and numbers on the
// fixture.
func TestWriteText(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := fixture().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"1. Overload → backoff (0.0–5.0 s)",
		"2 got in at the first try, 2 were refused",
		"retry-after=1.2–2.5 s, 3 different values",
		"which was the longer of the two for 3 of the 3 waits",
		"retry 1:  2 waits, median 1.3 s, longest 1.4 s",
		"2. Full node → scale out (5.0–10.0 s)",
		"4 clients that want to stay (persistent links) reach a cluster through a load balancer.",
		"Node A (embedded NATS) admits 2: 2 got in at once, and nobody leaves,",
		`Alone for 2.0 s, node A was the whole cluster: 3 refusals to 2 clients said "cluster at capacity",`,
		"retry-after=1.2–1.8 s, and the refused came back to be refused again.",
		"A counted it in the cluster 40 ms after B started.",
		"/healthz every 0.5 s, 3 good checks to enter) sent clients to B 0.5 s after the join.",
		`In between, 1 refusal said "node at capacity, cluster has room", retry-after=0.6 s:`,
		"All 4 were served 1.4 s after the join; no refusal came after that.",
		"At the end node A held 2 (its limit) and node B 2, the overflow.",
		"3. Drain → restart (10.0–15.5 s)",
		"it closed all 4 with 1012 Service Restart",
		"each with retry-after=5.1–7.2 s",
		"a newcomer got 1012 Service Restart (retry-after=5.5 s)",
		`/healthz answered "503 draining"`,
		"4 of 4 were back 1.5 s after the restart",
		"4. Missing extension (15.5–17.0 s)",
		"permessage-deflate (server did not accept it)",
		"did not retry",
		"echoed it back",
		"Fix: Look at the Sec-WebSocket-Extensions response header",
		"1006 Abnormal Closure ×1 — local (no close frame), recorded by 1 of the 4 crowd clients",
		"1010 Mandatory Extension ×1 — sent by the client (Close frame): the client requiring permessage-deflate",
		"1012 Service Restart ×5 — sent by the server (Close frame) to all 4 crowd clients and a newcomer",
		"1013 Try Again Later ×7 — sent by the server (Close frame) to 2 of the 4 crowd clients",
		"1000 Normal Closure ×9 — sent by the client (Close frame): all 4 crowd clients",
		"1006 is never sent on the wire",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	if strings.Contains(out, "1006 Abnormal Closure ×1 — sent by") {
		t.Error("the summary says someone sent 1006")
	}
	if t.Failed() {
		t.Logf("summary:\n%s", out)
	}
}

// TestWriteJSON checks the JSON's shape: seconds, senders, codes, and no
// HTML escaping.
func TestWriteJSON(t *testing.T) {
	t.Parallel()
	r := fixture()
	r.Timeline = "/tmp/a&b.png"
	var b bytes.Buffer
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Seconds  float64 `json:"seconds"`
		Chapters []struct {
			Name    string          `json:"name"`
			Start   float64         `json:"start"`
			End     float64         `json:"end"`
			Finding json.RawMessage `json:"finding"`
		} `json:"chapters"`
		Codes []struct {
			Code    int    `json:"code"`
			Sender  string `json:"sender"`
			Count   int    `json:"count"`
			Clients int    `json:"clients"`
		} `json:"codes"`
		Events   []map[string]any `json:"events"`
		Timeline string           `json:"timeline"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if got.Seconds != 17 || len(got.Chapters) != 4 || got.Chapters[2].Start != 10 || got.Chapters[2].End != 15.5 || len(got.Events) != len(r.Events) {
		t.Errorf("JSON %+v", got)
	}
	senders := map[int]string{}
	for _, c := range got.Codes {
		senders[c.Code] = c.Sender
	}
	if senders[1006] != "local" || senders[1013] != "server" || senders[1010] != "client" {
		t.Errorf("senders by code %v", senders)
	}
	var restart struct {
		HintMin float64 `json:"hint_min"`
		Early   map[string]int
	}
	if err := json.Unmarshal(got.Chapters[2].Finding, &restart); err != nil || restart.HintMin != 5.1 {
		t.Errorf("restart finding %s: %v", got.Chapters[2].Finding, err)
	}
	var scale struct {
		Before struct {
			Count   int            `json:"count"`
			Reasons map[string]int `json:"reasons"`
		} `json:"refusals_before_join"`
		After struct {
			Count   int     `json:"count"`
			HintMax float64 `json:"hint_max"`
		} `json:"refusals_after_join"`
		Late        *int    `json:"refusals_after_all_served"`
		ServedAfter float64 `json:"all_served_after"`
		NodeA       int     `json:"node_a_connections"`
		NodeB       int     `json:"node_b_connections"`
	}
	if err := json.Unmarshal(got.Chapters[1].Finding, &scale); err != nil || scale.Before.Count != 3 || scale.Before.Reasons["cluster at capacity"] != 3 ||
		scale.After.Count != 1 || scale.After.HintMax != 0.6 || scale.Late == nil || *scale.Late != 0 || scale.ServedAfter != 1.4 || scale.NodeA != 2 || scale.NodeB != 2 {
		t.Errorf("scale-out finding %s: %v", got.Chapters[1].Finding, err)
	}
	if !strings.Contains(b.String(), `"/tmp/a&b.png"`) || !strings.Contains(b.String(), "overload → backoff") {
		t.Errorf("JSON escapes HTML or the arrow:\n%s", b.String())
	}
}
