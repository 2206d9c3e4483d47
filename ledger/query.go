package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/custodyledger/custody/events"
)

// ProvenEntry is one log entry with its inclusion proof.
type ProvenEntry struct {
	Index          uint64          `json:"logIndex"`
	Digest         string          `json:"digest"`
	Kind           string          `json:"kind"`
	Partner        string          `json:"partner"`
	Status         string          `json:"status"`
	Code           string          `json:"code,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	IntegratedTime int64           `json:"integratedTime"`
	Body           []byte          `json:"body"`
	Envelope       json.RawMessage `json:"envelope,omitempty"`
	InclusionProof [][]byte        `json:"inclusionProof"`
	// ManifestProof is, for a shipment, the device's path to the manifest
	// root the shipment signs (events.ManifestProof): the device's part of
	// the pallet, without the rest of it.
	ManifestProof json.RawMessage `json:"manifestProof,omitempty"`
	// Batch is, for an event logged in a station batch, the batch's digest
	// (Body and Envelope are the batch's; Digest, Kind and Status the
	// member's), and MemberProof (events.MemberProof) the member's payload
	// and its path to the root the batch signs.
	Batch       string          `json:"batch,omitempty"`
	MemberProof json.RawMessage `json:"memberProof,omitempty"`
}

// Provenance is a device's history: its state and every entry about it,
// each with an inclusion proof against one signed checkpoint.
type Provenance struct {
	// DeviceID is the device the history is about (Device, its state, is
	// withheld from a reader who no longer holds it).
	DeviceID   string        `json:"deviceId"`
	Device     *Device       `json:"device"`
	TreeSize   uint64        `json:"treeSize"`
	RootHash   []byte        `json:"rootHash"`
	Checkpoint string        `json:"checkpoint"`
	Entries    []ProvenEntry `json:"entries"`
	// Next is set when the history continues past this page: ask again
	// with after = Next (Page).
	Next *uint64 `json:"next,omitempty"`
}

// Page selects part of a device's history: the entries with a log index
// above After (all when HasAfter is false), at most Limit of them (0: no
// limit).
type Page struct {
	After    uint64
	HasAfter bool
	Limit    int
}

// MaxPage bounds a page of a device's history served over the APIs.
const MaxPage = 1000

// Provenance returns a device's history against the current checkpoint.
func (l *Ledger) Provenance(device string) (*Provenance, error) {
	return l.provenance(device, nil, Page{})
}

// provenance is Provenance limited to the entries a filter keeps: filter
// (if not nil) is called once with the device's state and returns which
// entries to keep (nil: all). Entries are read first and proofs are built
// only for those kept.
func (l *Ledger) provenance(device string, filter func(dev *Device) func(*Entry) bool, page Page) (*Provenance, error) {
	head := l.Head()
	dev, err := l.cfg.Store.Device(device)
	if err != nil {
		return nil, err
	}
	var keep func(*Entry) bool
	if filter != nil {
		keep = filter(dev)
	}
	idx, err := l.cfg.Store.DeviceEntries(device)
	if err != nil {
		return nil, err
	}
	p := &Provenance{DeviceID: device, Device: dev, TreeSize: head.Size, RootHash: head.Root, Checkpoint: string(head.Checkpoint)}
	var in []uint64
	var entries []*Entry
	for _, i := range idx {
		if i >= head.Size { // committed after the head we read
			continue
		}
		if page.HasAfter && i <= page.After {
			continue
		}
		if page.Limit > 0 && len(in) == page.Limit {
			next := in[len(in)-1]
			p.Next = &next
			break
		}
		e, err := l.cfg.Store.Entry(i)
		if err != nil {
			return nil, err
		}
		if keep == nil || keep(e) {
			in, entries = append(in, i), append(entries, e)
		}
	}
	proofs, err := inclusionProofs(l.cfg.Store, in, head.Size)
	if err != nil {
		return nil, err
	}
	for k, i := range in {
		pe := provenEntry(i, entries[k], proofs[k])
		if events.IsShipment(pe.Kind) || pe.Kind == events.KindBatchSigned {
			mp, err := l.cfg.Store.ManifestProof(device, i)
			if err != nil {
				return nil, fmt.Errorf("ledger: the manifest or member proof of device %s in entry %d: %w", device, i, err)
			}
			if pe.Kind == events.KindBatchSigned {
				if err := pe.asMember(entries[k], device, mp); err != nil {
					return nil, err
				}
			} else {
				pe.ManifestProof = mp
			}
		}
		p.Entries = append(p.Entries, pe)
	}
	return p, nil
}

// asMember makes a batch's entry the device's member of it: the member's
// digest, kind and verdict, with its proof.
func (pe *ProvenEntry) asMember(e *Entry, device string, proof []byte) error {
	for _, v := range e.Members {
		if v.Target == device && v.Logged() && !v.Existing {
			pe.Batch, pe.MemberProof = pe.Digest, proof
			pe.Digest, pe.Kind, pe.Status, pe.Code, pe.Reason = v.Digest, v.Kind, v.Status, v.Code, v.Reason
			return nil
		}
	}
	return fmt.Errorf("ledger: batch entry %d logs no member about device %s", e.Index, device)
}

func provenEntry(i uint64, e *Entry, proof [][]byte) ProvenEntry {
	return ProvenEntry{
		Index: i, Digest: e.DigestHex(), Kind: e.Kind, Partner: e.Partner, Status: e.Status,
		Code: e.Code, Reason: e.Reason, IntegratedTime: e.IntegratedTime,
		Body: e.Body, Envelope: e.Envelope, InclusionProof: proof,
	}
}

// ConsistencyProof returns the proof that the tree at size1 is a prefix of
// the tree at size2 (size2 at most the current size).
func (l *Ledger) ConsistencyProof(size1, size2 uint64) ([][]byte, error) {
	if size2 > l.Head().Size || size1 > size2 {
		return nil, fmt.Errorf("ledger: no consistency proof from %d to %d", size1, size2)
	}
	return consistencyProof(l.cfg.Store, size1, size2)
}

// EventStatus answers a publisher asking about an event by digest: the
// receipt if it is logged, the rejection if it was refused.
func (l *Ledger) EventStatus(digest []byte) (*events.Receipt, error) {
	if i, err := l.cfg.Store.EntryIndexByDigest(digest); err == nil {
		h := l.Head()
		if i >= h.Size {
			// Committed a moment ago; the head and the receipts follow.
			return nil, ErrNotFound
		}
		return l.Receipt(i, h)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	r, err := l.cfg.Store.Rejection(digest)
	if err != nil {
		return nil, err
	}
	return r.Receipt(), nil
}

// EventStatusFor is EventStatus for reader: only an event's publisher
// reads the ledger's answer to it; for anyone else the event is
// ErrNotFound, as an unknown digest is (a digest is in every public leaf,
// so it is no secret, and a batch's receipt names every member's device).
func (l *Ledger) EventStatusFor(digest []byte, reader string) (*events.Receipt, error) {
	rc, err := l.EventStatus(digest)
	if err == nil && rc.Partner != reader {
		return nil, ErrNotFound
	}
	return rc, err
}

// VerifiedEntry is an entry whose inclusion, body and envelope signature
// were checked.
type VerifiedEntry struct {
	ProvenEntry
	Statement *events.Statement
	// Signed is the event opened: its envelope's, or the batch member's
	// (whose signature is the batch's, verified).
	Signed *events.Signed
}

// VerifyProvenance checks a provenance answer offline against the log's
// public key: the checkpoint's signature, that it commits to the root
// given, every entry's inclusion proof, that each leaf commits to its
// envelope's digest, and each envelope's signature by the certificate in
// its leaf. Custody rules are the ledger's; this proves what was logged.
func VerifyProvenance(p *Provenance, logKey *ecdsa.PublicKey) ([]VerifiedEntry, *Checkpoint, error) {
	cp, err := VerifyCheckpoint([]byte(p.Checkpoint), logKey)
	if err != nil {
		return nil, nil, err
	}
	if err := cp.names(p.TreeSize, p.RootHash); err != nil {
		return nil, nil, fmt.Errorf("provenance: %w", err)
	}
	var out []VerifiedEntry
	for _, e := range p.Entries {
		if err := VerifyInclusion(e.Body, e.Index, cp.Size, e.InclusionProof, cp.Root); err != nil {
			return nil, nil, fmt.Errorf("entry %d: inclusion proof: %w", e.Index, err)
		}
		s, err := verifyLeaf(e.Body, e.Envelope)
		if err != nil {
			return nil, nil, fmt.Errorf("entry %d: %w", e.Index, err)
		}
		st := s.Statement
		device := p.DeviceID
		if device == "" && p.Device != nil {
			device = p.Device.ID
		}
		if st.Predicate.Shipment != nil {
			if err := verifyManifestProof(e.ManifestProof, device, st); err != nil {
				return nil, nil, fmt.Errorf("entry %d: %w", e.Index, err)
			}
		}
		if st.Predicate.Batch != nil {
			// The batch's envelope verified: its member about device.
			if s, err = openMemberProof(e.MemberProof, st, e.Digest, device); err != nil {
				return nil, nil, fmt.Errorf("entry %d: %w", e.Index, err)
			}
			st = s.Statement
		}
		out = append(out, VerifiedEntry{ProvenEntry: e, Statement: st, Signed: s})
	}
	return out, cp, nil
}

// verifyManifestProof checks that a shipment statement's manifest, whose
// root it signs, holds device (proof: events.ManifestProof JSON).
func verifyManifestProof(proof []byte, device string, st *events.Statement) error {
	if len(proof) == 0 {
		return fmt.Errorf("shipment %s: no manifest proof for device %s", st.Predicate.Shipment.ID, device)
	}
	var mp events.ManifestProof
	if err := json.Unmarshal(proof, &mp); err != nil {
		return fmt.Errorf("manifest proof: %w", err)
	}
	if mp.Size != uint64(st.Predicate.Shipment.Devices) {
		return fmt.Errorf("shipment %s: the manifest proof is for %d devices, the shipment signs %d", st.Predicate.Shipment.ID, mp.Size, st.Predicate.Shipment.Devices)
	}
	return mp.Verify(device, st.ShipmentRoot())
}

// openMemberProof opens a member of the batch st from its proof (JSON
// events.MemberProof): the proof leads to the root st signs, the member is
// the event of digest (hex), by the batch's partner, about device.
func openMemberProof(proof []byte, st *events.Statement, digest, device string) (*events.Signed, error) {
	id := st.Predicate.Batch.ID
	if len(proof) == 0 {
		return nil, fmt.Errorf("batch %s: no member proof for device %s", id, device)
	}
	var mp events.MemberProof
	if err := json.Unmarshal(proof, &mp); err != nil {
		return nil, fmt.Errorf("batch %s: member proof: %w", id, err)
	}
	if mp.Size != uint64(st.Predicate.Batch.Events) {
		return nil, fmt.Errorf("batch %s: the member proof is for %d events, the batch signs %d", id, mp.Size, st.Predicate.Batch.Events)
	}
	m, err := mp.Verify(st.BatchRoot())
	if err != nil {
		return nil, fmt.Errorf("batch %s: %w", id, err)
	}
	if m.DigestHex() != digest {
		return nil, fmt.Errorf("batch %s: the member proof opens event %s, the entry names %s", id, m.DigestHex(), digest)
	}
	if m.Statement.Predicate.Partner != st.Predicate.Partner {
		return nil, fmt.Errorf("batch %s: member by %s in a batch by %s", id, m.Statement.Predicate.Partner, st.Predicate.Partner)
	}
	if m.Statement.Device() != device {
		return nil, fmt.Errorf("batch %s: the member is about %s, not device %s", id, m.Statement.Target(), device)
	}
	return m, nil
}

// verifyLeaf checks that a hashedrekord body commits to the envelope's
// digest and that the envelope's signature verifies with the leaf's key.
func verifyLeaf(body, envelope []byte) (*events.Signed, error) {
	lf, err := parseLeaf(body)
	if err != nil {
		return nil, err
	}
	s, err := events.Open(envelope)
	if err != nil {
		return nil, err
	}
	if lf.hash != hex.EncodeToString(s.Digest[:]) {
		return nil, errors.New("the leaf does not commit to this envelope")
	}
	if !bytes.Equal(lf.signature, s.Signature) {
		return nil, errors.New("the leaf's signature is not the envelope's")
	}
	pub, err := parseCertOrKey(lf.key)
	if err != nil {
		return nil, err
	}
	if err := s.Verify(pub); err != nil {
		return nil, err
	}
	return s, nil
}

// leaf is what a hashedrekord leaf body commits to.
type leaf struct {
	hash      string     // hex SHA-256 of the DSSE PAE
	signature []byte     // the envelope's signature
	key       *pem.Block // the signer's certificate (or public key)
}

// parseLeaf reads a hashedrekord v0.0.1 body (unverified).
func parseLeaf(body []byte) (*leaf, error) {
	var rk struct {
		Spec struct {
			Data struct {
				Hash struct {
					Value string `json:"value"`
				} `json:"hash"`
			} `json:"data"`
			Signature struct {
				Content   []byte `json:"content"`
				PublicKey struct {
					Content []byte `json:"content"`
				} `json:"publicKey"`
			} `json:"signature"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(body, &rk); err != nil {
		return nil, fmt.Errorf("leaf body: %w", err)
	}
	blk, _ := pem.Decode(rk.Spec.Signature.PublicKey.Content)
	if blk == nil {
		return nil, errors.New("the leaf's public key is not PEM")
	}
	return &leaf{hash: rk.Spec.Data.Hash.Value, signature: rk.Spec.Signature.Content, key: blk}, nil
}

