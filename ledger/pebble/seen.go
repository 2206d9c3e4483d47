package pebble

import (
	cpebble "github.com/cockroachdb/pebble/v2"

	"github.com/custodyledger/custody/ledger/internal/seen"
)

// The store's filter of logged digests and event IDs (ledger/internal/seen):
// a miss in Pebble still searches the memtables and consults each table's
// filter, about 6 µs each.

// startSeen fills the filter from the digest and event-ID indexes in the
// background; Commit adds what it writes meanwhile.
func (s *Store) startSeen() {
	s.seen = seen.New()
	s.seenStop, s.seenDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.seenDone)
		for _, prefix := range []byte{'g', 'v'} {
			it, err := s.db.NewIter(&cpebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
			if err != nil {
				return // stays not ready: every lookup goes to Pebble
			}
			n := 0
			for it.First(); it.Valid(); it.Next() {
				s.seen.Add(it.Key())
				if n++; n%4096 == 0 {
					select {
					case <-s.seenStop:
						_ = it.Close()
						return
					default:
					}
				}
			}
			if err := it.Close(); err != nil {
				return
			}
		}
		s.seen.SetReady(true)
	}()
}

// stopSeen stops the background fill (at Close).
func (s *Store) stopSeen() {
	close(s.seenStop)
	<-s.seenDone
}
