package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// maxNonce is the largest qualifying data a TPM accepts (sizeof(TPMT_HA)
// for SHA-512 less its algorithm ID).
const maxNonce = 64

// Quote is a TPM2_Quote made with the IAK, with the PCR values it covers.
// As returned by TPM.Quote it is raw evidence; VerifyQuote is what makes it
// mean anything.
type Quote struct {
	// Attest is the TPMS_ATTEST the TPM signed (TPM2B_ATTEST contents).
	Attest []byte
	// Signature is the marshalled TPMT_SIGNATURE over Attest.
	Signature []byte
	// PCRs are the SHA-256 PCR values the quote covers, by index.
	PCRs map[int][]byte
}

// Quote has the TPM sign, with the IAK, its clock and counters, nonce and
// the SHA-256 digest of the given SHA-256 PCRs, and returns the PCR values
// read right after under the same lock (so they are the quoted ones unless
// another process extends PCRs meanwhile; VerifyQuote would notice). The
// nonce must be 1..64 bytes.
func (t *TPM) Quote(nonce []byte, pcrs []int) (*Quote, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	if len(nonce) > maxNonce {
		return nil, fmt.Errorf("attest: quote: nonce of %d bytes, at most %d", len(nonce), maxNonce)
	}
	sorted, err := normalizePCRs(pcrs)
	if err != nil {
		return nil, err
	}
	if err := t.lock(); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	objs, err := t.ensure(objIAK)
	if err != nil {
		return nil, err
	}
	rsp, err := tpm2.Quote{
		SignHandle:     objs[0].authHandle(),
		QualifyingData: tpm2.TPM2BData{Buffer: nonce},
		InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		PCRSelect:      pcrSelection(sorted),
	}.Execute(t.tp)
	if err != nil {
		return nil, fmt.Errorf("attest: quote: %w", err)
	}
	values, err := t.readPCRs(sorted)
	if err != nil {
		return nil, err
	}
	return &Quote{
		Attest:    bytes.Clone(rsp.Quoted.Bytes()),
		Signature: tpm2.Marshal(rsp.Signature),
		PCRs:      values,
	}, nil
}

// QuoteInfo is what a verified quote proves about the TPM that made it, at
// the moment it saw the nonce.
type QuoteInfo struct {
	// Nonce is the qualifying data (equal to the verifier's nonce).
	Nonce []byte
	// Clock is the TPM clock in milliseconds (advances while powered,
	// persists across resets).
	Clock uint64
	// ResetCount counts TPM Resets (reboots); RestartCount counts
	// restarts/resumes since the last reset.
	ResetCount, RestartCount uint32
	// Safe is the TPM's statement that Clock never went backwards.
	Safe bool
	// FirmwareVersion is the TPM vendor's firmware version.
	FirmwareVersion uint64
	// PCRDigest is the digest of the quoted PCRs the TPM signed.
	PCRDigest []byte
	// PCRs are the PCR values (SHA-256 bank) whose digest the TPM signed.
	PCRs map[int][]byte
}

// VerifyQuote verifies a quote against the IAK public area iakPublic (a
// marshalled TPMT_PUBLIC) and the verifier's nonce:
//
//   - the IAK must be a restricted signing key (so the TPM made Attest);
//   - Signature must verify over the hash of Attest (ErrBadSignature);
//   - Attest must be a TPM-generated TPMS_ATTEST of type ATTEST_QUOTE
//     (ErrNotAQuote);
//   - its extraData must equal nonce, compared in constant time
//     (ErrNonceMismatch); an empty nonce is refused (ErrEmptyNonce);
//   - the quoted PCR selection must be exactly the SHA-256 PCRs in
//     q.PCRs (ErrPCRSelectionMismatch), and the hash of their values
//     concatenated in index order must be the signed digest
//     (ErrPCRDigestMismatch).
//
// The returned QuoteInfo is then trusted to come from the TPM holding the
// IAK, as far as the IAK itself is trusted.
//
// VerifyQuote parses iakPublic on every call; a verifier that checks many
// quotes of one device can parse it once with ParseAttestationKey.
func VerifyQuote(iakPublic []byte, q *Quote, nonce []byte) (*QuoteInfo, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	k, err := ParseAttestationKey(iakPublic)
	if err != nil {
		return nil, err
	}
	return k.VerifyQuote(q, nonce)
}

