package events

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/custodyledger/custody/attest"
)

// Event kinds. Each names a JSON Schema in schemas/custody/v1.
const (
	KindTPMManufactured      = "tpm.manufactured"
	KindStageRecorded        = "stage.recorded"
	KindHandoffOffered       = "handoff.offered"
	KindHandoffAccepted      = "handoff.accepted"
	KindHandoffWithdrawn     = "handoff.withdrawn"
	KindDeviceFlagged        = "device.flagged"
	KindDeviceCleared        = "device.cleared"
	KindDeviceEnrolled       = "device.enrolled"
	KindDeviceDecommissioned = "device.decommissioned"
	KindPartnerRegistered    = "partner.registered"
	KindPartnerRevoked       = "partner.revoked"
	KindEnrollmentRefused    = "enrollment.refused"
)

// Kinds lists every event kind of contract version 1.
var Kinds = []string{
	KindTPMManufactured, KindStageRecorded, KindHandoffOffered, KindHandoffAccepted, KindHandoffWithdrawn,
	KindDeviceFlagged, KindDeviceCleared, KindDeviceEnrolled, KindDeviceDecommissioned,
	KindPartnerRegistered, KindPartnerRevoked, KindEnrollmentRefused,
	KindShipmentOffered, KindShipmentAccepted, KindShipmentWithdrawn,
	KindBatchSigned,
}

// Stage names recorded by stage.recorded.
const (
	StageAssembly           = "assembly"
	StageFirmwareProgrammed = "firmware-programmed"
	StageTestPassed         = "test-passed"
	// StageReceivingInspection (shipment.go): a sampled device quoted at
	// receiving.
)

const (
	// StatementType is the in-toto Statement v1 type URI.
	StatementType = "https://in-toto.io/Statement/v1"
	// PayloadType is the DSSE payload type of a custody event.
	PayloadType = "application/vnd.in-toto+json"
	// PredicateTypePrefix + kind is a custody event's predicateType.
	PredicateTypePrefix = "https://custodyledger.dev/custody/v1/"
	// ConsortiumPartner is the publisher name of partner registry events,
	// which the consortium CA's key signs.
	ConsortiumPartner = "consortium"
)

// Statement is an in-toto Statement v1 carrying one custody event.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject names what a statement is about: a device ("device:<id>") or, for
// partner registry events, a partner ("partner:<name>").
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Predicate is the custody event. Exactly one of the kind-specific fields is
// set, the one matching Kind.
type Predicate struct {
	Kind    string    `json:"kind"`
	Partner string    `json:"partner"`
	Time    time.Time `json:"time"`
	EventID string    `json:"eventId"`

	Manufactured *Manufactured `json:"manufactured,omitempty"`
	Stage        *Stage        `json:"stage,omitempty"`
	Handoff      *Handoff      `json:"handoff,omitempty"`
	Flag         *Flag         `json:"flag,omitempty"`
	Enrolled     *Enrolled     `json:"enrolled,omitempty"`
	Refused      *Refused      `json:"refused,omitempty"`
	PartnerInfo  *PartnerInfo  `json:"partnerInfo,omitempty"`
	Shipment     *Shipment     `json:"shipment,omitempty"`
	Batch        *Batch        `json:"batch,omitempty"`

	// Evidence is the TPM quote made for this event. It is absent from
	// partner registry events, and from enrollment.refused when the device
	// never produced a verified quote.
	Evidence *Evidence `json:"evidence,omitempty"`
}

// Manufactured is the birth record of a TPM, published by its vendor.
type Manufactured struct {
	EKCertificate  []byte `json:"ekCertificate"`  // DER, as written to the TPM's NV
	EKPublic       []byte `json:"ekPublic"`       // TPMT_PUBLIC of the EK
	IAKPublic      []byte `json:"iakPublic"`      // TPMT_PUBLIC of the IAK
	IAKCertificate []byte `json:"iakCertificate"` // DER, issued by the vendor CA
	// TPM is the TPM manufacturer, model and version from the EK certificate.
	TPM attest.TPMInfo `json:"tpm"`
}

// Stage is a manufacturing step performed by the current custodian.
type Stage struct {
	Name           string            `json:"name"`
	FirmwareDigest string            `json:"firmwareDigest,omitempty"` // hex SHA-256 of the image
	PCRs           map[string]string `json:"pcrs,omitempty"`           // index → hex SHA-256 PCR value after the stage
	Note           string            `json:"note,omitempty"`
}

// Handoff is a transfer of custody: an offer by the current custodian, the
// named recipient's acceptance of an offer, or the offering party's
// withdrawal of its offer before it is accepted.
type Handoff struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Offer string `json:"offer,omitempty"` // accept and withdraw: hex digest of the offer
}

// Flag marks a device lost, stolen, RMA, compromised, or (set by the ledger
// itself) equivocating; device.cleared and device.decommissioned use it too.
type Flag struct {
	Reason string `json:"reason"`
	Note   string `json:"note,omitempty"`
}

