package ledger

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/schemas"
	"github.com/custodyledger/custody/services/pki"
)

// verdict is the outcome of verifying one event against the rules.
type verdict struct {
	signerCert []byte           // DER of the certificate whose key signed the envelope
	apply      func(idx uint64) // state change, run once the entry's index is known
	evidence   bool             // the event broke a rule but is logged as evidence
}

// roles that may publish each kind (the signer's registered role).
var kindRoles = map[string][]string{
	events.KindTPMManufactured:      {pki.RoleTPMVendor},
	events.KindStageRecorded:        {pki.RoleTPMVendor, pki.RoleODM, pki.RoleOEM, pki.RoleEMS, pki.RoleOperator},
	events.KindHandoffOffered:       {pki.RoleTPMVendor, pki.RoleODM, pki.RoleOEM, pki.RoleEMS, pki.RoleOperator},
	events.KindHandoffAccepted:      {pki.RoleTPMVendor, pki.RoleODM, pki.RoleOEM, pki.RoleEMS, pki.RoleOperator},
	events.KindDeviceFlagged:        {pki.RoleTPMVendor, pki.RoleODM, pki.RoleOEM, pki.RoleEMS, pki.RoleOperator},
	events.KindDeviceCleared:        {pki.RoleOperator},
	events.KindDeviceEnrolled:       {pki.RoleGate},
	events.KindDeviceDecommissioned: {pki.RoleOperator},
}

// verify checks one event: schema, subject, signer, evidence, custody rules.
// A *RuleError return is a refusal (or, with verdict.evidence, an event to
// log as evidence); any other error is a storage failure.
func (b *batch) verify(ctx context.Context, subject string, s *events.Signed) (*verdict, error) {
	st := s.Statement
	p := &st.Predicate
	if err := schemas.Validate(s.Payload); err != nil {
		return nil, reject(CodeSchema, "%v", err)
	}
	if want := events.EventSubject(p.Partner, st.Target()); subject != want {
		return nil, reject(CodeSubject, "published on %s, but the statement is by %s about %s (subject %s)", subject, p.Partner, st.Target(), want)
	}
	if p.Kind == events.KindPartnerRegistered || p.Kind == events.KindPartnerRevoked {
		return b.partnerEvent(s)
	}
	signer, err := b.partner(p.Partner)
	if err != nil {
		return nil, err
	}
	if signer == nil {
		return nil, reject(CodeUnknownPartner, "partner %q is not in the partner registry", p.Partner)
	}
	if signer.Revoked {
		return nil, reject(CodePartnerRevoked, "partner %q was revoked at log index %d; its later events are refused", p.Partner, signer.RevokedIndex)
	}
	cert, err := x509.ParseCertificate(signer.Certificate)
	if err != nil {
		return nil, err
	}
	if err := s.Verify(cert.PublicKey); err != nil {
		return nil, reject(CodeBadSignature, "the envelope's signature does not verify with %s's registered certificate", p.Partner)
	}
	if !roleMay(signer.Role, p.Kind) {
		return nil, reject(CodeWrongRole, "a partner with role %s may not publish %s", signer.Role, p.Kind)
	}
	v := &verdict{signerCert: signer.Certificate}
	device := st.Device()
	if p.Kind == events.KindTPMManufactured {
		return b.manufactured(s, device, v)
	}
	dev, err := b.device(device)
	if err != nil {
		return nil, err
	}
	if dev == nil {
		return nil, reject(CodeUnknownDevice, "device %s has no tpm.manufactured record", device)
	}
	next := cloneDevice(dev)
	nonce, err := events.BindingDigest(s.Payload)
	if err != nil {
		return nil, reject(CodeMalformed, "%v", err)
	}
	if p.Kind == events.KindDeviceEnrolled {
		nonce = p.Enrolled.Challenge
	}
	qi, rerr := checkEvidence(dev.IAKPublic, p.Evidence, nonce, dev.LastQuote)
	if rerr != nil {
		return nil, rerr
	}
	if dev.Decommissioned {
		return nil, reject(CodeDecommissioned, "device %s was decommissioned", device)
	}
	rerr = b.custodyRule(p, signer, dev, next, qi)
	if rerr != nil {
		if rerr.Code != CodeEquivocation {
			return nil, rerr
		}
		// Equivocation is evidence: log it, flag the device, change nothing else.
		v.evidence = true
		flagged := cloneDevice(dev)
		v.apply = func(idx uint64) {
			flagged.Flag = &DeviceFlag{Reason: "equivocation", By: p.Partner, Index: idx}
			b.devices[device] = flagged
		}
		return v, rerr
	}
	next.LastQuote = &QuoteCounters{Clock: qi.Clock, ResetCount: qi.ResetCount, RestartCount: qi.RestartCount}
	digest := s.DigestHex()
	v.apply = func(idx uint64) {
		finish(next, p, digest, idx)
		b.devices[device] = next
	}
	return v, nil
}

