package attest

import (
	"errors"
	"testing"
)

// TestMakeCredentialRejects: credentials a verifier refuses to make, for
// the EK and IAK of a TPM (testdata/sim/). attest/tpm's tests activate the
// credentials it makes.
func TestMakeCredentialRejects(t *testing.T) {
	sim := loadSimEvidence(t)
	ek, iak, iakName := sim.ekECC, sim.iak, sim.iakName
	if _, err := MakeCredential(ek, iakName, nil); err == nil {
		t.Error("accepted an empty secret")
	}
	if _, err := MakeCredential(ek, iakName, make([]byte, 33)); err == nil {
		t.Error("accepted a secret longer than the name digest")
	}
	if _, err := MakeCredential(ek, iakName[:10], []byte("s")); err == nil {
		t.Error("accepted a truncated name")
	}
	// The IAK is a signing key, not an EK.
	if _, err := MakeCredential(iak, iakName, []byte("s")); !errors.Is(err, ErrKeyAttributes) {
		t.Errorf("IAK as EK: %v, want ErrKeyAttributes", err)
	}
}
