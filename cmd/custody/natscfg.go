package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

func init() {
	register("nats-config", command{usage: "nats-config", summary: "print a nats-server config with one NKEY user per partner and its permissions", run: natsConfigCmd})
}

func natsConfigCmd(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("nats-config", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody nats-config [--pki DIR]

Prints a nats-server configuration with the same users and permissions as
custodyd's embedded server: one NKEY user per partner that may publish only
under custody.v1.events.<partner>.> and read only its own receipts,
rejections and reply inbox, plus the ledger's user. NKEY seeds missing from
DIR/nats are created; the config holds public keys only.

Flags:
`)
		fs.PrintDefaults()
	}
	dir := fs.String("pki", ".custody/pki", "the deployment's PKI directory")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	p, err := pki.LoadDemo(*dir)
	if err != nil {
		return &fileError{"--pki", *dir, `the deployment's PKI directory ("custody pki init")`, err}
	}
	conf, err := node.NATSServerConfig(p)
	if err != nil {
		return err
	}
	fmt.Print(conf)
	return nil
}
