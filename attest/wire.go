package attest

// Hand-written decoders for the TPM structures every quote and certify
// verification reads: TPMS_ATTEST (of type quote or certify),
// TPMT_SIGNATURE, and the TPMT_PUBLIC of the usual attestation keys.
// go-tpm's reflection-based tpm2.Unmarshal decodes them correctly but
// costs about half an ECDSA P-256 verification per structure; these
// decoders read the same bytes with cryptobyte and are as strict: every
// length is checked, nothing may follow the structure, and any form this
// package does not verify is refused (or, for TPMT_PUBLIC, left to
// go-tpm). The fields returned alias the input. FuzzDecodeAttest and
// FuzzDecodePublic check them against go-tpm's decoder.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// maxPCRBanks bounds the banks of a TPML_PCR_SELECTION (TPM2_NUM_PCR_BANKS).
const maxPCRBanks = 16

// maxSizeofSelect bounds the bitmap of one TPMS_PCR_SELECTION (up to 256
// PCRs; PC Client TPMs use 3 bytes).
const maxSizeofSelect = 32

// attestation is a decoded TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE or
// TPM_ST_ATTEST_CERTIFY. Byte slices alias the decoded input.
type attestation struct {
	magic           uint32
	typ             tpm2.TPMST
	qualifiedSigner []byte
	extraData       []byte
	clock           uint64
	resetCount      uint32
	restartCount    uint32
	safe            bool
	firmwareVersion uint64

	// TPMS_QUOTE_INFO: pcrSelect is the TPML_PCR_SELECTION's list of
	// TPMS_PCR_SELECTION structures, still encoded (checked by decode).
	pcrSelect []byte
	pcrBanks  int
	pcrDigest []byte

	// TPMS_CERTIFY_INFO.
	name, qualifiedName []byte
}

// decodeAttest decodes a TPMS_ATTEST of type quote or certify. Other types
// are refused, as is any byte after the structure.
func decodeAttest(b []byte) (*attestation, error) {
	var a attestation
	s := cryptobyte.String(b)
	var typ uint16
	var qs, ed cryptobyte.String
	var safe uint8
	if !s.ReadUint32(&a.magic) || !s.ReadUint16(&typ) ||
		!s.ReadUint16LengthPrefixed(&qs) || !s.ReadUint16LengthPrefixed(&ed) ||
		!s.ReadUint64(&a.clock) || !s.ReadUint32(&a.resetCount) || !s.ReadUint32(&a.restartCount) ||
		!s.ReadUint8(&safe) || !s.ReadUint64(&a.firmwareVersion) {
		return nil, fmt.Errorf("%w: TPMS_ATTEST: truncated", ErrMalformed)
	}
	if safe > 1 {
		return nil, fmt.Errorf("%w: TPMS_ATTEST: safe is %d, not a TPMI_YES_NO", ErrMalformed, safe)
	}
	a.typ, a.qualifiedSigner, a.extraData, a.safe = tpm2.TPMST(typ), qs, ed, safe == 1
	switch a.typ {
	case tpm2.TPMSTAttestQuote:
		var n uint32
		if !s.ReadUint32(&n) || n > maxPCRBanks {
			return nil, fmt.Errorf("%w: TPMS_QUOTE_INFO: bad PCR selection count", ErrMalformed)
		}
		start := s
		for range n {
			var hash uint16
			var bitmap cryptobyte.String
			if !s.ReadUint16(&hash) || !s.ReadUint8LengthPrefixed(&bitmap) || len(bitmap) > maxSizeofSelect {
				return nil, fmt.Errorf("%w: TPMS_QUOTE_INFO: bad PCR selection", ErrMalformed)
			}
		}
		a.pcrSelect, a.pcrBanks = start[:len(start)-len(s)], int(n)
		var d cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&d) {
			return nil, fmt.Errorf("%w: TPMS_QUOTE_INFO: truncated PCR digest", ErrMalformed)
		}
		a.pcrDigest = d
	case tpm2.TPMSTAttestCertify:
		var name, qname cryptobyte.String
		if !s.ReadUint16LengthPrefixed(&name) || !s.ReadUint16LengthPrefixed(&qname) {
			return nil, fmt.Errorf("%w: TPMS_CERTIFY_INFO: truncated", ErrMalformed)
		}
		a.name, a.qualifiedName = name, qname
	default:
		return nil, fmt.Errorf("attestation type %#x is neither a quote nor a certify", typ)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: TPMS_ATTEST has %d trailing bytes", ErrMalformed, len(s))
	}
	return &a, nil
}

