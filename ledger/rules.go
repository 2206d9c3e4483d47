package ledger

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/schemas"
)

// verdict is the outcome of verifying one event against the rules.
type verdict struct {
	signerCert []byte           // DER of the certificate whose key signed the envelope
	apply      func(idx uint64) // state change, run once the entry's index is known
	evidence   bool             // the event broke a rule but is logged as evidence
}

// verify checks one event in stream order: schema, subject, signer,
// evidence, custody rules, with the stateless checks already made by
// prepare (prepare.go). A *RuleError return is a refusal (or, with
// verdict.evidence, an event to log as evidence); any other error is a
// storage failure. at is the event's time: the time the ledger integrates
// it (Entry.IntegratedTime), at which the signer's certificate must be
// valid, as offline replay checks it.
//
// The dispatch by kind is here: partner registry events, enrollment
// refusals (rules_enrollment.go), birth records, then the custody rules of
// device events (deviceRule, which offline replay runs too).
func (b *batch) verify(pr *prepared, at time.Time) (*verdict, error) {
	s := pr.signed
	st := s.Statement
	p := &st.Predicate
	if pr.early != nil {
		return nil, pr.early // schema, subject
	}
	if p.Kind == events.KindPartnerRegistered || p.Kind == events.KindPartnerRevoked {
		return b.partnerEvent(pr)
	}
	signer, err := b.signer(pr, at)
	if err != nil {
		return nil, err
	}
	if p.Kind == events.KindEnrollmentRefused {
		return b.enrollmentRefused(s, signer, &verdict{signerCert: signer.Certificate}) // rules_enrollment.go
	}
	if !roleMay(signer.Role, p.Kind) {
		return nil, reject(events.CodeWrongRole, "a partner with role %s may not publish %s", signer.Role, p.Kind)
	}
	v := &verdict{signerCert: signer.Certificate}
	if events.IsShipment(p.Kind) {
		return b.shipment(pr, signer, v) // rules_shipment.go
	}
	device := st.Device()
	if p.Kind == events.KindTPMManufactured {
		return b.manufactured(pr, device, v)
	}
	dev, err := b.device(device)
	if err != nil {
		return nil, err
	}
	if dev == nil {
		return nil, reject(events.CodeUnknownDevice, "device %s has no tpm.manufactured record", device)
	}
	if pr.nonceErr != nil {
		return nil, pr.nonceErr
	}
	qi, qerr := pr.evidence(dev.IAKPublic)
	r, rerr := deviceRule(p, s.DigestHex(), signer, dev, qi, qerr, b.partner)
	if rerr != nil {
		return nil, rerr
	}
	v.apply = func(idx uint64) { b.devices[device] = r.next(idx) }
	if r.logged != nil {
		v.evidence = true
		return v, r.logged
	}
	return v, nil
}

// signer checks the envelope's signer at at: registered, not revoked, its
// signature verifying with the registered certificate, which is valid at
// at. A refusal is a *RuleError; any other error a storage failure.
func (b *batch) signer(pr *prepared, at time.Time) (*Partner, error) {
	name := pr.signed.Statement.Predicate.Partner
	signer, err := b.partner(name)
	if err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, reject(events.CodeUnknownPartner, "partner %q is not in the partner registry", name)
	}
	if signer.Revoked {
		return nil, reject(events.CodePartnerRevoked, "partner %q was revoked at log index %d; its later events are refused", name, signer.RevokedIndex)
	}
	if ok, err := pr.signatureOK(signer.Certificate); err != nil {
		return nil, err
	} else if !ok {
		return nil, reject(events.CodeBadSignature, "the envelope's signature does not verify with %s's registered certificate", name)
	}
	if rerr := b.l.signerValid(signer, at); rerr != nil {
		return nil, rerr
	}
	return signer, nil
}

func roleMay(role, kind string) bool { return events.RoleMayPublish(role, kind) }

// partnerLookup finds a partner's registry state (nil, nil if unknown).
type partnerLookup func(name string) (*Partner, error)

// ruling is deviceRule's verdict on an event it does not refuse.
type ruling struct {
	// logged is nil for an accepted event; otherwise the event is logged as
	// evidence (status evidence) with this code and sentence: equivocation
	// (the device is flagged) or a flag report (nothing changes).
	logged *RuleError
	// next returns the device's state once the event is logged at idx.
	next func(idx uint64) *Device
}

