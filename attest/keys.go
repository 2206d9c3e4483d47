package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"
)

// DeviceID returns the Custody device ID of an EK public key: the lowercase
// hex SHA-256 of its PKIX SubjectPublicKeyInfo DER.
func DeviceID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("attest: device ID: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// PublicKeyFromTPMT decodes a marshalled TPMT_PUBLIC into a Go public key
// and computes its TPM Name. It only decodes: nothing about where the key
// lives is proven. The encoding must be canonical (no trailing bytes), RSA
// keys at least 2048 bits, ECC points on a NIST curve.
func PublicKeyFromTPMT(tpmtPublic []byte) (crypto.PublicKey, []byte, error) {
	pub, err := parseTPMTPublic(tpmtPublic)
	if err != nil {
		return nil, nil, err
	}
	key, err := goPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	name, err := objectName(pub, tpmtPublic)
	if err != nil {
		return nil, nil, err
	}
	return key, name, nil
}

// parseTPMTPublic strictly decodes a TPMT_PUBLIC: common signing-key
// forms by hand (decodePublicFast), everything else with go-tpm.
func parseTPMTPublic(b []byte) (*tpm2.TPMTPublic, error) {
	if p, ok := decodePublicFast(b); ok {
		return p, nil
	}
	return unmarshalStrict[tpm2.TPMTPublic](b, "TPMT_PUBLIC", publicLen)
}

// unmarshalStrict decodes a TPM structure and requires that it spans all
// of b: no trailing data. encodedLen, if not nil, computes the encoded
// length from the decoded value (cheap); when it is nil or cannot tell, the
// value is re-encoded and compared with b (go-tpm's reflection makes that
// the costlier check). It never panics on hostile input.
func unmarshalStrict[T tpm2.Marshallable, P interface {
	*T
	tpm2.Unmarshallable
}](b []byte, what string, encodedLen func(*T) (int, bool)) (v *T, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, r)
		}
	}()
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty %s", ErrMalformed, what)
	}
	v, err = tpm2.Unmarshal[T, P](b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	if encodedLen != nil {
		if n, ok := encodedLen(v); ok {
			if n != len(b) {
				return nil, fmt.Errorf("%w: %s of %d bytes has %d trailing bytes", ErrMalformed, what, n, len(b)-n)
			}
			return v, nil
		}
	}
	if !bytes.Equal(tpm2.Marshal(*v), b) {
		return nil, fmt.Errorf("%w: %s is not canonically encoded or has trailing bytes", ErrMalformed, what)
	}
	return v, nil
}

// publicLen is the encoded length of an RSA or ECC TPMT_PUBLIC with the
// common symmetric, scheme and KDF algorithms; other forms are checked by
// re-encoding.
func publicLen(p *tpm2.TPMTPublic) (int, bool) {
	n := 2 + 2 + 4 + 2 + len(p.AuthPolicy.Buffer)
	sym := func(alg tpm2.TPMAlgID) (int, bool) {
		switch alg {
		case tpm2.TPMAlgNull:
			return 2, true
		case tpm2.TPMAlgAES, tpm2.TPMAlgSM4, tpm2.TPMAlgCamellia:
			return 2 + 2 + 2, true
		}
		return 0, false
	}
	scheme := func(alg tpm2.TPMAlgID) (int, bool) {
		switch alg {
		case tpm2.TPMAlgNull, tpm2.TPMAlgRSAES:
			return 2, true
		case tpm2.TPMAlgECDSA, tpm2.TPMAlgECDH, tpm2.TPMAlgECSchnorr, tpm2.TPMAlgSM2, tpm2.TPMAlgECMQV,
			tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS, tpm2.TPMAlgOAEP:
			return 2 + 2, true
		case tpm2.TPMAlgECDAA:
			return 2 + 2 + 2, true
		}
		return 0, false
	}
	switch p.Type {
	case tpm2.TPMAlgRSA:
		parms, err := p.Parameters.RSADetail()
		if err != nil {
			return 0, false
		}
		a, ok1 := sym(parms.Symmetric.Algorithm)
		b, ok2 := scheme(parms.Scheme.Scheme)
		u, err := p.Unique.RSA()
		if !ok1 || !ok2 || err != nil {
			return 0, false
		}
		return n + a + b + 2 + 4 + 2 + len(u.Buffer), true
	case tpm2.TPMAlgECC:
		parms, err := p.Parameters.ECCDetail()
		if err != nil {
			return 0, false
		}
		a, ok1 := sym(parms.Symmetric.Algorithm)
		b, ok2 := scheme(parms.Scheme.Scheme)
		kdf := 2
		if parms.KDF.Scheme != tpm2.TPMAlgNull {
			kdf, ok2 = 4, ok2 && (parms.KDF.Scheme == tpm2.TPMAlgMGF1 || parms.KDF.Scheme == tpm2.TPMAlgKDF1SP80056A ||
				parms.KDF.Scheme == tpm2.TPMAlgKDF2 || parms.KDF.Scheme == tpm2.TPMAlgKDF1SP800108)
		}
		u, err := p.Unique.ECC()
		if !ok1 || !ok2 || err != nil {
			return 0, false
		}
		return n + a + b + 2 + kdf + 2 + len(u.X.Buffer) + 2 + len(u.Y.Buffer), true
	}
	return 0, false
}

