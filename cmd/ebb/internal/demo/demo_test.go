package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cluster"
)

// testPace runs the tour at about a third of its length (about 13 s).
const testPace = 0.3

// TestRun plays the whole tour and checks the report as data: the
// chapters in order with their spans, the scale-out's and the restart's
// marks, every close event attributed to the side that sent it, the
// findings, and a drain that the samples show as a decline.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("the tour runs for about 13 s")
	}
	t.Parallel()
	var progress bytes.Buffer
	r, err := Run(context.Background(), Options{Pace: testPace}, &progress)
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if r.Crowd != DefaultCrowd || r.Limit != DefaultLimit || r.Interrupted {
		t.Fatalf("crowd %d limit %d interrupted %v", r.Crowd, r.Limit, r.Interrupted)
	}

	// Chapters, in order, one after the other.
	var names []string
	for i, c := range r.Chapters {
		names = append(names, c.Name)
		if c.End <= c.Start || c.Finding == nil {
			t.Errorf("chapter %q: from %v to %v, finding %v", c.Name, c.Start, c.End, c.Finding)
		}
		if i > 0 && c.Start < r.Chapters[i-1].End {
			t.Errorf("chapter %q starts at %v, before %q ends at %v", c.Name, c.Start, r.Chapters[i-1].Name, r.Chapters[i-1].End)
		}
	}
	if !slices.Equal(names, []string{"overload", "scale-out", "restart", "extension"}) {
		t.Fatalf("chapters %q", names)
	}

	// The scale-out's and the restart's marks, in order, inside their
	// chapters.
	at := map[string]time.Duration{}
	var marks []string
	for _, m := range r.Marks {
		marks = append(marks, m.Name)
		at[m.Name] = m.At
		c := r.Chapters[2]
		if slices.Contains([]string{"join", "routed", "served"}, m.Name) {
			c = r.Chapters[1]
		}
		if m.At < c.Start || m.At > c.End {
			t.Errorf("mark %q at %v outside the %s chapter (%v–%v)", m.Name, m.At, c.Name, c.Start, c.End)
		}
	}
	if !slices.Equal(marks, []string{"join", "routed", "served", "drain", "down", "up", "back"}) {
		t.Fatalf("marks %q", marks)
	}

	// Every event is attributed: codes that never travel on the wire are
	// local; 1013 and 1012 come from the server; 1010 and 1000 from the
	// client.
	type key struct {
		code   closecode.Code
		sender Sender
	}
	n := map[key]int{}
	for i, e := range r.Events {
		n[key{e.Code, e.Sender}]++
		if i > 0 && e.At < r.Events[i-1].At {
			t.Errorf("events out of order at %d", i)
		}
		if !closecode.Lookup(e.Code).OnWire && e.Code != 0 && e.Sender != SentLocally {
			t.Errorf("event %+v: %v never travels on the wire, so nobody sent it", e, e.Code)
		}
		switch e.Code {
		case closecode.TryAgainLater, closecode.ServiceRestart:
			if e.Sender != SentByServer || e.Hint <= 0 {
				t.Errorf("event %+v: want the server's close with a retry hint", e)
			}
		case closecode.MandatoryExtension, closecode.NormalClosure:
			if e.Sender != SentByClient {
				t.Errorf("event %+v: want the client's close", e)
			}
		}
	}
	if n[key{closecode.MandatoryExtension, SentByClient}] != 1 {
		t.Errorf("1010 events %d, want exactly one (no retry)", n[key{closecode.MandatoryExtension, SentByClient}])
	}

	// Overload: nobody above the limit, everyone in eventually, the
	// refused backed off no sooner than their hint.
	o, ok := Find[*OverloadFinding](r)
	if !ok {
		t.Fatal("no overload finding")
	}
	if o.PeakConnections > r.Limit || o.PeakConnections == 0 || o.Sessions != r.Crowd {
		t.Errorf("overload: peak %d connections (limit %d), %d sessions of %d", o.PeakConnections, r.Limit, o.Sessions, r.Crowd)
	}
	// A client whose first dial comes late (a loaded machine) may find a
	// place another session has left: every client is either admitted on
	// its first try or refused at least once, and most are refused.
	if o.RefusedClients+o.FirstTry < r.Crowd || o.RefusedClients < (r.Crowd-r.Limit)/2 || o.Refusals < o.RefusedClients || o.DistinctHints < 2 {
		t.Errorf("overload: %d refusals to %d clients, %d in on the first try, %d distinct hints: want each of the %d clients in at once or refused, most of the %d surplus refused, with spread hints",
			o.Refusals, o.RefusedClients, o.FirstTry, o.DistinctHints, r.Crowd, r.Crowd-r.Limit)
	}
	checkHintIsAFloor(t, r)

	checkScaleOut(t, r)

	// Restart: the drain closed everyone with a hint past the restart,
	// refused a newcomer, answered /healthz with 503, and everyone came
	// back.
	f, ok := Find[*RestartFinding](r)
	if !ok {
		t.Fatal("no restart finding")
	}
	if f.Drained != r.Crowd || f.Back != r.Crowd || f.HintMin < f.DrainHint {
		t.Errorf("restart: drained %d, back %d of %d, hints from %v (drain hint %v)", f.Drained, f.Back, r.Crowd, f.HintMin, f.DrainHint)
	}
	if f.Newcomer.Code != closecode.ServiceRestart || f.Newcomer.Sender != SentByServer || f.Newcomer.Hint <= 0 {
		t.Errorf("a newcomer during the drain got %+v: want the server's 1012 with a hint", f.Newcomer)
	}
	if !strings.HasPrefix(f.Health, "503") {
		t.Errorf("/healthz during the drain answered %q, want 503", f.Health)
	}
	if early := f.Early; len(early) > 0 {
		// Timing on a loaded machine can bring a client back before the
		// restart; it must then have been told so, not lost.
		t.Logf("early attempts: %v", early)
	}

	// The drain is sampled as a decline, not a step: the server's count
	// passes through intermediate values while it drains.
	levels := map[int]bool{}
	draining := 0
	for _, s := range r.Samples {
		if s.At >= at["drain"] && s.At < at["down"] {
			if s.Connections > 0 && s.Connections < r.Crowd {
				levels[s.Connections] = true
			}
			if s.Draining {
				draining++
			}
		}
	}
	if len(levels) < 3 || draining == 0 {
		t.Errorf("during the drain the samples show %d intermediate connection counts and %d draining samples: want a visible decline", len(levels), draining)
	}

	// Missing extension: 1010 from the client, no retry, seen by the server.
	m, ok := Find[*MissingExtensionFinding](r)
	if !ok {
		t.Fatal("no missing-extension finding")
	}
	if !strings.Contains(m.Negotiated, "permessage-deflate") || len(m.Missing) != 1 || m.Retried || !m.ServerReceived {
		t.Errorf("missing extension: %+v", m)
	}
	if r.Server.Received[closecode.MandatoryExtension] != 1 {
		t.Errorf("the servers received %d 1010s, want 1", r.Server.Received[closecode.MandatoryExtension])
	}

	// JSON: parses, and carries no float noise.
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var parsed map[string]any
	if err := json.Unmarshal(js.Bytes(), &parsed); err != nil {
		t.Fatalf("WriteJSON wrote invalid JSON: %v", err)
	}
	if noise := regexp.MustCompile(`[0-9]\.[0-9]{4,}`).Find(js.Bytes()); noise != nil {
		t.Errorf("JSON carries float noise: %s", noise)
	}
	if !strings.Contains(progress.String(), "== 1/4 overload → backoff") || !strings.Contains(progress.String(), "== 2/4 full node → scale out") {
		t.Errorf("progress lacks the chapter lines:\n%s", progress.String())
	}
}

