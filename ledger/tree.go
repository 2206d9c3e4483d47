package ledger

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
)

// Hasher is the log's RFC 6962 hasher (SHA-256).
var Hasher = rfc6962.DefaultHasher

var rangeFactory = compact.RangeFactory{Hash: Hasher.HashChildren}

// LeafHash is the RFC 6962 leaf hash of an entry body.
func LeafHash(body []byte) []byte { return Hasher.HashLeaf(body) }

// loadRange rebuilds the compact range (the tree's right edge) for a tree
// of the given size from stored perfect-subtree nodes: O(log n) reads.
func loadRange(s Store, size uint64) (*compact.Range, error) {
	if size == 0 {
		return rangeFactory.NewEmptyRange(0), nil
	}
	ids := compact.RangeNodes(0, size, nil)
	hashes, err := s.Nodes(ids)
	if err != nil {
		return nil, fmt.Errorf("ledger: loading tree edge: %w", err)
	}
	return rangeFactory.NewRange(0, size, hashes)
}

// rootAt is the root hash of the tree of the given size (at most the
// committed size), from O(log n) stored nodes.
func rootAt(s Store, size uint64) ([]byte, error) {
	if size == 0 {
		return Hasher.EmptyRoot(), nil
	}
	rng, err := loadRange(s, size)
	if err != nil {
		return nil, err
	}
	return rng.GetRootHash(nil)
}

// nodeReader reads perfect-subtree node hashes (a Store, or a Store with
// the nodes of a batch not yet readable from it).
type nodeReader interface {
	Nodes(ids []compact.NodeID) ([][]byte, error)
}

// knownNodes serves nodes from memory, then from the store.
type knownNodes struct {
	known map[compact.NodeID][]byte
	s     Store
}

func (k knownNodes) Nodes(ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	var missing []compact.NodeID
	var at []int
	for i, id := range ids {
		if h, ok := k.known[id]; ok {
			out[i] = h
		} else {
			missing, at = append(missing, id), append(at, i)
		}
	}
	if len(missing) > 0 {
		hs, err := k.s.Nodes(missing)
		if err != nil {
			return nil, err
		}
		for j, i := range at {
			out[i] = hs[j]
		}
	}
	return out, nil
}

// inclusionProof builds the RFC 6962 inclusion proof of leaf index in the
// tree of the given size from O(log n) stored nodes.
func inclusionProof(s nodeReader, index, size uint64) ([][]byte, error) {
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, err
	}
	hashes, err := s.Nodes(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, Hasher.HashChildren)
}

