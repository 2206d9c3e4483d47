package events

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/custodyledger/custody/schemas"
)

// Station batches: one signature over many events. A station that records
// many powered devices (a programming line, an end-of-line tester, the
// gate's enrollment records) signs one batch.signed statement whose
// subject's digest is the RFC 6962 root over its members' event digests;
// the members (whole statements, each one device's event with its own
// quote) travel beside the envelope in a parcel, as a shipment's manifest
// does. The ledger verifies the batch's signature once, judges every
// member by the rules of its own kind, answers per member, and logs the
// batch as one leaf (a hashedrekord of the batch envelope) when at least
// one member is accepted. A member's digest is what it would be in an
// envelope of its own (Digest(PayloadType, payload)); its entry in its
// device's history carries the batch envelope and the member's
// MemberProof: its payload and its path to the batch root.

// KindBatchSigned is a batch of a partner's events under one signature.
const KindBatchSigned = "batch.signed"

// MaxBatchEvents bounds a batch (the parcel is also bound by
// MaxMessageSize: about 600 quoted events fit).
const MaxBatchEvents = 1000

// Batch is the predicate of batch.signed.
type Batch struct {
	ID     string `json:"id"`     // the partner's batch number; the subject names it
	Events int    `json:"events"` // members: the Merkle tree's size
}

// BatchTarget is the target token (the last token of the event subject) of
// a batch.
func BatchTarget(id string) string { return "batch-" + id }

// Batchable reports whether events of kind may be members of a batch: every
// single-device kind. Registry events, shipments (which carry their own
// manifest) and batches are not.
func Batchable(kind string) bool {
	switch kind {
	case KindPartnerRegistered, KindPartnerRevoked, KindBatchSigned:
		return false
	}
	return !IsShipment(kind)
}

// BatchRoot returns the root a batch statement signs (its subject's
// digest), or nil.
func (s *Statement) BatchRoot() []byte {
	if s.Predicate.Batch == nil {
		return nil
	}
	return s.subjectRoot()
}

// MemberProof puts one member of a batch under the root the batch signs:
// the member's payload and an RFC 6962 inclusion proof of its event digest
// at Position in a tree of Size leaves.
type MemberProof struct {
	Position uint64   `json:"position"`
	Size     uint64   `json:"size"`
	Hashes   [][]byte `json:"hashes"`
	Payload  []byte   `json:"payload"`
}

// Verify checks the proof against root and returns the member opened
// (untrusted until the batch's signature is verified).
func (p *MemberProof) Verify(root []byte) (*Signed, error) {
	if p == nil {
		return nil, errors.New("no member proof")
	}
	d := Digest(PayloadType, p.Payload)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.Position, p.Size, rfc6962.DefaultHasher.HashLeaf(d[:]), p.Hashes, root); err != nil {
		return nil, fmt.Errorf("member %d is not in the batch the envelope signs: %w", p.Position, err)
	}
	return openMember(p.Payload, nil, int(p.Position))
}

// openMember opens one member's payload; batch is the batch it belongs to
// (nil when opened from a MemberProof).
func openMember(payload []byte, batch *Signed, pos int) (*Signed, error) {
	doc, simple := schemas.DecodeSimple(payload)
	var st *Statement
	if simple {
		st, simple = statementFromDoc(doc)
	}
	if !simple {
		var err error
		if st, err = ParseStatement(payload); err != nil {
			return nil, fmt.Errorf("batch member %d: %w", pos, err)
		}
	}
	if !Batchable(st.Predicate.Kind) {
		return nil, fmt.Errorf("%w: batch member %d: a %s cannot be a batch member", ErrMalformed, pos, st.Predicate.Kind)
	}
	m := &Signed{Payload: payload, Statement: st, Doc: doc, Digest: Digest(PayloadType, payload), Batch: batch, Position: pos}
	if batch != nil {
		m.Signature, m.KeyID = batch.Signature, batch.KeyID
	}
	return m, nil
}

// memberLeaves are the batch tree's leaves: the members' event digests.
func memberLeaves(digests [][32]byte) [][]byte {
	leaves := make([][]byte, len(digests))
	for i := range digests {
		leaves[i] = digests[i][:]
	}
	return leaves
}

// MemberProofs returns every member's proof, with its payload, of an opened
// batch.
func (s *Signed) MemberProofs() ([]*MemberProof, error) {
	ds := make([][32]byte, len(s.Members))
	for i, m := range s.Members {
		ds[i] = m.Digest
	}
	_, paths, err := treeProofs(memberLeaves(ds))
	if err != nil {
		return nil, err
	}
	out := make([]*MemberProof, len(s.Members))
	for i, m := range s.Members {
		out[i] = &MemberProof{Position: uint64(i), Size: uint64(len(ds)), Hashes: paths[i], Payload: m.Payload}
	}
	return out, nil
}