// eachPCRSelection calls f for every TPMS_PCR_SELECTION of a decoded
// quote, in order.
func (a *attestation) eachPCRSelection(f func(hash tpm2.TPMIAlgHash, bitmap []byte)) {
	s := cryptobyte.String(a.pcrSelect)
	for range a.pcrBanks {
		var hash uint16
		var bitmap cryptobyte.String
		s.ReadUint16(&hash)
		s.ReadUint8LengthPrefixed(&bitmap)
		f(tpm2.TPMIAlgHash(hash), bitmap)
	}
}

// selectedSHA256PCRs appends to dst, in ascending order, the SHA-256 PCRs
// a decoded quote covers, and reports whether it selects any PCR of
// another bank.
func (a *attestation) selectedSHA256PCRs(dst []int) (pcrs []int, otherBank tpm2.TPMIAlgHash) {
	a.eachPCRSelection(func(hash tpm2.TPMIAlgHash, bitmap []byte) {
		for byteIdx, b := range bitmap {
			if b == 0 {
				continue
			}
			if hash != tpm2.TPMAlgSHA256 {
				otherBank = hash
				return
			}
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					dst = append(dst, byteIdx*8+bit)
				}
			}
		}
	})
	return dst, otherBank
}

// signature is a decoded TPMT_SIGNATURE of an accepted form. Byte slices
// alias the decoded input.
type signature struct {
	alg  tpm2.TPMIAlgSigScheme
	hash crypto.Hash
	// r, s for ECDSA; r is the signature for RSASSA and RSAPSS.
	r, s []byte
}

// decodeSignature decodes a TPMT_SIGNATURE: ECDSA, RSASSA or RSAPSS with
// SHA-256, SHA-384 or SHA-512 (ErrBadSignature for other algorithms,
// wrapping ErrMalformed for bad encodings).
func decodeSignature(b []byte) (*signature, error) {
	s := cryptobyte.String(b)
	var alg, hash uint16
	if !s.ReadUint16(&alg) {
		return nil, fmt.Errorf("%w: %w: TPMT_SIGNATURE: truncated", ErrBadSignature, ErrMalformed)
	}
	sig := signature{alg: tpm2.TPMIAlgSigScheme(alg)}
	switch sig.alg {
	case tpm2.TPMAlgECDSA:
		var r, ss cryptobyte.String
		if !s.ReadUint16(&hash) || !s.ReadUint16LengthPrefixed(&r) || !s.ReadUint16LengthPrefixed(&ss) {
			return nil, fmt.Errorf("%w: %w: TPMT_SIGNATURE: truncated ECDSA signature", ErrBadSignature, ErrMalformed)
		}
		sig.r, sig.s = r, ss
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var r cryptobyte.String
		if !s.ReadUint16(&hash) || !s.ReadUint16LengthPrefixed(&r) {
			return nil, fmt.Errorf("%w: %w: TPMT_SIGNATURE: truncated RSA signature", ErrBadSignature, ErrMalformed)
		}
		sig.r = r
	default:
		return nil, fmt.Errorf("%w: signature algorithm %v not accepted", ErrBadSignature, sig.alg)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("%w: %w: TPMT_SIGNATURE has %d trailing bytes", ErrBadSignature, ErrMalformed, len(s))
	}
	switch tpm2.TPMIAlgHash(hash) {
	case tpm2.TPMAlgSHA256:
		sig.hash = crypto.SHA256
	case tpm2.TPMAlgSHA384:
		sig.hash = crypto.SHA384
	case tpm2.TPMAlgSHA512:
		sig.hash = crypto.SHA512
	default:
		return nil, fmt.Errorf("%w: hash algorithm %v not accepted", ErrBadSignature, tpm2.TPMIAlgHash(hash))
	}
	return &sig, nil
}