// deviceRule is the one rule engine of device events after the birth
// record (every kind but tpm.manufactured and enrollment.refused): ingest
// (batch.verify) and offline replay (VerifiedBundle.Replay) both run it.
// Given the event, its digest (hex), who signed it (the registry's record
// online; the certificate's identity offline), the device's state before
// the event and the verification of its quote against the device's IAK
// (qi, or the refusal qerr), it checks in order: the signer's role may
// publish the kind (wrong-role), the quote (bad-evidence), the counters do
// not go backwards (counters-backwards), the device is not decommissioned,
// and the kind's custody rule (custodyRule). partners answers whether a
// hand-off's recipient is registered. It never changes dev.
func deviceRule(p *events.Predicate, digest string, signer *Partner, dev *Device, qi *attest.QuoteInfo, qerr *RuleError, partners partnerLookup) (*ruling, *RuleError) {
	return deviceRuleAs(p.Kind, p, digest, signer, dev, qi, qerr, partners)
}

// deviceRuleAs is deviceRule with the quote policy of kind policyKind: a
// shipment's devices are judged by their hand-off view (shipmentView)
// under the shipment's policy.
func deviceRuleAs(policyKind string, p *events.Predicate, digest string, signer *Partner, dev *Device, qi *attest.QuoteInfo, qerr *RuleError, partners partnerLookup) (*ruling, *RuleError) {
	if !roleMay(signer.Role, p.Kind) {
		return nil, reject(events.CodeWrongRole, "a partner with role %s may not publish %s", signer.Role, p.Kind)
	}
	// The quote policy (schemas/custody/v1/policy/quotes.json): a required
	// quote must be there and verify; an optional one, if there, must
	// verify; a kind without quotes must carry none.
	switch pol := schemas.QuotePolicy(policyKind, stageName(p)); {
	case p.Evidence == nil && pol == schemas.QuoteRequired:
		return nil, reject(events.CodeEvidence, "the quote policy requires a TPM quote for %s", policyName(policyKind, p))
	case p.Evidence != nil && pol == schemas.QuoteNone:
		return nil, reject(events.CodeEvidence, "the quote policy allows no quote in %s", policyName(policyKind, p))
	case p.Evidence == nil:
		qi, qerr = nil, nil
	}
	if qerr != nil {
		return nil, qerr
	}
	if qi != nil {
		if rerr := checkCounters(dev.LastQuote, qi); rerr != nil {
			return nil, rerr
		}
	}
	if dev.Decommissioned {
		return nil, reject(events.CodeDecommissioned, "device %s was decommissioned", dev.ID)
	}
	next := dev.Clone()
	rerr := custodyRule(p, signer, dev, next, qi, partners)
	switch {
	case rerr == nil:
		if qi != nil {
			next.LastQuote = &QuoteCounters{Clock: qi.Clock, ResetCount: qi.ResetCount, RestartCount: qi.RestartCount}
		}
		return &ruling{next: func(idx uint64) *Device {
			finish(next, p, digest, idx)
			return next
		}}, nil
	case rerr.Code == events.CodeEquivocation:
		// Equivocation is evidence: log it, flag the device, change
		// nothing else.
		return &ruling{logged: rerr, next: func(idx uint64) *Device {
			next := dev.Clone()
			next.Flag = &DeviceFlag{Reason: "equivocation", By: p.Partner, Index: idx}
			return next
		}}, nil
	case rerr.Code == events.CodeFlagReport:
		// A report by a party outside the custody: logged for the
		// parties to see, changing nothing.
		return &ruling{logged: rerr, next: func(uint64) *Device { return dev.Clone() }}, nil
	}
	return nil, rerr
}

// stageName is the stage of a stage.recorded event ("" for other kinds):
// the quote policy is per stage.
func stageName(p *events.Predicate) string {
	if p.Stage != nil {
		return p.Stage.Name
	}
	return ""
}

func policyName(kind string, p *events.Predicate) string {
	if p.Stage != nil {
		return kind + " (" + p.Stage.Name + ")"
	}
	return kind
}

