package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ebb-ws/ebb/closecode"
)

// WriteText writes the summary for people: each chapter's findings, then
// every close code the clients saw with who sent it, how many clients saw
// it and what the registry says about it.
func (r *Report) WriteText(w io.Writer) error {
	p := &para{w: w}
	pf := func(format string, args ...any) {
		if p.err == nil {
			_, p.err = fmt.Fprintf(w, format, args...)
		}
	}
	state := "what happened"
	if r.Interrupted {
		state = "interrupted; what was seen so far"
	}
	pf("\nebb demo: %s (%s; %d clients, server limit %d)\n", state, secs(r.Duration), r.Crowd, r.Limit)
	for i, c := range r.Chapters {
		pf("\n%d. %s (%.1f–%s)\n", i+1, capitalize(c.Title), c.Start.Seconds(), secs(c.End))
		if c.Finding == nil {
			p.line("(did not finish)")
			continue
		}
		if p.err == nil {
			p.err = c.Finding.WriteText(w)
		}
	}
	pf("\nClose codes the clients saw, who sent them, and what ebb's registry says:\n")
	for _, c := range r.Codes() {
		code := strconv.Itoa(int(c.Code))
		if c.Code == 0 {
			code = "HTTP"
		}
		pf("  %s %s ×%d — %s\n", code, c.Name, c.Count, r.whoLine(c))
		pf("      %s\n", c.Description)
		pf("      Client should: %s.\n", c.Retry)
	}
	for _, c := range r.Codes() {
		if c.Sender == SentLocally {
			pf("  (%d is never sent on the wire: a client records it itself when a connection ends without a close frame.)\n", int(c.Code))
			break
		}
	}
	if r.Timeline != "" {
		pf("\nTimeline (connections and close events over time): %s\n", r.Timeline)
	}
	return p.err
}

