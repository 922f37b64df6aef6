package main

import (
	"strings"
	"testing"
)

func TestWriteTable(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		`{"peer":"Node ws 8","role":"server","feature":"ping","rank":1,"result":"pass"}`,
		`{"peer":"Node ws 8","role":"client","feature":"echo","rank":0,"result":"pass"}`,
		`{"peer":"Node ws 8","role":"client","feature":"ping","rank":1,"result":"pass"}`,
		`{"peer":"Node ws 8","role":"client","feature":"ping","rank":1,"result":"fail"}`,
		`{"peer":"Python websockets 10","role":"client","feature":"echo","rank":0,"result":"skip"}`,
		``,
	}, "\n")
	rs, err := readResults(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := writeTable(&b, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	want := []string{
		"| feature | Node ws 8 client → ebb server | ebb client → Node ws 8 server | Python websockets 10 client → ebb server |",
		"|---|---|---|---|",
		"| echo | pass | — | skip |",
		"| ping | **FAIL** | pass | — |",
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want)+1, b.String())
	}
	for i, w := range want {
		if lines[i+1] != w {
			t.Errorf("line %d = %q, want %q", i+1, lines[i+1], w)
		}
	}
}

func TestReadResultsErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"empty", "", "no results"},
		{"not JSON", "{oops", "line 1 is not a result"},
		{"bad role", `{"peer":"p","role":"both","feature":"f","result":"pass"}`, "role of client/server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := readResults(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
