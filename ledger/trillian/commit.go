package trillian

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/custodyledger/custody/ledger"
)

// Commit implements ledger.Store.
//
//  1. If Trillian lacks more than MaxLag committed leaves, wait for the
//     sender to catch up; if it does not within Timeout (Trillian down),
//     or Trillian's tree is known to differ (ErrDiverged), fail and write
//     nothing.
//  2. One MariaDB transaction, the commit point: the head row is locked
//     and must be the head c appends to, its stream position not past
//     c's if c appends entries (else ErrConflict); the entries,
//     indexes, nodes, states, rejections and the new head are written;
//     COMMIT (the server syncs its redo log: Open checked).
//  3. Hand the new leaves to the sender, which sends them to Trillian
//     at their indices beside the next commits.
//
// A crash before the COMMIT leaves nothing of c in MariaDB and nothing of
// c in Trillian; after it, c is committed and its leaves reach Trillian
// from the next writer's sender, read back from MariaDB.
func (s *Store) Commit(c *ledger.Commit) error {
	first, err := checkCommit(c)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := s.ctx()
	defer cancel()
	s.startSender()
	if err := s.waitLag(ctx); err != nil {
		return err
	}
	// The keys go into the lookup filter before the rows are written: a
	// key of a commit that fails is only a false positive (seen.go).
	s.addKeys(c.Entries)
	if err := s.write(ctx, c, first); err != nil {
		if errors.Is(err, ErrConflict) {
			s.deposed()
			return err
		}
		if !s.persisted(c) {
			return err
		}
		// The COMMIT reported an error but took effect (the connection
		// dropped after the server committed): the commit is durable.
		s.logger.Warn("trillian store: a commit reported an error but is stored", "size", c.Head.Size, "err", err)
	}
	s.committedTo(first, c.Head.Size)
	s.committedLeaves(c)
	return nil
}

// waitLag waits until Trillian lacks at most maxLag committed leaves.
func (s *Store) waitLag(ctx context.Context) error {
	for {
		s.state.Lock()
		lag, div, sendErr, progress := s.committed-s.pushed, s.diverged, s.sendErr, s.progress
		s.state.Unlock()
		if div != nil {
			return div
		}
		if lag <= s.maxLag {
			return nil
		}
		s.wake()
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("trillian store: Trillian lacks %d committed leaves (at most %d) and is not catching up (last error: %v): %w", lag, s.maxLag, sendErr, ctx.Err())
		}
	}
}

// committedLeaves records a commit's success: the new size, and its
// leaves for the sender.
func (s *Store) committedLeaves(c *ledger.Commit) {
	s.state.Lock()
	defer s.state.Unlock()
	s.committed = c.Head.Size
	if len(c.Entries) == 0 {
		return
	}
	if s.recentFrom+uint64(len(s.recent)) != c.Entries[0].Index {
		s.recent, s.recentFrom = s.recent[:0], c.Entries[0].Index
	}
	for _, e := range c.Entries {
		s.recent = append(s.recent, leaf{index: e.Index, body: bytes.Clone(e.Body)})
	}
	s.wake()
}

// checkCommit checks that c is an append (its entries' indices follow
// each other up to the new size) whose keys and hashes fit the tables.
// It returns the index of the first entry (the old size).
func checkCommit(c *ledger.Commit) (uint64, error) {
	n := uint64(len(c.Entries))
	if c.Head.Size < n {
		return 0, fmt.Errorf("trillian store: a commit of %d entries to a head of size %d", n, c.Head.Size)
	}
	first := c.Head.Size - n
	bad := func(format string, args ...any) (uint64, error) {
		return 0, fmt.Errorf("trillian store: commit: "+format, args...)
	}
	if c.Head.Size > 0 && len(c.Head.Root) != hashSize {
		return bad("a root of %d bytes", len(c.Head.Root))
	}
	key := func(what, k string) error {
		if len(k) > maxKey {
			return fmt.Errorf("trillian store: commit: a %s of %d bytes (at most %d)", what, len(k), maxKey)
		}
		return nil
	}
	for i, e := range c.Entries {
		if e.Index != first+uint64(i) {
			return bad("entry %d of the commit has index %d, want %d", i, e.Index, first+uint64(i))
		}
		if len(e.Digest) == 0 || len(e.Digest) > maxDigest {
			return bad("entry %d: a digest of %d bytes", e.Index, len(e.Digest))
		}
		for _, ev := range e.Events() {
			if len(ev.Digest) == 0 || len(ev.Digest) > maxDigest {
				return bad("entry %d: a member digest of %d bytes", e.Index, len(ev.Digest))
			}
			if err := key("event ID", ev.EventID); err != nil {
				return 0, err
			}
		}
		if err := errors.Join(key("partner name", e.Partner), key("target", e.Target)); err != nil {
			return 0, err
		}
		for dev := range e.Proofs {
			if err := key("device ID", dev); err != nil {
				return 0, err
			}
		}
	}
	for id, h := range c.Nodes {
		if len(h) != hashSize || id.Level > 255 {
			return bad("tree node (level %d, index %d) of %d bytes", id.Level, id.Index, len(h))
		}
	}
	for _, d := range c.Devices {
		if err := key("device ID", d.ID); err != nil {
			return 0, err
		}
		if d.Pending != nil {
			if err := key("recipient", d.Pending.To); err != nil {
				return 0, err
			}
		}
	}
	for _, p := range c.Partners {
		if err := key("partner name", p.Name); err != nil {
			return 0, err
		}
	}
	for _, r := range c.Rejections {
		if len(r.Digest) == 0 || len(r.Digest) > maxDigest {
			return bad("a rejection's digest of %d bytes", len(r.Digest))
		}
	}
	return first, nil
}

