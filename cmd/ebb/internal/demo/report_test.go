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
		"2. Drain → restart (5.0–10.5 s)",
		"it closed all 4 with 1012 Service Restart",
		"each with retry-after=5.1–7.2 s",
		"a newcomer got 1012 Service Restart (retry-after=5.5 s)",
		`/healthz answered "503 draining"`,
		"4 of 4 were back 1.5 s after the restart",
		"3. Missing extension (10.5–12.0 s)",
		"permessage-deflate (server did not accept it)",
		"did not retry",
		"echoed it back",
		"Fix: Look at the Sec-WebSocket-Extensions response header",
		"1006 Abnormal Closure ×1 — local (no close frame), recorded by 1 of the 4 crowd clients",
		"1010 Mandatory Extension ×1 — sent by the client (Close frame): the client requiring permessage-deflate",
		"1012 Service Restart ×5 — sent by the server (Close frame) to all 4 crowd clients and a newcomer",
		"1013 Try Again Later ×3 — sent by the server (Close frame) to 2 of the 4 crowd clients",
		"1000 Normal Closure ×5 — sent by the client (Close frame): all 4 crowd clients",
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
	if got.Seconds != 12 || len(got.Chapters) != 3 || got.Chapters[1].Start != 5 || got.Chapters[1].End != 10.5 || len(got.Events) != len(r.Events) {
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
	if err := json.Unmarshal(got.Chapters[1].Finding, &restart); err != nil || restart.HintMin != 5.1 {
		t.Errorf("restart finding %s: %v", got.Chapters[1].Finding, err)
	}
	if !strings.Contains(b.String(), `"/tmp/a&b.png"`) || !strings.Contains(b.String(), "overload → backoff") {
		t.Errorf("JSON escapes HTML or the arrow:\n%s", b.String())
	}
}