// custodyRule applies the custody rule of one event's kind (the table in
// docs/design/ledger.md, "Rules, in stream order") to next, a copy of dev,
// the device's state before the event. partners answers whether a
// hand-off's recipient is registered.
func custodyRule(p *events.Predicate, signer *Partner, dev, next *Device, qi *attest.QuoteInfo, partners partnerLookup) *RuleError {
	switch p.Kind {
	case events.KindStageRecorded:
		if p.Stage.Name == events.StageReceivingInspection {
			// A receiving station quotes a sample of a shipment on the
			// dock: before or after it accepts it.
			if !custodyParty(dev, p.Partner) {
				return reject(events.CodeNotCustodian, "only the custodian (%s) or the recipient of the device's pending offer may inspect it; %s is neither", dev.Custodian, p.Partner)
			}
		} else if dev.Custodian != p.Partner {
			return reject(events.CodeNotCustodian, "only the current custodian (%s) may record a stage; %s is not", dev.Custodian, p.Partner)
		}
		if schemas.PCRsMustMatchRecorded(p.Stage.Name) {
			// The sampled device must still run what was programmed: its
			// quote shows the PCRs last recorded for it.
			for idx, want := range dev.ExpectedPCRs {
				i, _ := strconv.Atoi(idx)
				got, ok := qi.PCRs[i]
				if !ok {
					return reject(events.CodeEvidence, "the inspection quote does not cover PCR %s, recorded when the device was programmed", idx)
				}
				if hex.EncodeToString(got) != want {
					return reject(events.CodeEvidence, "PCR %s of the sampled device differs from the value recorded when it was programmed (tampered firmware?)", idx)
				}
			}
		}
		if p.Stage.Name == events.StageFirmwareProgrammed || p.Stage.Name == events.StageReceivingInspection {
			for idx, want := range p.Stage.PCRs {
				i, _ := strconv.Atoi(idx)
				got, ok := qi.PCRs[i]
				if !ok || hex.EncodeToString(got) != want {
					return reject(events.CodeEvidence, "the recorded PCR %s differs from the value the TPM quoted", idx)
				}
			}
		}
	case events.KindHandoffOffered:
		h := p.Handoff
		if dev.Custodian != p.Partner || h.From != p.Partner {
			return reject(events.CodeNotCustodian, "only the current custodian (%s) may offer the device; %s is not", dev.Custodian, p.Partner)
		}
		if dev.Pending != nil {
			if dev.Pending.From == h.From && dev.Pending.To == h.To {
				// A retry of the pending offer (a station that timed
				// out): the same offer, not a second one.
				return reject(events.CodeAlreadyExists, "%s's offer of the device to %s is already pending (offer %s, log index %d); this is the same offer", h.From, h.To, dev.Pending.Digest, dev.Pending.Index)
			}
			return reject(events.CodeEquivocation, "%s offered the device to %s while its offer to %s (log index %d) is pending: double hand-off", p.Partner, h.To, dev.Pending.To, dev.Pending.Index)
		}
		to, err := partners(h.To)
		if err != nil || to == nil || to.Revoked || to.Role == events.RoleGate {
			return reject(events.CodeRecipient, "recipient %q is not a registered, active custody partner", h.To)
		}
	case events.KindHandoffAccepted:
		h := p.Handoff
		if dev.Pending == nil {
			if dev.LastAccepted == h.Offer {
				// Only an acceptance moves custody, so the custodian is
				// the recipient of the last accepted offer.
				if dev.Custodian == p.Partner && h.To == p.Partner {
					// The recipient, still holding the device, accepting
					// again (a new envelope for the same hand-off): a
					// repeat, not a conflict.
					return reject(events.CodeAlreadyExists, "%s already accepted offer %s; the first acceptance is in the log", p.Partner, h.Offer)
				}
				// Nobody but the recipient can accept: a third party's
				// acceptance is refused, and is no evidence against the
				// device's custodians.
				return reject(events.CodeNotRecipient, "offer %s was accepted by its recipient %s; %s is not its recipient", h.Offer, dev.Custodian, p.Partner)
			}
			return reject(events.CodeNoPendingOffer, "device %s has no pending offer", dev.ID)
		}
		if dev.Pending.To != p.Partner {
			return reject(events.CodeNotRecipient, "the pending offer names %s as recipient, not %s", dev.Pending.To, p.Partner)
		}
		if dev.Pending.Digest != h.Offer || dev.Pending.From != h.From || h.To != p.Partner {
			return reject(events.CodeNoPendingOffer, "the acceptance names offer %s from %s, but the pending offer is %s from %s", h.Offer, h.From, dev.Pending.Digest, dev.Pending.From)
		}
	case events.KindHandoffWithdrawn:
		h := p.Handoff
		if dev.Pending == nil {
			return reject(events.CodeNoPendingOffer, "device %s has no pending offer to withdraw", dev.ID)
		}
		if dev.Pending.From != p.Partner || h.From != p.Partner {
			return reject(events.CodeNotCustodian, "only the offering party (%s) may withdraw its offer; %s is not", dev.Pending.From, p.Partner)
		}
		if dev.Pending.Digest != h.Offer || dev.Pending.To != h.To {
			return reject(events.CodeNoPendingOffer, "the withdrawal names offer %s to %s, but the pending offer is %s to %s", h.Offer, h.To, dev.Pending.Digest, dev.Pending.To)
		}
	case events.KindDeviceFlagged:
		if !custodyParty(dev, p.Partner) {
			return reject(events.CodeFlagReport, "%s is not a party of device %s's custody (custodian %s): its flag (%s) is logged as a report and changes nothing", p.Partner, dev.ID, dev.Custodian, p.Flag.Reason)
		}
	case events.KindDeviceCleared:
		if dev.Flag == nil {
			return reject(events.CodeNotFlagged, "device %s is not flagged", dev.ID)
		}
		if !custodyParty(dev, p.Partner) {
			return reject(events.CodeNotCustodian, "only the operator holding or receiving the device may clear its flag")
		}
	case events.KindDeviceEnrolled:
		e := p.Enrolled
		if signer.Operator == "" || signer.Operator != e.Operator {
			return reject(events.CodeWrongRole, "gate %s does not enroll for operator %s", p.Partner, e.Operator)
		}
		if dev.Custodian != e.Operator {
			return reject(events.CodeNotCustodian, "the device's custodian is %s, not %s", dev.Custodian, e.Operator)
		}
		if dev.Flag != nil {
			return reject(events.CodeFlagged, "device %s is flagged (%s)", dev.ID, dev.Flag.Reason)
		}
	case events.KindDeviceDecommissioned:
		if dev.Custodian != p.Partner {
			return reject(events.CodeNotCustodian, "only the custodian may decommission the device")
		}
	}
	return nil
}

