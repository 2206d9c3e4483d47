package trillian

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
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

// sendWave is how many AddSequencedLeaves requests of maxPushLeaves are
// in flight at once: Trillian writes each leaf with its own statements, so
// one request keeps neither the log server nor MariaDB busy.
const sendWave = 4

// startSender starts the goroutine that sends committed leaves to
// Trillian (the first Commit does; a Store that only reads sends nothing).
func (s *Store) startSender() {
	s.senderOnce.Do(func() {
		s.state.Lock()
		s.senderStart = true
		s.state.Unlock()
		go s.sender()
	})
}

// wake asks the sender to look for leaves to send.
func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// sender sends committed leaves whenever there are some, retrying with a
// growing pause while Trillian fails, until the Store is closed or
// Trillian's tree is found to differ.
func (s *Store) sender() {
	defer close(s.senderDone)
	const minPause, maxPause = 50 * time.Millisecond, 2 * time.Second
	for {
		select {
		case <-s.base.Done():
			return
		case <-s.kick:
		}
		for pause := minPause; ; pause = min(2*pause, maxPause) {
			err := s.sendCommitted(s.base)
			switch {
			case err == nil:
			case errors.Is(err, ErrDiverged):
				s.logger.Error("trillian store: Trillian's tree differs from Custody's; nothing more is committed", "tree", s.treeID, "err", err)
				return
			case s.base.Err() != nil:
				return
			default:
				s.logger.Warn("trillian store: sending committed leaves to Trillian failed; retrying", "tree", s.treeID, "in", pause, "err", err)
				select {
				case <-s.base.Done():
					return
				case <-time.After(pause):
				}
				continue
			}
			break
		}
	}
}

// sendCommitted sends Trillian every leaf committed (as this Store knows)
// that it is not known to hold, in waves of concurrent requests. It
// records its outcome for the writer (sendErr, diverged, progress).
func (s *Store) sendCommitted(ctx context.Context) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.faults.skipPush {
		return nil
	}
	err := s.sendLocked(ctx)
	s.state.Lock()
	s.sendErr = err
	if errors.Is(err, ErrDiverged) && s.diverged == nil {
		s.diverged = err
	}
	close(s.progress)
	s.progress = make(chan struct{})
	s.state.Unlock()
	return err
}

func (s *Store) sendLocked(ctx context.Context) error {
	for {
		s.state.Lock()
		from, end := s.pushed, s.committed
		s.state.Unlock()
		if from >= end {
			return nil
		}
		// One wave: up to sendWave requests of up to maxPushLeaves.
		n := min(end-from, sendWave*maxPushLeaves)
		leaves, err := s.committedRange(ctx, from, n)
		if err != nil {
			return err
		}
		var chunks [][]leaf
		for len(leaves) > 0 {
			k := 0
			size := 0
			for k < len(leaves) && k < maxPushLeaves && (k == 0 || size+len(leaves[k].body) <= maxPushBytes) {
				size += len(leaves[k].body)
				k++
			}
			chunks = append(chunks, leaves[:k])
			leaves = leaves[k:]
		}
		errs := make([]error, len(chunks))
		var wg sync.WaitGroup
		for i, ch := range chunks {
			wg.Go(func() {
				wctx, cancel := context.WithTimeout(ctx, s.timeout)
				defer cancel()
				errs[i] = s.addSequenced(wctx, ch)
			})
		}
		wg.Wait()
		// Trillian holds every leaf up to the first failed request.
		sent := uint64(0)
		var failed error
		for i, ch := range chunks {
			if errs[i] != nil {
				failed = errs[i]
				break
			}
			sent += uint64(len(ch))
		}
		for _, err := range errs { // a divergence anywhere is a divergence
			if errors.Is(err, ErrDiverged) {
				failed = err
			}
		}
		s.advance(from + sent)
		if failed != nil {
			return failed
		}
	}
}

// advance records that Trillian holds every leaf below pushed.
func (s *Store) advance(pushed uint64) {
	s.state.Lock()
	defer s.state.Unlock()
	if pushed <= s.pushed {
		return
	}
	s.pushed = pushed
	if pushed > s.recentFrom { // the leaves below pushed are not needed
		drop := min(pushed-s.recentFrom, uint64(len(s.recent)))
		s.recent = s.recent[drop:]
		s.recentFrom += drop
	}
	if len(s.recent) == 0 {
		s.recent = nil // let the array go
	}
	close(s.progress)
	s.progress = make(chan struct{})
}

// committedRange is the n committed leaves from index from: from this
// Store's own recent commits when they hold them, else read back from
// MariaDB.
func (s *Store) committedRange(ctx context.Context, from, n uint64) ([]leaf, error) {
	s.state.Lock()
	if from >= s.recentFrom && from+n <= s.recentFrom+uint64(len(s.recent)) {
		out := s.recent[from-s.recentFrom : from-s.recentFrom+n : from-s.recentFrom+n]
		s.state.Unlock()
		return out, nil
	}
	s.state.Unlock()
	return s.leaves(ctx, from, n)
}

// addSequenced is one AddSequencedLeaves call: each leaf is added, or
// already there at its index (sent before); another leaf at its index is
// ErrDiverged.
func (s *Store) addSequenced(ctx context.Context, batch []leaf) error {
	leaves := make([]*tpb.LogLeaf, len(batch))
	for i, l := range batch {
		leaves[i] = &tpb.LogLeaf{LeafValue: l.body, LeafIndex: int64(l.index), LeafIdentityHash: leafIdentity(l.index, ledger.LeafHash(l.body))}
	}
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

// SyncTrillian sends Trillian every leaf committed when it is called that
// Trillian is not known to hold (a standby that takes over may call it
// at once; commits do it beside them), and returns when Trillian holds
// them or sending failed.
func (s *Store) SyncTrillian(ctx context.Context) error {
	h, pushed, err := s.readHead(ctx, s.db)
	if err != nil {
		return err
	}
	s.state.Lock()
	s.committed, s.pushed = max(s.committed, h.Size), max(s.pushed, pushed)
	s.state.Unlock()
	return s.sendCommitted(ctx)
}

// leaves reads n committed leaf bodies from start, checked against their
// leaf hashes.
func (s *Store) leaves(ctx context.Context, start, n uint64) ([]leaf, error) {
	rows, err := s.query(ctx, `SELECT idx, leaf_hash, body FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx`, start, start+n)
	if err != nil {
		return nil, fmt.Errorf("trillian store: reading leaves %d..%d: %w", start, start+n-1, err)
	}
	defer rows.Close()
	out := make([]leaf, 0, n)
	for rows.Next() {
		var l leaf
		var leafHash []byte
		if err := rows.Scan(&l.index, &leafHash, &l.body); err != nil {
			return nil, fmt.Errorf("trillian store: reading leaves: %w", err)
		}
		if want := start + uint64(len(out)); l.index != want {
			return nil, fmt.Errorf("%w: committed entry %d is missing", ErrCorrupt, want)
		}
		if !bytes.Equal(ledger.LeafHash(l.body), leafHash) {
			return nil, fmt.Errorf("%w: entry %d: its leaf body does not hash to its leaf hash", ErrCorrupt, l.index)
		}
		out = append(out, l)
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
