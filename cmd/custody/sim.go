package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/custodyledger/custody/services/demo"
)

func init() {
	register("sim", command{usage: "sim --devices N", summary: "drive N devices through the whole chain, injecting supply-chain attacks", run: simCmd})
}

type mismatchError int

func (e mismatchError) Error() string {
	return fmt.Sprintf("%d devices decided other than expected", int(e))
}
func (e mismatchError) ExitCode() int { return 3 }

func simCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: custody sim [flags]

Runs a node in this process and drives --devices simulated devices (one
custody-agent process each) through the whole chain: manufacture, assembly,
hand-offs vendor → ODM → OEM → EMS → operator, firmware, test, first boot.
With --faults it injects attacks into a share (--rate) of the devices and
reports, per fault kind, the expected and the observed decisions. It exits 3
if any device was decided other than expected.

Fault kinds: %s (or "all").

Flags:
`, strings.Join(demo.AllFaults, ", "))
		fs.PrintDefaults()
	}
	devices := fs.Int("devices", 10, "number of devices")
	faults := fs.String("faults", "", `comma-separated fault kinds, or "all"`)
	rate := fs.Float64("rate", 0.5, "share of devices that get a fault (round-robin over the kinds)")
	conc := fs.Int("concurrency", 8, "devices in flight at once")
	out := fs.String("out", "", "write every logged event (signed, quoted) as JSON lines to this file, for load tests")
	dir := fs.String("dir", "", "keep the simulation's data here instead of a temporary directory")
	agent := fs.String("agent", "", "custody-agent binary (default: next to this binary, then $PATH)")
	verbose := fs.Bool("v", false, "log the node's activity to stderr")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *devices <= 0 {
		return usageErrorf("sim: --devices %d: want a positive number of devices", *devices)
	}
	var kinds []string
	switch *faults {
	case "":
	case "all":
		kinds = demo.AllFaults
	default:
		kinds = strings.Split(*faults, ",")
		for _, k := range kinds {
			if !slices.Contains(demo.AllFaults, k) {
				return usageErrorf("sim: --faults: unknown fault kind %q: want a comma-separated list of %s, or all", k, strings.Join(demo.AllFaults, ", "))
			}
		}
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	rep, err := demo.Sim(ctx, demo.SimConfig{
		Devices: *devices, Faults: kinds, Rate: *rate, Concurrency: *conc,
		EventsOut: *out, Env: demo.Env{Dir: *dir, Agent: *agent, Logger: logger},
	})
	if err != nil {
		return err
	}
	if m := rep.Mismatches(); m > 0 {
		return mismatchError(m)
	}
	return nil
}
