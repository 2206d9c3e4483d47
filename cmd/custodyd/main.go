// Command custodyd runs a whole Custody deployment in one process: an
// embedded NATS server with JetStream, the ledger on Pebble, one station per
// partner, the operator's enrollment gate with its LDevID CA, and a
// DPS-compatible emulator.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/custodyledger/custody/services/node"
)

func main() {
	fs := flag.NewFlagSet("custodyd", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: custodyd [flags]

Runs Custody on one machine: NATS JetStream (embedded), the ledger, the
partner stations, the enrollment gate and a DPS emulator. A demo PKI is
created in --pki on first start (or use "custody pki init").

HTTP API (--http):
  /ledger/v1/...            checkpoints, proofs, provenance
  /stations/<partner>/v1/   factory-floor API of each partner's station
  /gate/<idScope>/registrations/<id>/register   first-boot enrollment
  /healthz                  200 once ready

Flags:
`)
		fs.PrintDefaults()
	}
	dataDir := fs.String("data", ".custody", "data directory: NATS store, ledger, and the PKI unless --pki is set")
	pkiDir := fs.String("pki", "", "demo PKI directory (default <data>/pki; created if missing)")
	httpAddr := fs.String("http", "127.0.0.1:8480", "listen address of the HTTP API (ledger, stations, gate)")
	dpsAddr := fs.String("dps", "127.0.0.1:8443", "listen address of the DPS emulator (HTTPS, client certificates)")
	natsAddr := fs.String("nats", "127.0.0.1:4222", `NATS client listen address for external partners ("" for in-process only)`)
	idScope := fs.String("id-scope", "0ne00C057D1", "the operator's DPS ID scope")
	hubs := fs.String("hubs", "blue-hub-1.azure-devices.net,blue-hub-2.azure-devices.net", "comma-separated IoT hubs the DPS emulator allocates to")
	origin := fs.String("origin", "custody.local", "checkpoint origin hostname (the note origin is \"<origin> - <tree ID>\")")
	cacheMiB := fs.Int("ledger-cache-mb", 256, "the ledger store's block cache in MiB; proofs are fastest while the tree's nodes (about 90 bytes per leaf) fit in it")
	gcPercent := fs.Int("gc-percent", node.GCPercent, "the Go garbage collector's GOGC (ignored when the GOGC variable is set): the node allocates about 200 kB per enrollment decision and keeps a heap of tens of MB, so collecting less often saves CPU for a few hundred MB of memory")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	node.ApplyGCPercent(*gcPercent)
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := node.New(ctx, node.Config{
		DataDir: *dataDir, PKIDir: *pkiDir, HTTPAddr: *httpAddr, DPSAddr: *dpsAddr, NATSAddr: *natsAddr,
		IDScope: *idScope, Hubs: strings.Split(*hubs, ","), Origin: *origin, LedgerCacheMiB: *cacheMiB, Logger: logger,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "custodyd:", err)
		os.Exit(1)
	}
	if err := n.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "custodyd:", err)
		os.Exit(1)
	}
}
