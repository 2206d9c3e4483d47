package pebble

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	cpebble "github.com/cockroachdb/pebble/v2"

	"github.com/custodyledger/custody/ledger"
)

// A device's identity is stored once, apart from its state, and a state
// written in the older form (identity inside) still reads whole and moves
// to the new form at its next write.
func TestDeviceIdentityApart(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	dev := &ledger.Device{ID: "a", Vendor: "acme-tpm", EKCertificate: []byte("ek cert"), EKPublic: []byte("ek"), IAKPublic: []byte("iak"), Custodian: "acme-tpm"}
	old := &ledger.Device{ID: "b", Vendor: "acme-tpm", EKCertificate: []byte("ek cert b"), EKPublic: []byte("ek b"), IAKPublic: []byte("iak b"), Custodian: "acme-tpm"}
	if err := s.Commit(&ledger.Commit{Devices: []*ledger.Device{dev}}); err != nil {
		t.Fatal(err)
	}
	// b as a store written before 2026-12 holds it: the whole record.
	raw, _ := json.Marshal(old)
	if err := s.db.Set(deviceKey("b"), raw, cpebble.Sync); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	defer s.Close()
	state, err := s.get(deviceKey("a"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(state, []byte("iakPublic\":\"")) {
		t.Fatalf("the state repeats the identity: %s", state)
	}
	for _, want := range []*ledger.Device{dev, old} {
		got, err := s.Device(want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.IAKPublic) != string(want.IAKPublic) || string(got.EKCertificate) != string(want.EKCertificate) || string(got.EKPublic) != string(want.EKPublic) || got.Custodian != want.Custodian {
			t.Fatalf("device %s read back as %+v", want.ID, got)
		}
	}
	moved := *old
	moved.Custodian = "orbit-odm"
	if err := s.Commit(&ledger.Commit{Devices: []*ledger.Device{&moved}}); err != nil {
		t.Fatal(err)
	}
	s.devMu.Lock()
	clear(s.devices)
	clear(s.identities)
	s.devMu.Unlock()
	got, err := s.Device("b")
	if err != nil || got.Custodian != "orbit-odm" || string(got.IAKPublic) != "iak b" {
		t.Fatalf("the older record after a write: %+v, %v", got, err)
	}
	if _, err := s.get(identityKey("b")); err != nil {
		t.Fatalf("the older record's identity was not moved apart: %v", err)
	}
}

// A store written by a newer layout is refused at Open with an error that
// names both versions; one written before the version key reads as it is
// and is marked with this version.
func TestStoreFormatVersion(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := s.get(formatKey); err != nil || string(v) != "3" {
		t.Fatalf("a new store's layout version: %q, %v", v, err)
	}
	if err := s.db.Delete(formatKey, cpebble.Sync); err != nil { // as before the version key
		t.Fatal(err)
	}
	s = reopen(t, s, dir)
	if v, err := s.get(formatKey); err != nil || string(v) != "3" {
		t.Fatalf("an older store's layout version after Open: %q, %v", v, err)
	}
	if err := s.db.Set(formatKey, []byte("4"), cpebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), "layout version 4, this custodyd reads up to 3") {
		t.Fatalf("a newer store: %v", err)
	}
	// Refused cleanly: the folder opens again once the version is one it reads.
	db, err := cpebble.Open(dir, &cpebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(formatKey, []byte("2"), cpebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
}
