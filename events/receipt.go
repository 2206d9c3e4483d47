package events

import (
	"errors"
	"fmt"
)

// Receipt statuses.
const (
	// StatusAccepted: the event is in the log and changed the device's state.
	StatusAccepted = "accepted"
	// StatusEvidence: the event broke a custody rule in a way that is itself
	// evidence; it is in the log with its code. Equivocation changed nothing
	// but the device's flag; a flag report (CodeFlagReport, a flag from a
	// partner outside the device's custody) changed nothing at all.
	StatusEvidence = "evidence"
	// StatusRejected: the event is not in the log.
	StatusRejected = "rejected"
	// StatusUnknown: the ledger has not processed the event (yet).
	StatusUnknown = "unknown"
)

// Receipt is the ledger's answer to one event. For accepted and evidence
// events it carries an RFC 6962 inclusion proof of the entry and the signed
// checkpoint (C2SP tlog-checkpoint note) it verifies against.
//
// A Receipt as decoded is unverified. [VerifyReceipt] (which every
// [Publisher] runs) proves Digest, and for a logged event LogIndex,
// TreeSize, RootHash, Hashes and Checkpoint; Status, Code, Reason, Kind,
// Partner and Target remain the ledger's word.
type Receipt struct {
	Digest  string `json:"digest"`
	Status  string `json:"status"`
	Code    string `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Partner string `json:"partner,omitempty"`
	Target  string `json:"target,omitempty"`

	LogIndex   uint64   `json:"logIndex,omitempty"`
	TreeSize   uint64   `json:"treeSize,omitempty"`
	RootHash   []byte   `json:"rootHash,omitempty"`
	Hashes     [][]byte `json:"hashes,omitempty"`
	Checkpoint string   `json:"checkpoint,omitempty"`

	// Members is, for a batch (batch.signed), the verdict on each member in
	// the batch's order. The batch is logged (one leaf) when at least one
	// member is; the receipt's proof is the batch's, and a member's path
	// to the batch root is its MemberProof.
	Members []MemberVerdict `json:"members,omitempty"`
}

// MemberVerdict is the ledger's verdict on one member of a batch.
type MemberVerdict struct {
	Digest  string `json:"digest"` // the member's event digest (hex)
	Target  string `json:"target"` // its device
	Kind    string `json:"kind"`
	EventID string `json:"eventId,omitempty"`
	Status  string `json:"status"` // accepted, evidence or rejected
	Code    string `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// LogIndex is, for a member logged before (Existing), the entry that
	// holds it; a member logged by this batch is in the batch's entry.
	LogIndex uint64 `json:"logIndex,omitempty"`
	Existing bool   `json:"existing,omitempty"`
}

// Logged reports whether the member is in the log.
func (v *MemberVerdict) Logged() bool {
	return v.Status == StatusAccepted || v.Status == StatusEvidence
}

// Logged reports whether the event entered the log.
func (r *Receipt) Logged() bool { return r.Status == StatusAccepted || r.Status == StatusEvidence }

// ReceiptVerifier checks what a publisher cannot check with the contract
// alone: that a logged receipt proves its event is in the log. The ledger
// owns the leaf format and the checkpoint note, so it implements this
// ([ledger.ReceiptVerifier], made from the log's public key and the
// certificate the signer is registered with); events owns the contract.
//
// VerifyReceipt is called by [VerifyReceipt] only for a receipt whose
// status is accepted or evidence and whose digest is signed's. It must
// check, with the log's public key held by the verifier and nothing taken
// from the receipt on trust, that r.Checkpoint is a checkpoint note signed
// by the log's key that names exactly r.TreeSize and r.RootHash, and that
// r.Hashes prove signed's leaf at r.LogIndex in that tree. Its error wraps
// the rule broken: [ErrReceiptCheckpoint], [ErrReceiptTree] or
// [ErrReceiptProof]. It must be safe for concurrent use.
//
// [ledger.ReceiptVerifier]: https://pkg.go.dev/github.com/custodyledger/custody/ledger#ReceiptVerifier
type ReceiptVerifier interface {
	VerifyReceipt(signed *Signed, r *Receipt) error
}

