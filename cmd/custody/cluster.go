package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger/trillian"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

// The commands a cluster's operator runs once (deploy/cluster): making
// the log's Trillian tree, and registering the PKI's partners on a ledger
// that runs without an all-in-one node to do it.

func init() {
	register("trillian", command{usage: "trillian create-tree", summary: "create the log's Trillian tree (PREORDERED_LOG) for custodyd --role sequencer; prints its ID", run: trillianCmd})
	register("register", command{usage: "register", summary: "register the PKI's partners on a running ledger over NATS, signed by the consortium CA (a cluster's first start)", run: registerCmd})
}

const trillianUsage = `Usage: custody trillian create-tree --trillian ADDR [--pki DIR] [--name NAME]

The log of a cluster (deploy/cluster) lives in a Trillian tree on MariaDB;
create-tree makes it, once, and prints the ID every sequencer is given
as --tree-id. Run "custody trillian create-tree --help" for its flags.
`

func trillianCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, trillianUsage)
		return usageErrorf("trillian: missing the subcommand: create-tree")
	}
	switch args[0] {
	case "create-tree":
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stderr, trillianUsage)
		return flag.ErrHelp
	default:
		return usageErrorf("trillian: unknown subcommand %q: the only one is create-tree", args[0])
	}
	fs := flag.NewFlagSet("trillian create-tree", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody trillian create-tree --trillian ADDR [--pki DIR] [--name NAME]

Creates a PREORDERED_LOG tree on Trillian's log server (gRPC over TLS with
the PKI's server certificate), initialises it and prints its ID: the
--tree-id of every custodyd --role sequencer of the cluster. Run it once.

Flags:
`)
		fs.PrintDefaults()
	}
	addr := fs.String("trillian", "127.0.0.1:8090", "Trillian's log server, host:port")
	dir := fs.String("pki", ".custody/pki", "the deployment's PKI directory (its TLS CA)")
	name := fs.String("name", "custody", "the tree's display name (at most 20 bytes)")
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	p, err := pki.LoadDemo(*dir)
	if err != nil {
		return &fileError{"--pki", *dir, `the deployment's PKI directory ("custody pki init")`, err}
	}
	conn, err := trillian.Dial(*addr, p.TLSRoots())
	if err != nil {
		return fmt.Errorf("--trillian %s: %w", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	id, err := trillian.CreateTree(ctx, conn, *name)
	if err != nil {
		return fmt.Errorf("--trillian %s: %w", *addr, err)
	}
	fmt.Println(id)
	return nil
}

func registerCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("register", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody register --nats URLS [--pki DIR] [--operator NAME]

Logs partner.registered, signed by the consortium CA's key, for every
partner of the PKI, over the deployment's NATS as the consortium's user,
and waits for each receipt (checked with the log's key). A partner already
registered is left as it is, so running it again is harmless. custodyd's
all-in-one node does this itself; a cluster's sequencers do not register
anyone: the consortium runs this, with its key, once the first sequencer
is up.

Flags:
`)
		fs.PrintDefaults()
	}
	urls := fs.String("nats", "tls://127.0.0.1:4222", "the deployment's NATS servers, comma-separated")
	dir := fs.String("pki", ".custody/pki", "the deployment's PKI directory")
	operator := fs.String("operator", "blue-operator", "the operator whose gate the PKI's gate partners serve")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	p, err := pki.LoadDemo(*dir)
	if err != nil {
		return &fileError{"--pki", *dir, `the deployment's PKI directory ("custody pki init")`, err}
	}
	kp, err := p.NKey(events.ConsortiumPartner)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*urls, append(node.UserOptions(events.ConsortiumPartner, kp), node.NATSTLS(p))...)
	if err != nil {
		return fmt.Errorf("--nats %s: %w", *urls, err)
	}
	defer nc.Close()
	if err := node.RegisterPartners(ctx, nc, p, *operator, nil); err != nil {
		return err
	}
	fmt.Printf("%d partners registered\n", len(p.PartnerNames()))
	return nil
}
