package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/verifier"
)

// runVerifier is custodyd --role verifier: a process of the verifier pool,
// connected to the deployment's NATS as its verifier user.
func runVerifier(ctx context.Context, s *settings, logger *slog.Logger) error {
	dir := s.pki
	if dir == "" {
		return fmt.Errorf("--role verifier needs --pki, the deployment's PKI directory (its consortium CA, TPM trust bundle and the verifier's NATS key)")
	}
	d, err := pki.LoadDemo(dir)
	if err != nil {
		return err
	}
	trust, err := attest.ParseBundle(d.EKTrustBundle())
	if err != nil {
		return err
	}
	kp, err := d.NKey(node.VerifierUser)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(s.natsURL, append(node.UserOptions(node.VerifierUser, kp), node.NATSTLS(d))...)
	if err != nil {
		return fmt.Errorf("NATS %s as %s (--nats-url): %w", s.natsURL, node.VerifierUser, err)
	}
	defer nc.Close()
	vf, err := verifier.New(verifier.Config{
		NATS: nc, Consortium: d.ConsortiumCA.Cert, TPMTrust: trust, Workers: s.workers,
		Logger: logger.With("part", "verifier"),
	})
	if err != nil {
		return err
	}
	logger.Info("verifier connected", "nats", nc.ConnectedUrlRedacted())
	return vf.Run(ctx)
}
