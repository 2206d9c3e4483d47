package pebble_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
)

// TestCommitReopen commits entries and tree nodes, reopens the store and
// reads them back through every index.
func TestCommitReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rf := compact.RangeFactory{Hash: ledger.Hasher.HashChildren}
	rng := rf.NewEmptyRange(0)
	nodes := map[compact.NodeID][]byte{}
	var entries []*ledger.Entry
	for i := range uint64(5) {
		e := &ledger.Entry{
			Index: i, Digest: bytes.Repeat([]byte{byte(i + 1)}, 32), Kind: "stage.recorded", Partner: "orbit-odm",
			Target: string(bytes.Repeat([]byte{'a'}, 64)), Status: "accepted", IntegratedTime: 1700000000 + int64(i),
			StreamSeq: 10 + i, Body: []byte(`{"kind":"hashedrekord","n":` + string(rune('0'+i)) + `}`),
			Envelope: []byte(`{"payloadType":"x","payload":"e30=","signatures":[]}`),
		}
		if i == 3 {
			e.Envelope = nil // an empty envelope survives too
		}
		if i != 4 { // entry 4 is as a store written before the event-ID index holds it
			e.EventID = fmt.Sprintf("%032x", i)
		}
		entries = append(entries, e)
		if err := rng.Append(ledger.LeafHash(e.Body), func(id compact.NodeID, h []byte) { nodes[id] = h }); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := rng.GetRootHash(nil)
	if err := s.Commit(&ledger.Commit{Head: ledger.Head{Size: 5, Root: root, StreamSeq: 14}, Entries: entries, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = pebble.Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := s.Head()
	if err != nil || h.Size != 5 || !bytes.Equal(h.Root, root) || h.StreamSeq != 14 {
		t.Fatalf("head %+v %v", h, err)
	}
	for _, want := range entries {
		got, err := s.Entry(want.Index)
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != want.Kind || got.IntegratedTime != want.IntegratedTime || !bytes.Equal(got.Body, want.Body) ||
			!bytes.Equal(got.Envelope, want.Envelope) || !bytes.Equal(got.Digest, want.Digest) || got.StreamSeq != want.StreamSeq {
			t.Fatalf("entry %d: got %+v, want %+v", want.Index, got, want)
		}
		if i, err := s.EntryIndexByLeafHash(ledger.LeafHash(want.Body)); err != nil || i != want.Index {
			t.Fatalf("by leaf hash: %d %v", i, err)
		}
		if i, err := s.EntryIndexByDigest(want.Digest); err != nil || i != want.Index {
			t.Fatalf("by digest: %d %v", i, err)
		}
		d, err := s.EventDigestByID(want.Partner, fmt.Sprintf("%032x", want.Index))
		switch {
		case want.EventID == "" && !errors.Is(err, ledger.ErrNotFound):
			t.Fatalf("entry %d without an event ID: %x %v, want not found", want.Index, d, err)
		case want.EventID != "" && (err != nil || !bytes.Equal(d, want.Digest) || got.EventID != want.EventID):
			t.Fatalf("by event ID: %x %v (entry's ID %q)", d, err, got.EventID)
		}
	}
	if _, err := s.EventDigestByID("nova-oem", fmt.Sprintf("%032x", 0)); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("another partner's event ID: %v", err)
	}
	p, err := ledger.ProveInclusion(s, 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.VerifyInclusion(entries[3].Body, 3, 5, p, root); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Entry(5); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
	if _, err := s.Nodes([]compact.NodeID{compact.NewNodeID(0, 99)}); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("missing node: %v", err)
	}
}

// Device states come back as committed, whether from the decoded-state
// cache or from disk, and a caller's copy is its own: changing it changes
// nothing the store holds. Readers running alongside commits never see a
// state older than the last commit that finished before they read.
func TestDeviceStates(t *testing.T) {
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := string(bytes.Repeat([]byte{'b'}, 64))
	dev := &ledger.Device{
		ID: id, Vendor: "acme-tpm", EKCertificate: []byte("ek cert"), EKPublic: []byte("ek"), IAKPublic: []byte("iak"),
		Custodian: "orbit-odm", Stages: map[string]uint64{"firmware": 3}, ExpectedPCRs: map[string]string{"0": "ab"},
		LastQuote: &ledger.QuoteCounters{Clock: 7}, Pending: &ledger.Offer{To: "blue-operator", Digest: "d1", From: "orbit-odm"},
	}
	commit := func(d *ledger.Device, size uint64) {
		t.Helper()
		if err := s.Commit(&ledger.Commit{Head: ledger.Head{Size: size}, Devices: []*ledger.Device{d}}); err != nil {
			t.Fatal(err)
		}
	}
	commit(dev, 1)
	dev.Custodian = "changed after commit" // the store kept its own copy
	got, err := s.Device(id)
	if err != nil || got.Custodian != "orbit-odm" {
		t.Fatalf("after commit: %+v %v", got, err)
	}
	got.Stages["tampered"] = 1
	got.EKCertificate[0] = 'X'
	got.LastQuote.Clock = 99
	got.Pending.To = "grey-market"
	again, _ := s.Device(id)
	if _, ok := again.Stages["tampered"]; ok || again.EKCertificate[0] != 'e' || again.LastQuote.Clock != 7 || again.Pending.To != "blue-operator" {
		t.Fatalf("a caller's change reached the store: %+v", again)
	}
	// Readers alongside commits: each commit raises Clock; a reader that
	// starts after commit n finished sees at least n.
	var done atomic.Uint64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for done.Load() < 200 {
				floor := done.Load()
				d, err := s.Device(id)
				if err != nil {
					t.Error(err)
					return
				}
				if d.LastQuote.Clock < floor {
					t.Errorf("read clock %d after commit %d finished", d.LastQuote.Clock, floor)
					return
				}
			}
		})
	}
	for n := uint64(8); n <= 200; n++ {
		next := again.Clone()
		next.LastQuote.Clock = n
		next.Pending = nil
		commit(next, n)
		done.Store(n)
	}
	wg.Wait()
	// The pending-offer index followed the device's state.
	if offers, err := s.PendingOffers("blue-operator"); err != nil || len(offers) != 0 {
		t.Fatalf("pending offers after the offer was resolved: %v %v", offers, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = pebble.Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if d, err := s.Device(id); err != nil || d.LastQuote.Clock != 200 || d.Pending != nil || d.Custodian != "orbit-odm" {
		t.Fatalf("after reopen: %+v %v", d, err)
	}
}