// ProofReader reads the device index's proofs (Store.ManifestProof).
type ProofReader interface {
	ManifestProof(device string, index uint64) ([]byte, error)
}

// LoggedEvents opens the events an entry logs: its envelope's event, or,
// for a station batch, each member it logged (not one logged earlier),
// each read from its device's history and checked against the batch's
// root. Nothing is verified cryptographically: the entry is the log's.
func LoggedEvents(s ProofReader, e *Entry) ([]LoggedEvent, error) {
	env, err := events.Open(e.Envelope)
	if err != nil {
		return nil, err
	}
	if env.Statement.Predicate.Batch == nil {
		return []LoggedEvent{{Signed: env, Status: e.Status}}, nil
	}
	var out []LoggedEvent
	for _, v := range e.Members {
		if !v.Logged() || v.Existing {
			continue
		}
		raw, err := s.ManifestProof(v.Target, e.Index)
		if err != nil {
			return nil, fmt.Errorf("batch entry %d, member about %s: %w", e.Index, v.Target, err)
		}
		m, err := openMemberProof(raw, env.Statement, v.Digest, v.Target)
		if err != nil {
			return nil, fmt.Errorf("batch entry %d: %w", e.Index, err)
		}
		out = append(out, LoggedEvent{Signed: m, Status: v.Status})
	}
	return out, nil
}

// LoggedEvent is one event an entry logs, with its status (accepted or
// evidence).
type LoggedEvent struct {
	Signed *events.Signed
	Status string
}
