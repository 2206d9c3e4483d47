package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/custodyledger/custody/events"
)

func init() {
	register("codes", command{usage: "codes", summary: "list every rejection: the ledger's codes and the gate's enrollment rules", run: codesCmd})
}

func codesCmd(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("codes", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody codes [--json]

Lists the catalogue of rejections (events.Rejections): the code a ledger
rejection carries, and the rule and errorCode of a gate's enrollment
refusal, with what each means.

Flags:
`)
		fs.PrintDefaults()
	}
	asJSON := fs.Bool("json", false, "print the catalogue as JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(events.Rejections)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "CODE\tBY\tERRORCODE\tMEANING")
	for _, r := range events.Rejections {
		ec := ""
		if r.ErrorCode != 0 {
			ec = strconv.Itoa(r.ErrorCode)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Code, r.By, ec, r.Meaning)
	}
	return w.Flush()
}
