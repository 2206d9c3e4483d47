package ledger

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// BundleMediaType names the offline provenance bundle format, version 1.
const BundleMediaType = "application/vnd.custodyledger.provenance.v1+json"

// MaxBundleSize bounds a bundle read for verification.
const MaxBundleSize = 64 << 20

// Bundle is a device's provenance packaged for offline verification: every
// entry about the device, with its envelope and an inclusion proof, against
// one signed checkpoint. Anyone holding the log's public key can verify it
// without reaching the ledger (VerifyBundle).
//
// A bundle proves that each of its entries is in the log the checkpoint
// commits to, and what each envelope says and who signed it. It does not
// prove that the log holds no other entry about the device (the ledger's
// device index is not committed to by the tree); compare its checkpoint
// with a later one from the ledger or a witness (consistency proof), and
// ask the ledger for entries after it, to see what came later.
type Bundle struct {
	MediaType string `json:"mediaType"`
	// Device is the device ID the bundle is about.
	Device string `json:"device"`
	// LogID is the hex SHA-256 of the log's public key (PKIX DER): which
	// key the checkpoint must verify with.
	LogID      string      `json:"logID"`
	Provenance *Provenance `json:"provenance"`
}

// VerifiedBundle is what VerifyBundle proved.
type VerifiedBundle struct {
	Device     string
	Checkpoint *Checkpoint
	// Entries are verified: included under Checkpoint, each envelope signed
	// by the key in its leaf, each about Device, kind and partner as the
	// envelope says. Their Status, Code and Reason (accepted, or logged as
	// evidence of a broken rule) are the ledger's verdict, not in the leaf:
	// an equivocation is recognisable from the envelopes themselves (two
	// offers with no acceptance between them).
	Entries []VerifiedEntry
	// ClaimedState is the ledger's custody state of the device when the
	// bundle was made. It is derived by the ledger's rules from the log and
	// is NOT verified offline.
	ClaimedState *Device
}

// LogIDOf is the log ID of a checkpoint key: hex SHA-256 of its PKIX DER.
func LogIDOf(pub *ecdsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// NewBundle packages a device's provenance, after verifying it with the
// log's public key: a bundle that does not verify is never written.
func NewBundle(device string, p *Provenance, logKey *ecdsa.PublicKey) (*Bundle, error) {
	id, err := LogIDOf(logKey)
	if err != nil {
		return nil, err
	}
	if p.Next != nil {
		return nil, errors.New("bundle: a bundle holds a device's whole history, not a page of it")
	}
	b := &Bundle{MediaType: BundleMediaType, Device: device, LogID: id, Provenance: p}
	if _, err := b.verify(logKey); err != nil {
		return nil, err
	}
	return b, nil
}

// VerifyBundle parses a bundle and verifies it offline with the log's
// public key: the checkpoint's signature, every entry's inclusion proof,
// that each leaf commits to its envelope and each envelope's signature by
// the key in the leaf, that every entry is about the bundle's device, in
// log order without repeats. Only the returned values are trusted.
func VerifyBundle(data []byte, logKey *ecdsa.PublicKey) (*VerifiedBundle, error) {
	if len(data) > MaxBundleSize {
		return nil, fmt.Errorf("bundle: %d bytes, at most %d", len(data), MaxBundleSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var b Bundle
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if dec.More() {
		return nil, errors.New("bundle: trailing data")
	}
	return b.verify(logKey)
}

func (b *Bundle) verify(logKey *ecdsa.PublicKey) (*VerifiedBundle, error) {
	if b.MediaType != BundleMediaType {
		return nil, fmt.Errorf("bundle: media type %q, want %q", b.MediaType, BundleMediaType)
	}
	if b.Provenance == nil {
		return nil, errors.New("bundle: no provenance")
	}
	if b.Provenance.Next != nil {
		return nil, errors.New("bundle: a page of a history, not a whole one")
	}
	id, err := LogIDOf(logKey)
	if err != nil {
		return nil, err
	}
	if b.LogID != id {
		return nil, fmt.Errorf("bundle: made for log %s, not the log of this key (%s)", b.LogID, id)
	}
	entries, cp, err := VerifyProvenance(b.Provenance, logKey)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	if (b.Provenance.Device != nil && b.Provenance.Device.ID != b.Device) || (b.Provenance.DeviceID != "" && b.Provenance.DeviceID != b.Device) {
		return nil, fmt.Errorf("bundle: the provenance is not of device %s", b.Device)
	}
	for i, e := range entries {
		if e.Statement.Predicate.Shipment != nil {
			// VerifyProvenance proved the device is in the shipment's
			// manifest.
		} else if e.Statement.Target() != b.Device || e.Statement.Device() != b.Device {
			return nil, fmt.Errorf("bundle: entry %d is about %s, not device %s", e.Index, e.Statement.Target(), b.Device)
		}
		if p := &e.Statement.Predicate; e.Kind != p.Kind || e.Partner != p.Partner {
			return nil, fmt.Errorf("bundle: entry %d says %s by %s, its envelope %s by %s", e.Index, e.Kind, e.Partner, p.Kind, p.Partner)
		}
		if i > 0 && e.Index <= entries[i-1].Index {
			return nil, fmt.Errorf("bundle: entries out of log order at %d", e.Index)
		}
	}
	return &VerifiedBundle{Device: b.Device, Checkpoint: cp, Entries: entries, ClaimedState: b.Provenance.Device}, nil
}