// The rules a receipt can break; a [*BadReceiptError] wraps one.
var (
	// ErrBadReceipt matches every receipt that does not verify.
	ErrBadReceipt = errors.New("the ledger's receipt does not verify")
	// ErrReceiptDigest: the receipt answers another event.
	ErrReceiptDigest = errors.New("digest: the receipt is not for this event")
	// ErrReceiptStatus: the status is none of accepted, evidence, rejected.
	ErrReceiptStatus = errors.New("status: not a status the ledger answers with")
	// ErrReceiptMembers: a batch's receipt does not give one verdict per
	// member, in order.
	ErrReceiptMembers = errors.New("members: the receipt's verdicts are not the batch's members")
	// ErrReceiptCheckpoint: the checkpoint is not a note signed by the
	// log's key.
	ErrReceiptCheckpoint = errors.New("checkpoint signature: not signed by the log's key")
	// ErrReceiptTree: the receipt's tree size or root hash is not the one
	// its signed checkpoint names.
	ErrReceiptTree = errors.New("tree size or root: not those of the signed checkpoint")
	// ErrReceiptProof: the inclusion proof does not lead from the event's
	// leaf at the receipt's index to the root.
	ErrReceiptProof = errors.New("inclusion proof: does not prove the event's leaf under the root")
)

// BadReceiptError is a receipt the publisher refused: the event is not
// treated as answered and stays in the outbox. It matches [ErrBadReceipt]
// and unwraps to the rule broken ([ErrReceiptDigest], [ErrReceiptStatus],
// [ErrReceiptCheckpoint], [ErrReceiptTree], [ErrReceiptProof]).
type BadReceiptError struct {
	Digest string // the event's digest (hex)
	Status string // the status the receipt claimed
	Err    error
}

func (e *BadReceiptError) Error() string {
	return fmt.Sprintf("events: refused the ledger's receipt for %s (status %.20q): %v", e.Digest, e.Status, e.Err)
}

func (e *BadReceiptError) Is(target error) bool { return target == ErrBadReceipt }
func (e *BadReceiptError) Unwrap() error        { return e.Err }

// VerifyReceipt checks the ledger's answer r to the event signed before
// anything treats it as an answer: its digest must be the event's, its
// status one the ledger answers with (accepted, evidence, rejected), and,
// if it says the event is logged, v must prove it (inclusion proof under a
// checkpoint signed by the log's key, see [ReceiptVerifier]). The error is
// a [*BadReceiptError] naming the rule broken.
//
// What a receipt that verifies proves: for accepted and evidence, that the
// log the checkpoint commits to holds the event's leaf at LogIndex. A
// rejection carries no proof: that the event is not logged is the ledger's
// word. Status (accepted or evidence), Code, Reason, Kind, Partner and
// Target are the ledger's verdict, not part of the leaf, and are not
// proven.
func VerifyReceipt(signed *Signed, r *Receipt, v ReceiptVerifier) error {
	digest := signed.DigestHex()
	bad := func(err error) error { return &BadReceiptError{Digest: digest, Status: r.Status, Err: err} }
	if r.Digest != digest {
		return bad(fmt.Errorf("%w (it names %.64q)", ErrReceiptDigest, r.Digest))
	}
	if signed.Members != nil && r.Members != nil {
		if len(r.Members) != len(signed.Members) {
			return bad(fmt.Errorf("%w: verdicts on %d members, the batch has %d", ErrReceiptMembers, len(r.Members), len(signed.Members)))
		}
		for i, m := range signed.Members {
			if r.Members[i].Digest != m.DigestHex() {
				return bad(fmt.Errorf("%w: verdict %d names %.64q, not member %s", ErrReceiptMembers, i, r.Members[i].Digest, m.DigestHex()))
			}
		}
	} else if r.Members != nil || (signed.Members != nil && r.Logged()) {
		return bad(fmt.Errorf("%w: member verdicts on a batch only, and on every logged batch", ErrReceiptMembers))
	}
	switch {
	case r.Status == StatusRejected:
		return nil
	case !r.Logged():
		return bad(ErrReceiptStatus)
	case v == nil:
		return bad(fmt.Errorf("%w: no receipt verifier", ErrReceiptProof))
	}
	if err := v.VerifyReceipt(signed, r); err != nil {
		return bad(err)
	}
	return nil
}
