package ledger

import (
	"bytes"
	"encoding/hex"
	"maps"

	"github.com/custodyledger/custody/events"
)

// Entry is one leaf of the log with the event it commits to.
type Entry struct {
	Index          uint64 `json:"index"`
	Digest         []byte `json:"digest"` // SHA-256 of the DSSE PAE
	Kind           string `json:"kind"`
	Partner        string `json:"partner"`
	Target         string `json:"target"` // device ID or partner name
	Status         string `json:"status"` // events.StatusAccepted or events.StatusEvidence
	Code           string `json:"code,omitempty"`
	Reason         string `json:"reason,omitempty"`
	IntegratedTime int64  `json:"integratedTime"` // Unix seconds
	StreamSeq      uint64 `json:"streamSeq"`
	// EventID is the statement's predicate.eventId (empty in entries
	// written before it was recorded).
	EventID string `json:"eventId,omitempty"`
	// Body is the leaf: a Rekor hashedrekord v0.0.1 canonical body.
	Body []byte `json:"body"`
	// Envelope is the DSSE envelope (private: served only to parties with a
	// right to it).
	Envelope []byte `json:"envelope"`
	// Manifest is a shipment's manifest (JSON, events.Manifest) and Proofs
	// each of its devices' ManifestProof (JSON), by device ID. Written with
	// the entry (the device index holds the proofs); Store.Entry does not
	// read them back: a device's history carries its own proof only.
	Manifest []byte            `json:"-"`
	Proofs   map[string][]byte `json:"-"`
	// Members is, for a batch, the verdict on each member, and Proofs
	// each logged member's MemberProof (JSON, with its payload) by device:
	// the log keeps the members it logged, each in its device's history
	// (a refused member's payload stays in the events stream only).
	Members []events.MemberVerdict `json:"members,omitempty"`
}

// IndexedEvent is an event digest and event ID that the store's digest and
// event-ID indexes map to an entry.
type IndexedEvent struct {
	Digest  []byte
	EventID string
}

// Events lists the events the entry logs: its own and, for a batch, each
// member it logged (not a member logged earlier, which keeps its entry).
func (e *Entry) Events() []IndexedEvent {
	out := []IndexedEvent{{Digest: e.Digest, EventID: e.EventID}}
	for _, m := range e.Members {
		if !m.Logged() || m.Existing {
			continue
		}
		d, err := hex.DecodeString(m.Digest)
		if err != nil {
			continue
		}
		out = append(out, IndexedEvent{Digest: d, EventID: m.EventID})
	}
	return out
}

// OfDevice reports whether the entry is in the history of the device its
// Target names: a device event. A registry event names a partner, and a
// shipment or a batch is in its devices' histories through Proofs.
func (e *Entry) OfDevice() bool {
	return events.ValidDeviceID(e.Target) && e.Kind != events.KindPartnerRegistered && e.Kind != events.KindPartnerRevoked
}

// DigestHex is the entry's event digest in hex.
func (e *Entry) DigestHex() string { return hex.EncodeToString(e.Digest) }

// Device is a device's custody state, derived from its accepted entries.
type Device struct {
	ID             string            `json:"id"`
	Vendor         string            `json:"vendor"`
	EKCertificate  []byte            `json:"ekCertificate"`
	EKPublic       []byte            `json:"ekPublic"`
	IAKPublic      []byte            `json:"iakPublic"`
	Custodian      string            `json:"custodian"`
	Pending        *Offer            `json:"pending,omitempty"`
	LastAccepted   string            `json:"lastAccepted,omitempty"` // digest of the last accepted offer
	Stages         map[string]uint64 `json:"stages,omitempty"`       // stage name → log index
	FirmwareDigest string            `json:"firmwareDigest,omitempty"`
	ExpectedPCRs   map[string]string `json:"expectedPcrs,omitempty"`
	LastQuote      *QuoteCounters    `json:"lastQuote,omitempty"`
	Flag           *DeviceFlag       `json:"flag,omitempty"`
	Enrolled       bool              `json:"enrolled"`
	Decommissioned bool              `json:"decommissioned"`
	Handoffs       int               `json:"handoffs"` // accepted hand-offs
}

// Clone returns a deep copy of d: nothing it holds is shared with d.
func (d *Device) Clone() *Device {
	if d == nil {
		return nil
	}
	c := *d
	c.EKCertificate = bytes.Clone(d.EKCertificate)
	c.EKPublic = bytes.Clone(d.EKPublic)
	c.IAKPublic = bytes.Clone(d.IAKPublic)
	c.Stages = maps.Clone(d.Stages)
	c.ExpectedPCRs = maps.Clone(d.ExpectedPCRs)
	if d.Pending != nil {
		p := *d.Pending
		c.Pending = &p
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

// Offer is a pending hand-off.
type Offer struct {
	Digest string `json:"digest"`
	From   string `json:"from"`
	To     string `json:"to"`
	Index  uint64 `json:"index"`
	// Shipment is the shipment ID when the offer is a shipment's.
	Shipment string `json:"shipment,omitempty"`
}

// QuoteCounters are the TPM clock and reset counters of a device's last
// accepted quote; later quotes must not go backwards.
type QuoteCounters struct {
	Clock        uint64 `json:"clock"`
	ResetCount   uint32 `json:"resetCount"`
	RestartCount uint32 `json:"restartCount"`
}

// DeviceFlag says why the gate must refuse a device.
type DeviceFlag struct {
	Reason string `json:"reason"`
	By     string `json:"by"`
	Index  uint64 `json:"index"` // the entry that raised it
}

// Partner is a partner's registry state.
type Partner struct {
	Name         string `json:"name"`
	Role         string `json:"role"`
	Certificate  []byte `json:"certificate"`
	Operator     string `json:"operator,omitempty"`
	Registered   uint64 `json:"registered"` // log index
	Revoked      bool   `json:"revoked"`
	RevokedIndex uint64 `json:"revokedIndex,omitempty"`
}

// Rejection is the record of a refused event: never in the tree, kept so
// the publisher can ask why.
type Rejection struct {
	Digest  []byte `json:"digest"`
	Code    string `json:"code"`
	Reason  string `json:"reason"`
	Partner string `json:"partner"`
	Target  string `json:"target"`
	Time    int64  `json:"time"`
	// Members is, for a batch refused whole after its members were
	// judged, the verdict on each.
	Members []events.MemberVerdict `json:"members,omitempty"`
}

// Receipt converts a rejection into the publisher's answer.
func (r *Rejection) Receipt() *events.Receipt {
	return &events.Receipt{
		Digest: hex.EncodeToString(r.Digest), Status: events.StatusRejected,
		Code: r.Code, Reason: r.Reason, Partner: r.Partner, Target: r.Target,
		Members: r.Members,
	}
}