// custodyParty reports whether partner is a party of the device's custody:
// its custodian (an operator that enrolled the device holds it), or the
// recipient of its pending offer.
func custodyParty(dev *Device, partner string) bool {
	return dev.Custodian == partner || (dev.Pending != nil && dev.Pending.To == partner)
}

// checkSigner checks a signer's partner certificate at the event's time
// (its integrated time), as ingest and offline replay both do: it chains
// to the consortium CA, is valid at that time, carries a role, and names
// the partner the event claims.
func checkSigner(cert *x509.Certificate, consortium *x509.CertPool, at time.Time, claimed string) (events.PartnerIdentity, *RuleError) {
	id, err := events.VerifyPartner(cert, consortium, at)
	if err != nil {
		return id, reject(events.CodeBadCertificate, "the signer's certificate at the event's time: %v", err)
	}
	if id.Name != claimed {
		return id, reject(events.CodeBadCertificate, "signed with %s's certificate, but the event claims %s", id.Name, claimed)
	}
	return id, nil
}

// finish applies an accepted event's effect to the device state.
func finish(d *Device, p *events.Predicate, digest string, idx uint64) {
	switch p.Kind {
	case events.KindStageRecorded:
		if d.Stages == nil {
			d.Stages = map[string]uint64{}
		}
		d.Stages[p.Stage.Name] = idx
		if p.Stage.Name == events.StageFirmwareProgrammed {
			d.FirmwareDigest = p.Stage.FirmwareDigest
			d.ExpectedPCRs = maps.Clone(p.Stage.PCRs)
		}
	case events.KindHandoffOffered:
		d.Pending = &Offer{Digest: digest, From: p.Handoff.From, To: p.Handoff.To, Index: idx}
	case events.KindHandoffAccepted:
		d.Custodian = p.Partner
		d.LastAccepted = d.Pending.Digest
		d.Pending = nil
		d.Handoffs++
	case events.KindHandoffWithdrawn:
		d.Pending = nil
	case events.KindDeviceFlagged:
		d.Flag = &DeviceFlag{Reason: p.Flag.Reason, By: p.Partner, Index: idx}
	case events.KindDeviceCleared:
		d.Flag = nil
	case events.KindDeviceEnrolled:
		d.Enrolled = true
	case events.KindDeviceDecommissioned:
		d.Decommissioned = true
	}
}