// TestScaleOut plays the scale-out chapter alone, with a crowd of 9 (6
// per node), and checks its finding and recording as data.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("the chapter runs for about 3 s")
	}
	t.Parallel()
	var progress bytes.Buffer
	r, err := Run(context.Background(), Options{Crowd: 9, Limit: 3, Pace: testPace, Chapters: []Chapter{ScaleOut{}}}, &progress)
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	checkScaleOut(t, r)
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil || !strings.Contains(text.String(), "At the end node A held 6 (its limit) and node B 3, the overflow.") {
		t.Errorf("WriteText: %v\n%s", err, text.String())
	}
}

// TestScaleOutInterrupted cancels the scale-out chapter while node A is
// alone: Run returns the context's error, and the clients, the balancer
// and the node (its embedded NATS server) are gone (TestMain checks for
// leaked goroutines).
func TestScaleOutInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(600*time.Millisecond, cancel)
	start := time.Now()
	r, err := Run(ctx, Options{Crowd: 6, Limit: 2, Pace: testPace, Chapters: []Chapter{ScaleOut{}}}, nil)
	if !errors.Is(err, context.Canceled) || r == nil || !r.Interrupted {
		t.Fatalf("Run after cancel: %v (report %+v), want context.Canceled and an interrupted report", err, r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run took %v to stop after the cancel", d)
	}
	for _, s := range r.Samples {
		if s.Servers[nodeA] > scaleOutLimit(6) {
			t.Errorf("node A held %d, above its limit %d", s.Servers[nodeA], scaleOutLimit(6))
		}
	}
}

