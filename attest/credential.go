package attest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
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
// ActivateCredential, the verifier knows that a TPM holding the private EK
// also holds a key with Name akName; whether that EK is genuine is for the
// EK certificate to show.
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

// ActivateCredential recovers the secret of c with this TPM's EK of
// algorithm ekAlg (authorised by a policy session with
// PolicySecret(TPM_RH_ENDORSEMENT), as the TCG EK templates require), for
// the key ak, which must be a key this TPM struct holds (the IAK or the
// current LDevID). It fails with ErrCredentialRejected when the TPM refuses
// the credential: it was made for another EK or another key name, or was
// tampered with.
func (t *TPM) ActivateCredential(ak *Key, ekAlg KeyAlg, c *Credential) ([]byte, error) {
	if ak == nil || c == nil {
		return nil, fmt.Errorf("attest: activate credential: key and credential are required")
	}
	if len(c.IDObject) == 0 || len(c.EncryptedSecret) == 0 {
		return nil, fmt.Errorf("%w: activate credential: empty credential", ErrCredentialRejected)
	}
	ekKind, err := ekAlg.objKind()
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()

	var akKind objKind = -1
	for _, k := range []objKind{objIAK, objLDevID} {
		if o := t.objs[k]; o != nil && bytes.Equal(o.name.Buffer, ak.Name) {
			akKind = k
		}
	}
	if akKind < 0 {
		return nil, fmt.Errorf("attest: activate credential: key %x is not the IAK or LDevID of this TPM", ak.Name)
	}
	objs, err := t.ensure(akKind, ekKind)
	if err != nil {
		return nil, err
	}
	akObj, ekObj := objs[0], objs[1]
	rsp, err := tpm2.ActivateCredential{
		ActivateHandle: akObj.authHandle(),
		KeyHandle: tpm2.AuthHandle{
			Handle: ekObj.handle,
			Name:   ekObj.name,
			Auth:   tpm2.Policy(tpm2.TPMAlgSHA256, 16, ekPolicy),
		},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: c.IDObject},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: c.EncryptedSecret},
	}.Execute(t.tp)
	if err != nil {
		// The TPM blames a parameter (credentialBlob or secret) when the
		// credential is not for this EK and key: TPM_RC_INTEGRITY,
		// TPM_RC_VALUE, TPM_RC_SIZE, TPM_RC_ECC_POINT...
		var fmt1 tpm2.TPMFmt1Error
		if errors.As(err, &fmt1) {
			if isParam, _ := fmt1.Parameter(); isParam {
				return nil, fmt.Errorf("%w: %v", ErrCredentialRejected, err)
			}
		}
		return nil, fmt.Errorf("attest: activate credential: %w", err)
	}
	return rsp.CertInfo.Buffer, nil
}

// ekPolicy satisfies the TCG EK policy: PolicySecret(TPM_RH_ENDORSEMENT).
func ekPolicy(tp transport.TPM, handle tpm2.TPMISHPolicy, nonceTPM tpm2.TPM2BNonce) error {
	_, err := tpm2.PolicySecret{
		AuthHandle:    tpm2.TPMRHEndorsement,
		PolicySession: handle,
		NonceTPM:      nonceTPM,
	}.Execute(tp)
	return err
}