// verifyEvidence verifies a quote against the device's IAK and the nonce
// the event requires (stateless; checkCounters compares it with the
// device's history).
func verifyEvidence(iak *attest.AttestationKey, ev *events.Evidence, nonce []byte) (*attest.QuoteInfo, *RuleError) {
	if ev == nil {
		return nil, reject(events.CodeEvidence, "the event carries no TPM quote")
	}
	q, err := ev.Quote()
	if err != nil {
		return nil, reject(events.CodeEvidence, "%v", err)
	}
	qi, err := iak.VerifyQuote(q, nonce)
	if err != nil {
		return nil, reject(events.CodeEvidence, "the TPM quote does not verify against the device's IAK for this event: %v", err)
	}
	return qi, nil
}

// checkCounters checks that a verified quote's counters do not go
// backwards from the device's last accepted quote.
func checkCounters(last *QuoteCounters, qi *attest.QuoteInfo) *RuleError {
	if last == nil {
		return nil
	}
	prev := &attest.QuoteInfo{Clock: last.Clock, ResetCount: last.ResetCount, RestartCount: last.RestartCount}
	if err := attest.CheckMonotonic(prev, qi); err != nil {
		return reject(events.CodeCounters, "%v (replayed or rolled-back TPM state)", err)
	}
	return nil
}

// manufactured checks a TPM's birth record in stream order: the device must
// be new; its evidence was checked by prepare (checkManufactured).
func (b *batch) manufactured(pr *prepared, device string, v *verdict) (*verdict, error) {
	if d, err := b.device(device); err != nil {
		return nil, err
	} else if d != nil {
		return nil, reject(events.CodeAlreadyExists, "device %s was already manufactured (by %s)", device, d.Vendor)
	}
	if pr.mfgErr != nil {
		return nil, pr.mfgErr
	}
	d := pr.mfg
	v.apply = func(uint64) { b.devices[device] = d }
	return v, nil
}

// checkManufactured is the stateless part of a birth record's check: EK
// certificate chain, device ID, IAK certificate, and a quote by that IAK
// binding this event (nonce). It returns the device the record creates.
func (l *Ledger) checkManufactured(s *events.Signed, nonce []byte) (*Device, *RuleError) {
	return checkManufactured(l.cfg.TPMTrust, &l.chains, l.cfg.Now(), s, nonce)
}

