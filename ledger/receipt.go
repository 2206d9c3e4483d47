package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"

	"github.com/custodyledger/custody/events"
)

// ReceiptVerifier proves a publisher's receipts: it implements
// events.ReceiptVerifier for the events signed with one certificate (a
// partner's registered certificate, or the consortium CA's for registry
// events), against the log's public key. The leaf and the checkpoint are
// the ledger's formats, so their checks live here, beside the code that
// makes them; a publisher takes this as the events.ReceiptVerifier hook.
type ReceiptVerifier struct {
	logKey *ecdsa.PublicKey
	cert   []byte

	mu   sync.Mutex
	seen map[string]*Checkpoint // verified checkpoint notes (read-only once stored)
}

// NewReceiptVerifier returns a verifier of the receipts of events signed
// with cert (DER) against logKey, the log's checkpoint key (ECDSA P-256).
func NewReceiptVerifier(logKey *ecdsa.PublicKey, cert []byte) (*ReceiptVerifier, error) {
	if logKey == nil || logKey.Curve != elliptic.P256() {
		return nil, errors.New("ledger: a receipt verifier needs the log's ECDSA P-256 public key")
	}
	if _, err := x509.ParseCertificate(cert); err != nil {
		return nil, fmt.Errorf("ledger: a receipt verifier needs the signer's certificate: %w", err)
	}
	return &ReceiptVerifier{logKey: logKey, cert: bytes.Clone(cert)}, nil
}

// VerifyReceipt implements events.ReceiptVerifier: r.Checkpoint verifies
// with the log's key (events.ErrReceiptCheckpoint) and names exactly
// r.TreeSize and r.RootHash (events.ErrReceiptTree), and r.Hashes prove
// the hashedrekord leaf of signed and the verifier's certificate at
// r.LogIndex under that root (events.ErrReceiptProof). The leaf is
// recomputed, as the ledger built it, from the envelope's digest and
// signature: a receipt cannot name the leaf it proves.
func (v *ReceiptVerifier) VerifyReceipt(signed *events.Signed, r *events.Receipt) error {
	cp, err := v.checkpoint(r.Checkpoint)
	if err != nil {
		return fmt.Errorf("%w: %v", events.ErrReceiptCheckpoint, err)
	}
	if err := cp.names(r.TreeSize, r.RootHash); err != nil {
		return fmt.Errorf("%w: %v", events.ErrReceiptTree, err)
	}
	body, err := HashedRekordBody(signed.Digest[:], signed.Signature, v.cert)
	if err != nil {
		return fmt.Errorf("%w: %v", events.ErrReceiptProof, err)
	}
	if err := VerifyInclusion(body, r.LogIndex, cp.Size, r.Hashes, cp.Root); err != nil {
		return fmt.Errorf("%w: entry %d of %d: %v", events.ErrReceiptProof, r.LogIndex, cp.Size, err)
	}
	return nil
}

// verifiedCheckpoints bounds a verifier's cache of checkpoints it verified.
const verifiedCheckpoints = 64

// checkpoint verifies a checkpoint note with the log's key, once: every
// receipt of one ledger batch carries the same checkpoint, so a publisher
// with many events in flight (a station, the gate) would otherwise verify
// the same signature once per event. The cache maps the note's exact bytes
// to what verified; a note not seen before is verified in full.
func (v *ReceiptVerifier) checkpoint(note string) (*Checkpoint, error) {
	v.mu.Lock()
	cp, ok := v.seen[note]
	v.mu.Unlock()
	if ok {
		return cp, nil
	}
	cp, err := VerifyCheckpoint([]byte(note), v.logKey)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	if v.seen == nil || len(v.seen) >= verifiedCheckpoints {
		v.seen = make(map[string]*Checkpoint, verifiedCheckpoints)
	}
	v.seen[note] = cp
	v.mu.Unlock()
	return cp, nil
}
