// Package explain formats entries of ebb's close-code registry (package
// closecode) for people and for machines: one entry in full, the whole
// table, and the short form (one-line summary, fix) that the connect and
// probe commands print when a connection ends with a code.
//
// It is the engine behind "ebb explain". It writes to the io.Writer it is
// given and never prints, reads flags or exits on its own. Every function
// costs one pass over the registry (a few dozen entries) at most.
package explain

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/ebb-ws/ebb/closecode"
)

// ParseCode reads a close code given as a decimal number ("1013") or as a
// registered name in any case, with or without spaces or dashes
// ("try-again-later", "TryAgainLater", "Try Again Later"). The error says
// what was wrong and what is accepted, quoting s.
func ParseCode(s string) (closecode.Code, error) {
	if c, err := closecode.Parse(s); err == nil {
		return c, nil
	} else if isNumeric(s) {
		return 0, err
	}
	if want := normalizeName(s); want != "" {
		for _, info := range closecode.All() {
			if !info.Range && normalizeName(info.Name) == want {
				return info.Code, nil
			}
		}
	}
	return 0, fmt.Errorf("%q is neither a close code nor a registered name: want a decimal code such as 1013 or a name such as try-again-later (run 'ebb explain' for the table)", s)
}

// isNumeric reports whether s looks like an attempt at a number (digits
// with an optional sign), so that "70000" and "-1" get the range error.
func isNumeric(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// normalizeName folds case and drops everything but letters and digits, so
// "Try Again Later", "try-again-later" and "TryAgainLater" compare equal.
func normalizeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// Entry is the JSON form of a registry entry. Sender and retry class are
// spelled out with the registry's own String methods, so that a machine
// reads the same words a person does.
type Entry struct {
	Code        int    `json:"code"`
	Name        string `json:"name"`
	SentBy      string `json:"sent_by"`
	OnWire      bool   `json:"on_wire"`
	RetryClass  string `json:"retry_class"`
	ShouldRetry bool   `json:"should_retry"`
	Description string `json:"description"`
	When        string `json:"when"`
	Fix         string `json:"fix"`
	Reference   string `json:"reference"`
	// Range is set for an entry that stands for a range of codes (4000–4999
	// private use, for example).
	Range *Range `json:"range,omitempty"`
}

// Range is the first and last code a range entry covers.
type Range struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// EntryOf returns the JSON form of info.
func EntryOf(info closecode.Info) Entry {
	out := Entry{
		Code:        int(info.Code),
		Name:        info.Name,
		SentBy:      info.Sender.String(),
		OnWire:      info.OnWire,
		RetryClass:  info.Retry.String(),
		ShouldRetry: info.Retry.ShouldRetry(),
		Description: info.Description,
		When:        info.When,
		Fix:         info.Fix,
		Reference:   info.Reference,
	}
	if lo, hi, ok := rangeOf(info); ok {
		out.Range = &Range{From: int(lo), To: int(hi)}
	}
	return out
}

// rangeOf returns the codes a range entry covers. closecode.Range answers
// for a code; a range entry from closecode.All carries the first code of its
// range, which may have an entry of its own (3000), so look at the first
// code after it that has none.
func rangeOf(info closecode.Info) (lo, hi closecode.Code, ok bool) {
	if !info.Range {
		return 0, 0, false
	}
	for c := info.Code; c <= 65535; c++ {
		if !closecode.Known(c) {
			lo, hi = closecode.Range(c)
			return lo, hi, lo != hi
		}
	}
	return 0, 0, false
}

// encodeJSON writes v as indented JSON, without HTML escaping: the texts
// hold "<" and "&" that a terminal or jq should show as they are.
func encodeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteJSON writes the registry entry of c as one indented JSON object.
func WriteJSON(w io.Writer, c closecode.Code) error {
	return encodeJSON(w, EntryOf(closecode.Lookup(c)))
}

// WriteTableJSON writes every registry entry, in code order then the range
// entries, as one indented JSON array.
func WriteTableJSON(w io.Writer) error {
	all := closecode.All()
	out := make([]Entry, 0, len(all))
	for _, info := range all {
		out = append(out, EntryOf(info))
	}
	return encodeJSON(w, out)
}

// onWire says in words whether and in which direction a code travels.
func onWire(info closecode.Info) string {
	switch {
	case !info.OnWire:
		return "never"
	case info.Sender == closecode.SenderClient:
		return "yes, client to server only"
	default:
		return "yes"
	}
}

// WriteText writes the registry entry of c in full for people: name, who
// sends it, whether it travels on the wire, the retry class, the reference,
// then what it means, when you see it and how to fix it, wrapped at 76
// columns.
func WriteText(w io.Writer, c closecode.Code) error {
	info := closecode.Lookup(c)
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s", c, info.Name)
	if lo, hi, ok := rangeOf(info); ok {
		fmt.Fprintf(&b, " (range %d–%d)", lo, hi)
	}
	b.WriteString("\n\n")
	fields := []struct{ k, v string }{
		{"sent by", info.Sender.String()},
		{"on the wire", onWire(info)},
		{"retry class", info.Retry.String()},
		{"reference", info.Reference},
	}
	for _, f := range fields {
		fmt.Fprintf(&b, "  %-12s %s\n", f.k+":", f.v)
	}
	sections := []struct{ title, text string }{
		{"What it means", info.Description},
		{"When you see it", info.When},
		{"How to fix", info.Fix},
	}
	for _, s := range sections {
		fmt.Fprintf(&b, "\n%s\n", s.title)
		for _, line := range Wrap(s.text, 74) {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteTable writes the whole registry as an aligned table: code (or range),
// name, sender, whether on the wire, retry class.
func WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CODE\tNAME\tSENT BY\tON WIRE\tRETRY CLASS")
	for _, info := range closecode.All() {
		code := strconv.Itoa(int(info.Code))
		if lo, hi, ok := rangeOf(info); ok {
			code = fmt.Sprintf("%d–%d", lo, hi)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", code, info.Name, senderShort(info.Sender), onWireShort(info), info.Retry)
	}
	return tw.Flush()
}

func senderShort(s closecode.Sender) string {
	if s == closecode.SenderLocal {
		return "nobody"
	}
	return s.String()
}

func onWireShort(info closecode.Info) string {
	if info.OnWire {
		return "yes"
	}
	return "never"
}

// Summary returns the registry's one-line explanation of c: the first
// sentence of its description ("The server is up but temporarily cannot
// serve this client: it is overloaded or throttling.").
func Summary(c closecode.Code) string {
	d := closecode.Lookup(c).Description
	if i := strings.Index(d, ". "); i >= 0 {
		return d[:i+1]
	}
	return d
}

// WriteField writes text under a label for people, wrapped at width
// columns with continuation lines aligned under the text:
//
//	fix:   Clients reconnect with exponential backoff (start at 1 s,
//	       double each attempt, with jitter), …
//
// indent is the text before the label; the label column is labelWidth
// wide.
func WriteField(w io.Writer, indent, label string, labelWidth int, text string, width int) error {
	head := indent + fmt.Sprintf("%-*s", labelWidth, label)
	pad := strings.Repeat(" ", len(head))
	var b strings.Builder
	for i, line := range Wrap(text, max(width-len(head), 20)) {
		if i == 0 {
			b.WriteString(head)
		} else {
			b.WriteString(pad)
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if b.Len() == 0 {
		b.WriteString(strings.TrimRight(head, " ") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Wrap splits text into lines of at most width bytes at spaces (a longer
// word gets a line of its own).
func Wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		switch {
		case line == "":
			line = word
		case len(line)+1+len(word) <= width:
			line += " " + word
		default:
			lines = append(lines, line)
			line = word
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}
