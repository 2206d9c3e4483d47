package attest

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/custodyledger/custody/attest/internal/attesttest"
)

// FuzzParseEKCertificate: parsing untrusted EK certificate bytes never
// panics, and a successful parse is stable: re-parsing Raw gives the same
// certificate and TPM description.
func FuzzParseEKCertificate(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, name := range files {
		if strings.HasSuffix(name, ".der") || strings.HasSuffix(name, ".bin") {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{0x10, 0x01, 0x00, 0x00, 0x04, 0x10, 0x02, 0x30, 0x00})
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseEKCertificate(b)
		if err != nil {
			return
		}
		c2, err := ParseEKCertificate(c.Raw)
		if err != nil {
			t.Fatalf("re-parse of Raw failed: %v", err)
		}
		if !bytes.Equal(c2.Raw, c.Raw) || c2.TPM != c.TPM || !c2.Cert.Equal(c.Cert) ||
			len(c2.Cert.UnhandledCriticalExtensions) != len(c.Cert.UnhandledCriticalExtensions) {
			t.Fatalf("re-parse differs: %+v vs %+v", c2.TPM, c.TPM)
		}
		if !bytes.Contains(b, c.Raw) {
			t.Fatal("Raw is not part of the input")
		}
	})
}

// FuzzVerifyQuote: VerifyQuote never panics on hostile attestation bytes or
// signatures, and never accepts anything but the quote the TPM signed.
func FuzzVerifyQuote(f *testing.F) {
	// Evidence of the seeded simulator (testdata/sim/): the only quote its
	// IAK signed over this nonce, and a certification over the same nonce.
	sim := loadSimEvidence(f)
	iak, nonce, q, ev := sim.iak, sim.nonce, sim.quote, sim.certify

	f.Add(q.Attest, q.Signature)
	f.Add(ev.Attest, ev.Signature)
	f.Add(q.Attest[:len(q.Attest)/2], q.Signature)
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0x00, 0x18})
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		info, err := VerifyQuote(iak, &Quote{Attest: attest, Signature: sig, PCRs: q.PCRs}, nonce)
		if err != nil {
			return
		}
		if !bytes.Equal(attest, q.Attest) {
			t.Fatalf("accepted attestation data the TPM did not sign: %x", attest)
		}
		if !bytes.Equal(info.Nonce, nonce) {
			t.Fatal("accepted with another nonce")
		}
		// The evidence of a certify must never pass as a quote.
		if _, err := VerifyCertify(iak, &CertifyEvidence{Public: ev.Public, Attest: attest, Signature: sig}, nonce); err == nil {
			t.Fatal("a quote verified as a certify")
		}
	})
}