// AttestationKey is a decoded restricted signing key (an IAK) that
// verifies quotes and certify statements. Decoding checks only its form
// (restricted, fixedTPM, signing, a valid public key); whether it belongs
// to a genuine TPM is for credential activation and the IAK certificate to
// show.
type AttestationKey struct {
	public []byte
	name   []byte
	key    crypto.PublicKey
}

// ParseAttestationKey decodes a marshalled TPMT_PUBLIC of a restricted,
// fixedTPM signing key (ErrKeyAttributes otherwise).
func ParseAttestationKey(tpmtPublic []byte) (*AttestationKey, error) {
	signer, err := parseTPMTPublic(tpmtPublic)
	if err != nil {
		return nil, fmt.Errorf("attest: signing key: %w", err)
	}
	a := signer.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM {
		return nil, fmt.Errorf("%w: attestation key must be a restricted, fixedTPM signing key", ErrKeyAttributes)
	}
	pub, err := goPublicKey(signer)
	if err != nil {
		return nil, fmt.Errorf("attest: signing key: %w", err)
	}
	name, err := objectName(signer, tpmtPublic)
	if err != nil {
		return nil, err
	}
	return &AttestationKey{public: bytes.Clone(tpmtPublic), name: name, key: pub}, nil
}

// Public returns the key as a Go public key.
func (k *AttestationKey) Public() crypto.PublicKey { return k.key }

// Name returns the key's TPM Name.
func (k *AttestationKey) Name() []byte { return bytes.Clone(k.name) }

// TPMTPublic returns the marshalled TPMT_PUBLIC the key was parsed from.
func (k *AttestationKey) TPMTPublic() []byte { return bytes.Clone(k.public) }

// VerifyQuote is VerifyQuote with an already decoded key.
func (k *AttestationKey) VerifyQuote(q *Quote, nonce []byte) (*QuoteInfo, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	if q == nil {
		return nil, fmt.Errorf("%w: no quote", ErrNotAQuote)
	}
	att, hashAlg, err := k.verifyAttest(q.Attest, q.Signature, tpm2.TPMSTAttestQuote, ErrNotAQuote)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(att.ExtraData.Buffer, nonce) != 1 {
		return nil, ErrNonceMismatch
	}
	qi, err := att.Attested.Quote()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotAQuote, err)
	}

	// The selection must be exactly the supplied PCRs, in the SHA-256 bank.
	want := slices.Sorted(maps.Keys(q.PCRs))
	for _, s := range qi.PCRSelect.PCRSelections {
		if s.Hash != tpm2.TPMAlgSHA256 && slices.ContainsFunc(s.PCRSelect, func(b byte) bool { return b != 0 }) {
			return nil, fmt.Errorf("%w: quote covers PCRs of bank %v", ErrPCRSelectionMismatch, s.Hash)
		}
	}
	got := selectedPCRs(qi.PCRSelect)
	if !slices.Equal(got, want) {
		return nil, fmt.Errorf("%w: quote covers PCRs %v, values supplied for %v", ErrPCRSelectionMismatch, got, want)
	}
	h := hashAlg.New()
	pcrs := make(map[int][]byte, len(want))
	for _, i := range want {
		v := q.PCRs[i]
		if len(v) != 32 {
			return nil, fmt.Errorf("%w: PCR %d value of %d bytes", ErrPCRDigestMismatch, i, len(v))
		}
		h.Write(v)
		pcrs[i] = bytes.Clone(v)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), qi.PCRDigest.Buffer) != 1 {
		return nil, ErrPCRDigestMismatch
	}
	return &QuoteInfo{
		Nonce:           bytes.Clone(att.ExtraData.Buffer),
		Clock:           att.ClockInfo.Clock,
		ResetCount:      att.ClockInfo.ResetCount,
		RestartCount:    att.ClockInfo.RestartCount,
		Safe:            bool(att.ClockInfo.Safe),
		FirmwareVersion: att.FirmwareVersion,
		PCRDigest:       bytes.Clone(qi.PCRDigest.Buffer),
		PCRs:            pcrs,
	}, nil
}

