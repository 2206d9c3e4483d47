package gate

import (
	"context"
	"crypto/x509"
	"fmt"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/gate/gatewire"
)

// logEnrolled publishes device.enrolled with the fresh quote as evidence
// (its qualifyingData is the gate's nonce, recorded as the challenge) and
// waits for the ledger's receipt.
func (g *Gate) logEnrolled(ctx context.Context, req *gatewire.RegisterRequest, cert *x509.Certificate, nonce []byte) (uint64, error) {
	st := events.NewStatement(events.KindDeviceEnrolled, g.cfg.Name, req.RegistrationID, g.cfg.Now(), events.NewEventID())
	st.Predicate.Enrolled = &events.Enrolled{
		Operator: g.cfg.Operator, RegistrationID: req.RegistrationID, IDScope: g.cfg.IDScope,
		Challenge: nonce, LDevIDCertificate: cert.Raw,
	}
	st.Predicate.Evidence = req.Payload.Quote
	return g.publishFn(ctx, st)
}

// publish signs st with the gate's key, publishes it and waits for the
// ledger's receipt.
func (g *Gate) publish(ctx context.Context, st *events.Statement) (uint64, error) {
	signed, err := events.SignStatement(ctx, st, g.cfg.Key, g.cfg.Name)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	r, err := g.pub.PublishSigned(ctx, signed)
	if err != nil {
		return 0, err
	}
	if r.Status != events.StatusAccepted {
		return 0, fmt.Errorf("the ledger refused it: %s: %s", r.Code, r.Reason)
	}
	return r.LogIndex, nil
}
