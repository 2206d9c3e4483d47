package pebble

import (
	"bytes"
	"encoding/json"
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