// Flag reasons.
const (
	FlagLost        = "lost"
	FlagStolen      = "stolen"
	FlagRMA         = "rma"
	FlagCompromised = "compromised"
)

// Enrolled records a first-boot enrollment decided by an operator's gate.
type Enrolled struct {
	Operator          string `json:"operator"`
	RegistrationID    string `json:"registrationId"`
	IDScope           string `json:"idScope"`
	Challenge         []byte `json:"challenge"` // the gate's nonce: the qualifyingData of the evidence
	LDevIDCertificate []byte `json:"ldevidCertificate"`
}

// Refused records a first-boot enrollment an operator's gate refused, and
// the rule the device broke. When the device's fresh quote verified before
// the refusal, it is the event's evidence and Challenge is its nonce.
type Refused struct {
	Operator       string `json:"operator"`
	RegistrationID string `json:"registrationId"`
	IDScope        string `json:"idScope"`
	Rule           string `json:"rule"`                // the gate's rule name, e.g. pcr-policy
	Message        string `json:"message"`             // the sentence the device was given
	Challenge      []byte `json:"challenge,omitempty"` // the gate's nonce, with evidence only
}

// PartnerInfo is the subject of partner.registered and partner.revoked.
type PartnerInfo struct {
	Name        string `json:"name"`
	Role        string `json:"role"`
	Certificate []byte `json:"certificate,omitempty"` // DER, issued by the consortium CA
	Operator    string `json:"operator,omitempty"`    // gates: the operator they enroll for
}

// Evidence is a TPM quote by the device's IAK over this event.
type Evidence struct {
	Attest    []byte            `json:"attest"`    // TPMS_ATTEST
	Signature []byte            `json:"signature"` // TPMT_SIGNATURE
	PCRs      map[string][]byte `json:"pcrs"`      // index → SHA-256 bank value
}

var deviceRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidDeviceID reports whether s is a device ID: 64 lowercase hex digits.
func ValidDeviceID(s string) bool { return deviceRE.MatchString(s) }

// NewStatement returns a statement of kind about device, by partner, at t,
// with a fresh event ID. Callers fill in the kind-specific field.
func NewStatement(kind, partner, device string, t time.Time, eventID string) *Statement {
	return &Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: "device:" + device, Digest: map[string]string{"sha256": device}}},
		PredicateType: PredicateTypePrefix + kind,
		Predicate:     Predicate{Kind: kind, Partner: partner, Time: t.UTC().Truncate(time.Millisecond), EventID: eventID},
	}
}

// NewPartnerStatement returns a partner registry statement (partner.registered
// or partner.revoked) about p, issued by the consortium.
func NewPartnerStatement(kind string, p PartnerInfo, certDigest string, t time.Time, eventID string) *Statement {
	return &Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: "partner:" + p.Name, Digest: map[string]string{"sha256": certDigest}}},
		PredicateType: PredicateTypePrefix + kind,
		Predicate:     Predicate{Kind: kind, Partner: ConsortiumPartner, Time: t.UTC().Truncate(time.Millisecond), EventID: eventID, PartnerInfo: &p},
	}
}

// Device returns the device ID the statement is about, or "" for partner
// registry statements.
func (s *Statement) Device() string {
	if len(s.Subject) != 1 {
		return ""
	}
	id, ok := strings.CutPrefix(s.Subject[0].Name, "device:")
	if !ok {
		return ""
	}
	return id
}

// Target is the last token of the event's NATS subject: the device ID, the
// partner's name for registry events, ShipmentTarget(id) for shipments.
func (s *Statement) Target() string {
	if d := s.Device(); d != "" {
		return d
	}
	if s.Predicate.Shipment != nil {
		return ShipmentTarget(s.Predicate.Shipment.ID)
	}
	if s.Predicate.Batch != nil {
		return BatchTarget(s.Predicate.Batch.ID)
	}
	if s.Predicate.PartnerInfo != nil {
		return s.Predicate.PartnerInfo.Name
	}
	return ""
}

// ErrMalformed reports a statement that does not follow the contract.
var ErrMalformed = errors.New("malformed statement")

