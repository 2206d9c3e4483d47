package tpm

import (
	"bytes"
	"crypto"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
)

// KeyAlg selects an endorsement key algorithm.
type KeyAlg int

// EK algorithms: the two TCG default EK templates (EK Credential Profile,
// templates L-1 and L-2).
const (
	RSA2048 KeyAlg = iota + 1
	ECCP256
)

func (a KeyAlg) String() string {
	switch a {
	case RSA2048:
		return "RSA2048"
	case ECCP256:
		return "ECCP256"
	}
	return fmt.Sprintf("KeyAlg(%d)", int(a))
}

func (a KeyAlg) objKind() (objKind, error) {
	switch a {
	case RSA2048:
		return objEKRSA, nil
	case ECCP256:
		return objEKECC, nil
	}
	return 0, fmt.Errorf("attest: unknown EK algorithm %v", a)
}

// Key is the public part of a key the TPM holds, as the TPM reports it. It
// is evidence for a remote verifier, who decodes Public itself
// (attest.PublicKeyFromTPMT, attest.ParseAttestationKey), not a proof.
type Key struct {
	// Public is the marshalled TPMT_PUBLIC.
	Public []byte
	// Name is the TPM Name: nameAlg (2 bytes) || digest of Public.
	Name []byte
	// PublicKey is Public as a Go key (*rsa.PublicKey or *ecdsa.PublicKey).
	PublicKey crypto.PublicKey
}

// iakTemplate is the IAK: a restricted ECC P-256 ECDSA-SHA256 signing key,
// a primary in the endorsement hierarchy (TCG "TPM 2.0 Keys for Device
// Identity and Attestation" IAK, without its admin policy). The template is
// fixed, so a TPM always derives the same IAK from its endorsement seed.
var iakTemplate = eccSigningTemplate(true)

// ldevidTemplate is an LDevID key: an unrestricted ECC P-256 ECDSA-SHA256
// signing key generated in (and never leaving) the TPM.
var ldevidTemplate = eccSigningTemplate(false)

// eccSigningTemplate is an ECC P-256 ECDSA-SHA256 signing key that is
// fixedTPM, fixedParent and generated in the TPM; restricted keys sign only
// TPM-generated structures (quotes, certifications).
func eccSigningTemplate(restricted bool) tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          restricted,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme: tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA,
					&tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		}),
	}
}

// primaryTemplate returns the hierarchy and template of a primary key.
func primaryTemplate(k objKind) (tpm2.TPMHandle, tpm2.TPMTPublic, error) {
	switch k {
	case objEKRSA:
		return tpm2.TPMRHEndorsement, tpm2.RSAEKTemplate, nil
	case objEKECC:
		return tpm2.TPMRHEndorsement, tpm2.ECCEKTemplate, nil
	case objIAK:
		return tpm2.TPMRHEndorsement, iakTemplate, nil
	case objSRK:
		return tpm2.TPMRHOwner, tpm2.ECCSRKTemplate, nil
	}
	return 0, tpm2.TPMTPublic{}, fmt.Errorf("attest: %v is not a primary key", k)
}

// EK returns the endorsement key made from the TCG default template for
// alg (tpm2.RSAEKTemplate or tpm2.ECCEKTemplate) in the endorsement
// hierarchy. The key stays loaded for later use. The result is what this
// TPM reports; a remote party trusts it only through the EK certificate.
func (t *TPM) EK(alg KeyAlg) (*Key, error) {
	k, err := alg.objKind()
	if err != nil {
		return nil, err
	}
	return t.key(k)
}

// IAK returns the initial attestation key: a restricted ECC P-256
// ECDSA-SHA256 signing key created as a primary in the endorsement
// hierarchy from a fixed template (fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, restricted, sign). It is the same key
// for a given TPM on every call and across process restarts and reboots.
// A verifier trusts it only after credential activation against a
// verified EK.
func (t *TPM) IAK() (*Key, error) {
	return t.key(objIAK)
}

func (t *TPM) key(k objKind) (*Key, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	objs, err := t.ensure(k)
	if err != nil {
		return nil, err
	}
	return keyFromObject(objs[0])
}

func keyFromObject(o *object) (*Key, error) {
	pub, name, err := attest.PublicKeyFromTPMT(o.public)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(name, o.name.Buffer) {
		return nil, fmt.Errorf("attest: TPM reported a name that does not match the public area")
	}
	return &Key{
		Public:    append([]byte(nil), o.public...),
		Name:      name,
		PublicKey: pub,
	}, nil
}
