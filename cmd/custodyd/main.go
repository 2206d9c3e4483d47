// Command custodyd runs a whole Custody deployment in one process: an
// embedded NATS server with JetStream, the ledger on Pebble, one station per
// partner, the operator's enrollment gate with its LDevID CA, and a
// DPS-compatible emulator.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/custodyledger/custody/internal/logging"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/station"
)

func main() {
	var s settings
	fs := newFlagSet(&s)
	if err := parseWithConfig(fs, os.Args[1:], &s.config); err != nil {
		var ce configError
		switch {
		case errors.Is(err, flag.ErrHelp):
			os.Exit(0)
		case errors.As(err, &ce):
			fmt.Fprintln(os.Stderr, "custodyd:", err)
		}
		os.Exit(2) // the flag package printed why
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "custodyd: unexpected argument %q: custodyd takes flags only (see custodyd --help)\n", fs.Arg(0))
		os.Exit(2)
	}
	node.ApplyGCPercent(s.gcPercent)
	if s.cpuProfile != "" {
		stopProfile, err := startCPUProfile(s.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "custodyd: --cpuprofile:", err)
			os.Exit(2)
		}
		defer stopProfile()
	}
	level := slog.LevelInfo
	if s.verbose {
		level = slog.LevelDebug
	}
	logger := logging.New(os.Stderr, *s.logFormat, level)
	fail := func(err error) {
		msg := "custodyd: " + describe(err)
		if *s.logFormat == logging.JSON {
			logger.Error(msg) // every line on stderr is JSON
		} else {
			fmt.Fprintln(os.Stderr, msg)
		}
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch s.role {
	case "all":
	case "verifier":
		if s.pki == "" {
			fmt.Fprintln(os.Stderr, "custodyd: --role verifier needs --pki, the deployment's PKI directory (its consortium CA, TPM trust bundle and the verifier's NATS key)")
			os.Exit(2)
		}
		if err := runVerifier(ctx, &s, logger); err != nil {
			fail(err)
		}
		return
	case "sequencer":
		if err := checkSequencerFlags(&s); err != nil {
			fmt.Fprintln(os.Stderr, "custodyd:", err)
			os.Exit(2)
		}
		if err := runSequencer(ctx, &s, logger); err != nil {
			fail(err)
		}
		return
	default:
		fmt.Fprintf(os.Stderr, "custodyd: --role %q: all, sequencer or verifier\n", s.role)
		os.Exit(2)
	}
	nets, err := station.ParseDeviceNetworks(strings.Split(s.deviceNets, ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "custodyd: --device-networks:", err)
		os.Exit(2)
	}
	n, err := node.New(ctx, node.Config{
		DataDir: s.data, PKIDir: s.pki, HTTPAddr: s.http, DPSAddr: s.dps, NATSAddr: s.nats, InsecureHTTP: s.insecureHTTP,
		DeviceNetworks: nets, IDScope: s.idScope, Hubs: strings.Split(s.hubs, ","), Origin: s.origin, LedgerCacheMiB: s.cacheMiB, VerdictWait: s.verdictWait, Logger: logger,
	})
	if err != nil {
		fail(err)
	}
	if err := n.Run(ctx); err != nil {
		fail(err)
	}
}

// settings are custodyd's flags, set from the command line and --config.
type settings struct {
	config, data, pki, http, dps, nats, idScope, hubs, origin string
	deviceNets, role, natsURL, cpuProfile                     string
	db, trillian, instance                                    string
	cacheMiB, gcPercent, workers, replicas                    int
	treeID                                                    int64
	lease                                                     time.Duration
	verbose, insecureHTTP                                     bool
	verdictWait                                               time.Duration
	logFormat                                                 *logging.Format
}

// newFlagSet defines custodyd's flags, writing into s.
func newFlagSet(s *settings) *flag.FlagSet {
	fs := flag.NewFlagSet("custodyd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: custodyd [flags]
       custodyd --role verifier --pki DIR --nats-url URL [--workers N]
       custodyd --role sequencer --pki DIR --nats-url URLS --db DSN
                --trillian ADDR --tree-id ID --instance NAME [--http ADDR]

Runs Custody on one machine: NATS JetStream (embedded), the ledger, the
partner stations, the enrollment gate and a DPS emulator. A demo PKI is
created in --pki on first start (or use "custody pki init").

With --role verifier it is instead a process of the verifier pool: it
connects to the deployment's NATS (--nats-url, as the verifier user of
--pki), checks events ahead of the ledger (schemas, signatures, TPM quotes)
and sends the ledger verdicts. Start the ledger's node with --verdict-wait
for it to use them (docs/design/verifiers.md).

With --role sequencer it is a sequencer candidate of a cluster
(deploy/cluster, docs/design/cluster.md): the ledger alone, on the log in
Trillian and MariaDB, connected to a NATS cluster. Of the candidates, the
one holding the sequencer lease applies events; the others stand by and
take over within --lease when it stops renewing. Every candidate serves the
ledger's read API (/ledger/, /api/v1/, /healthz) on --http.

HTTP API (--http), over TLS with the PKI's server certificate (<pki>/tls/ca.pem
is its CA); partners and operators authenticate with their partner
certificate (mTLS), anonymous callers read only public proofs:
  /ledger/v1/...            checkpoints, proofs (public); provenance, receipts (parties)
  /api/v1/...               the Rekor v1 read API (public)
  /stations/<partner>/v1/   factory-floor API of each partner's station
  /gate/<idScope>/registrations/<id>/register   first-boot enrollment
  /healthz                  200 once ready