// ParseStatement decodes a statement and checks its structure: types, kind,
// subject, and that the kind-specific field matches the kind. It does not
// verify any signature or evidence; the result is untrusted.
func ParseStatement(payload []byte) (*Statement, error) {
	var s Statement
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the statement", ErrMalformed)
	}
	if s.Type != StatementType {
		return nil, fmt.Errorf("%w: _type %q is not %q", ErrMalformed, s.Type, StatementType)
	}
	p := &s.Predicate
	if s.PredicateType != PredicateTypePrefix+p.Kind {
		return nil, fmt.Errorf("%w: predicateType %q does not name kind %q", ErrMalformed, s.PredicateType, p.Kind)
	}
	if len(s.Subject) != 1 {
		return nil, fmt.Errorf("%w: want exactly one subject", ErrMalformed)
	}
	isPartnerEvent := p.Kind == KindPartnerRegistered || p.Kind == KindPartnerRevoked
	isShipment := IsShipment(p.Kind)
	if isPartnerEvent {
		if p.PartnerInfo == nil || s.Subject[0].Name != "partner:"+p.PartnerInfo.Name {
			return nil, fmt.Errorf("%w: partner events name the partner as subject", ErrMalformed)
		}
	} else if isShipment {
		if p.Shipment == nil || !ValidShipmentID(p.Shipment.ID) || s.Subject[0].Name != "shipment:"+p.Shipment.ID || !deviceRE.MatchString(s.Subject[0].Digest["sha256"]) {
			return nil, fmt.Errorf("%w: a shipment names itself as subject (shipment:<id>, sha256 = the manifest root)", ErrMalformed)
		}
		if p.Evidence != nil {
			return nil, fmt.Errorf("%w: a shipment carries no quote: boxed devices are not powered (receiving inspection quotes a sample)", ErrMalformed)
		}
		if p.Shipment.Devices < 1 || p.Shipment.Devices > MaxManifestDevices {
			return nil, fmt.Errorf("%w: a shipment moves 1 to %d devices", ErrMalformed, MaxManifestDevices)
		}
		if (p.Kind == KindShipmentOffered) != (p.Shipment.Offer == "") {
			return nil, fmt.Errorf("%w: an acceptance or withdrawal names its offer, an offer none", ErrMalformed)
		}
	} else if p.Kind == KindBatchSigned {
		if p.Batch == nil || !ValidShipmentID(p.Batch.ID) || s.Subject[0].Name != "batch:"+p.Batch.ID || !deviceRE.MatchString(s.Subject[0].Digest["sha256"]) {
			return nil, fmt.Errorf("%w: a batch names itself as subject (batch:<id>, sha256 = the members' root)", ErrMalformed)
		}
		if p.Evidence != nil {
			return nil, fmt.Errorf("%w: a batch carries no quote of its own (each member carries its device's)", ErrMalformed)
		}
		if p.Batch.Events < 1 || p.Batch.Events > MaxBatchEvents {
			return nil, fmt.Errorf("%w: a batch holds 1 to %d events", ErrMalformed, MaxBatchEvents)
		}
	} else if d := s.Device(); !ValidDeviceID(d) || s.Subject[0].Digest["sha256"] != d {
		return nil, fmt.Errorf("%w: subject must be device:<64 hex> with the same sha256 digest", ErrMalformed)
	}
	want := map[string]bool{
		KindTPMManufactured:      p.Manufactured != nil,
		KindStageRecorded:        p.Stage != nil,
		KindHandoffOffered:       p.Handoff != nil,
		KindHandoffAccepted:      p.Handoff != nil,
		KindHandoffWithdrawn:     p.Handoff != nil,
		KindDeviceFlagged:        p.Flag != nil,
		KindDeviceCleared:        p.Flag != nil,
		KindDeviceDecommissioned: p.Flag != nil,
		KindDeviceEnrolled:       p.Enrolled != nil,
		KindEnrollmentRefused:    p.Refused != nil,
		KindPartnerRegistered:    p.PartnerInfo != nil,
		KindPartnerRevoked:       p.PartnerInfo != nil,
		KindShipmentOffered:      p.Shipment != nil,
		KindShipmentAccepted:     p.Shipment != nil,
		KindShipmentWithdrawn:    p.Shipment != nil,
		KindBatchSigned:          p.Batch != nil,
	}
	ok, known := want[p.Kind]
	if !known {
		return nil, fmt.Errorf("%w: unknown kind %q", ErrMalformed, p.Kind)
	}
	if !ok {
		return nil, fmt.Errorf("%w: kind %q without its %s field", ErrMalformed, p.Kind, p.Kind)
	}
	if !ValidPartnerName(p.Partner) {
		return nil, fmt.Errorf("%w: partner %q is not a valid partner name", ErrMalformed, p.Partner)
	}
	if !isPartnerEvent && !isShipment && p.Kind != KindBatchSigned && p.Kind != KindEnrollmentRefused && p.Evidence == nil {
		return nil, fmt.Errorf("%w: device events carry TPM evidence", ErrMalformed)
	}
	return &s, nil
}

// NewEvidence carries a TPM quote as event evidence.
func NewEvidence(q *attest.Quote) *Evidence {
	ev := &Evidence{Attest: q.Attest, Signature: q.Signature, PCRs: make(map[string][]byte, len(q.PCRs))}
	for i, v := range q.PCRs {
		ev.PCRs[strconv.Itoa(i)] = v
	}
	return ev
}

// Quote returns the evidence as an attest.Quote (unverified).
func (e *Evidence) Quote() (*attest.Quote, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrMalformed)
	}
	q := &attest.Quote{Attest: e.Attest, Signature: e.Signature, PCRs: make(map[int][]byte, len(e.PCRs))}
	for k, v := range e.PCRs {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= attest.NumPCRs {
			return nil, fmt.Errorf("%w: PCR index %q", ErrMalformed, k)
		}
		q.PCRs[i] = v
	}
	return q, nil
}

// NewEventID returns a fresh event ID: 128 random bits in hex. It makes
// every statement, and so every event digest, unique.
func NewEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