// iakFuzzSeeds issues IAK certificates with ca as TestIAKCertificate does:
// against the simulator's EK, and against every captured vendor EK
// certificate in testdata (their real SAN encodings), the first of those
// with the SAN marked critical. It returns their DER.
func iakFuzzSeeds(f *testing.F, ca *attesttest.CA, now time.Time) [][]byte {
	var out [][]byte
	issue := func(iakPub, ekPub any, ekCert *x509.Certificate, criticalSAN bool) {
		id, err := DeviceID(ekPub)
		if err != nil {
			f.Fatal(err)
		}
		tmpl, err := IAKCertificateTemplate(iakPub, id, ekCert, now.Add(-time.Hour), now.Add(24*time.Hour))
		if err != nil {
			f.Fatal(err)
		}
		tmpl.ExtraExtensions[0].Critical = criticalSAN
		out = append(out, ca.Issue(f, tmpl, iakPub).Raw)
	}
	sim := loadSimEvidence(f)
	ekPub, _, err := PublicKeyFromTPMT(sim.ekECC)
	if err != nil {
		f.Fatal(err)
	}
	iakPub, _, err := PublicKeyFromTPMT(sim.iak)
	if err != nil {
		f.Fatal(err)
	}
	ekTmpl, err := EKCertificateTemplate(ekPub, TPMInfo{"id:4D534654", "SIM", "id:00000001"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	issue(iakPub, ekPub, ca.Issue(f, ekTmpl, ekPub), false)
	files, _ := filepath.Glob(filepath.Join("testdata", "*.der"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		ekc, err := ParseEKCertificate(b)
		if err != nil {
			continue // not every captured certificate is a leaf EK certificate
		}
		issue(attesttest.NewKey(f).Public(), ekc.Cert.PublicKey, ekc.Cert, len(out) == 1)
	}
	if len(out) < 3 {
		f.Fatalf("only %d seed IAK certificates", len(out))
	}
	return out
}

// FuzzParseIAKCertificate: parsing untrusted IAK certificate bytes never
// panics; a successful parse describes exactly the input, is stable, and
// re-encodes (the SAN and EK-digest encoders IAKCertificateTemplate uses)
// to a certificate that parses to the same device ID, EK certificate
// digest and TPM; and only the certificates the CA issued verify. Seeds are
// iakFuzzSeeds.
func FuzzParseIAKCertificate(f *testing.F) {
	ca := attesttest.NewRootCA(f, "Vendor")
	bundle, err := ParseBundle(attesttest.PEM(ca.Cert))
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now()
	issued := map[string]bool{}
	for _, der := range iakFuzzSeeds(f, ca, now) {
		issued[string(der)] = true
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := ParseIAKCertificate(der)
		if err != nil {
			return
		}
		if !bytes.Equal(c.Cert.Raw, der) {
			t.Fatal("Cert.Raw is not the input")
		}
		if c.DeviceID == "" || c.DeviceID != c.Cert.Subject.CommonName || len(c.EKCertDigest) != sha256.Size {
			t.Fatalf("accepted device ID %q, EK certificate digest %x", c.DeviceID, c.EKCertDigest)
		}
		if c.TPM != (TPMInfo{}) {
			for _, id := range c.Cert.UnhandledCriticalExtensions {
				if id.Equal(oidSubjectAltName) {
					t.Fatal("the TPM SAN was read but is still an unhandled critical extension")
				}
			}
		}
		again, err := ParseIAKCertificate(c.Cert.Raw)
		if err != nil || again.DeviceID != c.DeviceID || !bytes.Equal(again.EKCertDigest, c.EKCertDigest) || again.TPM != c.TPM {
			t.Fatalf("re-parse differs: %+v, %v", again, err)
		}
		if _, err := c.Verify(bundle, now); err == nil && !issued[string(der)] {
			t.Fatal("a certificate the CA did not issue verified")
		}
		// Re-encode what was parsed.
		sda, err := marshalEKCertDigest(c.EKCertDigest)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: attesttest.NextSerial(), Subject: pkix.Name{CommonName: c.DeviceID},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			ExtraExtensions: []pkix.Extension{{Id: oidSubjectDirAttrs, Value: sda}},
		}
		if c.TPM != (TPMInfo{}) {
			san, err := marshalTPMSAN(c.TPM)
			if err != nil {
				t.Fatalf("the parsed TPM %+v does not encode: %v", c.TPM, err)
			}
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidSubjectAltName, Value: san})
		}
		switch c.Cert.PublicKey.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey, *ecdh.PublicKey:
		default:
			return // a key crypto/x509 parses but does not encode (DSA, unknown)
		}
		re, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, c.Cert.PublicKey, ca.Key)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", c, err)
		}
		rc, err := ParseIAKCertificate(re)
		if err != nil || rc.DeviceID != c.DeviceID || !bytes.Equal(rc.EKCertDigest, c.EKCertDigest) || rc.TPM != c.TPM {
			t.Fatalf("re-encoded %+v parses as %+v (%v)", c, rc, err)
		}
	})
}

