package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

func init() {
	register("nats-config", command{usage: "nats-config", summary: "print a nats-server config with one NKEY user per partner and its permissions (one node of a cluster with --cluster)", run: natsConfigCmd})
}

func natsConfigCmd(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("nats-config", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody nats-config [--pki DIR] [--name N --listen ADDR --store DIR]
       custody nats-config --cluster NAME --name N --cluster-listen ADDR --routes A,B,C [...]

Prints a nats-server configuration with the same users and permissions as
custodyd's embedded server: one NKEY user per partner that may publish only
under custody.v1.events.<partner>.> and read only its own receipts,
rejections and reply inbox, plus the ledger's and the verifier pool's
users. NKEY seeds missing from DIR/nats are created; the config holds
public keys only. Clients connect over TLS with the PKI's server
certificate.

With --cluster it is the configuration of one node of a NATS cluster
(deploy/cluster): its routes go over TLS and authenticate with the
deployment's route secret, DIR/nats/route.secret (created if missing; copy
it with the PKI to every node).

Flags:
`)
		fs.PrintDefaults()
	}
	dir := fs.String("pki", ".custody/pki", "the deployment's PKI directory")
	name := fs.String("name", "", "the server's name (server_name; required with --cluster)")
	listen := fs.String("listen", "", `client listener host:port ("": nats-server's default, 0.0.0.0:4222)`)
	store := fs.String("store", "", "JetStream's directory (default /var/lib/custody/nats)")
	cluster := fs.String("cluster", "", "the NATS cluster's name: render one node of a cluster")
	clusterListen := fs.String("cluster-listen", "", "--cluster: this node's route listener, host:port")
	routes := fs.String("routes", "", "--cluster: every node's route address, host:port, comma-separated")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	p, err := pki.LoadDemo(*dir)
	if err != nil {
		return &fileError{"--pki", *dir, `the deployment's PKI directory ("custody pki init")`, err}
	}
	n := node.NATSNode{Name: *name, Listen: *listen, StoreDir: *store}
	if *cluster != "" {
		if *name == "" || *clusterListen == "" || *routes == "" {
			return usageErrorf("nats-config: --cluster needs --name, --cluster-listen and --routes")
		}
		secret, err := routeSecret(p.Dir)
		if err != nil {
			return err
		}
		n.Cluster, n.ClusterListen, n.Routes, n.RouteSecret = *cluster, *clusterListen, strings.Split(*routes, ","), secret
	}
	conf, err := node.NATSNodeConfig(p, n)
	if err != nil {
		return err
	}
	fmt.Print(conf)
	return nil
}

// routeSecret reads the deployment's NATS route secret from the PKI
// directory, creating it on first use.
func routeSecret(dir string) (string, error) {
	path := filepath.Join(dir, pki.DirNATS, "route.secret")
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return "", fmt.Errorf("%s: the route secret is shorter than 32 characters", path)
		}
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 24)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	s := hex.EncodeToString(raw)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) { // another nats-config made it meanwhile
			return routeSecret(dir)
		}
		return "", err
	}
	defer f.Close()
	if _, err := f.WriteString(s + "\n"); err != nil {
		return "", err
	}
	return s, nil
}
