package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
)

func newExplainCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "explain [CODE|NAME]",
		Short: "Explain a WebSocket close code, or list them all",
		Long: `Explain prints what a WebSocket close code means, from ebb's registry:
its name, who sends it, whether it may appear on the wire, what a client
should do next (retry class), when you typically see it and how to fix it.

CODE is a decimal close code (0–65535); codes without an entry of their own
are explained by their range (for example 4000–4999, private use). NAME is a
registered name in any case, with or without spaces or dashes
("try-again-later", "TryAgainLater").

Without an argument, explain prints the whole table.`,
		Example: `  ebb explain 1013
  ebb explain mandatory-extension
  ebb explain 4000 --json
  ebb explain`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("explain takes one close code, got %d arguments: %q", len(args), args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return writeTable(e.stdout, asJSON)
			}
			c, err := parseCodeArg(args[0])
			if err != nil {
				return &usageError{err: err}
			}
			return writeEntry(e.stdout, c, asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	// "ebb explain -1" reaches the flag parser as shorthand flag "1"; say
	// what is wrong with the code instead of "unknown shorthand flag".
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		msg := err.Error()
		if i := strings.LastIndex(msg, " in -"); i >= 0 {
			if _, perr := strconv.Atoi(msg[i+len(" in "):]); perr == nil {
				_, cerr := closecode.Parse(msg[i+len(" in "):])
				return &usageError{err: fmt.Errorf("%w", cerr)}
			}
		}
		return &usageError{err: err}
	})
	return cmd
}

// parseCodeArg reads a close code given as a number or as a registered name.
func parseCodeArg(s string) (closecode.Code, error) {
	if c, err := closecode.Parse(s); err == nil {
		return c, nil
	} else if isNumeric(s) {
		return 0, fmt.Errorf("%w", err)
	}
	want := normalizeName(s)
	if want != "" {
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

// entryJSON is the --json form of a registry entry. Sender and retry class
// are spelled out with the registry's own String methods.
type entryJSON struct {
	Code        int        `json:"code"`
	Name        string     `json:"name"`
	SentBy      string     `json:"sent_by"`
	OnWire      bool       `json:"on_wire"`
	RetryClass  string     `json:"retry_class"`
	ShouldRetry bool       `json:"should_retry"`
	Description string     `json:"description"`
	When        string     `json:"when"`
	Fix         string     `json:"fix"`
	Reference   string     `json:"reference"`
	Range       *rangeJSON `json:"range,omitempty"`
}

type rangeJSON struct {
	From int `json:"from"`
	To   int `json:"to"`
}

func toJSON(info closecode.Info) entryJSON {
	out := entryJSON{
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
		out.Range = &rangeJSON{From: int(lo), To: int(hi)}
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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
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

func writeEntry(w io.Writer, c closecode.Code, asJSON bool) error {
	info := closecode.Lookup(c)
	if asJSON {
		return writeJSON(w, toJSON(info))
	}
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
		for _, line := range wrap(s.text, 74) {
			fmt.Fprintf(&b, "  %s\n", line)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeTable(w io.Writer, asJSON bool) error {
	all := closecode.All()
	if asJSON {
		out := make([]entryJSON, 0, len(all))
		for _, info := range all {
			out = append(out, toJSON(info))
		}
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CODE\tNAME\tSENT BY\tON WIRE\tRETRY CLASS")
	for _, info := range all {
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

// wrap splits text into lines of at most width bytes at spaces (a longer
// word gets a line of its own).
func wrap(text string, width int) []string {
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
