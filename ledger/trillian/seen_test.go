package trillian_test

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/custodyledger/custody/internal/testservers"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/storetest"
	"github.com/custodyledger/custody/ledger/trillian"
)

// Two writers on one database, as sequencer candidates: what one commits,
// the other finds by digest and event ID, whether its lookup filter has
// caught up or not; after a head read (a takeover) the filter holds the
// other's entries and answers misses itself; a digest never logged is
// not found.
func TestLookupFilterTwoWriters(t *testing.T) {
	tr := testservers.StartTrillian(t)
	cfg := newConfig(t, tr)
	log := storetest.NewLog(t)
	a := open(t, cfg)
	defer a.Close()
	waitReady := func(s *trillian.Store, what string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !s.FilterCurrent(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the lookup filter did not become current", what)
			}
			log.Commit(t, s, log.Build(t, 1)) // a writer's filter counts from its commits
		}
	}
	log.Commit(t, a, log.Build(t, 64))
	waitReady(a, "a, the writer")
	b := open(t, cfg) // a standby: filled in the background, never the writer yet
	defer b.Close()
	found := func(s ledger.Store, who string, c *ledger.Commit) {
		t.Helper()
		for _, e := range c.Entries {
			if i, err := s.EntryIndexByDigest(e.Digest); err != nil || i != e.Index {
				t.Fatalf("%s: digest of entry %d: %d, %v", who, e.Index, i, err)
			}
			if e.EventID != "" {
				if _, err := s.EventDigestByID(e.Partner, e.EventID); err != nil {
					t.Fatalf("%s: event ID of entry %d: %v", who, e.Index, err)
				}
			}
		}
	}
	// a commits more: a's filter stays current; b, a standby, asks
	// MariaDB and finds them.
	c1 := log.Build(t, 64)
	log.Commit(t, a, c1)
	if !a.FilterCurrent() {
		t.Fatal("a's own commit left its filter behind")
	}
	found(a, "a", c1)
	if b.FilterCurrent() {
		t.Fatal("a standby's filter answers lookups")
	}
	found(b, "b, standing by", c1)
	// b takes over: it reads the head (its filter catches up with a's
	// entries) and commits; from then on its filter answers.
	if _, err := b.Head(); err != nil {
		t.Fatal(err)
	}
	c2 := log.Build(t, 64)
	log.Commit(t, b, c2)
	if !b.FilterCurrent() {
		t.Fatal("the new writer's filter is not current after its first commit")
	}
	found(b, "b, the writer, a's entries", c1)
	found(b, "b, the writer, its own", c2)
	// a, deposed, learns of b's commit at its next head read and asks
	// MariaDB again.
	if _, err := a.Head(); err != nil {
		t.Fatal(err)
	}
	if a.FilterCurrent() {
		t.Fatal("a deposed writer's filter still answers")
	}
	found(a, "a, deposed", c2)
	for _, s := range []ledger.Store{a, b} {
		d := make([]byte, 32)
		_, _ = rand.Read(d)
		if _, err := s.EntryIndexByDigest(d); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("a digest never logged: %v", err)
		}
		if _, err := s.EventDigestByID("orbit-odm", "never-logged"); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("an event ID never logged: %v", err)
		}
	}
}
