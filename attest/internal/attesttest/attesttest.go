// Package attesttest holds the test helpers that the tests of attest (the
// verifier) and of attest/tpm (the device) share: certificate authorities
// made for a test, and the arithmetic of a PCR extend. It must not import
// attest, whose own tests import it.
package attesttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"sync"
	"testing"
	"time"
)

// CA is a CA made for a test.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

var (
	serialMu sync.Mutex
	serial   = big.NewInt(1000)
)

// NextSerial returns a serial number not returned before in this process.
func NextSerial() *big.Int {
	serialMu.Lock()
	defer serialMu.Unlock()
	serial = new(big.Int).Add(serial, big.NewInt(1))
	return new(big.Int).Set(serial)
}

// CATemplate returns a CA certificate template.
func CATemplate(name string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          NextSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Custody test"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// NewKey returns a fresh ECDSA P-256 key.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewRootCA makes a self-signed CA.
func NewRootCA(t testing.TB, name string) *CA {
	t.Helper()
	key := NewKey(t)
	tmpl := CATemplate(name, time.Now().Add(-time.Hour), time.Now().Add(20*365*24*time.Hour))
	return &CA{Cert: sign(t, tmpl, tmpl, key.Public(), key), Key: key}
}

// Issue signs tmpl for pub with the CA.
func (ca *CA) Issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	return sign(t, tmpl, ca.Cert, pub, ca.Key)
}

// SubCA makes a CA under ca.
func (ca *CA) SubCA(t testing.TB, name string) *CA {
	t.Helper()
	key := NewKey(t)
	tmpl := CATemplate(name, time.Now().Add(-time.Hour), time.Now().Add(10*365*24*time.Hour))
	return &CA{Cert: ca.Issue(t, tmpl, key.Public()), Key: key}
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatalf("CreateCertificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("ParseCertificate: %v", err)
	}
	return c
}

// PEM encodes certificates as a PEM bundle.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ExtendSoftware computes a PCR extend: SHA-256(pcr || digest).
func ExtendSoftware(pcr, digest []byte) []byte {
	h := sha256.New()
	h.Write(pcr)
	h.Write(digest)
	return h.Sum(nil)
}