// whoLine says who sent a code and who saw it.
func (r *Report) whoLine(c CodeCount) string {
	var saw []string
	switch {
	case c.Clients == r.Crowd:
		saw = append(saw, fmt.Sprintf("all %d crowd clients", r.Crowd))
	case c.Clients > 0:
		saw = append(saw, fmt.Sprintf("%d of the %d crowd clients", c.Clients, r.Crowd))
	}
	saw = append(saw, c.Others...)
	who := strings.Join(saw, " and ")
	switch c.Sender {
	case SentByServer:
		return "sent by the server (Close frame) to " + who
	case SentByClient:
		return "sent by the client (Close frame): " + who
	case SentLocally:
		return "local (no close frame), recorded by " + who
	case SentOverHTTP:
		return "an HTTP refusal before any WebSocket, to " + who
	}
	return string(c.Sender) + ": " + who
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// WriteJSON writes the report as indented JSON for machines: durations in
// seconds (millisecond precision), close codes as numbers, senders as
// "server", "client", "local" or "http". Samples and waits are left out
// (they are the timeline's raw data); events are in.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// seconds is a duration that marshals to JSON as seconds, rounded to the
// millisecond.
type seconds time.Duration

func (s seconds) MarshalJSON() ([]byte, error) {
	v := math.Round(time.Duration(s).Seconds()*1000) / 1000
	return strconv.AppendFloat(nil, v, 'f', -1, 64), nil
}

type chapterJSON struct {
	Name    string  `json:"name"`
	Title   string  `json:"title"`
	Start   seconds `json:"start"`
	End     seconds `json:"end"`
	Finding Finding `json:"finding"`
}

type markJSON struct {
	Name  string  `json:"name"`
	Label string  `json:"label"`
	At    seconds `json:"at"`
}

type eventJSON struct {
	At      seconds `json:"at"`
	Code    int     `json:"code"`
	Sender  Sender  `json:"sender"`
	Client  int     `json:"client"`
	Who     string  `json:"who,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Hint    seconds `json:"hint,omitempty"`
	Chapter string  `json:"chapter"`
}

type codeJSON struct {
	Code        int      `json:"code"`
	Name        string   `json:"name"`
	Sender      Sender   `json:"sender"`
	Count       int      `json:"count"`
	Clients     int      `json:"clients"`
	Others      []string `json:"others,omitempty"`
	Retry       string   `json:"retry"`
	Description string   `json:"description"`
	Fix         string   `json:"fix"`
}

// MarshalJSON implements json.Marshaler (see WriteJSON).
func (r *Report) MarshalJSON() ([]byte, error) {
	out := struct {
		Seconds     seconds        `json:"seconds"`
		Crowd       int            `json:"crowd"`
		Limit       int            `json:"limit"`
		Pace        float64        `json:"pace"`
		Interrupted bool           `json:"interrupted,omitempty"`
		Chapters    []chapterJSON  `json:"chapters"`
		Marks       []markJSON     `json:"marks"`
		Codes       []codeJSON     `json:"codes"`
		Server      map[string]any `json:"server"`
		Events      []eventJSON    `json:"events"`
		Timeline    string         `json:"timeline,omitempty"`
	}{
		Seconds: seconds(r.Duration), Crowd: r.Crowd, Limit: r.Limit, Pace: r.Pace,
		Interrupted: r.Interrupted, Timeline: r.Timeline,
		Chapters: []chapterJSON{}, Marks: []markJSON{}, Codes: []codeJSON{}, Events: []eventJSON{},
		Server: map[string]any{"sent": codeMap(r.Server.Sent), "received": codeMap(r.Server.Received)},
	}
	for _, c := range r.Chapters {
		out.Chapters = append(out.Chapters, chapterJSON{c.Name, c.Title, seconds(c.Start), seconds(c.End), c.Finding})
	}
	for _, m := range r.Marks {
		out.Marks = append(out.Marks, markJSON{m.Name, m.Label, seconds(m.At)})
	}
	for _, c := range r.Codes() {
		out.Codes = append(out.Codes, codeJSON{int(c.Code), c.Name, c.Sender, c.Count, c.Clients, c.Others, c.Retry, c.Description, c.Fix})
	}
	for _, e := range r.Events {
		out.Events = append(out.Events, eventJSON{seconds(e.At), int(e.Code), e.Sender, e.Client, e.Who, e.Reason, seconds(e.Hint), e.Chapter})
	}
	return marshal(out)
}

// marshal is json.Marshal without HTML escaping, so that the report's
// texts stay readable in --json output.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// codeMap turns a count by close code into a JSON object keyed by code.
func codeMap(m map[closecode.Code]uint64) map[string]uint64 {
	out := make(map[string]uint64, len(m))
	for c, n := range m {
		out[strconv.Itoa(int(c))] = n
	}
	return out
}

func codeIntMap(m map[closecode.Code]int) map[string]int {
	out := make(map[string]int, len(m))
	for c, n := range m {
		out[strconv.Itoa(int(c))] = n
	}
	return out
}

// MarshalJSON implements json.Marshaler: durations in seconds.
func (f *OverloadFinding) MarshalJSON() ([]byte, error) {
	type retry struct {
		Attempt  int     `json:"attempt"`
		AndLater bool    `json:"and_later,omitempty"`
		Count    int     `json:"count"`
		Median   seconds `json:"median"`
		Max      seconds `json:"max"`
		Hinted   int     `json:"hinted"`
	}
	retries := []retry{}
	for _, r := range f.Retries {
		retries = append(retries, retry{r.Attempt, r.AndLater, r.Count, seconds(r.Median), seconds(r.Max), r.Hinted})
	}
	return marshal(struct {
		Crowd           int            `json:"crowd"`
		Limit           int            `json:"limit"`
		FirstTry        int            `json:"first_try"`
		Refusals        int            `json:"refusals_1013"`
		RefusedClients  int            `json:"refused_clients"`
		HintMin         seconds        `json:"hint_min"`
		HintMax         seconds        `json:"hint_max"`
		DistinctHints   int            `json:"distinct_hints"`
		BackoffBase     seconds        `json:"backoff_base"`
		BackoffCap      seconds        `json:"backoff_cap"`
		Retries         []retry        `json:"retries"`
		Waits           int            `json:"waits"`
		Hinted          int            `json:"hinted_waits"`
		PeakConnections int            `json:"peak_connections"`
		Sessions        int            `json:"sessions"`
		Duration        seconds        `json:"seconds"`
		Other           map[string]int `json:"other_codes,omitempty"`
	}{f.Crowd, f.Limit, f.FirstTry, f.Refusals, f.RefusedClients, seconds(f.HintMin), seconds(f.HintMax), f.DistinctHints,
		seconds(f.BackoffBase), seconds(f.BackoffCap), retries, f.Waits, f.Hinted, f.PeakConnections, f.Sessions, seconds(f.Duration), codeIntMap(f.Other)})
}

// MarshalJSON implements json.Marshaler: durations in seconds.
func (f *RestartFinding) MarshalJSON() ([]byte, error) {
	return marshal(struct {
		Clients           int            `json:"clients"`
		DrainWindow       seconds        `json:"drain_window"`
		DrainHint         seconds        `json:"drain_hint"`
		Drained           int            `json:"drained_1012"`
		DrainSpread       seconds        `json:"drain_spread"`
		HintMin           seconds        `json:"hint_min"`
		HintMax           seconds        `json:"hint_max"`
		NewcomerCode      int            `json:"newcomer_code"`
		NewcomerHint      seconds        `json:"newcomer_hint"`
		Health            string         `json:"healthz_while_draining"`
		Early             map[string]int `json:"early_attempts"`
		DownFor           seconds        `json:"down_for"`
		Back              int            `json:"back"`
		BackAfter         seconds        `json:"back_after"`
		PeakOpensPer250ms int            `json:"peak_opens_per_250ms"`
	}{f.Clients, seconds(f.DrainWindow), seconds(f.DrainHint), f.Drained, seconds(f.DrainSpread), seconds(f.HintMin), seconds(f.HintMax),
		int(f.Newcomer.Code), seconds(f.Newcomer.Hint), f.Health, codeIntMap(f.Early), seconds(f.DownFor), f.Back, seconds(f.BackAfter), f.PeakOpensPer250ms})
}

// MarshalJSON implements json.Marshaler.
func (f *MissingExtensionFinding) MarshalJSON() ([]byte, error) {
	type plain MissingExtensionFinding
	return marshal(struct {
		Required       string   `json:"required"`
		Negotiated     string   `json:"negotiated_with_compression"`
		Missing        []string `json:"missing"`
		Offered        string   `json:"offered"`
		Answered       string   `json:"answered"`
		Error          string   `json:"error"`
		Retried        bool     `json:"retried"`
		ServerReceived bool     `json:"server_received_1010"`
		ServerEchoed   bool     `json:"server_echoed_1010"`
		Fix            string   `json:"fix"`
	}(plain(*f)))
}
