package pebble

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// After a reopen the filter is filled from the store: every logged digest
// and event ID (a batch's members' too) is found, and a new one is not.
func TestSeenAfterReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	member := make([]byte, 32)
	_, _ = rand.Read(member)
	e := &ledger.Entry{
		Index: 0, Digest: make([]byte, 32), Kind: events.KindBatchSigned, Partner: "orbit-odm", Target: "batch-b1",
		Status: events.StatusAccepted, Body: []byte(`{}`), EventID: "batch-id",
		Members: []events.MemberVerdict{{Digest: hex.EncodeToString(member), Target: "x", EventID: "member-id", Status: events.StatusAccepted}},
	}
	if err := s.Commit(&ledger.Commit{Head: ledger.Head{Size: 1}, Entries: []*ledger.Entry{e}}); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	defer s.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !s.seen.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("the filter was not filled")
		}
		time.Sleep(time.Millisecond)
	}
	for _, d := range [][]byte{e.Digest, member} {
		if i, err := s.EntryIndexByDigest(d); err != nil || i != 0 {
			t.Fatalf("digest %x: %d, %v", d, i, err)
		}
	}
	for _, id := range []string{"batch-id", "member-id"} {
		if _, err := s.EventDigestByID("orbit-odm", id); err != nil {
			t.Fatalf("event ID %s: %v", id, err)
		}
	}
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	if _, err := s.EntryIndexByDigest(other); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("a new digest: %v", err)
	}
	if _, err := s.EventDigestByID("orbit-odm", "new-id"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("a new event ID: %v", err)
	}
}

// reopen closes s and opens the store in dir again.
func reopen(t *testing.T, s *Store, dir string) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
