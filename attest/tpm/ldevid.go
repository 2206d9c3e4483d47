package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"fmt"
	"io"
	"math/big"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/custodyledger/custody/attest"
)

// NewLDevID creates a fresh LDevID key, replacing the previous one: an
// unrestricted ECC P-256 ECDSA-SHA256 signing key (fixedTPM, fixedParent,
// sensitiveDataOrigin, userWithAuth, sign) under the owner-hierarchy SRK
// (the TCG ECC SRK template). The key stays loaded, and its wrapped blob is
// kept so it survives reboots for the life of this TPM struct. The IAK then
// certifies it with TPM2_Certify(qualifyingData = nonce). The nonce must be
// 1..64 bytes.
func (t *TPM) NewLDevID(nonce []byte) (*Key, *attest.CertifyEvidence, error) {
	if len(nonce) == 0 {
		return nil, nil, attest.ErrEmptyNonce
	}
	if len(nonce) > maxNonce {
		return nil, nil, fmt.Errorf("attest: LDevID: nonce of %d bytes, at most %d", len(nonce), maxNonce)
	}
	if err := t.lock(); err != nil {
		return nil, nil, err
	}
	defer t.mu.Unlock()

	objs, err := t.ensure(objSRK)
	if err != nil {
		return nil, nil, err
	}
	srk := objs[0]
	// TPM2_Create needs a free object slot while it works.
	var pinned [numObjKinds]bool
	pinned[objSRK] = true
	if err := t.makeRoom(&pinned); err != nil {
		return nil, nil, err
	}
	crsp, err := tpm2.Create{
		ParentHandle: srk.authHandle(),
		InPublic:     tpm2.New2B(ldevidTemplate),
	}.Execute(t.tp)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: create LDevID: %w", err)
	}
	t.forget(objLDevID)
	t.ldevid = &ldevidBlob{
		private: tpm2.TPM2BPrivate{Buffer: bytes.Clone(crsp.OutPrivate.Buffer)},
		public:  tpm2.BytesAs2B[tpm2.TPMTPublic](bytes.Clone(crsp.OutPublic.Bytes())),
	}
	t.ldevidGen++
	objs, err = t.ensure(objLDevID, objIAK)
	if err != nil {
		return nil, nil, err
	}
	ldevid, iak := objs[0], objs[1]
	key, err := keyFromObject(ldevid)
	if err != nil {
		return nil, nil, err
	}
	rsp, err := tpm2.Certify{
		ObjectHandle:   ldevid.authHandle(),
		SignHandle:     iak.authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(t.tp)
	if err != nil {
		return nil, nil, fmt.Errorf("attest: certify LDevID: %w", err)
	}
	return key, &attest.CertifyEvidence{
		Public:    bytes.Clone(key.Public),
		Attest:    bytes.Clone(rsp.CertifyInfo.Bytes()),
		Signature: tpm2.Marshal(rsp.Signature),
	}, nil
}

// LDevIDSigner returns a crypto.Signer backed by the current LDevID key:
// Sign runs TPM2_Sign (ECDSA, SHA-256, null validation ticket) over a
// SHA-256 digest and returns an ASN.1 ECDSA signature, so it serves as a
// tls.Certificate PrivateKey for TLS 1.2 and 1.3 client authentication.
// The signer is bound to the key current at the time of the call: after a
// later NewLDevID its Sign fails with ErrLDevIDReplaced.
func (t *TPM) LDevIDSigner() (crypto.Signer, error) {
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if t.ldevid == nil {
		return nil, ErrNoLDevID
	}
	pub, _, err := attest.PublicKeyFromTPMT(t.ldevid.public.Bytes())
	if err != nil {
		return nil, err
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: LDevID is not an ECDSA key", attest.ErrKeyAttributes)
	}
	return &ldevidSigner{t: t, pub: ec, gen: t.ldevidGen}, nil
}

type ldevidSigner struct {
	t   *TPM
	pub *ecdsa.PublicKey
	gen uint64
}

func (s *ldevidSigner) Public() crypto.PublicKey { return s.pub }

// Sign signs a SHA-256 digest in the TPM. rand is ignored: the TPM draws
// its own nonce.
func (s *ldevidSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil || opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("attest: LDevID signs SHA-256 digests only")
	}
	if len(digest) != crypto.SHA256.Size() {
		return nil, fmt.Errorf("attest: LDevID: digest of %d bytes", len(digest))
	}
	t := s.t
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	if t.ldevid == nil || t.ldevidGen != s.gen {
		return nil, ErrLDevIDReplaced
	}
	objs, err := t.ensure(objLDevID)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Sign{
		KeyHandle: objs[0].authHandle(),
		Digest:    tpm2.TPM2BDigest{Buffer: digest},
		InScheme: tpm2.TPMTSigScheme{
			Scheme:  tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
		},
		Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
	}.Execute(t.tp)
	if err != nil {
		return nil, fmt.Errorf("attest: LDevID sign: %w", err)
	}
	es, err := rsp.Signature.Signature.ECDSA()
	if err != nil {
		return nil, fmt.Errorf("attest: LDevID sign: %w", err)
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(new(big.Int).SetBytes(es.SignatureR.Buffer))
		b.AddASN1BigInt(new(big.Int).SetBytes(es.SignatureS.Buffer))
	})
	return b.Bytes()
}
