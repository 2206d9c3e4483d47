package trillian

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/custodyledger/custody/ledger"
)

// The store's filter of logged digests and event IDs (ledger/internal/seen)
// answers the two lookups every new event makes, which almost always miss,
// without a query to MariaDB: each was a round trip and a primary-key
// search on the database machine.
//
// Several Stores write one database (sequencer candidates), so the filter
// answers only for the writer, and only as far as it knows the log: it
// holds the keys of entries [0, seenSize), and a lookup uses it only while
// this Store is the writer (its last commit succeeded and no head read
// has shown another's commit since) and seenSize is at least knownSize,
// the largest committed size it has read or written. Entries another
// writer committed are caught up from their stored metadata when this
// Store reads the head (a takeover's loadHead, a standby's reads), so a
// new writer's filter is current from its first commit. A standby, or a
// writer deposed by another's commit, asks MariaDB. A writer whose filter
// lagged could not log a duplicate either: its commit would not extend
// the stored head (ErrConflict).

// maxCatchUp bounds the entries a head read catches up in the filter; past
// it, lookups go to MariaDB until the store is opened again.
const maxCatchUp = 1 << 20

func digestKey(d []byte) []byte { return append([]byte{'d'}, d...) }

func eventIDKey(partner, id string) []byte {
	return append(append(append([]byte{'e'}, partner...), 0), id...)
}

// absent reports whether k is certainly not logged (false: maybe).
func (s *Store) absent(k []byte) bool {
	s.seenMu.Lock()
	current := s.writer && s.seenSize >= s.knownSize
	s.seenMu.Unlock()
	return current && s.seen.Absent(k)
}

// addKeys adds the keys of entries to the filter.
func (s *Store) addKeys(entries []*ledger.Entry) {
	for _, e := range entries {
		for _, ev := range e.Events() {
			s.seen.Add(digestKey(ev.Digest))
			if ev.EventID != "" {
				s.seen.Add(eventIDKey(e.Partner, ev.EventID))
			}
		}
	}
}

// committedTo notes a commit by this Store from size first to size: it is
// the writer.
func (s *Store) committedTo(first, size uint64) {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	if s.seen.Ready() && s.seenSize == first {
		s.seenSize = size
	}
	s.knownSize = max(s.knownSize, size)
	s.writer = true
}

// deposed notes that another writer committed (ErrConflict).
func (s *Store) deposed() {
	s.seenMu.Lock()
	s.writer = false
	s.seenMu.Unlock()
}

// headRead notes a committed size read from the database, and catches the
// filter up to it.
func (s *Store) headRead(ctx context.Context, size uint64) {
	s.seenMu.Lock()
	if size > s.knownSize {
		s.writer = false // another writer's commit
		s.knownSize = size
	}
	from := s.seenSize
	s.seenMu.Unlock()
	if !s.seen.Ready() || from >= size || size-from > maxCatchUp {
		return
	}
	s.catchMu.Lock()
	defer s.catchMu.Unlock()
	if err := s.catchUp(ctx, from, size); err != nil {
		s.logger.Warn("trillian store: the lookup filter could not catch up; lookups go to MariaDB", "from", from, "to", size, "err", err)
	}
}

// catchUp adds the keys of the entries [from, to) to the filter, and moves
// seenSize to `to` if nothing moved it meanwhile.
func (s *Store) catchUp(ctx context.Context, from, to uint64) error {
	rows, err := s.db.QueryContext(ctx, `SELECT meta FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx`, from, to)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := from
	for rows.Next() {
		var meta []byte
		if err := rows.Scan(&meta); err != nil {
			return err
		}
		var e ledger.Entry
		if err := json.Unmarshal(meta, &e); err != nil {
			return fmt.Errorf("%w: entry %d's metadata: %v", ErrCorrupt, n, err)
		}
		s.addKeys([]*ledger.Entry{&e})
		n++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if n != to {
		return fmt.Errorf("%w: entries %d to %d hold %d rows", ErrCorrupt, from, to, n-from)
	}
	s.seenMu.Lock()
	if s.seenSize == from {
		s.seenSize = to
	}
	s.seenMu.Unlock()
	return nil
}

// fillSeen fills the filter from the digest and event-ID indexes, in the
// background from Open, then catches up what was committed meanwhile with
// the commits held, and marks it ready. If anything fails, the filter
// stays not ready: every lookup goes to MariaDB.
func (s *Store) fillSeen() {
	defer close(s.seenDone)
	ctx := s.base
	h, _, err := s.readHead(ctx, s.db)
	if err != nil {
		return
	}
	scan := func(q string, key func(a, b []byte) []byte, cols int) error {
		rows, err := s.db.QueryContext(ctx, q)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a, b []byte
			dest := []any{&a}
			if cols == 2 {
				dest = append(dest, &b)
			}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			s.seen.Add(key(a, b))
		}
		return rows.Err()
	}
	if err := scan(`SELECT digest FROM digests`, func(a, _ []byte) []byte { return digestKey(a) }, 1); err != nil {
		s.logger.Warn("trillian store: filling the lookup filter", "err", err)
		return
	}
	if err := scan(`SELECT partner, event_id FROM event_ids`, func(a, b []byte) []byte { return eventIDKey(string(a), string(b)) }, 2); err != nil {
		s.logger.Warn("trillian store: filling the lookup filter", "err", err)
		return
	}
	// Commits by this Store since h added their own keys; other writers'
	// are caught up from the head as it is now.
	s.mu.Lock()
	defer s.mu.Unlock()
	now, _, err := s.readHead(ctx, s.db)
	if err != nil {
		return
	}
	s.seenMu.Lock()
	s.seenSize = h.Size
	s.knownSize = max(s.knownSize, now.Size)
	s.seenMu.Unlock()
	if now.Size > h.Size {
		s.catchMu.Lock()
		err = s.catchUp(ctx, h.Size, now.Size)
		s.catchMu.Unlock()
		if err != nil {
			s.logger.Warn("trillian store: filling the lookup filter", "err", err)
			return
		}
	}
	s.seen.SetReady(true)
}
