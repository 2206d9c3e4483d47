package attest

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/google/go-tpm/tpm2"
)

// Quote is a TPM2_Quote made with the IAK, with the PCR values it covers.
// As the device returns it (attest/tpm's TPM.Quote) it is raw evidence;
// VerifyQuote is what makes it mean anything.
type Quote struct {
	// Attest is the TPMS_ATTEST the TPM signed (TPM2B_ATTEST contents).
	Attest []byte
	// Signature is the marshalled TPMT_SIGNATURE over Attest.
	Signature []byte
	// PCRs are the SHA-256 PCR values the quote covers, by index.
	PCRs map[int][]byte
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
// The decoded IAK is kept in a small process-wide cache keyed by the exact
// bytes of iakPublic (see cachedAttestationKey), so verifying many quotes
// of one device decodes its IAK once; a verifier can also decode it itself
// with ParseAttestationKey.
func VerifyQuote(iakPublic []byte, q *Quote, nonce []byte) (*QuoteInfo, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	k, err := cachedAttestationKey(iakPublic)
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
	digest [32]byte // SHA-256 of public
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
	return &AttestationKey{public: bytes.Clone(tpmtPublic), digest: sha256.Sum256(tpmtPublic), name: name, key: pub}, nil
}

// akCacheSize bounds the decoded keys cachedAttestationKey keeps.
const akCacheSize = 4096

// akCache maps the exact TPMT_PUBLIC bytes of a key that passed
// ParseAttestationKey to the decoded key. AttestationKey is immutable, so
// one value serves every caller.
var akCache = boundedCache[string, *AttestationKey]{max: akCacheSize}

// cachedAttestationKey is ParseAttestationKey with a bounded cache: the
// same bytes always decode to the same key, so a hit returns what a parse
// would. Keys that fail to parse are not cached.
func cachedAttestationKey(tpmtPublic []byte) (*AttestationKey, error) {
	if k, ok := akCache.get(string(tpmtPublic)); ok {
		return k, nil
	}
	k, err := ParseAttestationKey(tpmtPublic)
	if err != nil {
		return nil, err
	}
	akCache.put(string(k.public), k)
	return k, nil
}

// Public returns the key as a Go public key.
func (k *AttestationKey) Public() crypto.PublicKey { return k.key }

// Name returns the key's TPM Name.
func (k *AttestationKey) Name() []byte { return bytes.Clone(k.name) }

// TPMTPublic returns the marshalled TPMT_PUBLIC the key was parsed from.
func (k *AttestationKey) TPMTPublic() []byte { return bytes.Clone(k.public) }

// PublicDigest is the SHA-256 of the key's TPMT_PUBLIC (how the verifier
// pool's verdicts name it).
func (k *AttestationKey) PublicDigest() [32]byte { return k.digest }

// VerifyQuote is VerifyQuote with an already decoded key.
func (k *AttestationKey) VerifyQuote(q *Quote, nonce []byte) (*QuoteInfo, error) {
	if len(nonce) == 0 {
		return nil, ErrEmptyNonce
	}
	if q == nil {
		return nil, fmt.Errorf("%w: no quote", ErrNotAQuote)
	}
	att, hashAlg, err := k.verifyQuoteAttest(q.Attest, q.Signature, nonce)
	if err != nil {
		return nil, err
	}

	// The selection must be exactly the supplied PCRs, in the SHA-256 bank.
	var buf [NumPCRs]int
	got, other := att.selectedSHA256PCRs(buf[:0])
	if other != 0 {
		return nil, fmt.Errorf("%w: quote covers PCRs of bank %v", ErrPCRSelectionMismatch, other)
	}
	if !sameSelection(got, q.PCRs) {
		want := slices.Sorted(maps.Keys(q.PCRs))
		return nil, fmt.Errorf("%w: quote covers PCRs %v, values supplied for %v", ErrPCRSelectionMismatch, got, want)
	}
	h := hashAlg.New()
	pcrs := make(map[int][]byte, len(got))
	for _, i := range got {
		v := q.PCRs[i]
		if len(v) != 32 {
			return nil, fmt.Errorf("%w: PCR %d value of %d bytes", ErrPCRDigestMismatch, i, len(v))
		}
		h.Write(v)
		pcrs[i] = bytes.Clone(v)
	}
	var sum [64]byte
	if subtle.ConstantTimeCompare(h.Sum(sum[:0]), att.pcrDigest) != 1 {
		return nil, ErrPCRDigestMismatch
	}
	return att.quoteInfo(pcrs), nil
}

// VerifyQuoteDigest is VerifyQuote for a quote whose PCR values are not
// at hand: it checks the key, the signature, the structure and the nonce
// as VerifyQuote does, and returns a QuoteInfo whose PCRDigest the TPM
// signed but whose PCRs is nil: which values hash to that digest is not
// known. Use VerifyQuote whenever the PCR values matter.
func (k *AttestationKey) VerifyQuoteDigest(attest, sig, nonce []byte) (*QuoteInfo, error) {
	att, _, err := k.verifyQuoteAttest(attest, sig, nonce)
	if err != nil {
		return nil, err
	}
	return att.quoteInfo(nil), nil
}

// verifyQuoteAttest checks a quote's signature, structure and nonce.
func (k *AttestationKey) verifyQuoteAttest(attest, sig, nonce []byte) (*attestation, crypto.Hash, error) {
	if len(nonce) == 0 {
		return nil, 0, ErrEmptyNonce
	}
	att, hashAlg, err := k.verifyAttest(attest, sig, tpm2.TPMSTAttestQuote, ErrNotAQuote)
	if err != nil {
		return nil, 0, err
	}
	if subtle.ConstantTimeCompare(att.extraData, nonce) != 1 {
		return nil, 0, ErrNonceMismatch
	}
	return att, hashAlg, nil
}

// quoteInfo copies what a verified quote states.
func (a *attestation) quoteInfo(pcrs map[int][]byte) *QuoteInfo {
	return &QuoteInfo{
		Nonce:           bytes.Clone(a.extraData),
		Clock:           a.clock,
		ResetCount:      a.resetCount,
		RestartCount:    a.restartCount,
		Safe:            a.safe,
		FirmwareVersion: a.firmwareVersion,
		PCRDigest:       bytes.Clone(a.pcrDigest),
		PCRs:            pcrs,
	}
}

// sameSelection reports whether sel, a list of PCRs, is strictly
// ascending and names exactly the keys of pcrs.
func sameSelection(sel []int, pcrs map[int][]byte) bool {
	if len(sel) != len(pcrs) {
		return false
	}
	for i, p := range sel {
		if _, ok := pcrs[p]; !ok || (i > 0 && sel[i-1] >= p) {
			return false
		}
	}
	return true
}

// verifyAttest checks that attest is a TPMS_ATTEST of type st signed with
// sig by k. It returns the decoded structure (aliasing attest) and the
// hash algorithm of the signature. wrongType is the error for a structure
// of another type.
func (k *AttestationKey) verifyAttest(attest, sig []byte, st tpm2.TPMST, wrongType error) (*attestation, crypto.Hash, error) {
	if len(attest) == 0 {
		return nil, 0, fmt.Errorf("%w: %w: empty TPMS_ATTEST", wrongType, ErrMalformed)
	}
	att, err := decodeAttest(attest)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %w", wrongType, err)
	}
	hashAlg, err := k.verifySignature(sig, attest)
	if err != nil {
		return nil, 0, err
	}
	if att.magic != uint32(tpm2.TPMGeneratedValue) {
		return nil, 0, fmt.Errorf("%w: magic %#x is not TPM_GENERATED_VALUE", wrongType, att.magic)
	}
	if att.typ != st {
		return nil, 0, fmt.Errorf("%w: attestation type %#x", wrongType, uint16(att.typ))
	}
	return att, hashAlg, nil
}

// verifySignature checks the key's TPMT_SIGNATURE sig over attest,
// remembering successes: a quote is verified by the gate and again by the
// ledger when the gate's device.enrolled carries it, in the same process
// when they run in one node. The check is a pure function of the key, the
// message and the signature, so a success remembered under the SHA-256 of
// all three is the answer a new verification would give. Failures are not
// remembered.
func (k *AttestationKey) verifySignature(sig, attest []byte) (crypto.Hash, error) {
	h := sha256.New()
	var n [4]byte
	for _, b := range [][]byte{k.public, attest, sig} {
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	if hashAlg, ok := verified.get(key); ok {
		return hashAlg, nil
	}
	hashAlg, err := verifyTPMSignature(k.key, sig, attest)
	if err != nil {
		return 0, err
	}
	verified.put(key, hashAlg)
	return hashAlg, nil
}

// verified maps SHA-256(key, message, signature) of TPM signatures that
// verified to the digest algorithm they used; it keeps 4096.
var verified = boundedCache[[sha256.Size]byte, crypto.Hash]{max: 4096}

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
