package gate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"fmt"
	"net/url"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/custodyledger/custody/services/pki"
)

// LDevID issuance without crypto/x509's check of its own signature.
//
// x509.CreateCertificate verifies every signature it makes ("to ensure the
// crypto.Signer behaved correctly"): one ECDSA verify per LDevID, about a
// sixth of the cryptography of a decision, for a signature the standard
// library's own crypto/ecdsa just made in this process. When the LDevID CA's
// key is an in-process ECDSA P-256 key (pki.CA as custodyd loads it),
// ldevidSigner writes the LDevID itself, byte for byte the certificate
// crypto/x509 writes from the gate's template (TestLDevIDMatchesX509 holds
// it to that), and signs it with crypto/ecdsa. Any other signer (an HSM,
// where that check guards against faulty hardware) goes through
// pki.CA.Issue and keeps it. The issued certificate is verified anyway by
// everyone who relies on it: the device, DPS and IoT Hub.
type ldevidSigner struct {
	ca  *pki.CA
	key *ecdsa.PrivateKey // nil: pki.CA.Issue
	// exts is the DER of the extensions every LDevID carries, in
	// crypto/x509's order: key usage (critical, digitalSignature),
	// extended key usage (clientAuth), authority key identifier. The
	// subject alternative name (the device's URI) follows.
	exts []byte
}

// oidECDSAWithSHA256 is ecdsa-with-SHA256 (RFC 5758), which crypto/x509
// picks for a P-256 key.
var oidECDSAWithSHA256 = encasn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}

// Extension OIDs (RFC 5280).
var (
	oidExtKeyUsage       = encasn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtExtKeyUsage    = encasn1.ObjectIdentifier{2, 5, 29, 37}
	oidExtAuthorityKeyID = encasn1.ObjectIdentifier{2, 5, 29, 35}
	oidExtSubjectAltName = encasn1.ObjectIdentifier{2, 5, 29, 17}
	oidKPClientAuth      = encasn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
)

func newLDevIDSigner(ca *pki.CA) (*ldevidSigner, error) {
	s := &ldevidSigner{ca: ca}
	key, ok := ca.Key.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() || !key.PublicKey.Equal(ca.Cert.PublicKey) || len(ca.Cert.RawSubject) == 0 {
		return s, nil
	}
	// As crypto/x509's buildCertExtensions writes them.
	ku, err := encasn1.Marshal(encasn1.BitString{Bytes: []byte{0x80}, BitLength: 1}) // digitalSignature
	if err != nil {
		return nil, err
	}
	eku, err := encasn1.Marshal([]encasn1.ObjectIdentifier{oidKPClientAuth})
	if err != nil {
		return nil, err
	}
	exts := []pkix.Extension{
		{Id: oidExtKeyUsage, Critical: true, Value: ku},
		{Id: oidExtExtKeyUsage, Value: eku},
	}
	if len(ca.Cert.SubjectKeyId) > 0 {
		aki, err := encasn1.Marshal(struct {
			ID []byte `asn1:"optional,tag:0"`
		}{ca.Cert.SubjectKeyId})
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: oidExtAuthorityKeyID, Value: aki})
	}
	for _, e := range exts {
		der, err := encasn1.Marshal(e)
		if err != nil {
			return nil, err
		}
		s.exts = append(s.exts, der...)
	}
	s.key = key
	return s, nil
}

// issue signs the LDevID of the device regID for pub, valid from
// notBefore to notAfter: subject CN=regID, SAN URI urn:custody:device:regID,
// digitalSignature, clientAuth, a random 128-bit serial.
func (s *ldevidSigner) issue(regID string, pub crypto.PublicKey, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	subject, err := rawSubject(regID)
	if err != nil {
		return nil, err
	}
	uri := "urn:custody:device:" + regID
	if s.key == nil {
		return s.ca.Issue(ldevidTemplate(subject, uri, notBefore, notAfter), pub)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("gate: LDevID key: %w", err)
	}
	serial, err := pki.RandomSerial()
	if err != nil {
		return nil, err
	}
	sigAlg := func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidECDSAWithSHA256) })
	}
	var tb cryptobyte.Builder
	tb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) }) // v3
		b.AddASN1BigInt(serial)
		sigAlg(b)
		b.AddBytes(s.ca.Cert.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, notBefore)
			addTime(b, notAfter)
		})
		b.AddBytes(subject)
		b.AddBytes(spki)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(s.exts)
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // the SAN; not critical: the subject is not empty
					b.AddASN1ObjectIdentifier(oidExtSubjectAltName)
					b.AddASN1(cbasn1.OCTET_STRING, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(uri)) })
						})
					})
				})
			})
		})
	})
	tbs, err := tb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("gate: LDevID: %w", err)
	}
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("gate: signing an LDevID: %w", err)
	}
	var cb cryptobyte.Builder
	cb.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		sigAlg(b)
		b.AddASN1BitString(sig)
	})
	der, err := cb.Bytes()
	if err != nil {
		return nil, fmt.Errorf("gate: LDevID: %w", err)
	}
	return x509.ParseCertificate(der)
}

// ldevidTemplate is the LDevID as a crypto/x509 template (pki.CA.Issue
// fills the serial and the authority key identifier).
func ldevidTemplate(subject []byte, uri string, notBefore, notAfter time.Time) *x509.Certificate {
	u, _ := url.Parse(uri)
	return &x509.Certificate{
		RawSubject:  subject,
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
}

// addTime writes t as crypto/x509 writes a validity time: UTCTime for the
// years 1950 to 2049, GeneralizedTime otherwise, in UTC to the second.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if t.Year() >= 1950 && t.Year() < 2050 {
		b.AddASN1UTCTime(t)
	} else {
		b.AddASN1GeneralizedTime(t)
	}
}
