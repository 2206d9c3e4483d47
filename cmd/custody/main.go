// Command custody is the CLI of Custody for partners and operators: create
// a demo PKI, read and verify a device's custody timeline, debug TPM
// evidence, and run the end-to-end demo.
//
// Each subcommand lives in its own file and registers itself in commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand: run gets the arguments after its name.
type command struct {
	usage   string // "provenance DEVICE"
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

func usage() {
	fmt.Fprint(os.Stderr, `Usage: custody <command> [flags]

custody is the command line of Custody for partners and operators: it creates
a demo PKI, runs and calls partner stations, reads and verifies a device's
custody timeline (online, or offline from a bundle), debugs TPM evidence, and
runs the end-to-end demo and the supply-chain simulator.

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	width := 0
	for _, n := range names {
		width = max(width, len(commands[n].usage))
	}
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-*s  %s\n", width, commands[n].usage, commands[n].summary)
	}
	fmt.Fprint(os.Stderr, "\nRun \"custody <command> --help\" for what a command does and its flags.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		fmt.Fprintln(os.Stderr, "custody: missing the command: name one of the commands above")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name := os.Args[1]
	if name == "-h" || name == "-help" || name == "--help" || name == "help" {
		usage()
		return
	}
	c, ok := commands[name]
	if !ok {
		usage()
		fmt.Fprintf(os.Stderr, "custody: unknown command %q: name one of the commands above\n", name)
		os.Exit(2)
	}
	err := c.run(ctx, os.Args[2:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		if err != errUsage {
			fmt.Fprintln(os.Stderr, "custody:", err)
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "custody:", err)
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

// errUsage is a command line refused before anything was done: main exits
// 2. A bare errUsage means the reason was printed already (the flag
// package prints its own); a usageError carries the sentence to print.
var errUsage = errors.New("usage")

// usageError is a command line refused before anything was done, with the
// sentence that says what is wrong and what was expected.
type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == errUsage }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

// parse parses flags; nargs is the number of positional arguments, which
// is 0 for every caller (parseInterleaved takes one).
func parse(fs *flag.FlagSet, args []string, nargs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() != nargs {
		return argCountError(fs, fs.Args(), "")
	}
	return nil
}

// argCountError refuses a command line with the wrong number of positional
// arguments: want names the one expected ("" for none).
func argCountError(fs *flag.FlagSet, got []string, want string) error {
	hint := fmt.Sprintf("run \"custody %s --help\" for its usage", fs.Name())
	switch {
	case want == "":
		return usageErrorf("%s: unexpected argument %q: it takes flags only; %s", fs.Name(), got[0], hint)
	case len(got) == 0:
		return usageErrorf("%s: missing the %s argument; %s", fs.Name(), want, hint)
	}
	return usageErrorf("%s: want one %s argument, have %d (%s); %s", fs.Name(), want, len(got), strings.Join(got, " "), hint)
}

// parseInterleaved parses flags that may stand before, between or after
// exactly one positional argument (named want in errors), and returns it.
func parseInterleaved(fs *flag.FlagSet, args []string, want string) (string, error) {
	var rest []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", err
			}
			return "", errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != 1 {
		return "", argCountError(fs, rest, want)
	}
	return rest[0], nil
}

// fileError is a file named on the command line that cannot be read or is
// not what it should be: it names the flag (or argument), the file and
// what was expected, and keeps err for errors.Is.
type fileError struct {
	flag, path, want string
	err              error
}

func (e *fileError) Error() string {
	return fmt.Sprintf("%s %s: %v; want %s", e.flag, e.path, e.err, e.want)
}
func (e *fileError) Unwrap() error { return e.err }

// readFlagFile reads the file named by flag (e.g. "--log-key"; "FILE" for
// an argument); want says what the file should hold.
func readFlagFile(flag, path, want string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return nil, &fileError{flag, path, want, err}
	}
	return b, nil
}
