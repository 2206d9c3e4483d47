package gate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"strings"
	"testing"
)

func csrFor(t testing.TB, key *ecdsa.PrivateKey, cn string) string {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func TestCheckCSR(t *testing.T) {
	id := strings.Repeat("ab", 32)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := csrFor(t, key, id)
	if err := checkCSR(good, id, key.Public()); err != nil {
		t.Fatalf("good CSR refused: %v", err)
	}
	der, _ := base64.StdEncoding.DecodeString(good)
	der[len(der)-5] ^= 1 // the signature
	for name, c := range map[string]struct {
		csr  string
		want string
	}{
		"not base64":    {"%%%", "not base64"},
		"not a CSR":     {base64.StdEncoding.EncodeToString([]byte("hello")), "does not parse"},
		"bad signature": {base64.StdEncoding.EncodeToString(der), "signature"},
		"other CN":      {csrFor(t, key, "someone-else"), "subject CN"},
		"other key":     {csrFor(t, other, id), "not the LDevID key"},
	} {
		if err := checkCSR(c.csr, id, key.Public()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// FuzzCheckCSR feeds untrusted CSR bytes to the gate's check: it must
// refuse them without panicking, and accept only a CSR for the key.
func FuzzCheckCSR(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id := strings.Repeat("cd", 32)
	good, _ := base64.StdEncoding.DecodeString(csrFor(f, key, id))
	f.Add(good)
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		err := checkCSR(base64.StdEncoding.EncodeToString(der), id, key.Public())
		if err == nil {
			csr, perr := x509.ParseCertificateRequest(der)
			if perr != nil || csr.Subject.CommonName != id || !key.PublicKey.Equal(csr.PublicKey) {
				t.Fatalf("accepted a CSR that is not for the key: %v", perr)
			}
		}
	})
}

// rawSubject writes what crypto/x509 writes for pkix.Name{CommonName: id}.
func TestRawSubjectMatchesPKIX(t *testing.T) {
	for _, id := range []string{
		"0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c", "Device42", "",
		"with space", "a*b", "a&b", "ünïcode", strings.Repeat("f", 200),
	} {
		got, err := rawSubject(id)
		if err != nil {
			t.Fatal(err)
		}
		want, err := asn1.Marshal(pkix.Name{CommonName: id}.ToRDNSequence())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%q: rawSubject %x, crypto/x509 %x", id, got, want)
		}
	}
}