// write is step 2 of Commit: one transaction.
func (s *Store) write(ctx context.Context, c *ledger.Commit, first uint64) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("trillian store: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stored, storedPushed, err := s.readHead(ctx, tx, " FOR UPDATE")
	if err != nil {
		return err
	}
	// The fence: the commit appends to the stored head, and an append
	// does not come from behind the stored stream position. (A commit of
	// the head alone may move the position back: the ledger's rebase on
	// a stream that lost its tail.)
	if stored.Size != first || (len(c.Entries) > 0 && stored.StreamSeq > c.Head.StreamSeq) {
		// Another writer committed: learn how far, so that this one
		// sends Trillian what it lacks.
		s.state.Lock()
		s.committed, s.pushed = max(s.committed, stored.Size), max(s.pushed, storedPushed)
		s.state.Unlock()
		s.wake()
		return fmt.Errorf("%w: the stored head is at size %d, stream sequence %d; the commit appends at %d up to stream sequence %d",
			ErrConflict, stored.Size, stored.StreamSeq, first, c.Head.StreamSeq)
	}
	if err := writeRows(ctx, tx, c); err != nil {
		return err
	}
	if s.faults.beforeHead != nil {
		if err := s.faults.beforeHead(); err != nil {
			return err
		}
	}
	s.state.Lock()
	pushed := max(s.pushed, storedPushed)
	s.state.Unlock()
	_, err = tx.ExecContext(ctx, `UPDATE head SET size = ?, root = ?, stream_seq = ?, checkpoint = ?, trillian_size = ? WHERE id = 1`,
		c.Head.Size, nonNil(c.Head.Root), c.Head.StreamSeq, nonNil(c.Head.Checkpoint), pushed)
	if err != nil {
		return fmt.Errorf("trillian store: writing the head: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("trillian store: commit: %w", err)
	}
	return nil
}

// persisted reports whether c's head is the stored one: a COMMIT that
// reported an error may have taken effect.
func (s *Store) persisted(c *ledger.Commit) bool {
	ctx, cancel := s.ctx()
	defer cancel()
	h, _, err := s.readHead(ctx, s.db)
	return err == nil && h.Size == c.Head.Size && h.StreamSeq == c.Head.StreamSeq && bytes.Equal(h.Root, c.Head.Root)
}

// writeRows writes everything of c but the head.
func writeRows(ctx context.Context, tx *sql.Tx, c *ledger.Commit) error {
	var entries, digests, eventIDs, devIdx, manifests rowSet
	for _, e := range c.Entries {
		meta := *e
		meta.Body, meta.Envelope, meta.Manifest, meta.Proofs = nil, nil, nil, nil
		mj, err := json.Marshal(&meta)
		if err != nil {
			return err
		}
		entries.add(e.Index, ledger.LeafHash(e.Body), mj, nonNil(e.Body), nonNil(e.Envelope))
		for _, ev := range e.Events() { // a batch's logged members too
			digests.add(ev.Digest, e.Index)
			if ev.EventID != "" {
				eventIDs.add(e.Partner, ev.EventID, ev.Digest)
			}
		}
		if e.OfDevice() {
			devIdx.add(e.Target, e.Index, nil)
		}
		// A shipment is in the history of every device of its manifest,
		// a batch in that of each device of a member it logged, with the
		// device's proof.
		for dev, p := range e.Proofs {
			devIdx.add(dev, e.Index, nonNil(p))
		}
		if e.Manifest != nil {
			manifests.add(e.Index, e.Manifest)
		}
	}
	var nodes, devices, partners, rejections rowSet
	for id, h := range c.Nodes {
		nodes.add(id.Level, id.Index, h)
	}
	for _, d := range c.Devices {
		state, err := json.Marshal(d)
		if err != nil {
			return err
		}
		var to any // NULL: no pending offer
		if d.Pending != nil {
			to = d.Pending.To
		}
		devices.add(d.ID, to, state)
	}
	for _, p := range c.Partners {
		state, err := json.Marshal(p)
		if err != nil {
			return err
		}
		partners.add(p.Name, state)
	}
	for _, r := range c.Rejections {
		rec, err := json.Marshal(r)
		if err != nil {
			return err
		}
		rejections.add(r.Digest, rec)
	}
	// Later writes of a key replace earlier ones, as in Pebble; an entry
	// index is written once (the head check above makes it new).
	for _, w := range []struct {
		rows        *rowSet
		insert, dup string
	}{
		{&entries, `INSERT INTO entries (idx, leaf_hash, meta, body, envelope) VALUES `, ``},
		{&digests, `INSERT INTO digests (digest, idx) VALUES `, ` ON DUPLICATE KEY UPDATE idx = VALUES(idx)`},
		{&eventIDs, `INSERT INTO event_ids (partner, event_id, digest) VALUES `, ` ON DUPLICATE KEY UPDATE digest = VALUES(digest)`},
		// A device's own entry (no proof) and a proof at one index: the proof stays.
		{&devIdx, `INSERT INTO device_entries (device, idx, proof) VALUES `, ` ON DUPLICATE KEY UPDATE proof = COALESCE(VALUES(proof), proof)`},
		{&manifests, `INSERT INTO manifests (idx, manifest) VALUES `, ` ON DUPLICATE KEY UPDATE manifest = VALUES(manifest)`},
		{&nodes, `INSERT INTO nodes (level, idx, hash) VALUES `, ` ON DUPLICATE KEY UPDATE hash = VALUES(hash)`},
		{&devices, `INSERT INTO devices (id, pending_to, state) VALUES `, ` ON DUPLICATE KEY UPDATE pending_to = VALUES(pending_to), state = VALUES(state)`},
		{&partners, `INSERT INTO partners (name, state) VALUES `, ` ON DUPLICATE KEY UPDATE state = VALUES(state)`},
		{&rejections, `INSERT INTO rejections (digest, record) VALUES `, ` ON DUPLICATE KEY UPDATE record = VALUES(record)`},
	} {
		if err := w.rows.exec(ctx, tx, w.insert, w.dup); err != nil {
			return err
		}
	}
	return nil
}

// rowSet gathers the rows of one multi-row INSERT.
type rowSet struct{ rows [][]any }

func (r *rowSet) add(cols ...any) { r.rows = append(r.rows, cols) }

// Bounds of one INSERT statement. go-sql-driver/mysql builds a
// statement's parameters into its connection's buffer, growing it by
// appending; it keeps a grown buffer for the next statement only up to
// 256 KiB. Statements under that size grow each connection's buffer once;
// larger ones regrew it for every statement, which took a fifth to a
// third of the sequencer's CPU (make bench-cluster's profiles).
const (
	maxStatementRows  = 256
	maxStatementBytes = 192 << 10
)

// exec writes the rows with as few statements as the bounds allow.
func (r *rowSet) exec(ctx context.Context, tx *sql.Tx, insert, dup string) error {
	if len(r.rows) == 0 {
		return nil
	}
	table := strings.Fields(insert)[2]
	var q strings.Builder
	var args []any
	n, size := 0, 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		q.WriteString(dup)
		_, err := tx.ExecContext(ctx, q.String(), args...)
		q.Reset()
		args, n, size = args[:0], 0, 0
		if err != nil {
			return fmt.Errorf("trillian store: writing %s: %w", table, err)
		}
		return nil
	}
	for _, row := range r.rows {
		rowSize := 8 * len(row)
		for _, c := range row {
			switch v := c.(type) {
			case []byte:
				rowSize += len(v)
			case string:
				rowSize += len(v)
			}
		}
		if n > 0 && (n == maxStatementRows || size+rowSize > maxStatementBytes) {
			if err := flush(); err != nil {
				return err
			}
		}
		if n == 0 {
			q.WriteString(insert)
		} else {
			q.WriteByte(',')
		}
		q.WriteByte('(')
		for i := range row {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteByte('?')
		}
		q.WriteByte(')')
		args = append(args, row...)
		n++
		size += rowSize
	}
	return flush()
}

// nonNil makes a nil byte slice an empty value (the columns are NOT NULL).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