// FuzzIAKCertificateRoundTrip: what the IAK certificate encoders write
// (the TPM SAN as EKCertificateTemplate writes it and IAKCertificateTemplate
// copies it, the EK certificate digest attribute, the device ID as subject
// CN), issued by a CA, parses back to the same values, and is refused
// exactly when a value breaks the parser's rules: no device ID, a digest
// that is not SHA-256 sized. A TPM value that is not UTF-8 or is over its
// length limit is refused by the encoder itself (marshalTPMSAN), so
// EKCertificateTemplate never writes an EK certificate that
// ParseEKCertificate refuses. Seeds are the values of iakFuzzSeeds'
// certificates.
func FuzzIAKCertificateRoundTrip(f *testing.F) {
	ca := attesttest.NewRootCA(f, "Vendor")
	now := time.Now()
	for _, der := range iakFuzzSeeds(f, ca, now) {
		c, err := ParseIAKCertificate(der)
		if err != nil {
			f.Fatal(err)
		}
		critical := slices.ContainsFunc(c.Cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectAltName) && e.Critical })
		f.Add(c.DeviceID, c.EKCertDigest, c.TPM.Manufacturer, c.TPM.Model, c.TPM.Version, critical)
	}
	f.Add("", make([]byte, sha256.Size), "id:1", "m", "v", false)
	f.Add("dev", make([]byte, sha256.Size-1), "id:1", "m", "v", true)
	f.Add("dev", make([]byte, sha256.Size), strings.Repeat("m", maxDirectoryNameValue+1), "m", "v", false)
	f.Add("dev", make([]byte, sha256.Size), "id:1", "SLB\xff9670", "v", false)
	f.Fuzz(func(t *testing.T, deviceID string, digest []byte, manufacturer, model, version string, criticalSAN bool) {
		info := TPMInfo{Manufacturer: manufacturer, Model: model, Version: version}
		tpmOK := true
		for _, v := range []string{manufacturer, model, version} {
			tpmOK = tpmOK && utf8.ValidString(v) && len(v) <= maxDirectoryNameValue
		}
		san, err := marshalTPMSAN(info)
		if (err == nil) != tpmOK {
			t.Fatalf("encoding TPM %+v: %v; the parser would accept it: %v", info, err, tpmOK)
		}
		if err != nil {
			return // refused as the parser would refuse it
		}
		sda, err := marshalEKCertDigest(digest)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: attesttest.NextSerial(), Subject: pkix.Name{CommonName: deviceID, SerialNumber: deviceID},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
			ExtraExtensions: []pkix.Extension{
				{Id: oidSubjectAltName, Critical: criticalSAN, Value: san},
				{Id: oidSubjectDirAttrs, Value: sda},
			},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, ca.Key.Public(), ca.Key)
		if err != nil {
			if utf8.ValidString(deviceID) {
				t.Fatalf("cannot issue for device ID %q: %v", deviceID, err)
			}
			return
		}
		c, err := ParseIAKCertificate(der)
		valid := deviceID != "" && len(digest) == sha256.Size
		for _, v := range []string{manufacturer, model, version} {
			valid = valid && utf8.ValidString(v) && len(v) <= maxDirectoryNameValue
		}
		if (err == nil) != valid {
			t.Fatalf("device ID %q, digest %x, TPM %+v: parse error %v", deviceID, digest, info, err)
		}
		if err != nil {
			return
		}
		if c.DeviceID != deviceID || !bytes.Equal(c.EKCertDigest, digest) || c.TPM != info {
			t.Fatalf("issued device ID %q, digest %x, TPM %+v; parsed %q, %x, %+v", deviceID, digest, info, c.DeviceID, c.EKCertDigest, c.TPM)
		}
		if slices.ContainsFunc(c.Cert.UnhandledCriticalExtensions, func(id asn1.ObjectIdentifier) bool { return id.Equal(oidSubjectAltName) }) {
			t.Fatal("the TPM SAN was read but is still an unhandled critical extension")
		}
	})
}