// digest hashes msg with h (SHA-256, SHA-384 or SHA-512) into buf.
func digest(h crypto.Hash, msg []byte, buf *[64]byte) []byte {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(msg)
		return append(buf[:0], d[:]...)
	case crypto.SHA384:
		d := sha512.Sum384(msg)
		return append(buf[:0], d[:]...)
	default:
		d := sha512.Sum512(msg)
		return append(buf[:0], d[:]...)
	}
}

// verifyTPMSignature verifies a marshalled TPMT_SIGNATURE over msg with
// pub. Accepted: ECDSA, RSASSA and RSAPSS with SHA-256, SHA-384 or
// SHA-512. It returns the hash algorithm used.
func verifyTPMSignature(pub crypto.PublicKey, sigBytes, msg []byte) (crypto.Hash, error) {
	sig, err := decodeSignature(sigBytes)
	if err != nil {
		return 0, err
	}
	var buf [64]byte
	d := digest(sig.hash, msg, &buf)
	switch sig.alg {
	case tpm2.TPMAlgECDSA:
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return 0, fmt.Errorf("%w: ECDSA signature from a %T key", ErrBadSignature, pub)
		}
		var der [2*(3+1+66) + 3]byte // SEQUENCE of two INTEGERs of up to 66 bytes (P-521)
		if len(sig.r) > 66 || len(sig.s) > 66 {
			return 0, ErrBadSignature
		}
		b := cryptobyte.NewFixedBuilder(der[:0])
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addASN1Unsigned(b, sig.r)
			addASN1Unsigned(b, sig.s)
		})
		asn, err := b.Bytes()
		if err != nil || !ecdsa.VerifyASN1(k, d, asn) {
			return 0, ErrBadSignature
		}
		return sig.hash, nil
	default: // RSASSA, RSAPSS
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return 0, fmt.Errorf("%w: RSA signature from a %T key", ErrBadSignature, pub)
		}
		if sig.alg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(k, sig.hash, d, sig.r)
		} else {
			err = rsa.VerifyPSS(k, sig.hash, d, sig.r, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		if err != nil {
			return 0, ErrBadSignature
		}
		return sig.hash, nil
	}
}

// addASN1Unsigned adds a DER INTEGER holding the big-endian unsigned
// integer v (minimal encoding: leading zeros dropped, a zero byte added
// when the top bit is set).
func addASN1Unsigned(b *cryptobyte.Builder, v []byte) {
	for len(v) > 0 && v[0] == 0 {
		v = v[1:]
	}
	b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) {
		if len(v) == 0 || v[0]&0x80 != 0 {
			b.AddUint8(0)
		}
		b.AddBytes(v)
	})
}

// tpmaObjectDefined has the TPMA_OBJECT bits go-tpm names; any other bit
// set sends decodePublicFast to go-tpm's decoder, which keeps it.
const tpmaObjectDefined = 1<<1 | 1<<2 | 1<<4 | 1<<5 | 1<<6 | 1<<7 | 1<<8 | 1<<10 | 1<<11 | 1<<16 | 1<<17 | 1<<18 | 1<<19

