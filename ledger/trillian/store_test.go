package trillian_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/internal/testservers"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/storetest"
	"github.com/custodyledger/custody/ledger/trillian"
)

// TestConformance runs the ledger.Store conformance suite on Trillian and
// MariaDB (real servers: internal/testservers), and after each store's
// tests checks that Trillian's signed root is Custody's.
func TestConformance(t *testing.T) {
	tr := testservers.StartTrillian(t)
	storetest.Run(t, func(t *testing.T) (ledger.Store, func() (ledger.Store, error)) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		// Runs after the suite closed its stores (cleanups run last
		// first).
		t.Cleanup(func() {
			if t.Failed() {
				return
			}
			s, err := trillian.Open(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.SyncTrillian(context.Background()); err != nil {
				t.Fatal(err)
			}
			waitTrillian(t, s)
		})
		return s, func() (ledger.Store, error) { return trillian.Open(context.Background(), cfg) }
	})
}

// newConfig makes a new database and tree for one store.
func newConfig(t testing.TB, tr *testservers.Trillian) trillian.Config {
	t.Helper()
	cfg, _ := newConfigDB(t, tr)
	return cfg
}

// newConfigDB is newConfig, and the database's name.
func newConfigDB(t testing.TB, tr *testservers.Trillian) (trillian.Config, string) {
	t.Helper()
	db := tr.DB.NewDatabase(t, "custody")
	return trillian.Config{DSN: tr.DB.DSN(db), Conn: tr.Conn, TreeID: tr.NewTree(t), Timeout: 20 * time.Second}, db
}

