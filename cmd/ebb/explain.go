package main

import (
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ebb-ws/ebb/closecode"
	"github.com/ebb-ws/ebb/cmd/ebb/internal/explain"
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
				if asJSON {
					return explain.WriteTableJSON(e.stdout)
				}
				return explain.WriteTable(e.stdout)
			}
			c, err := explain.ParseCode(args[0])
			if err != nil {
				return &usageError{err: err}
			}
			if asJSON {
				return explain.WriteJSON(e.stdout, c)
			}
			return explain.WriteText(e.stdout, c)
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
				return &usageError{err: cerr}
			}
		}
		return &usageError{err: err}
	})
	return cmd
}
