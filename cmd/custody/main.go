// Command custody is the CLI of Custody for partners and operators: create
// a demo PKI, read and verify a device's custody timeline, and run the
// end-to-end demo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func usage() {
	fmt.Fprint(os.Stderr, `Usage: custody <command> [flags]

Commands:
  demo                  run the whole chain for two devices (one clean, one double-sold)
  pki init              create a demo PKI (roots, cross-certificate, vendor, consortium,
                        partners, LDevID CA, log key, TLS)
  provenance DEVICE     print a device's custody timeline, every entry verified
                        against the ledger's signed checkpoint

Run "custody <command> --help" for a command's flags.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "demo":
		err = demoCmd(ctx, os.Args[2:])
	case "pki":
		if len(os.Args) < 3 || os.Args[2] != "init" {
			fmt.Fprintln(os.Stderr, "custody pki: the only subcommand is init")
			os.Exit(2)
		}
		err = pkiInit(os.Args[3:])
	case "provenance":
		err = provenanceCmd(ctx, os.Args[2:])
	case "-h", "--help", "help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "custody: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "custody:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func parse(fs *flag.FlagSet, args []string, nargs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != nargs {
		fs.Usage()
		return errUsage
	}
	return nil
}
