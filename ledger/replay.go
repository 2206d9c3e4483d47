package ledger

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// OfflineTrust is what an offline verifier trusts besides the log key: the
// TPM trust bundle (EK and IAK certificate chains) and the consortium CA
// (partner certificates and their roles).
type OfflineTrust struct {
	TPMTrust   *attest.Bundle
	Consortium *x509.Certificate
}

// Replay re-runs the ledger's checks over a verified bundle, offline, with
// the ledger's own rule engine (deviceRule, the code ingest runs): each
// signer's certificate chains to the consortium CA and is valid at the
// entry's integrated time (checkSigner, as ingest checks it), with a role
// that may publish its event; the birth record's EK and IAK certificates
// chain to the TPM trust bundle and bind each other; every quote verifies
// against the recorded IAK over the event's binding digest, with counters
// that never go backwards; and the custody rules (custodian, offers and
// their withdrawal, acceptances, equivocation, flags and flag reports) give,
// entry by entry, the ledger's own verdict (accepted, or logged as evidence
// with the same code). It returns the device's custody state derived from
// the bundle alone.
//
// What it cannot check offline: whether a hand-off's recipient was a
// registered partner at the time, which operator a gate enrolls for, and
// partner revocations (all in the registry, not in the device's entries).
func (vb *VerifiedBundle) Replay(trust OfflineTrust) (*Device, error) {
	if trust.TPMTrust == nil || trust.Consortium == nil {
		return nil, errors.New("replay: the TPM trust bundle and the consortium CA are required")
	}
	pool := x509.NewCertPool()
	pool.AddCert(trust.Consortium)
	// A recipient's registration is not in the bundle: assume an active
	// custody partner (see above).
	unknown := func(name string) (*Partner, error) { return &Partner{Name: name, Role: "unknown"}, nil }
	var dev *Device
	for _, e := range vb.Entries {
		at := time.Unix(e.IntegratedTime, 0)
		fail := func(format string, args ...any) error {
			return fmt.Errorf("replay: entry %d (%s by %s): %s", e.Index, e.Kind, e.Partner, fmt.Sprintf(format, args...))
		}
		cert, err := leafCertificate(e.Body)
		if err != nil {
			return nil, fail("%v", err)
		}
		p := &e.Statement.Predicate
		id, rerr := checkSigner(cert, pool, at, p.Partner)
		if rerr != nil {
			return nil, fail("%v", rerr)
		}
		signer := &Partner{Name: id.Name, Role: id.Role, Certificate: cert.Raw}
		s := e.Signed // the envelope's event, or the batch member's
		if p.Shipment != nil {
			// The device's part of a shipment (its manifest proof was
			// verified with the bundle): the same rule as ingest, for this
			// device. The verdict of a double-sold shipment rests on the
			// other devices too, whose histories the bundle does not hold:
			// a device of a shipment logged as equivocation is flagged
			// whatever its own part.
			if dev == nil {
				return nil, fail("the bundle does not start with the device's birth record")
			}
			r, rerr := shipmentDeviceRule(p, e.Digest, signer, dev, unknown)
			switch {
			case e.Status == events.StatusEvidence && e.Code == string(events.CodeEquivocation) &&
				(rerr == nil || rerr.Code == events.CodeAlreadyExists):
				dev = shipmentFlag(dev, p.Partner, e.Index)
			case e.Status == events.StatusAccepted && rerr == nil && r.logged == nil:
				dev = r.next(e.Index)
			case rerr != nil:
				return nil, fail("the ledger says %s, the custody rules say %v", e.Status, rerr)
			default:
				return nil, fail("the ledger says %s (%s), the custody rules give this device another verdict", e.Status, e.Code)
			}
			continue
		}
		nonce, err := events.BindingDigest(s.Payload)
		if err != nil {
			return nil, fail("%v", err)
		}
		if dev == nil {
			if p.Kind != events.KindTPMManufactured {
				return nil, fail("the bundle does not start with the device's birth record")
			}
			if !roleMay(signer.Role, p.Kind) {
				return nil, fail("role %s may not publish %s", signer.Role, p.Kind)
			}
			d, rerr := checkManufactured(trust.TPMTrust, nil, at, s, nonce)
			if rerr != nil {
				return nil, fail("%v", rerr)
			}
			dev = d
			continue
		}
		if p.Kind == events.KindEnrollmentRefused {
			if signer.Role != events.RoleGate {
				return nil, fail("role %s may not publish %s", signer.Role, p.Kind)
			}
			continue // a record of a decision: no state change
		}
		if p.Kind == events.KindDeviceEnrolled {
			nonce = p.Enrolled.Challenge
			signer.Operator = p.Enrolled.Operator // the gate's operator is in the registry, not here
		}
		iak, err := attest.ParseAttestationKey(dev.IAKPublic)
		if err != nil {
			return nil, fail("IAK: %v", err)
		}
		qi, qerr := verifyEvidence(iak, p.Evidence, nonce)
		r, rerr := deviceRule(p, e.Digest, signer, dev, qi, qerr, unknown)
		switch {
		case rerr != nil:
			return nil, fail("the ledger says %s, the custody rules say %v", e.Status, rerr)
		case r.logged == nil && e.Status == events.StatusAccepted,
			r.logged != nil && e.Status == events.StatusEvidence && e.Code == string(r.logged.Code):
			dev = r.next(e.Index)
		case r.logged != nil:
			return nil, fail("the ledger says %s (%s), the custody rules say evidence: %v", e.Status, e.Code, r.logged)
		default:
			return nil, fail("the ledger says %s (%s), but the event keeps every custody rule", e.Status, e.Code)
		}
	}
	if dev == nil {
		return nil, errors.New("replay: the bundle has no entries")
	}
	return dev, nil
}

// leafCertificate is the signer's certificate in a hashedrekord leaf.
func leafCertificate(body []byte) (*x509.Certificate, error) {
	lf, err := parseLeaf(body)
	if err != nil {
		return nil, err
	}
	if lf.key.Type != "CERTIFICATE" {
		return nil, errors.New("the leaf carries no signer certificate")
	}
	return x509.ParseCertificate(lf.key.Bytes)
}
