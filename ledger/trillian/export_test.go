package trillian

import "context"

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

// SkipPush makes the store send no leaves to Trillian, as a process that
// dies right after its transactions' COMMIT.
func (s *Store) SkipPush(skip bool) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.faults.skipPush = skip
}

// Pushed is how many leaves the store knows Trillian holds.
func (s *Store) Pushed() uint64 {
	s.state.Lock()
	defer s.state.Unlock()
	return s.pushed
}

// ForgetPushed makes the store believe Trillian holds none of its leaves,
// so that the next sending sends them all again (read back from MariaDB).
func (s *Store) ForgetPushed() {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.state.Lock()
	defer s.state.Unlock()
	s.pushed, s.recent, s.recentFrom = 0, nil, 0
}

// AddLeaf sends Trillian one leaf at index as the store sends its leaves.
func (s *Store) AddLeaf(ctx context.Context, index uint64, body []byte) error {
	return s.addSequenced(ctx, []leaf{{index: index, body: body}})
}

// FilterCurrent reports whether the store's lookup filter answers
// lookups (the writer's, ready, and holding every entry the store knows
// committed).
func (s *Store) FilterCurrent() bool {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	return s.writer && s.seen.Ready() && s.seenSize >= s.knownSize
}