// openBatch checks a batch parcel's members against the batch statement s
// (opened from the parcel's envelope): 1 to MaxBatchEvents members, as many
// as it signs, hashing to the root it signs, each a well-formed statement
// of a batchable kind by the batch's partner about a device no other
// member names. A mismatch wraps ErrManifest (code manifest), a malformed
// member ErrMalformed.
func openBatch(s *Signed, members []string) error {
	st := s.Statement
	if n := len(members); n < 1 || n > MaxBatchEvents || n != st.Predicate.Batch.Events {
		return fmt.Errorf("%w: the batch carries %d members, its statement signs %d (1 to %d)", ErrManifest, n, st.Predicate.Batch.Events, MaxBatchEvents)
	}
	ds := make([][32]byte, len(members))
	payloads := make([][]byte, len(members))
	for i, b64 := range members {
		p, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return fmt.Errorf("%w: batch member %d: %v", ErrMalformed, i, err)
		}
		payloads[i], ds[i] = p, Digest(PayloadType, p)
	}
	root, err := treeRoot(memberLeaves(ds))
	if err != nil {
		return err
	}
	if want := st.BatchRoot(); !bytes.Equal(root, want) {
		return fmt.Errorf("%w: the members' root %x is not the %x the batch signs (a member added, changed or taken out)", ErrManifest, root, want)
	}
	seen := make(map[string]int, len(members))
	s.Members = make([]*Signed, len(members))
	for i, p := range payloads {
		m, err := openMember(p, s, i)
		if err != nil {
			return err
		}
		mp := &m.Statement.Predicate
		if mp.Partner != st.Predicate.Partner {
			return fmt.Errorf("%w: batch member %d is by %s, the batch by %s", ErrMalformed, i, mp.Partner, st.Predicate.Partner)
		}
		t := m.Statement.Target()
		if j, ok := seen[t]; ok {
			return fmt.Errorf("%w: batch members %d and %d are both about %s (one event per device per batch)", ErrMalformed, j, i, t)
		}
		seen[t] = i
		s.Members[i] = m
	}
	return nil
}

// NewBatchStatement returns the batch.signed statement over members (their
// payloads, in order).
func NewBatchStatement(partner, id string, payloads [][]byte, t time.Time, eventID string) (*Statement, error) {
	ds := make([][32]byte, len(payloads))
	for i, p := range payloads {
		ds[i] = Digest(PayloadType, p)
	}
	root, err := treeRoot(memberLeaves(ds))
	if err != nil {
		return nil, err
	}
	return &Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: "batch:" + id, Digest: map[string]string{"sha256": hex.EncodeToString(root)}}},
		PredicateType: PredicateTypePrefix + KindBatchSigned,
		Predicate:     Predicate{Kind: KindBatchSigned, Partner: partner, Time: t.UTC().Truncate(time.Millisecond), EventID: eventID, Batch: &Batch{ID: id, Events: len(payloads)}},
	}, nil
}

// SignBatch signs members (statements by keyID's partner, each about
// another device) as one batch numbered id, and returns it opened, with its
// parcel and its members.
func SignBatch(ctx context.Context, id string, members []*Statement, key crypto.Signer, keyID string) (*Signed, error) {
	if !ValidShipmentID(id) {
		return nil, fmt.Errorf("events: batch ID %q: 1 to 64 letters, digits, '-' or '_'", id)
	}
	if len(members) < 1 || len(members) > MaxBatchEvents {
		return nil, fmt.Errorf("events: a batch holds 1 to %d events, not %d", MaxBatchEvents, len(members))
	}
	payloads := make([][]byte, len(members))
	b64 := make([]string, len(members))
	for i, m := range members {
		p, err := marshalStatement(m)
		if err != nil {
			return nil, err
		}
		payloads[i], b64[i] = p, base64.StdEncoding.EncodeToString(p)
	}
	st, err := NewBatchStatement(keyID, id, payloads, time.Now(), NewEventID())
	if err != nil {
		return nil, err
	}
	s, err := SignStatement(ctx, st, key, keyID)
	if err != nil {
		return nil, err
	}
	parcel, err := encodeBatchParcel(s.Raw, b64)
	if err != nil {
		return nil, err
	}
	if len(parcel) > MaxMessageSize {
		return nil, fmt.Errorf("events: the batch is %d bytes, more than %d: sign fewer events per batch", len(parcel), MaxMessageSize)
	}
	if err := openBatch(s, b64); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	s.Parcel = parcel
	return s, nil
}
