package trillian

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/types"
	"github.com/transparency-dev/merkle/compact"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custodyledger/custody/ledger"
)

// Bounds of one AddSequencedLeaves request: under gRPC's default 4 MiB
// message limit, and Trillian's default signer batch.
const (
	maxPushLeaves = 512
	maxPushBytes  = 2 << 20
)

// leafIdentity is the Trillian leaf identity hash of the leaf at index:
// SHA-256 over a label, the index and the RFC 6962 leaf hash. Trillian
// keys a tree's leaf data by it, so a leaf sent again at its index is
// refused as a duplicate identity, and a different leaf at a taken index
// as a duplicate index: the two cases AddSequencedLeaves reports apart.
func leafIdentity(index uint64, leafHash []byte) []byte {
	h := sha256.New()
	h.Write([]byte("custody leaf\x00"))
	h.Write(binary.BigEndian.AppendUint64(nil, index))
	h.Write(leafHash)
	return h.Sum(nil)
}

// pushFrom sends Trillian the committed leaves from s.pushed through the
// last of entries (read back from MariaDB below the first of entries).
// The caller holds s.mu.
func (s *Store) pushFrom(ctx context.Context, entries []*ledger.Entry) error {
	if len(entries) > 0 && s.pushed < entries[0].Index {
		if err := s.syncTo(ctx, entries[0].Index); err != nil {
			return err
		}
	}
	for len(entries) > 0 && entries[0].Index < s.pushed {
		entries = entries[1:]
	}
	return s.push(ctx, entries)
}

// push sends contiguous leaves starting at s.pushed, in requests of
// bounded size, advancing s.pushed after each.
func (s *Store) push(ctx context.Context, entries []*ledger.Entry) error {
	for len(entries) > 0 {
		var leaves []*tpb.LogLeaf
		size := 0
		for _, e := range entries {
			if len(leaves) > 0 && (len(leaves) == maxPushLeaves || size+len(e.Body) > maxPushBytes) {
				break
			}
			leaves = append(leaves, &tpb.LogLeaf{
				LeafValue: e.Body, LeafIndex: int64(e.Index),
				LeafIdentityHash: leafIdentity(e.Index, ledger.LeafHash(e.Body)),
			})
			size += len(e.Body)
		}
		if first := uint64(leaves[0].LeafIndex); first != s.pushed {
			return fmt.Errorf("trillian store: sending leaves from %d, Trillian holds up to %d", first, s.pushed)
		}
		if err := s.addSequenced(ctx, leaves); err != nil {
			return err
		}
		s.pushed += uint64(len(leaves))
		entries = entries[len(leaves):]
	}
	return nil
}

// addSequenced is one AddSequencedLeaves call: each leaf is added, or
// already there at its index (sent before); another leaf at its index is
// ErrDiverged.
func (s *Store) addSequenced(ctx context.Context, leaves []*tpb.LogLeaf) error {
	resp, err := s.log.AddSequencedLeaves(ctx, &tpb.AddSequencedLeavesRequest{LogId: s.treeID, Leaves: leaves})
	if err != nil {
		return fmt.Errorf("trillian store: AddSequencedLeaves at %d..%d: %w", leaves[0].LeafIndex, leaves[len(leaves)-1].LeafIndex, err)
	}
	if len(resp.Results) != len(leaves) {
		return fmt.Errorf("trillian store: AddSequencedLeaves of %d leaves answered %d results", len(leaves), len(resp.Results))
	}
	for i, r := range resp.Results {
		st := r.GetStatus()
		code := codes.Code(st.GetCode())
		switch {
		case code == codes.OK:
		// Trillian v1.8.0 (storage/mysql AddSequencedLeaves) reports both
		// conflicts as FailedPrecondition, told apart by the message.
		case code == codes.FailedPrecondition && strings.Contains(st.GetMessage(), "LeafIdentityHash"):
			// This leaf at this index: sent before.
		case code == codes.FailedPrecondition && strings.Contains(st.GetMessage(), "LeafIndex"):
			return fmt.Errorf("%w: tree %d holds another leaf at index %d than the one Custody committed there", ErrDiverged, s.treeID, leaves[i].LeafIndex)
		default:
			return fmt.Errorf("trillian store: AddSequencedLeaves of leaf %d: %s: %s", leaves[i].LeafIndex, code, st.GetMessage())
		}
	}
	return nil
}

