package gate

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/services/pki"
)

// opaqueSigner hides the key's type, as an HSM's signer does.
type opaqueSigner struct{ k crypto.Signer }

func (o opaqueSigner) Public() crypto.PublicKey { return o.k.Public() }
func (o opaqueSigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.k.Sign(r, d, opts)
}

// TestLDevIDMatchesX509 holds the LDevIDs the gate writes itself to the
// certificate crypto/x509 writes from the same template: the same TBS, byte
// for byte, and a signature that verifies under the CA.
func TestLDevIDMatchesX509(t *testing.T) {
	root, err := pki.NewRootCA("test root", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := root.NewSubCA("test LDevID CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newLDevIDSigner(ca)
	if err != nil {
		t.Fatal(err)
	}
	if s.key == nil {
		t.Fatal("an in-process ECDSA P-256 CA key should be signed with directly")
	}
	devKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	inter := x509.NewCertPool()
	inter.AddCert(ca.Cert)
	for _, tc := range []struct {
		name, regID   string
		before, after time.Time
	}{
		{"device ID", strings.Repeat("a1", 32), now.Add(-5 * time.Minute), now.Add(365 * 24 * time.Hour)},
		{"not a PrintableString of letters and digits", "dev-ice_1", now, now.Add(time.Hour)},
		{"after 2049", strings.Repeat("0f", 32), now, time.Date(2051, 3, 4, 5, 6, 7, 8, time.UTC)},
		{"sub-second times", strings.Repeat("7", 64), now.Add(123456789), now.Add(time.Hour + 987654321)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.issue(tc.regID, devKey.Public(), tc.before, tc.after)
			if err != nil {
				t.Fatal(err)
			}
			subject, err := rawSubject(tc.regID)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := ldevidTemplate(subject, "urn:custody:device:"+tc.regID, tc.before, tc.after)
			tmpl.SerialNumber = got.SerialNumber
			want, err := ca.Issue(tmpl, devKey.Public())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.RawTBSCertificate, want.RawTBSCertificate) {
				t.Fatalf("TBS differs from crypto/x509's:\n got %x\nwant %x", got.RawTBSCertificate, want.RawTBSCertificate)
			}
			if got.SignatureAlgorithm != want.SignatureAlgorithm {
				t.Fatalf("signature algorithm %v, want %v", got.SignatureAlgorithm, want.SignatureAlgorithm)
			}
			if err := got.CheckSignatureFrom(ca.Cert); err != nil {
				t.Fatal(err)
			}
			if _, err := got.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: tc.before.Add(time.Second),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Any other signer goes through crypto/x509, which checks its signature.
	hsm := *ca
	hsm.Key = opaqueSigner{ca.Key}
	s2, err := newLDevIDSigner(&hsm)
	if err != nil {
		t.Fatal(err)
	}
	if s2.key != nil {
		t.Fatal("an opaque signer should go through crypto/x509")
	}
	c, err := s2.issue(strings.Repeat("b2", 32), devKey.Public(), now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
}
