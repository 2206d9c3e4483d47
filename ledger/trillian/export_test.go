package trillian

import (
	"context"

	tpb "github.com/google/trillian"

	"github.com/custodyledger/custody/ledger"
)

// Test hooks: fault injection and the writer's view of Trillian.

// FailBeforeHead makes every commit fail with err inside its transaction,
// after its rows and before its head are written (nil: no fault).
func (s *Store) FailBeforeHead(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.faults.beforeHead = nil
		return
	}
	s.faults.beforeHead = func() error { return err }
}

// SkipPush makes commits leave their leaves unsent, as a crash right after
// the transaction's COMMIT does.
func (s *Store) SkipPush(skip bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.skipPush = skip
}

// Pushed is how many leaves the store knows Trillian holds.
func (s *Store) Pushed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pushed
}

// ForgetPushed makes the store believe Trillian holds none of its leaves,
// so that the next sync sends them all again.
func (s *Store) ForgetPushed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pushed = 0
}

// AddLeaf sends Trillian one leaf at index as the store sends its leaves.
func (s *Store) AddLeaf(ctx context.Context, index uint64, body []byte) error {
	return s.addSequenced(ctx, []*tpb.LogLeaf{{LeafValue: body, LeafIndex: int64(index), LeafIdentityHash: leafIdentity(index, ledger.LeafHash(body))}})
}
