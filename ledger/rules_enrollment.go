package ledger

import (
	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// enrollmentRefused checks enrollment.refused, the record of a first-boot
// enrollment an operator's gate refused. It changes no device state: a
// refusal is the gate's signed statement, logged so that every decision,
// allow or refuse, is in the tree.
//
// Rules: the signer is a gate enrolling for the named operator; the device
// is known to the ledger (refusals of TPMs the ledger never saw stay in the
// gate's own decision record, so nobody can grow the log with made-up
// devices); if the refusal carries evidence, it is a quote by the device's
// IAK over the named challenge (the gate's nonce). Its counters are not
// compared with the history: a quote refused for rolled-back counters is
// exactly what such a record must be able to show.
func (b *batch) enrollmentRefused(s *events.Signed, signer *Partner, v *verdict) (*verdict, error) {
	p := &s.Statement.Predicate
	r := p.Refused
	if signer.Role != events.RoleGate {
		return nil, reject(events.CodeWrongRole, "a partner with role %s may not publish %s", signer.Role, p.Kind)
	}
	if signer.Operator == "" || signer.Operator != r.Operator {
		return nil, reject(events.CodeWrongRole, "gate %s does not enroll for operator %s", p.Partner, r.Operator)
	}
	device := s.Statement.Device()
	if r.RegistrationID != device {
		return nil, reject(events.CodeDeviceID, "the refusal names registration %s but is about device %s", r.RegistrationID, device)
	}
	dev, err := b.device(device)
	if err != nil {
		return nil, err
	}
	if dev == nil {
		return nil, reject(events.CodeUnknownDevice, "device %s has no tpm.manufactured record", device)
	}
	if p.Evidence != nil {
		if len(r.Challenge) == 0 {
			return nil, reject(events.CodeEvidence, "refusal evidence needs the challenge it was quoted over")
		}
		q, err := p.Evidence.Quote()
		if err != nil {
			return nil, reject(events.CodeEvidence, "%v", err)
		}
		if _, err := attest.VerifyQuote(dev.IAKPublic, q, r.Challenge); err != nil {
			return nil, reject(events.CodeEvidence, "the refusal's quote does not verify against the device's IAK and challenge: %v", err)
		}
	}
	return v, nil
}