func open(t testing.TB, cfg trillian.Config) *trillian.Store {
	t.Helper()
	s, err := trillian.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// waitTrillian waits until Trillian has integrated every committed leaf
// and checks that its root is Custody's root.
func waitTrillian(t testing.TB, s *trillian.Store) {
	t.Helper()
	h, err := s.Head()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.WaitTrillian(ctx, h.Size); err != nil {
		t.Fatal(err)
	}
	size, root, err := s.TrillianRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if size != h.Size || (size > 0 && !bytes.Equal(root, h.Root)) {
		t.Fatalf("Trillian's root: size %d, %x; Custody's head: size %d, %x", size, root, h.Size, h.Root)
	}
}

// sequenced is how many leaves Trillian's tables hold for tree (integrated
// or not).
func sequenced(t testing.TB, tr *testservers.Trillian, tree int64) uint64 {
	t.Helper()
	var n uint64
	err := tr.DB.Root().QueryRow("SELECT COUNT(*) FROM `"+tr.Database+"`.SequencedLeafData WHERE TreeId = ?", tree).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStore holds the Trillian backend's own tests, on one set of servers.
func TestStore(t *testing.T) {
	tr := testservers.StartTrillian(t)

	// The Trillian root equals Custody's as the log grows, commit by
	// commit; an empty log's root too.
	t.Run("TrillianRoot", func(t *testing.T) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		waitTrillian(t, s)
		log := storetest.NewLog(t)
		for _, n := range []int{1, 2, 7, 16, 33, 1} {
			c := log.Build(t, n)
			log.Commit(t, s, c)
			waitTrillian(t, s)
		}
		if n := sequenced(t, tr, cfg.TreeID); n != log.Head().Size {
			t.Fatalf("Trillian holds %d leaves, Custody committed %d", n, log.Head().Size)
		}
		log.Check(t, s)
		// Close sends what Trillian lacks before it returns.
		c := log.Build(t, 40)
		log.Commit(t, s, c)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if n := sequenced(t, tr, cfg.TreeID); n != log.Head().Size {
			t.Fatalf("after Close, Trillian holds %d leaves, Custody committed %d", n, log.Head().Size)
		}
	})

	// A commit that fails inside its transaction leaves nothing: not in
	// MariaDB, not in Trillian; the same commit then succeeds.
	t.Run("FailedCommitLeavesNothing", func(t *testing.T) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		defer s.Close()
		log := storetest.NewLog(t)
		c := log.Build(t, 5)
		log.Commit(t, s, c)
		if err := s.SyncTrillian(context.Background()); err != nil {
			t.Fatal(err)
		}
		c = log.Build(t, 9)
		boom := errors.New("injected: the database went away")
		s.FailBeforeHead(boom)
		if err := s.Commit(c); !errors.Is(err, boom) {
			t.Fatalf("Commit with a fault: %v, want the fault", err)
		}
		s.FailBeforeHead(nil)
		log.Check(t, s) // the state before the failed commit, whole
		for _, e := range c.Entries {
			if _, err := s.Entry(e.Index); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("entry %d of the failed commit: %v, want ErrNotFound", e.Index, err)
			}
			if _, err := s.EntryIndexByDigest(e.Digest); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("digest of entry %d of the failed commit: %v, want ErrNotFound", e.Index, err)
			}
		}
		if n := sequenced(t, tr, cfg.TreeID); n != 5 {
			t.Fatalf("Trillian holds %d leaves after a failed commit, want the 5 committed", n)
		}
		// After a restart too.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = open(t, cfg)
		defer s.Close()
		log.Check(t, s)
		log.Commit(t, s, c)
		log.Check(t, s)
		waitTrillian(t, s)
	})

	// A crash after the transaction commits and before the leaves reach
	// Trillian: the commit is durable; a standby that opens the store
	// sends the leaves with its first commit, and Trillian's root is
	// Custody's.
	t.Run("CrashBeforeTrillian", func(t *testing.T) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		log := storetest.NewLog(t)
		c := log.Build(t, 4)
		log.Commit(t, s, c)
		if err := s.SyncTrillian(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.SkipPush(true)
		c = log.Build(t, 6)
		log.Commit(t, s, c)
		if n := sequenced(t, tr, cfg.TreeID); n != 4 {
			t.Fatalf("Trillian holds %d leaves, want the 4 sent before the crash", n)
		}
		s.Close() // the process dies

		standby := open(t, cfg)
		defer standby.Close()
		log.Check(t, standby)
		c = log.Build(t, 3)
		log.Commit(t, standby, c)
		waitTrillian(t, standby) // its sender sent the dead writer's leaves and its own
		if n := sequenced(t, tr, cfg.TreeID); n != log.Head().Size {
			t.Fatalf("Trillian holds %d leaves after the standby's commit, want %d", n, log.Head().Size)
		}
		log.Check(t, standby)

		// SyncTrillian alone does the same for a standby with nothing
		// to commit.
		standby.SkipPush(true)
		c = log.Build(t, 2)
		log.Commit(t, standby, c)
		other := open(t, cfg)
		defer other.Close()
		if err := other.SyncTrillian(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitTrillian(t, other)
	})

	// Leaves sent again (a crash between sending and recording it) are
	// recognised at their indices.
	t.Run("ResendIsIdempotent", func(t *testing.T) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		defer s.Close()
		log := storetest.NewLog(t)
		for range 3 {
			c := log.Build(t, 10)
			log.Commit(t, s, c)
		}
		waitTrillian(t, s)
		s.ForgetPushed()
		if err := s.SyncTrillian(context.Background()); err != nil {
			t.Fatalf("sending the committed leaves again: %v", err)
		}
		if got := s.Pushed(); got != 30 {
			t.Fatalf("after sending again, the store knows Trillian holds %d leaves, want 30", got)
		}
		if n := sequenced(t, tr, cfg.TreeID); n != 30 {
			t.Fatalf("Trillian holds %d leaves, want 30", n)
		}
		waitTrillian(t, s)
	})

	// Another leaf at a taken index is ErrDiverged; so is a second
	// database written into the same tree, as soon as it commits.
	t.Run("Divergence", func(t *testing.T) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		defer s.Close()
		log := storetest.NewLog(t)
		c := log.Build(t, 8)
		log.Commit(t, s, c)
		ctx := context.Background()
		if err := s.AddLeaf(ctx, 3, c.Entries[3].Body); err != nil {
			t.Fatalf("the committed leaf again at its index: %v", err)
		}
		if err := s.AddLeaf(ctx, 3, []byte(`{"another":"leaf"}`)); !errors.Is(err, trillian.ErrDiverged) {
			t.Fatalf("another leaf at a taken index: %v, want ErrDiverged", err)
		}
		waitTrillian(t, s)

		// A second database bound to the same tree commits another log.
		cfg2 := cfg
		cfg2.DSN = tr.DB.DSN(tr.DB.NewDatabase(t, "custody"))
		s2 := open(t, cfg2)
		defer s2.Close()
		other := storetest.NewLog(t)
		c2 := other.Build(t, 8)
		if err := s2.Commit(c2); err != nil { // durable in its database; Trillian refuses the leaves
			t.Fatal(err)
		}
		other.Committed(c2)
		if _, err := s2.CheckTrillian(ctx); !errors.Is(err, trillian.ErrDiverged) {
			t.Fatalf("CheckTrillian of a database whose tree holds another log: %v, want ErrDiverged", err)
		}
		if err := s2.SyncTrillian(ctx); !errors.Is(err, trillian.ErrDiverged) {
			t.Fatalf("sending its leaves to a tree that holds others: %v, want ErrDiverged", err)
		}
		if err := s2.Commit(other.Build(t, 1)); !errors.Is(err, trillian.ErrDiverged) {
			t.Fatalf("a commit once Trillian's tree is known to differ: %v, want ErrDiverged", err)
		}
		if h, _ := s2.Head(); h.Size != 8 {
			t.Fatalf("the refused commit moved the head to %d", h.Size)
		}
		if _, err := s.CheckTrillian(ctx); err != nil {
			t.Fatalf("the tree's own database: %v", err)
		}
	})

	// Two writers on one store (a deposed sequencer still running): the
	// one whose head is stale gets ErrConflict and writes nothing.
	t.Run("SecondWriterConflicts", func(t *testing.T) {
		cfg := newConfig(t, tr)
		a := open(t, cfg)
		defer a.Close()
		b := open(t, cfg)
		defer b.Close()
		logA := storetest.NewLog(t)
		logB := storetest.NewLog(t)
		ca := logA.Build(t, 4)
		cb := logB.Build(t, 4)
		logA.Commit(t, a, ca)
		if err := b.Commit(cb); !errors.Is(err, trillian.ErrConflict) {
			t.Fatalf("a commit on a stale head: %v, want ErrConflict", err)
		}
		logA.Check(t, b)
		// The old writer's next commit on the new head works, and sends
		// nothing twice.
		ca = logA.Build(t, 2)
		logA.Commit(t, b, ca)
		logA.Check(t, a)
		waitTrillian(t, a)
	})

	// Trillian's log server down: commits go on while Trillian lacks at
	// most MaxLag leaves; then a commit fails whole until Trillian is
	// back; then Trillian catches up.
	t.Run("TrillianDown", func(t *testing.T) {
		cfg := newConfig(t, tr)
		cfg.Timeout, cfg.MaxLag = 2*time.Second, 3
		s := open(t, cfg)
		defer s.Close()
		log := storetest.NewLog(t)
		c := log.Build(t, 3)
		log.Commit(t, s, c)
		if err := s.SyncTrillian(context.Background()); err != nil {
			t.Fatal(err)
		}
		tr.KillServer()
		c = log.Build(t, 4)
		if err := s.Commit(c); err != nil {
			t.Fatalf("a commit while Trillian is down: %v (it is durable in MariaDB)", err)
		}
		log.Committed(c)
		if got := s.Pushed(); got != 3 {
			t.Fatalf("the store believes Trillian holds %d leaves, want 3", got)
		}
		c = log.Build(t, 2)
		if err := s.Commit(c); err == nil {
			t.Fatal("a commit while Trillian lacks more than MaxLag committed leaves and is down succeeded")
		}
		log.Check(t, s) // nothing of it
		tr.RestartServer(t)
		log.Commit(t, s, c)
		log.Check(t, s)
		waitTrillian(t, s)
	})

	// Rows that are not what the store wrote are errors, not panics or
	// wrong answers.
	t.Run("CorruptRows", func(t *testing.T) {
		cfg, db := newConfigDB(t, tr)
		s := open(t, cfg)
		defer s.Close()
		log := storetest.NewLog(t)
		c := log.Build(t, 8)
		log.Commit(t, s, c)
		q := func(query string, args ...any) {
			t.Helper()
			tr.DB.Exec(t, strings.ReplaceAll(query, "DB.", "`"+db+"`."), args...)
		}
		q("UPDATE DB.entries SET body = CONCAT(body, 'x') WHERE idx = 1")
		q("UPDATE DB.entries SET meta = '{\"index\":7}' WHERE idx = 2")
		q("UPDATE DB.entries SET meta = 'not json' WHERE idx = 3")
		dev := c.Devices[0].ID
		q("UPDATE DB.devices SET state = '{\"id\":\"another\"}' WHERE id = ?", dev)
		for i := uint64(1); i <= 3; i++ {
			if e, err := s.Entry(i); !errors.Is(err, trillian.ErrCorrupt) {
				t.Fatalf("a corrupt entry %d: %+v, %v; want ErrCorrupt", i, e, err)
			}
		}
		if _, err := s.Entry(0); err != nil {
			t.Fatalf("an intact entry beside corrupt ones: %v", err)
		}
		if d, err := s.Device(dev); !errors.Is(err, trillian.ErrCorrupt) {
			t.Fatalf("a device row holding another device: %+v, %v; want ErrCorrupt", d, err)
		}
		q("UPDATE DB.head SET root = 'short'")
		if _, err := s.Head(); !errors.Is(err, trillian.ErrCorrupt) {
			t.Fatalf("a head with a root of 5 bytes: %v, want ErrCorrupt", err)
		}
		if err := s.SyncTrillian(context.Background()); err == nil {
			t.Fatal("SyncTrillian read a corrupt head")
		}
	})

	// Open refuses what it cannot write to faithfully.
	t.Run("OpenRefuses", func(t *testing.T) {
		cfg := newConfig(t, tr)
		s := open(t, cfg)
		s.Close()
		other := cfg
		other.TreeID = tr.NewTree(t)
		if _, err := trillian.Open(context.Background(), other); err == nil {
			t.Fatal("opened a database bound to another tree")
		}
		other.TreeID = 1 << 40
		if _, err := trillian.Open(context.Background(), other); err == nil {
			t.Fatal("opened with a tree that does not exist")
		}
		tr.DB.Exec(t, "SET GLOBAL innodb_flush_log_at_trx_commit = 2")
		_, err := trillian.Open(context.Background(), cfg)
		tr.DB.Exec(t, "SET GLOBAL innodb_flush_log_at_trx_commit = 1")
		if !errors.Is(err, trillian.ErrNotDurable) {
			t.Fatalf("Open on a server that does not sync at commit: %v, want ErrNotDurable", err)
		}
		s = open(t, cfg)
		s.Close()
	})
}