func roleMay(role, kind string) bool {
	for _, r := range kindRoles[kind] {
		if r == role {
			return true
		}
	}
	return false
}

// custodyRule applies the state machine of DESIGN.md to next (a copy of dev).
func (b *batch) custodyRule(p *events.Predicate, signer *Partner, dev, next *Device, qi *attest.QuoteInfo) *RuleError {
	switch p.Kind {
	case events.KindStageRecorded:
		if dev.Custodian != p.Partner {
			return reject(CodeNotCustodian, "only the current custodian (%s) may record a stage; %s is not", dev.Custodian, p.Partner)
		}
		if p.Stage.Name == events.StageFirmwareProgrammed {
			for idx, want := range p.Stage.PCRs {
				i, _ := strconv.Atoi(idx)
				got, ok := qi.PCRs[i]
				if !ok || hex.EncodeToString(got) != want {
					return reject(CodeEvidence, "the recorded PCR %s differs from the value the TPM quoted", idx)
				}
			}
		}
	case events.KindHandoffOffered:
		h := p.Handoff
		if dev.Custodian != p.Partner || h.From != p.Partner {
			return reject(CodeNotCustodian, "only the current custodian (%s) may offer the device; %s is not", dev.Custodian, p.Partner)
		}
		if dev.Pending != nil {
			return reject(CodeEquivocation, "%s offered the device to %s while its offer to %s (log index %d) is pending: double hand-off", p.Partner, h.To, dev.Pending.To, dev.Pending.Index)
		}
		to, err := b.partner(h.To)
		if err != nil || to == nil || to.Revoked || to.Role == pki.RoleGate {
			return reject(CodeRecipient, "recipient %q is not a registered, active custody partner", h.To)
		}
	case events.KindHandoffAccepted:
		h := p.Handoff
		if dev.Pending == nil {
			if dev.LastAccepted == h.Offer {
				return reject(CodeEquivocation, "offer %s was already accepted; a second acceptance conflicts with it", h.Offer)
			}
			return reject(CodeNoPendingOffer, "device %s has no pending offer", dev.ID)
		}
		if dev.Pending.To != p.Partner {
			return reject(CodeNotRecipient, "the pending offer names %s as recipient, not %s", dev.Pending.To, p.Partner)
		}
		if dev.Pending.Digest != h.Offer || dev.Pending.From != h.From || h.To != p.Partner {
			return reject(CodeNoPendingOffer, "the acceptance names offer %s from %s, but the pending offer is %s from %s", h.Offer, h.From, dev.Pending.Digest, dev.Pending.From)
		}
	case events.KindDeviceFlagged:
		if dev.Custodian != p.Partner && signer.Role != pki.RoleOperator {
			return reject(CodeNotCustodian, "only the custodian or an operator may flag a device")
		}
	case events.KindDeviceCleared:
		if dev.Flag == nil {
			return reject(CodeNotFlagged, "device %s is not flagged", dev.ID)
		}
		if dev.Custodian != p.Partner && (dev.Pending == nil || dev.Pending.To != p.Partner) {
			return reject(CodeNotCustodian, "only the operator holding or receiving the device may clear its flag")
		}
	case events.KindDeviceEnrolled:
		e := p.Enrolled
		if signer.Operator == "" || signer.Operator != e.Operator {
			return reject(CodeWrongRole, "gate %s does not enroll for operator %s", p.Partner, e.Operator)
		}
		if dev.Custodian != e.Operator {
			return reject(CodeNotCustodian, "the device's custodian is %s, not %s", dev.Custodian, e.Operator)
		}
		if dev.Flag != nil {
			return reject(CodeFlagged, "device %s is flagged (%s)", dev.ID, dev.Flag.Reason)
		}
	case events.KindDeviceDecommissioned:
		if dev.Custodian != p.Partner {
			return reject(CodeNotCustodian, "only the custodian may decommission the device")
		}
	}
	return nil
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

// checkEvidence verifies a quote against the device's IAK and the nonce the
// event requires, and that its counters do not go backwards.
func checkEvidence(iakPublic []byte, ev *events.Evidence, nonce []byte, last *QuoteCounters) (*attest.QuoteInfo, *RuleError) {
	if ev == nil {
		return nil, reject(CodeEvidence, "the event carries no TPM quote")
	}
	q, err := ev.Quote()
	if err != nil {
		return nil, reject(CodeEvidence, "%v", err)
	}
	qi, err := attest.VerifyQuote(iakPublic, q, nonce)
	if err != nil {
		return nil, reject(CodeEvidence, "the TPM quote does not verify against the device's IAK for this event: %v", err)
	}
	if last != nil {
		prev := &attest.QuoteInfo{Clock: last.Clock, ResetCount: last.ResetCount, RestartCount: last.RestartCount}
		if err := attest.CheckMonotonic(prev, qi); err != nil {
			return nil, reject(CodeCounters, "%v (replayed or rolled-back TPM state)", err)
		}
	}
	return qi, nil
}

// manufactured checks a TPM's birth record: EK certificate chain, device ID,
// IAK certificate, and a quote by that IAK binding this event.
func (b *batch) manufactured(s *events.Signed, device string, v *verdict) (*verdict, error) {
	m := s.Statement.Predicate.Manufactured
	if d, err := b.device(device); err != nil {
		return nil, err
	} else if d != nil {
		return nil, reject(CodeAlreadyExists, "device %s was already manufactured (by %s)", device, d.Vendor)
	}
	trust := b.l.cfg.TPMTrust
	now := b.l.cfg.Now()
	ek, err := attest.ParseEKCertificate(m.EKCertificate)
	if err != nil {
		return nil, reject(CodeEKChain, "EK certificate: %v", err)
	}
	if _, err := ek.Verify(trust, now); err != nil {
		return nil, reject(CodeEKChain, "EK certificate does not chain to the TPM trust bundle: %v", err)
	}
	ekPub, _, err := attest.PublicKeyFromTPMT(m.EKPublic)
	if err != nil {
		return nil, reject(CodeEKChain, "EK public area: %v", err)
	}
	if !samePublicKey(ekPub, ek.Cert.PublicKey) {
		return nil, reject(CodeEKChain, "the EK certificate certifies another key than the EK public area")
	}
	id, err := attest.DeviceID(ekPub)
	if err != nil || id != device {
		return nil, reject(CodeDeviceID, "device ID %s is not the SHA-256 of the EK public key (%s)", device, id)
	}
	iakPub, _, err := attest.PublicKeyFromTPMT(m.IAKPublic)
	if err != nil {
		return nil, reject(CodeIAKCertificate, "IAK public area: %v", err)
	}
	iakCert, err := attest.ParseIAKCertificate(m.IAKCertificate)
	if err != nil {
		return nil, reject(CodeIAKCertificate, "%v", err)
	}
	if _, err := iakCert.Verify(trust, now); err != nil {
		return nil, reject(CodeIAKCertificate, "IAK certificate does not chain to the TPM trust bundle: %v", err)
	}
	if err := iakCert.MatchesEK(ek); err != nil {
		return nil, reject(CodeIAKCertificate, "%v", err)
	}
	if !samePublicKey(iakPub, iakCert.Cert.PublicKey) {
		return nil, reject(CodeIAKCertificate, "the IAK certificate certifies another key than the IAK public area")
	}
	nonce, err := events.BindingDigest(s.Payload)
	if err != nil {
		return nil, reject(CodeMalformed, "%v", err)
	}
	qi, rerr := checkEvidence(m.IAKPublic, s.Statement.Predicate.Evidence, nonce, nil)
	if rerr != nil {
		return nil, rerr
	}
	vendor := s.Statement.Predicate.Partner
	d := &Device{
		ID: device, Vendor: vendor, Custodian: vendor,
		EKCertificate: ek.Raw, EKPublic: m.EKPublic, IAKPublic: m.IAKPublic,
		LastQuote: &QuoteCounters{Clock: qi.Clock, ResetCount: qi.ResetCount, RestartCount: qi.RestartCount},
	}
	v.apply = func(uint64) { b.devices[device] = d }
	return v, nil
}

// partnerEvent checks a consortium-signed registry event.
func (b *batch) partnerEvent(s *events.Signed) (*verdict, error) {
	p := &s.Statement.Predicate
	ca := b.l.cfg.Consortium
	if p.Partner != events.ConsortiumPartner {
		return nil, reject(CodeWrongRole, "only the consortium may publish %s", p.Kind)
	}
	if err := s.Verify(ca.PublicKey); err != nil {
		return nil, reject(CodeBadSignature, "partner registry events must be signed by the consortium CA key")
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
			return nil, reject(CodeAlreadyExists, "partner %q is already registered (log index %d)", info.Name, existing.Registered)
		}
		cert, err := x509.ParseCertificate(info.Certificate)
		if err != nil {
			return nil, reject(CodeBadCertificate, "partner certificate: %v", err)
		}
		id, err := pki.VerifyPartner(cert, b.l.consortium, b.l.cfg.Now())
		if err != nil {
			return nil, reject(CodeBadCertificate, "%v", err)
		}
		if id.Name != info.Name || id.Role != info.Role {
			return nil, reject(CodeBadCertificate, "the certificate names %s (%s), the event %s (%s)", id.Name, id.Role, info.Name, info.Role)
		}
		if info.Role == pki.RoleGate && info.Operator == "" {
			return nil, reject(CodeMalformed, "a gate is registered for an operator")
		}
		np := &Partner{Name: info.Name, Role: info.Role, Certificate: bytes.Clone(info.Certificate), Operator: info.Operator}
		v.apply = func(idx uint64) { np.Registered = idx; b.partners[info.Name] = np }
	case events.KindPartnerRevoked:
		if existing == nil {
			return nil, reject(CodeUnknownPartner, "partner %q is not registered", info.Name)
		}
		if existing.Revoked {
			return nil, reject(CodePartnerRevoked, "partner %q is already revoked", info.Name)
		}
		np := *existing
		v.apply = func(idx uint64) { np.Revoked, np.RevokedIndex = true, idx; b.partners[info.Name] = &np }
	default:
		return nil, fmt.Errorf("ledger: not a partner event: %s", p.Kind)
	}
	return v, nil
}

func cloneDevice(d *Device) *Device {
	c := *d
	c.Stages = maps.Clone(d.Stages)
	c.ExpectedPCRs = maps.Clone(d.ExpectedPCRs)
	if d.Pending != nil {
		o := *d.Pending
		c.Pending = &o
	}
	if d.LastQuote != nil {
		q := *d.LastQuote
		c.LastQuote = &q
	}
	if d.Flag != nil {
		f := *d.Flag
		c.Flag = &f
	}
	return &c
}

func samePublicKey(a, b any) bool {
	x, err1 := x509.MarshalPKIXPublicKey(a)
	y, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