// checkScaleOut checks the scale-out chapter of r: node A admitted its
// limit at once and refused every other client, alone with the cluster's
// "cluster at capacity"; once node B had joined, only with "node at
// capacity, cluster has room" and the short hint; no refusal came once
// the balancer sent clients to B (but for those already on their way)
// nor once all were served; everyone was served, node A at its limit and
// node B holding the rest, which the samples show B taking.
func checkScaleOut(t *testing.T, r *Report) {
	t.Helper()
	f, ok := Find[*ScaleOutFinding](r)
	if !ok {
		t.Fatal("no scale-out finding")
	}
	limit := scaleOutLimit(r.Crowd)
	rest := r.Crowd - limit
	t.Logf("scale-out: %d refusals before the join, %d after (%v), served %v after the join, balancer after %v",
		f.Before.Count, f.After.Count, f.After.Reasons, f.ServedAfter, f.Routed)
	if f.NodeLimit != limit || f.FirstTry != limit || f.NodeA != limit || f.NodeB != rest {
		t.Errorf("scale-out: node limit %d, %d in at once, node A holds %d and node B %d at the end: want %d, %d, %d and %d",
			f.NodeLimit, f.FirstTry, f.NodeA, f.NodeB, limit, limit, limit, rest)
	}
	if f.Before.Clients != rest || f.Before.Count < rest || f.Before.Reasons[cluster.ReasonClusterFull] != f.Before.Count {
		t.Errorf("before the join: %d refusals to %d clients, by reason %v: want all %d of the rest refused, each with %q",
			f.Before.Count, f.Before.Clients, f.Before.Reasons, rest, cluster.ReasonClusterFull)
	}
	if n := f.After.Count; n > 0 && (f.After.Reasons[cluster.ReasonNodeFull] != n || f.After.HintMin < f.ShortHint || f.After.HintMax > f.ShortHint*3/2+100*time.Millisecond) {
		t.Errorf("after the join: %d refusals by reason %v with hints %v–%v: want each %q with the short hint %v (+50%% jitter)",
			n, f.After.Reasons, f.After.HintMin, f.After.HintMax, cluster.ReasonNodeFull, f.ShortHint)
	}
	if f.Late != 0 || f.Routed <= 0 || f.ServedAfter < f.Routed || len(f.Other) > 0 {
		t.Errorf("scale-out: %d refusals after all were served, balancer sent to B %v after the join, all served %v after it, other codes %v: want none, B routed before all were served, no other code",
			f.Late, f.Routed, f.ServedAfter, f.Other)
	}
	// The events: the cluster's "full" stops at the join, every refusal at
	// the balancer's switch, give or take those already on their way.
	const inFlight = 500 * time.Millisecond
	at := map[string]time.Duration{}
	for _, m := range r.Marks {
		at[m.Name] = m.At
	}
	for _, e := range r.Events {
		if e.Chapter != scaleOutName || e.Code != closecode.TryAgainLater {
			continue
		}
		if e.At > at["join"]+inFlight && reasonText(e.Reason) != cluster.ReasonNodeFull {
			t.Errorf("a 1013 %v after node B joined said %q: want %q", e.At-at["join"], e.Reason, cluster.ReasonNodeFull)
		}
		if e.At > at["routed"]+inFlight {
			t.Errorf("a 1013 %v after the balancer sent clients to node B (%q)", e.At-at["routed"], e.Reason)
		}
	}
	// The samples: node A never above its limit; node B from nothing to
	// the rest, and never more.
	var bMin, bMax, aMax = r.Crowd, 0, 0
	for _, s := range r.Samples {
		aMax = max(aMax, s.Servers[nodeA])
		if n, ok := s.Servers[nodeB]; ok {
			bMin, bMax = min(bMin, n), max(bMax, n)
		}
	}
	if aMax != limit || bMin != 0 || bMax != rest {
		t.Errorf("samples: node A up to %d, node B from %d to %d: want A at most %d, B from 0 to %d", aMax, bMin, bMax, limit, rest)
	}
}

