package gate

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"

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
	return g.publish(ctx, st)
}

// logRefused appends enrollment.refused for a refusal, when the ledger
// knows the device (the ledger refuses records about devices it never saw)
// and, for refusals before the device proved its TPM, at most once per
// RefusalLogInterval per device. The outcome is noted in the decision; a
// ledger failure does not change the decision.
func (g *Gate) logRefused(ctx context.Context, req *gatewire.RegisterRequest, d *gatewire.Decision, res *result) {
	if res == nil || !res.known {
		d.LogNote = "not logged: refused before the device was identified"
		if d.Rule == events.RuleCustodyChain {
			d.LogNote = "not logged: the ledger has no record of this device"
		}
		return
	}
	if slices.Contains(unprovenRules, d.Rule) {
		now := g.cfg.Now()
		g.mu.Lock()
		last, seen := g.unproven[req.RegistrationID]
		limited := seen && now.Sub(last) < g.cfg.RefusalLogInterval
		if !limited {
			g.unproven[req.RegistrationID] = now
			if len(g.unproven) > maxOperations {
				for id, t := range g.unproven {
					if now.Sub(t) >= g.cfg.RefusalLogInterval {
						delete(g.unproven, id)
					}
				}
			}
		}
		g.mu.Unlock()
		if limited {
			d.LogNote = fmt.Sprintf("not logged: a refusal of this unproven device was logged at %s", last.UTC().Format("15:04:05"))
			return
		}
	}
	st := events.NewStatement(events.KindEnrollmentRefused, g.cfg.Name, req.RegistrationID, g.cfg.Now(), events.NewEventID())
	msg := d.Message
	if len(msg) > 1024 {
		msg = msg[:1021] + "..."
	}
	st.Predicate.Refused = &events.Refused{
		Operator: g.cfg.Operator, RegistrationID: req.RegistrationID, IDScope: g.cfg.IDScope,
		Rule: d.Rule, Message: msg,
	}
	if res.quote != nil {
		st.Predicate.Refused.Challenge = res.nonce
		st.Predicate.Evidence = res.quote
	}
	idx, err := g.publish(ctx, st)
	if err != nil {
		d.LogNote = "not logged: " + err.Error()
		g.cfg.Logger.Warn("recording enrollment.refused", "device", req.RegistrationID, "err", err)
		return
	}
	d.Logged, d.LogIndex = true, idx
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
