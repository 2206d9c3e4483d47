package attest

import (
	"crypto/rand"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// Credential is a credential-activation challenge (TPM2_MakeCredential
// output): a secret encrypted so that only the TPM holding a given EK, with
// a loaded key of a given Name, can recover it.
type Credential struct {
	IDObject        []byte // TPM2B_ID_OBJECT contents (credentialBlob)
	EncryptedSecret []byte // TPM2B_ENCRYPTED_SECRET contents (seed for the EK)
}

// MakeCredential encrypts secret to the EK ekPublic (a marshalled
// TPMT_PUBLIC, RSA or ECC) for the key named akName, in software (go-tpm's
// ImportEncapsulationKey and CreateCredential). The EK must be a
// restricted decryption key (a storage key, as the TCG EK templates make).
// The secret may be at most as long as the EK's name digest (32 bytes for
// the TCG templates). If the device returns the secret from
// ActivateCredential (attest/tpm), the verifier knows that a TPM holding
// the private EK also holds a key with Name akName; whether that EK is
// genuine is for the EK certificate to show.
func MakeCredential(ekPublic []byte, akName []byte, secret []byte) (*Credential, error) {
	ek, err := parseTPMTPublic(ekPublic)
	if err != nil {
		return nil, fmt.Errorf("attest: make credential: EK: %w", err)
	}
	if !ek.ObjectAttributes.Restricted || !ek.ObjectAttributes.Decrypt || ek.ObjectAttributes.SignEncrypt {
		return nil, fmt.Errorf("%w: make credential: EK is not a restricted decryption key", ErrKeyAttributes)
	}
	if _, err := goPublicKey(ek); err != nil {
		return nil, fmt.Errorf("attest: make credential: EK: %w", err)
	}
	if err := checkName(akName); err != nil {
		return nil, fmt.Errorf("attest: make credential: %w", err)
	}
	h, err := ek.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("attest: make credential: EK name algorithm: %w", err)
	}
	if len(secret) == 0 || len(secret) > h.Size() {
		return nil, fmt.Errorf("attest: make credential: secret must be 1..%d bytes, got %d", h.Size(), len(secret))
	}
	key, err := tpm2.ImportEncapsulationKey(ek)
	if err != nil {
		return nil, fmt.Errorf("attest: make credential: %w", err)
	}
	idObject, encSecret, err := tpm2.CreateCredential(rand.Reader, key, akName, secret)
	if err != nil {
		return nil, fmt.Errorf("attest: make credential: %w", err)
	}
	return &Credential{IDObject: idObject, EncryptedSecret: encSecret}, nil
}

// checkName checks the shape of a TPM Name of an object: a hash algorithm
// identifier followed by a digest of that algorithm's size.
func checkName(name []byte) error {
	if len(name) < 2 {
		return fmt.Errorf("%w: name too short", ErrMalformed)
	}
	alg := tpm2.TPMAlgID(uint16(name[0])<<8 | uint16(name[1]))
	h, err := alg.Hash()
	if err != nil {
		return fmt.Errorf("%w: name algorithm %v", ErrMalformed, alg)
	}
	if len(name) != 2+h.Size() {
		return fmt.Errorf("%w: name of %d bytes for %v", ErrMalformed, len(name), alg)
	}
	return nil
}