// objectName is the TPM Name of a canonically encoded TPMT_PUBLIC:
// nameAlg || H_nameAlg(tpmtPublic).
func objectName(pub *tpm2.TPMTPublic, tpmtPublic []byte) ([]byte, error) {
	h, err := pub.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("%w: name algorithm %v", ErrMalformed, pub.NameAlg)
	}
	d := h.New()
	d.Write(tpmtPublic)
	return d.Sum([]byte{byte(pub.NameAlg >> 8), byte(pub.NameAlg)}), nil
}

// goPublicKey converts a TPM public area to a Go key, validating it.
func goPublicKey(pub *tpm2.TPMTPublic) (crypto.PublicKey, error) {
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA parameters: %v", ErrMalformed, err)
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, fmt.Errorf("%w: RSA modulus: %v", ErrMalformed, err)
		}
		N := new(big.Int).SetBytes(n.Buffer)
		if N.BitLen() < 2048 || N.BitLen() != int(parms.KeyBits) || N.Bit(0) == 0 {
			return nil, fmt.Errorf("%w: RSA modulus of %d bits (keyBits %d)", ErrKeyAttributes, N.BitLen(), parms.KeyBits)
		}
		e := int(parms.Exponent)
		if e == 0 {
			e = 65537
		}
		if e < 3 || e&1 == 0 {
			return nil, fmt.Errorf("%w: RSA exponent %d", ErrKeyAttributes, e)
		}
		return &rsa.PublicKey{N: N, E: e}, nil
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC parameters: %v", ErrMalformed, err)
		}
		pt, err := pub.Unique.ECC()
		if err != nil {
			return nil, fmt.Errorf("%w: ECC point: %v", ErrMalformed, err)
		}
		var curve elliptic.Curve
		switch parms.CurveID {
		case tpm2.TPMECCNistP256:
			curve = elliptic.P256()
		case tpm2.TPMECCNistP384:
			curve = elliptic.P384()
		case tpm2.TPMECCNistP521:
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("%w: unsupported ECC curve %v", ErrKeyAttributes, parms.CurveID)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, y := pt.X.Buffer, pt.Y.Buffer
		if len(x) > size || len(y) > size {
			return nil, fmt.Errorf("%w: ECC coordinate too long", ErrMalformed)
		}
		enc := make([]byte, 1+2*size)
		enc[0] = 4
		copy(enc[1+size-len(x):1+size], x)
		copy(enc[1+2*size-len(y):], y)
		key, err := ecdsa.ParseUncompressedPublicKey(curve, enc)
		if err != nil {
			return nil, fmt.Errorf("%w: ECC point: %v", ErrMalformed, err)
		}
		return key, nil
	}
	return nil, fmt.Errorf("%w: unsupported key type %v", ErrKeyAttributes, pub.Type)
}

// SamePublicKey reports whether a and b are the same public key.
func SamePublicKey(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ae, ok := a.(equaler)
	return ok && ae.Equal(b)
}
