package attest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// testCA is a CA made for a test.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serial = big.NewInt(1000)

func nextSerial() *big.Int {
	serial = new(big.Int).Add(serial, big.NewInt(1))
	return new(big.Int).Set(serial)
}

// caTemplate returns a CA certificate template.
func caTemplate(name string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Custody test"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newRootCA makes a self-signed CA.
func newRootCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(name, time.Now().Add(-time.Hour), time.Now().Add(20*365*24*time.Hour))
	return &testCA{cert: sign(t, tmpl, tmpl, key.Public(), key), key: key}
}

// issue signs tmpl for pub with the CA.
func (ca *testCA) issue(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey) *x509.Certificate {
	t.Helper()
	return sign(t, tmpl, ca.cert, pub, ca.key)
}

// subCA makes a CA under ca.
func (ca *testCA) subCA(t testing.TB, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(name, time.Now().Add(-time.Hour), time.Now().Add(10*365*24*time.Hour))
	return &testCA{cert: ca.issue(t, tmpl, key.Public()), key: key}
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

func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