// decodePublicFast decodes the TPMT_PUBLIC of the signing keys quotes are
// verified with (IAKs, tpm2-tools AKs) and of EKs without reflection: an
// ECC or RSA key with no symmetric algorithm or AES (an EK's), no KDF, and
// a NULL, ECDSA, RSASSA or RSAPSS scheme, and no reserved attribute bit.
// It returns false for any other form or any malformed input; parseTPMTPublic then uses go-tpm's
// decoder, the reference (FuzzDecodePublic checks they agree).
func decodePublicFast(b []byte) (*tpm2.TPMTPublic, bool) {
	s := cryptobyte.String(b)
	var typ, nameAlg, symAlg, scheme uint16
	var attrs uint32
	var policy cryptobyte.String
	if !s.ReadUint16(&typ) || !s.ReadUint16(&nameAlg) || !s.ReadUint32(&attrs) ||
		!s.ReadUint16LengthPrefixed(&policy) || !s.ReadUint16(&symAlg) {
		return nil, false
	}
	if attrs&^tpmaObjectDefined != 0 {
		return nil, false
	}
	sym := tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
	switch tpm2.TPMAlgID(symAlg) {
	case tpm2.TPMAlgNull:
	case tpm2.TPMAlgAES: // an EK's: AES-128 CFB in the TCG EK profile
		var keyBits, mode uint16
		if !s.ReadUint16(&keyBits) || !s.ReadUint16(&mode) {
			return nil, false
		}
		sym = tpm2.TPMTSymDefObject{
			Algorithm: tpm2.TPMAlgAES,
			KeyBits:   tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(keyBits)),
			Mode:      tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMIAlgSymMode(mode)),
		}
	default:
		return nil, false
	}
	if !s.ReadUint16(&scheme) {
		return nil, false
	}
	bit := func(n uint) bool { return attrs&(1<<n) != 0 }
	pub := &tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgID(typ),
		NameAlg: tpm2.TPMAlgID(nameAlg),
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: bit(1), STClear: bit(2), FixedParent: bit(4), SensitiveDataOrigin: bit(5),
			UserWithAuth: bit(6), AdminWithPolicy: bit(7), FirmwareLimited: bit(8), NoDA: bit(10),
			EncryptedDuplication: bit(11), Restricted: bit(16), Decrypt: bit(17), SignEncrypt: bit(18),
			X509Sign: bit(19),
		},
		AuthPolicy: tpm2.TPM2BDigest{Buffer: policy},
	}
	var hash uint16
	switch tpm2.TPMAlgID(typ) {
	case tpm2.TPMAlgECC:
		es := tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgID(scheme)}
		switch tpm2.TPMAlgID(scheme) {
		case tpm2.TPMAlgNull:
		case tpm2.TPMAlgECDSA:
			if !s.ReadUint16(&hash) {
				return nil, false
			}
			es.Details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgID(hash)})
		default:
			return nil, false
		}
		var curve, kdf uint16
		var x, y cryptobyte.String
		if !s.ReadUint16(&curve) || !s.ReadUint16(&kdf) || tpm2.TPMAlgID(kdf) != tpm2.TPMAlgNull ||
			!s.ReadUint16LengthPrefixed(&x) || !s.ReadUint16LengthPrefixed(&y) || !s.Empty() {
			return nil, false
		}
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: sym, Scheme: es, CurveID: tpm2.TPMECCCurve(curve), KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: x}, Y: tpm2.TPM2BECCParameter{Buffer: y},
		})
	case tpm2.TPMAlgRSA:
		rs := tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgID(scheme)}
		switch tpm2.TPMAlgID(scheme) {
		case tpm2.TPMAlgNull:
		case tpm2.TPMAlgRSASSA:
			if !s.ReadUint16(&hash) {
				return nil, false
			}
			rs.Details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgID(hash)})
		case tpm2.TPMAlgRSAPSS:
			if !s.ReadUint16(&hash) {
				return nil, false
			}
			rs.Details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgID(hash)})
		default:
			return nil, false
		}
		var keyBits uint16
		var exponent uint32
		var n cryptobyte.String
		if !s.ReadUint16(&keyBits) || !s.ReadUint32(&exponent) || !s.ReadUint16LengthPrefixed(&n) || !s.Empty() {
			return nil, false
		}
		pub.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: sym, Scheme: rs, KeyBits: tpm2.TPMKeyBits(keyBits), Exponent: exponent,
		})
		pub.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: n})
	default:
		return nil, false
	}
	return pub, true
}