// verifyAttest checks that attest is a TPMS_ATTEST of type st signed with
// sig by k. It returns the decoded structure and the hash algorithm of the
// signature. wrongType is the error for a structure of another type.
func (k *AttestationKey) verifyAttest(attest, sig []byte, st tpm2.TPMST, wrongType error) (*tpm2.TPMSAttest, crypto.Hash, error) {
	att, err := unmarshalStrict[tpm2.TPMSAttest](attest, "TPMS_ATTEST", attestLen)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", wrongType, err)
	}
	hashAlg, err := verifyTPMSignature(k.key, sig, attest)
	if err != nil {
		return nil, 0, err
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return nil, 0, fmt.Errorf("%w: magic %#x is not TPM_GENERATED_VALUE", wrongType, uint32(att.Magic))
	}
	if att.Type != st {
		return nil, 0, fmt.Errorf("%w: attestation type %#x", wrongType, uint16(att.Type))
	}
	return att, hashAlg, nil
}

// verifyTPMSignature verifies a marshalled TPMT_SIGNATURE over msg with
// pub. Accepted: ECDSA, RSASSA and RSAPSS with SHA-256, SHA-384 or
// SHA-512. It returns the hash algorithm used.
func verifyTPMSignature(pub crypto.PublicKey, sigBytes, msg []byte) (crypto.Hash, error) {
	sig, err := unmarshalStrict[tpm2.TPMTSignature](sigBytes, "TPMT_SIGNATURE", signatureLen)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	hashOf := func(alg tpm2.TPMIAlgHash) (crypto.Hash, error) {
		switch alg {
		case tpm2.TPMAlgSHA256:
			return crypto.SHA256, nil
		case tpm2.TPMAlgSHA384:
			return crypto.SHA384, nil
		case tpm2.TPMAlgSHA512:
			return crypto.SHA512, nil
		}
		return 0, fmt.Errorf("%w: hash algorithm %v not accepted", ErrBadSignature, alg)
	}
	switch sig.SigAlg {
	case tpm2.TPMAlgECDSA:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return 0, fmt.Errorf("%w: ECDSA signature from a %T key", ErrBadSignature, pub)
		}
		es, err := sig.Signature.ECDSA()
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		h, err := hashOf(es.Hash)
		if err != nil {
			return 0, err
		}
		d := h.New()
		d.Write(msg)
		r := new(big.Int).SetBytes(es.SignatureR.Buffer)
		s := new(big.Int).SetBytes(es.SignatureS.Buffer)
		if !ecdsa.Verify(k, d.Sum(nil), r, s) {
			return 0, ErrBadSignature
		}
		return h, nil
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return 0, fmt.Errorf("%w: RSA signature from a %T key", ErrBadSignature, pub)
		}
		var rs *tpm2.TPMSSignatureRSA
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			rs, err = sig.Signature.RSASSA()
		} else {
			rs, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		h, err := hashOf(rs.Hash)
		if err != nil {
			return 0, err
		}
		d := h.New()
		d.Write(msg)
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(k, h, d.Sum(nil), rs.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(k, h, d.Sum(nil), rs.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			return 0, ErrBadSignature
		}
		return h, nil
	}
	return 0, fmt.Errorf("%w: signature algorithm %v not accepted", ErrBadSignature, sig.SigAlg)
}

// CheckMonotonic checks that cur, a quote verified after prev from the same
// TPM, does not show the TPM's counters going backwards: resetCount must
// not decrease (ErrResetCountDecreased); with the same resetCount,
// restartCount must not decrease (ErrRestartCountDecreased); with both the
// same, clock must not decrease (ErrClockWentBackwards). Equal or forward
// values pass. A reset lets the clock of an unsafe TPM (Safe false) be
// lower than before; that is allowed, as a later resetCount orders the
// quotes.
func CheckMonotonic(prev, cur *QuoteInfo) error {
	if prev == nil || cur == nil {
		return errors.New("attest: check monotonic: missing quote")
	}
	switch {
	case cur.ResetCount < prev.ResetCount:
		return fmt.Errorf("%w: %d after %d", ErrResetCountDecreased, cur.ResetCount, prev.ResetCount)
	case cur.ResetCount > prev.ResetCount:
		return nil
	case cur.RestartCount < prev.RestartCount:
		return fmt.Errorf("%w: %d after %d (resetCount %d)", ErrRestartCountDecreased, cur.RestartCount, prev.RestartCount, cur.ResetCount)
	case cur.RestartCount > prev.RestartCount:
		return nil
	case cur.Clock < prev.Clock:
		return fmt.Errorf("%w: %d ms after %d ms (resetCount %d, restartCount %d)", ErrClockWentBackwards, cur.Clock, prev.Clock, cur.ResetCount, cur.RestartCount)
	}
	return nil
}
