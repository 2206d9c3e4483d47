package tpm

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodyledger/custody/attest"
)

// ActivateCredential recovers the secret of c with this TPM's EK of
// algorithm ekAlg (authorised by a policy session with
// PolicySecret(TPM_RH_ENDORSEMENT), as the TCG EK templates require), for
// the key ak, which must be a key this TPM struct holds (the IAK or the
// current LDevID). It fails with ErrCredentialRejected when the TPM refuses
// the credential: it was made for another EK or another key name, or was
// tampered with.
func (t *TPM) ActivateCredential(ak *Key, ekAlg KeyAlg, c *attest.Credential) ([]byte, error) {
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
