package attest

import (
	"bytes"
	"crypto"
	"crypto/subtle"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// CertifyEvidence is a TPM2_Certify of a key by the IAK: the key's public
// area and the signed TPMS_ATTEST naming it. Unverified until
// VerifyCertify.
type CertifyEvidence struct {
	// Public is the certified key's marshalled TPMT_PUBLIC.
	Public []byte
	// Attest is the TPMS_ATTEST (type ATTEST_CERTIFY) the IAK signed.
	Attest []byte
	// Signature is the marshalled TPMT_SIGNATURE over Attest.
	Signature []byte
}

// VerifyCertify verifies that the IAK (iakPublic, a marshalled TPMT_PUBLIC
// of a restricted signing key) certified the key ev.Public in answer to
// nonce: the signature verifies (ErrBadSignature), Attest is a
// TPM-generated ATTEST_CERTIFY (ErrNotACertify) whose extraData is nonce
// (ErrNonceMismatch) and whose certified Name is the Name of ev.Public
// (ErrNameMismatch), and the key is fixedTPM, fixedParent,
// sensitiveDataOrigin, a signing key and not restricted (ErrKeyAttributes).
// The returned public key is then trusted to be a non-exportable signing
// key generated inside the TPM that holds the IAK.
func VerifyCertify(iakPublic []byte, ev *CertifyEvidence, nonce []byte) (crypto.PublicKey, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	k, err := cachedAttestationKey(iakPublic)
	if err != nil {
		return nil, err
	}
	return k.VerifyCertify(ev, nonce)
}

// VerifyCertify is VerifyCertify with an already decoded key.
func (k *AttestationKey) VerifyCertify(ev *CertifyEvidence, nonce []byte) (crypto.PublicKey, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	if ev == nil {
		return nil, fmt.Errorf("%w: no evidence", ErrNotACertify)
	}
	att, _, err := k.verifyAttest(ev.Attest, ev.Signature, tpm2.TPMSTAttestCertify, ErrNotACertify)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(att.extraData, nonce) != 1 {
		return nil, ErrNonceMismatch
	}
	pub, err := parseTPMTPublic(ev.Public)
	if err != nil {
		return nil, fmt.Errorf("attest: certified key: %w", err)
	}
	name, err := objectName(pub, ev.Public)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(name, att.name) {
		return nil, ErrNameMismatch
	}
	a := pub.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Restricted || a.Decrypt {
		return nil, fmt.Errorf("%w: LDevID must be fixedTPM, fixedParent, sensitiveDataOrigin, sign, not restricted, not decrypt", ErrKeyAttributes)
	}
	key, err := goPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("attest: certified key: %w", err)
	}
	return key, nil
}