// maxSyncRead bounds the entries read back from MariaDB at once.
const maxSyncRead = 512

// SyncTrillian sends Trillian every committed leaf it is not known to hold
// (after a commit whose leaves did not reach it, or a crash between a
// commit and the sending). Commit does this first whenever it is needed;
// a standby that takes over may call it at once.
func (s *Store) SyncTrillian(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, pushed, err := s.readHead(ctx, s.db)
	if err != nil {
		return err
	}
	s.committed, s.pushed = max(s.committed, h.Size), max(s.pushed, pushed)
	return s.syncLocked(ctx)
}

// syncLocked sends the committed leaves from s.pushed to s.committed.
func (s *Store) syncLocked(ctx context.Context) error {
	return s.syncTo(ctx, s.committed)
}

// syncTo sends the committed leaves from s.pushed up to end (exclusive),
// reading them from MariaDB.
func (s *Store) syncTo(ctx context.Context, end uint64) error {
	for s.pushed < end {
		n := min(end-s.pushed, maxSyncRead)
		entries, err := s.leaves(ctx, s.pushed, n)
		if err != nil {
			return err
		}
		if err := s.push(ctx, entries); err != nil {
			return err
		}
	}
	return nil
}

// leaves reads n committed entries' leaf bodies from start, checked
// against their leaf hashes.
func (s *Store) leaves(ctx context.Context, start, n uint64) ([]*ledger.Entry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT idx, leaf_hash, body FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx`, start, start+n)
	if err != nil {
		return nil, fmt.Errorf("trillian store: reading leaves %d..%d: %w", start, start+n-1, err)
	}
	defer rows.Close()
	out := make([]*ledger.Entry, 0, n)
	for rows.Next() {
		var e ledger.Entry
		var leafHash []byte
		if err := rows.Scan(&e.Index, &leafHash, &e.Body); err != nil {
			return nil, fmt.Errorf("trillian store: reading leaves: %w", err)
		}
		if want := start + uint64(len(out)); e.Index != want {
			return nil, fmt.Errorf("%w: committed entry %d is missing", ErrCorrupt, want)
		}
		if !bytes.Equal(ledger.LeafHash(e.Body), leafHash) {
			return nil, fmt.Errorf("%w: entry %d: its leaf body does not hash to its leaf hash", ErrCorrupt, e.Index)
		}
		out = append(out, &e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("trillian store: reading leaves: %w", err)
	}
	if uint64(len(out)) != n {
		return nil, fmt.Errorf("%w: committed entry %d is missing", ErrCorrupt, start+uint64(len(out)))
	}
	return out, nil
}

// TrillianRoot returns the size and root hash of Trillian's latest log
// root: the leaves its signer has integrated so far.
func (s *Store) TrillianRoot(ctx context.Context) (size uint64, root []byte, err error) {
	resp, err := s.log.GetLatestSignedLogRoot(ctx, &tpb.GetLatestSignedLogRootRequest{LogId: s.treeID})
	if err != nil {
		return 0, nil, fmt.Errorf("trillian store: tree %d's root: %w", s.treeID, err)
	}
	var lr types.LogRootV1
	if err := lr.UnmarshalBinary(resp.GetSignedLogRoot().GetLogRoot()); err != nil {
		return 0, nil, fmt.Errorf("trillian store: tree %d's root: %w", s.treeID, err)
	}
	if len(lr.RootHash) != hashSize {
		return 0, nil, fmt.Errorf("trillian store: tree %d's root hash has %d bytes", s.treeID, len(lr.RootHash))
	}
	return lr.TreeSize, lr.RootHash, nil
}

// CheckTrillian compares Trillian's latest root with Custody's tree at
// the same size, rebuilt from the stored nodes: ErrDiverged if they
// differ, or if Trillian has integrated more leaves than Custody
// committed. It returns the size compared.
func (s *Store) CheckTrillian(ctx context.Context) (uint64, error) {
	size, root, err := s.TrillianRoot(ctx)
	if err != nil {
		return 0, err
	}
	h, _, err := s.readHead(ctx, s.db)
	if err != nil {
		return 0, err
	}
	if size > h.Size {
		return size, fmt.Errorf("%w: Trillian has integrated %d leaves, Custody has committed %d", ErrDiverged, size, h.Size)
	}
	want := ledger.Hasher.EmptyRoot()
	if size > 0 {
		ids := compact.RangeNodes(0, size, nil)
		hashes, err := s.Nodes(ids)
		if err != nil {
			return size, err
		}
		rng, err := rangeFactory.NewRange(0, size, hashes)
		if err != nil {
			return size, err
		}
		if want, err = rng.GetRootHash(nil); err != nil {
			return size, err
		}
	}
	if !bytes.Equal(root, want) {
		return size, fmt.Errorf("%w: at size %d Trillian's root is %x, Custody's %x", ErrDiverged, size, root, want)
	}
	return size, nil
}

// WaitTrillian waits until Trillian's signer has integrated at least size
// leaves, then checks its root against Custody's (CheckTrillian).
func (s *Store) WaitTrillian(ctx context.Context, size uint64) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		got, _, err := s.TrillianRoot(ctx)
		if err != nil {
			return err
		}
		if got >= size {
			_, err := s.CheckTrillian(ctx)
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("trillian store: waiting for tree %d to integrate %d leaves (it has %d): %w", s.treeID, size, got, ctx.Err())
		case <-tick.C:
		}
	}
}

var rangeFactory = &compact.RangeFactory{Hash: ledger.Hasher.HashChildren}

// CreateTree creates and initialises an ACTIVE PREORDERED_LOG tree on the
// log server conn is connected to (its admin API), and returns its ID
// once its first root can be read. name is Trillian's display name (at
// most 20 bytes).
func CreateTree(ctx context.Context, conn grpc.ClientConnInterface, name string) (int64, error) {
	if len(name) > 20 {
		return 0, fmt.Errorf("trillian: a tree's display name has at most 20 bytes, %q has %d", name, len(name))
	}
	tree, err := tpb.NewTrillianAdminClient(conn).CreateTree(ctx, &tpb.CreateTreeRequest{Tree: &tpb.Tree{
		TreeState: tpb.TreeState_ACTIVE, TreeType: tpb.TreeType_PREORDERED_LOG,
		DisplayName: name, Description: "Custody log", MaxRootDuration: durationpb.New(0),
	}})
	if err != nil {
		return 0, fmt.Errorf("trillian: creating a tree: %w", err)
	}
	log := tpb.NewTrillianLogClient(conn)
	if _, err := log.InitLog(ctx, &tpb.InitLogRequest{LogId: tree.TreeId}); err != nil {
		return 0, fmt.Errorf("trillian: initialising tree %d: %w", tree.TreeId, err)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := log.GetLatestSignedLogRoot(ctx, &tpb.GetLatestSignedLogRootRequest{LogId: tree.TreeId})
		if err == nil {
			return tree.TreeId, nil
		}
		if c := status.Code(err); c != codes.FailedPrecondition && c != codes.NotFound {
			return 0, fmt.Errorf("trillian: tree %d's first root: %w", tree.TreeId, err)
		}
		select {
		case <-ctx.Done():
			return 0, errors.Join(ctx.Err(), err)
		case <-tick.C:
		}
	}
}