Exit status: 0 stopped by SIGTERM or SIGINT, 1 error (a port in use, the
data folder in use by another custodyd, ...), 2 bad flags or config file.

%s
Flags:
`, configHelp)
		fs.PrintDefaults()
	}
	fs.StringVar(&s.config, "config", "", "read settings from `file`, keyed by these flags' names (see above); flags given here win over it")
	s.logFormat = logging.Flag(fs)
	fs.StringVar(&s.data, "data", ".custody", "data directory: NATS store, ledger, and the PKI unless --pki is set")
	fs.StringVar(&s.pki, "pki", "", "demo PKI directory (default <data>/pki; created if missing)")
	fs.StringVar(&s.http, "http", "127.0.0.1:8480", "listen address of the HTTP API (ledger, stations, gate)")
	fs.StringVar(&s.dps, "dps", "127.0.0.1:8443", "listen address of the DPS emulator (HTTPS, client certificates)")
	fs.StringVar(&s.nats, "nats", "127.0.0.1:4222", `NATS client listen address for external partners ("" for in-process only)`)
	fs.StringVar(&s.idScope, "id-scope", "0ne00C057D1", "the operator's DPS ID scope")
	fs.StringVar(&s.hubs, "hubs", "blue-hub-1.azure-devices.net,blue-hub-2.azure-devices.net", "comma-separated IoT hubs the DPS emulator allocates to")
	fs.StringVar(&s.origin, "origin", "custody.local", "checkpoint origin hostname (the note origin is \"<origin> - <log ID>\", the log ID derived from the log's public key; every sequencer of a cluster needs the same)")
	fs.IntVar(&s.cacheMiB, "ledger-cache-mb", 256, "the ledger store's block cache in MiB; proofs are fastest while the tree's nodes (about 90 bytes per leaf) fit in it")
	fs.IntVar(&s.gcPercent, "gc-percent", node.GCPercent, "the Go garbage collector's GOGC (ignored when the GOGC variable is set): the node allocates about 200 kB per enrollment decision and keeps a heap of tens of MB, so collecting less often saves CPU for a few hundred MB of memory")
	fs.StringVar(&s.deviceNets, "device-networks", "127.0.0.0/8,::1/128", "comma-separated CIDR prefixes the stations may reach device agents on; any other agent address is refused without being contacted")
	fs.BoolVar(&s.insecureHTTP, "insecure-http", false, "DEVELOPMENT ONLY: serve the HTTP API as plain HTTP, without client identities (logged loudly)")
	fs.StringVar(&s.role, "role", "all", "all: the whole deployment in this process; verifier: a process of the verifier pool; sequencer: a sequencer candidate of a cluster (see above)")
	fs.DurationVar(&s.verdictWait, "verdict-wait", 0, "with a verifier pool: how long the ledger waits for an event's verdict, while verifiers are sending, before checking the event itself (e.g. 500ms); 0: no pool, the ledger checks everything")
	fs.StringVar(&s.natsURL, "nats-url", "tls://127.0.0.1:4222", "--role verifier and sequencer: the deployment's NATS servers to connect to (comma-separated: every node of a cluster)")
	fs.StringVar(&s.db, "db", "", "--role sequencer: the DSN of Custody's MariaDB database (go-sql-driver/mysql form, e.g. custody@unix(/run/mysqld/mysqld.sock)/custody)")
	fs.StringVar(&s.trillian, "trillian", "", "--role sequencer: Trillian's log server, host:port (gRPC over TLS with the PKI's server certificate)")
	fs.Int64Var(&s.treeID, "tree-id", 0, "--role sequencer: the log's Trillian tree (PREORDERED_LOG; \"custody trillian create-tree\")")
	fs.StringVar(&s.instance, "instance", "", "--role sequencer: this candidate's name, unique in the cluster (the lease names its holder)")
	fs.DurationVar(&s.lease, "lease", 3*time.Second, "--role sequencer: the sequencer lease's time to live: a standby takes over at most this long after the holder stops renewing")
	fs.IntVar(&s.replicas, "replicas", 3, "--role sequencer: JetStream replicas of the events stream and the ledger's buckets (3 on a 3-node cluster)")
	fs.IntVar(&s.workers, "workers", 0, "--role verifier: events checked in parallel (default: one per core)")
	fs.StringVar(&s.cpuProfile, "cpuprofile", "", "diagnostics: write a Go CPU profile of the whole run to `file` (go tool pprof), finished when custodyd stops")
	fs.BoolVar(&s.verbose, "v", false, "debug logging")
	return fs
}

// listenFlags are the flags of the node's listeners (node.ListenError).
var listenFlags = map[string]string{"HTTP": "--http", "DPS": "--dps", "NATS": "--nats"}

// describe says what stopped custodyd, naming the flag to change where
// one is to blame.
func describe(err error) string {
	var le *node.ListenError
	var inUse *node.DataInUseError
	switch {
	case errors.As(err, &le):
		return fmt.Sprintf("%s cannot listen on %s (%s): %s", le.Listener, le.Addr, listenFlags[le.Listener], le.Reason())
	case errors.As(err, &inUse):
		dir := inUse.Dir
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
		holder := "another custodyd"
		if inUse.PID != 0 {
			holder += fmt.Sprintf(" (pid %d)", inUse.PID)
		}
		return fmt.Sprintf("the data folder %s (--data) is in use by %s: stop it, or give this one another --data", dir, holder)
	}
	return err.Error()
}

// startCPUProfile writes a CPU profile to path until the returned stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