// inclusionProofs builds the inclusion proofs of several leaves in one tree
// size with one read of the nodes they need (proofs of one device's entries
// share the nodes near the root).
func inclusionProofs(s nodeReader, indices []uint64, size uint64) ([][][]byte, error) {
	plans := make([]proof.Nodes, len(indices))
	pos := map[compact.NodeID]int{}
	var ids []compact.NodeID
	for k, i := range indices {
		n, err := proof.Inclusion(i, size)
		if err != nil {
			return nil, err
		}
		plans[k] = n
		for _, id := range n.IDs {
			if _, ok := pos[id]; !ok {
				pos[id] = len(ids)
				ids = append(ids, id)
			}
		}
	}
	hashes, err := s.Nodes(ids)
	if err != nil {
		return nil, err
	}
	out := make([][][]byte, len(indices))
	for k, n := range plans {
		h := make([][]byte, len(n.IDs))
		for j, id := range n.IDs {
			h[j] = hashes[pos[id]]
		}
		if out[k], err = n.Rehash(h, Hasher.HashChildren); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ProveInclusions is ProveInclusion for several leaves at once.
func ProveInclusions(s Store, indices []uint64, size uint64) ([][][]byte, error) {
	return inclusionProofs(s, indices, size)
}

// consistencyProof builds the RFC 6962 consistency proof between two sizes.
func consistencyProof(s Store, size1, size2 uint64) ([][]byte, error) {
	nodes, err := proof.Consistency(size1, size2)
	if err != nil {
		return nil, err
	}
	hashes, err := s.Nodes(nodes.IDs)
	if err != nil {
		return nil, err
	}
	return nodes.Rehash(hashes, Hasher.HashChildren)
}

// ProveInclusion is the inclusion proof of leaf index in the tree of the
// given size (at most the committed size), read from s: O(log n) node reads.
func ProveInclusion(s Store, index, size uint64) ([][]byte, error) {
	return inclusionProof(s, index, size)
}

// ProveConsistency is the consistency proof between two committed sizes,
// read from s.
func ProveConsistency(s Store, size1, size2 uint64) ([][]byte, error) {
	return consistencyProof(s, size1, size2)
}

// VerifyInclusion checks an inclusion proof of body at index against a root.
func VerifyInclusion(body []byte, index, size uint64, hashes [][]byte, root []byte) error {
	return hexRoots(proof.VerifyInclusion(Hasher, index, size, LeafHash(body), hashes, root))
}

// VerifyConsistency checks a consistency proof between two roots.
func VerifyConsistency(size1, size2 uint64, hashes [][]byte, root1, root2 []byte) error {
	return hexRoots(proof.VerifyConsistency(Hasher, size1, size2, hashes, root1, root2))
}

// LogKey is the ledger's checkpoint signing identity: an ECDSA P-256 key, as
// Rekor v1 signs its checkpoints.
type LogKey struct {
	Origin string // checkpoint hostname; the note origin is "<Origin> - <TreeID>"
	TreeID int64
	LogID  string // hex SHA-256 of the PKIX public key (Rekor's logID)
	Public *ecdsa.PublicKey
	signer signature.Signer
}

// NewLogKey wraps key (ECDSA P-256) as the log's signer. The tree ID is
// derived from the public key, so a log keeps its ID across restarts.
func NewLogKey(origin string, key *ecdsa.PrivateKey) (*LogKey, error) {
	if key == nil || key.Curve.Params().Name != "P-256" {
		return nil, errors.New("ledger: the log key must be ECDSA P-256")
	}
	if origin == "" {
		return nil, errors.New("ledger: empty checkpoint origin")
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	id := int64(binary.BigEndian.Uint64(sum[:8]) & 0x7fffffffffffffff)
	if id == 0 {
		id = 1
	}
	s, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	return &LogKey{Origin: origin, TreeID: id, LogID: hex.EncodeToString(sum[:]), Public: &key.PublicKey, signer: s}, nil
}

// SignCheckpoint returns a signed checkpoint note for (size, root).
func (k *LogKey) SignCheckpoint(ctx context.Context, size uint64, root []byte) ([]byte, error) {
	return util.CreateAndSignCheckpoint(ctx, k.Origin, k.TreeID, size, root, k.signer)
}

// Checkpoint is a verified checkpoint.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   []byte
}

// VerifyCheckpoint parses a signed checkpoint note and checks its signature
// with the log's public key. Only the returned values are trusted.
func VerifyCheckpoint(note []byte, pub crypto.PublicKey) (*Checkpoint, error) {
	var sc util.SignedCheckpoint
	if err := sc.UnmarshalText(note); err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	if !sc.Verify(v) {
		return nil, errors.New("checkpoint: signature does not verify with the log key")
	}
	return &Checkpoint{Origin: sc.Origin, Size: sc.Size, Root: bytes.Clone(sc.Hash)}, nil
}

// names checks that the checkpoint is the one of the tree of size with
// root (what a receipt or a provenance answer says it verifies against).
func (c *Checkpoint) names(size uint64, root []byte) error {
	if c.Size != size || !bytes.Equal(c.Root, root) {
		return fmt.Errorf("the signed checkpoint is of tree size %d, root %x; the answer says size %d, root %.32x", c.Size, c.Root, size, root)
	}
	return nil
}

// hexRoots makes a proof's root mismatch in err print its Merkle
// roots in hex, as the rest of Custody prints hashes (the Merkle library
// prints them as lists of decimal bytes). The result unwraps to err.
func hexRoots(err error) error {
	var rm proof.RootMismatchError
	if !errors.As(err, &rm) {
		return err
	}
	return &hexRootsError{err: err, rm: rm}
}

type hexRootsError struct {
	err error
	rm  proof.RootMismatchError
}

func (e *hexRootsError) Error() string {
	msg := fmt.Sprintf("the proof leads to root %x, but the checkpoint's root is %x", e.rm.CalculatedRoot, e.rm.ExpectedRoot)
	return strings.Replace(e.err.Error(), e.rm.Error(), msg, 1)
}

func (e *hexRootsError) Unwrap() error { return e.err }
