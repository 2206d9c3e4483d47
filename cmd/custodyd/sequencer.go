package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/trillian"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

// runSequencer is custodyd --role sequencer: a sequencer candidate of a
// cluster (docs/design/cluster.md). It keeps no state of its own: the log
// is in Trillian and MariaDB (--db, --trillian, --tree-id), the events in
// the deployment's JetStream (--nats-url); it applies events while it
// holds the sequencer lease and stands by otherwise, and serves the
// ledger's read API (--http) either way.
func runSequencer(ctx context.Context, s *settings, logger *slog.Logger) error {
	d, err := pki.LoadDemo(s.pki)
	if err != nil {
		return err
	}
	trust, err := attest.ParseBundle(d.EKTrustBundle())
	if err != nil {
		return err
	}
	logKey, err := ledger.NewLogKey(s.origin, d.LogKey)
	if err != nil {
		return err
	}
	kp, err := d.NKey(node.LedgerUser)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(s.natsURL, append(node.UserOptions(node.LedgerUser, kp), node.NATSTLS(d))...)
	if err != nil {
		return fmt.Errorf("NATS %s as %s (--nats-url): %w", s.natsURL, node.LedgerUser, err)
	}
	defer nc.Close()
	// Trillian's log server speaks gRPC over TLS with the deployment's
	// server certificate (trillian_log_server --tls_cert_file).
	conn, err := trillian.Dial(s.trillian, d.TLSRoots())
	if err != nil {
		return fmt.Errorf("Trillian %s (--trillian): %w", s.trillian, err)
	}
	defer conn.Close()
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	store, err := trillian.Open(octx, trillian.Config{DSN: s.db, Conn: conn, TreeID: s.treeID, Logger: logger.With("part", "store")})
	cancel()
	if err != nil {
		return fmt.Errorf("the log's store (--db, --trillian, --tree-id): %w", err)
	}
	defer store.Close()
	// The events stream and the ledger's buckets are made here, with
	// their replicas (ledger.New waits while JetStream is unavailable).
	l, err := ledger.New(ctx, ledger.Config{
		Store: store, NATS: nc, LogKey: logKey, Consortium: d.ConsortiumCA.Cert, TPMTrust: trust,
		Replicas: s.replicas, LeaseTTL: s.lease, Instance: s.instance, VerdictWait: s.verdictWait,
		Logger: logger.With("part", "ledger"),
	})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil // stopped while waiting for JetStream
	}
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.http)
	if err != nil {
		return fmt.Errorf("HTTP cannot listen on %s (--http): %w", s.http, err)
	}
	srv := &http.Server{
		Handler:           node.LedgerAPI(l, logger),
		ReadHeaderTimeout: 10 * time.Second,
	}
	scheme := "http"
	if !s.insecureHTTP {
		scheme = "https"
		srv.TLSConfig = node.ServerTLS(d)
	} else {
		node.WarnInsecureHTTP(logger, s.http)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return l.Run(gctx) })
	g.Go(func() error { return node.Serve(gctx, srv, ln, !s.insecureHTTP) })
	g.Go(func() error {
		select {
		case <-l.Ready():
			logger.Info("sequencer candidate ready", "instance", s.instance, "http", scheme+"://"+ln.Addr().String(),
				"nats", nc.ConnectedUrlRedacted(), "trillian", s.trillian, "tree", s.treeID, "lease", s.lease)
		case <-gctx.Done():
		}
		return nil
	})
	err = g.Wait()
	if s.verdictWait > 0 {
		vs := l.VerdictStats()
		logger.Info("sequencer stopped", "instance", s.instance, "verdicts_used", vs.Used, "verdicts_waited_for", vs.Waited, "checked_itself", vs.Missed)
	}
	return err
}

// checkSequencerFlags refuses a --role sequencer command line that lacks
// what a sequencer needs (exit status 2: restarting will not help).
func checkSequencerFlags(s *settings) error {
	switch {
	case s.pki == "":
		return errors.New("--role sequencer needs --pki, the deployment's PKI directory (its consortium CA, TPM trust bundle, log key and the ledger's NATS key)")
	case s.db == "":
		return errors.New("--role sequencer needs --db, the DSN of Custody's MariaDB database (e.g. custody@unix(/run/mysqld/mysqld.sock)/custody)")
	case s.trillian == "":
		return errors.New("--role sequencer needs --trillian, the address of Trillian's log server (host:port)")
	case s.treeID <= 0:
		return errors.New(`--role sequencer needs --tree-id, the log's Trillian tree ("custody trillian create-tree" makes one)`)
	case s.instance == "":
		return errors.New("--role sequencer needs --instance, a name for this candidate unique in the cluster (e.g. its host name)")
	case s.lease < 300*time.Millisecond:
		return fmt.Errorf("--lease %s: the sequencer lease is at least 300ms", s.lease)
	case s.replicas < 1 || s.replicas > 5:
		return fmt.Errorf("--replicas %d: JetStream keeps 1 to 5 replicas (3 for a 3-node cluster)", s.replicas)
	}
	return nil
}
