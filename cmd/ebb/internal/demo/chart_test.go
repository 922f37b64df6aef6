package demo

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/timeline.golden.json from the current BuildChart")

// TestChartGolden compares the timeline's model for the fixture with
// testdata/timeline.golden.json: panels, series, shaded spans, marks, lanes
// and labels. Run with -update after an intended change, and look at the
// PNG (TestWriteTimeline's, or `ebb demo`'s) before committing.
func TestChartGolden(t *testing.T) {
	t.Parallel()
	got, err := json.MarshalIndent(BuildChart(fixture()), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "timeline.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestChartGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the chart model differs from %s; if the change is intended, run with -update and look at the PNG\n%s", golden, firstDiff(string(want), string(got)))
	}
}

// firstDiff shows the first line where a and b differ.
func firstDiff(a, b string) string {
	al, bl := bytes.Split([]byte(a), []byte("\n")), bytes.Split([]byte(b), []byte("\n"))
	for i := range max(len(al), len(bl)) {
		var x, y []byte
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if !bytes.Equal(x, y) {
			return "line " + itoa(i+1) + ":\n  want " + string(x) + "\n  got  " + string(y)
		}
	}
	return ""
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// TestChartStructure states what the golden file must hold, so that an
// -update cannot bless a chart that lost its story.
func TestChartStructure(t *testing.T) {
	t.Parallel()
	r := fixture()
	ch := BuildChart(r)
	if len(ch.Panels) != 2 || ch.Panels[0].Name != "connections" || ch.Panels[1].Name != "close events" {
		t.Fatalf("panels %+v: want connections above close events", ch.Panels)
	}
	// Chapters shaded in order, labelled, plus the down time.
	var labels []string
	for _, s := range ch.Spans {
		labels = append(labels, s.Kind+":"+s.Label)
		if s.To <= s.From {
			t.Errorf("span %q from %v to %v", s.Label, s.From, s.To)
		}
	}
	want := []string{"chapter:1  overload → backoff", "chapter:2  full node → scale out", "chapter:3  drain → restart", "chapter:4  missing extension", "down:server down"}
	if !slices.Equal(labels, want) {
		t.Errorf("spans %q, want %q", labels, want)
	}
	var marks []string
	for _, m := range ch.Marks {
		marks = append(marks, m.Label)
	}
	if !slices.Equal(marks, []string{"B joins", "balancer → B", "all served", "drain starts", "port closed", "server up", "all back"}) {
		t.Errorf("marks %q", marks)
	}
	// Connections: the server's (node A's in the scale-out chapter), the
	// clients waiting, and node B's while it runs; the y range leaves
	// headroom above the crowd; the ticks are round and readable.
	cp := ch.Panels[0]
	var lines []string
	for _, l := range cp.Lines {
		lines = append(lines, l.Name)
	}
	if !slices.Equal(lines, []string{"connections the server holds", "clients waiting to retry", "node B's connections"}) {
		t.Errorf("connection lines %q", lines)
	}
	if cp.YMax < 1.3*float64(r.Crowd) || cp.DataTop != float64(r.Crowd) {
		t.Errorf("y range up to %v with data up to %v: want headroom above the crowd of %d", cp.YMax, cp.DataTop, r.Crowd)
	}
	// Node B's line: only while it runs (from the join to the chapter's
	// end), from 0 up to what it took; node A's is the server's line
	// there, at its limit.
	scale := r.Chapters[1]
	b := cp.Lines[2].Points
	if len(b) == 0 || b[0].X < 7 || b[len(b)-1].X > scale.End.Seconds() || b[0].Y != 0 || b[len(b)-1].Y != 2 {
		t.Errorf("node B's line %v: want it from the join (7 s) to the chapter's end, from 0 to 2", b)
	}
	for _, p := range cp.Lines[0].Points {
		if p.X >= 5.5 && p.X < scale.End.Seconds() && p.Y != 2 {
			t.Errorf("node A's line at %v s is %v, want its limit 2 (node B's connections are not in it)", p.X, p.Y)
		}
	}
	var refs []string
	for _, ref := range cp.Refs {
		refs = append(refs, fmt.Sprintf("%s at %v from %v to %v", ref.Label, ref.Y, ref.From, ref.To))
	}
	if !slices.Equal(refs, []string{"server limit 2 at 2 from 0 to 5", "node limit 2 at 2 from 5 to 10"}) {
		t.Errorf("refs %q: want the server's limit in the overload chapter and the node limit in the scale-out one", refs)
	}
	var legend []string
	for _, e := range ch.Legend {
		legend = append(legend, e.Label)
	}
	if !slices.Contains(legend, "node B's connections") || !slices.Contains(legend, "connections the server holds (node A's in chapter 2)") {
		t.Errorf("legend %q: want node A and node B named", legend)
	}
	// Close events: one lane per code and sender, story order, with the
	// sender in the label, and one dot per event.
	ep := ch.Panels[1]
	type lane struct {
		code   int
		sender Sender
		dots   int
	}
	var lanes []lane
	for _, l := range ep.Lanes {
		lanes = append(lanes, lane{l.Code, l.Sender, len(l.Dots)})
	}
	wantLanes := []lane{{1013, SentByServer, 7}, {1012, SentByServer, 5}, {1010, SentByClient, 1}, {1000, SentByClient, 9}, {1006, SentLocally, 1}}
	if !slices.Equal(lanes, wantLanes) {
		t.Errorf("lanes %+v, want %+v", lanes, wantLanes)
	}
	for _, l := range ep.Lanes {
		for _, d := range l.Dots {
			if d.Y < l.Y-0.4 || d.Y > l.Y+0.4 {
				t.Errorf("lane %d: dot at y %v outside its lane at %v", l.Code, d.Y, l.Y)
			}
		}
	}
	var notes []string
	for _, n := range ep.Notes {
		notes = append(notes, n.Text)
	}
	wantNotes := []string{
		"2 refused at once, each with its own retry hint",
		"node A alone: 3 × \"cluster at capacity\";\nB joined: 1 × \"node at capacity, cluster has room\", then none",
		"the drain closes all 4,\neach told to come back after the restart",
		"requires permessage-deflate, the server has it off:\nthe client closes with 1010 and does not retry",
	}
	if !slices.Equal(notes, wantNotes) {
		t.Errorf("notes %q, want %q", notes, wantNotes)
	}
}

// TestWriteTimeline draws the fixture and checks that the file is a PNG
// of the stated size.
func TestWriteTimeline(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "timeline.png")
	if err := WriteTimeline(path, fixture()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the timeline is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1320 || b.Dy() != 816 {
		t.Errorf("timeline is %v, want 1320×816", b)
	}
	if err := WriteTimeline(path, &Report{}); err == nil {
		t.Error("WriteTimeline of an empty report: no error")
	}
}

func TestNiceTicks(t *testing.T) {
	t.Parallel()
	labels := func(ts []Tick) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Label)
		}
		return out
	}
	tests := []struct {
		name          string
		lo, hi        float64
		n             int
		integer, over bool
		want          []string
	}{
		{"seconds", 0, 37.7, 10, false, false, []string{"0", "5", "10", "15", "20", "25", "30", "35"}},
		{"halves stay halves", 0, 1, 4, false, false, []string{"0", "0.5", "1"}},
		{"small counts are integers", 0, 5, 10, true, false, []string{"0", "1", "2", "3", "4", "5"}},
		{"covers the top", 0, 48, 5, true, true, []string{"0", "10", "20", "30", "40", "50"}},
		{"large values without decimals", 0, 75000, 4, true, false, []string{"0", "20000", "40000", "60000"}},
		{"empty range", 3, 3, 5, false, false, []string{"3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := labels(niceTicks(tt.lo, tt.hi, tt.n, tt.integer, tt.over)); !slices.Equal(got, tt.want) {
				t.Errorf("niceTicks(%v, %v, %d) = %q, want %q", tt.lo, tt.hi, tt.n, got, tt.want)
			}
		})
	}
}