// checkManufactured verifies a birth record against a TPM trust bundle at
// time now: EK and IAK certificate chains and their binding, the device ID,
// and the quote by the IAK over nonce. It returns the new device's state.
// chains remembers the CA parts of chains verified (nil: none; every
// device of a vendor hangs under the same CAs, attest.ChainCache).
func checkManufactured(trust *attest.Bundle, chains *attest.ChainCache, now time.Time, s *events.Signed, nonce []byte) (*Device, *RuleError) {
	m := s.Statement.Predicate.Manufactured
	device := s.Statement.Device()
	ek, err := attest.ParseEKCertificate(m.EKCertificate)
	if err != nil {
		return nil, reject(events.CodeEKChain, "EK certificate: %v", err)
	}
	if _, err := chains.Verify(ek.Cert, trust, now, func(b *attest.Bundle) ([][]*x509.Certificate, error) { return ek.Verify(b, now) }); err != nil {
		return nil, reject(events.CodeEKChain, "EK certificate does not chain to the TPM trust bundle: %v", err)
	}
	ekPub, _, err := attest.PublicKeyFromTPMT(m.EKPublic)
	if err != nil {
		return nil, reject(events.CodeEKChain, "EK public area: %v", err)
	}
	if !attest.SamePublicKey(ekPub, ek.Cert.PublicKey) {
		return nil, reject(events.CodeEKChain, "the EK certificate certifies another key than the EK public area")
	}
	id, err := attest.DeviceID(ekPub)
	if err != nil || id != device {
		return nil, reject(events.CodeDeviceID, "device ID %s is not the SHA-256 of the EK public key (%s)", device, id)
	}
	iakPub, _, err := attest.PublicKeyFromTPMT(m.IAKPublic)
	if err != nil {
		return nil, reject(events.CodeIAKCertificate, "IAK public area: %v", err)
	}
	iakCert, err := attest.ParseIAKCertificate(m.IAKCertificate)
	if err != nil {
		return nil, reject(events.CodeIAKCertificate, "%v", err)
	}
	if _, err := chains.Verify(iakCert.Cert, trust, now, func(b *attest.Bundle) ([][]*x509.Certificate, error) { return iakCert.Verify(b, now) }); err != nil {
		return nil, reject(events.CodeIAKCertificate, "IAK certificate does not chain to the TPM trust bundle: %v", err)
	}
	if err := iakCert.MatchesEK(ek); err != nil {
		return nil, reject(events.CodeIAKCertificate, "%v", err)
	}
	if !attest.SamePublicKey(iakPub, iakCert.Cert.PublicKey) {
		return nil, reject(events.CodeIAKCertificate, "the IAK certificate certifies another key than the IAK public area")
	}
	iak, err := attest.ParseAttestationKey(m.IAKPublic)
	if err != nil {
		return nil, reject(events.CodeEvidence, "the IAK: %v", err)
	}
	qi, rerr := verifyEvidence(iak, s.Statement.Predicate.Evidence, nonce)
	if rerr != nil {
		return nil, rerr
	}
	vendor := s.Statement.Predicate.Partner
	return &Device{
		ID: device, Vendor: vendor, Custodian: vendor,
		EKCertificate: ek.Raw, EKPublic: m.EKPublic, IAKPublic: m.IAKPublic,
		LastQuote: &QuoteCounters{Clock: qi.Clock, ResetCount: qi.ResetCount, RestartCount: qi.RestartCount},
	}, nil
}

// partnerEvent checks a consortium-signed registry event.
func (b *batch) partnerEvent(pr *prepared) (*verdict, error) {
	s := pr.signed
	p := &s.Statement.Predicate
	ca := b.l.cfg.Consortium
	if p.Partner != events.ConsortiumPartner {
		return nil, reject(events.CodeWrongRole, "only the consortium may publish %s", p.Kind)
	}
	if ok, err := pr.signatureOK(ca.Raw); err != nil || !ok {
		return nil, reject(events.CodeBadSignature, "partner registry events must be signed by the consortium CA key")
	}
	info := p.PartnerInfo
	existing, err := b.partner(info.Name)
	if err != nil {
		return nil, err
	}
	v := &verdict{signerCert: ca.Raw}
	switch p.Kind {
	case events.KindPartnerRegistered:
		if existing != nil {
			return nil, reject(events.CodeAlreadyExists, "partner %q is already registered (log index %d)", info.Name, existing.Registered)
		}
		cert, err := x509.ParseCertificate(info.Certificate)
		if err != nil {
			return nil, reject(events.CodeBadCertificate, "partner certificate: %v", err)
		}
		id, err := events.VerifyPartner(cert, b.l.consortium, b.l.cfg.Now())
		if err != nil {
			return nil, reject(events.CodeBadCertificate, "%v", err)
		}
		if id.Name != info.Name || id.Role != info.Role {
			return nil, reject(events.CodeBadCertificate, "the certificate names %s (%s), the event %s (%s)", id.Name, id.Role, info.Name, info.Role)
		}
		if info.Role == events.RoleGate && info.Operator == "" {
			return nil, reject(events.CodeMalformed, "a gate is registered for an operator")
		}
		np := &Partner{Name: info.Name, Role: info.Role, Certificate: bytes.Clone(info.Certificate), Operator: info.Operator}
		v.apply = func(idx uint64) { np.Registered = idx; b.partners[info.Name] = np }
	case events.KindPartnerRevoked:
		if existing == nil {
			return nil, reject(events.CodeUnknownPartner, "partner %q is not registered", info.Name)
		}
		if existing.Revoked {
			return nil, reject(events.CodePartnerRevoked, "partner %q is already revoked", info.Name)
		}
		np := *existing
		v.apply = func(idx uint64) { np.Revoked, np.RevokedIndex = true, idx; b.partners[info.Name] = &np }
	default:
		return nil, fmt.Errorf("ledger: not a partner event: %s", p.Kind)
	}
	return v, nil
}