// checkHintIsAFloor checks, client by client, that a wait after a 1013 was
// never shorter than the 1013's hint.
func checkHintIsAFloor(t *testing.T, r *Report) {
	t.Helper()
	last := map[int]Event{}
	checked := 0
	evs, waits := r.Events, r.Waits
	for len(evs) > 0 || len(waits) > 0 {
		if len(waits) == 0 || len(evs) > 0 && evs[0].At <= waits[0].At {
			if evs[0].Client >= 0 {
				last[evs[0].Client] = evs[0]
			}
			evs = evs[1:]
			continue
		}
		w := waits[0]
		waits = waits[1:]
		if e, ok := last[w.Client]; ok && e.Code == closecode.TryAgainLater {
			checked++
			if w.Delay < e.Hint {
				t.Errorf("client %d waited %v after a 1013 with retry-after=%v", w.Client, w.Delay, e.Hint)
			}
		}
	}
	if checked == 0 {
		t.Error("no wait after a 1013 to check")
	}
}

// TestRunInterrupted cancels a run in its first chapter: Run returns the
// context's error and what it saw so far, and stops everything it started.
func TestRunInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(700*time.Millisecond, cancel)
	r, err := Run(ctx, Options{Pace: testPace, Crowd: 6, Limit: 2}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v, want context.Canceled", err)
	}
	if r == nil || !r.Interrupted || len(r.Chapters) != 1 || len(r.Samples) == 0 {
		t.Fatalf("report after cancel: %+v", r)
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil || !strings.Contains(text.String(), "interrupted") {
		t.Errorf("WriteText: %v\n%s", err, text.String())
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
		want string // in the error; "" for none
	}{
		{"zero is the tour", Options{}, ""},
		{"limit not below the crowd", Options{Crowd: 5, Limit: 5}, "a limit of 5 connections for a crowd of 5"},
		{"crowd of one", Options{Crowd: 1, Limit: 1}, "a crowd of 1 clients"},
		{"negative pace", Options{Pace: -1}, "pace -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o, err := tt.opts.withDefaults()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tt.want == "" && (o.Crowd != DefaultCrowd || o.Limit != DefaultLimit || o.Pace != 1 || len(o.Chapters) != 4):
				t.Fatalf("defaults %+v", o)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
}
