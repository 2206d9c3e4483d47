package attest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest/internal/attesttest"
)

// crossSignedPKI is a TPM vendor's PKI as vendors ship it (the ek-chain
// check of docs/design/enrollment.md): a TPM vendor root V whose key is
// also certified by a WebTrust-style root R (cross-certificate X: same
// subject and key as V, issued by R), so an EK certificate chains to either
// root; the vendor's manufacturing CA M under V; EK certificates under M.
type crossSignedPKI struct {
	r, v, unrelated *attesttest.CA
	x               *x509.Certificate
	m               *attesttest.CA
}

func newCrossSignedPKI(t *testing.T) *crossSignedPKI {
	p := &crossSignedPKI{
		r:         attesttest.NewRootCA(t, "WebTrust Root R"),
		v:         attesttest.NewRootCA(t, "TPM Vendor Root V"),
		unrelated: attesttest.NewRootCA(t, "Unrelated Root"),
	}
	xt := attesttest.CATemplate("", p.v.Cert.NotBefore, p.v.Cert.NotAfter)
	xt.Subject = p.v.Cert.Subject
	p.x = p.r.Issue(t, xt, p.v.Key.Public())
	p.m = p.v.SubCA(t, "TPM Vendor Manufacturing CA M")
	return p
}

func (p *crossSignedPKI) ekCert(t *testing.T, issuer *attesttest.CA) *EKCertificate {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl, err := EKCertificateTemplate(&key.PublicKey, TPMInfo{"id:49465800", "SLB 9672", "id:00100001"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseEKCertificate(issuer.Issue(t, tmpl, &key.PublicKey).Raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func bundleOf(t *testing.T, certs ...*x509.Certificate) *Bundle {
	t.Helper()
	b, err := ParseBundle(attesttest.PEM(certs...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCrossSignedChain(t *testing.T) {
	p := newCrossSignedPKI(t)
	ek := p.ekCert(t, p.m)
	now := time.Now()

	// A verifier that trusts only the WebTrust root R.
	viaR := bundleOf(t, p.r.Cert, p.x, p.m.Cert)
	if len(viaR.roots) != 1 || len(viaR.intermediates) != 2 {
		t.Fatalf("bundle: %d roots, %d intermediates", len(viaR.roots), len(viaR.intermediates))
	}
	chains, err := ek.Verify(viaR, now)
	if err != nil {
		t.Fatalf("via R: %v", err)
	}
	if c := chains[0]; len(c) != 4 || c[3].Subject.CommonName != "WebTrust Root R" || !c[2].Equal(p.x) {
		t.Errorf("via R: chain %v", names(c))
	}

	// A verifier that trusts only the vendor root V.
	chains, err = ek.Verify(bundleOf(t, p.v.Cert, p.m.Cert), now)
	if err != nil {
		t.Fatalf("via V: %v", err)
	}
	if c := chains[0]; len(c) != 3 || c[2].Subject.CommonName != "TPM Vendor Root V" {
		t.Errorf("via V: chain %v", names(c))
	}

	// Both roots trusted: both paths are found.
	chains, err = ek.Verify(bundleOf(t, p.r.Cert, p.v.Cert, p.x, p.m.Cert), now)
	if err != nil || len(chains) != 2 {
		t.Errorf("both roots: %d chains, %v", len(chains), err)
	}

	// Refused: an unknown root, even with the cross-certificate present.
	if _, err := ek.Verify(bundleOf(t, p.unrelated.Cert, p.x, p.m.Cert), now); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("unknown root: %v, want ErrUnknownCA", err)
	}
	// Refused: R without the cross-certificate.
	if _, err := ek.Verify(bundleOf(t, p.r.Cert, p.m.Cert), now); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("R without cross-certificate: %v, want ErrUnknownCA", err)
	}
	// Refused: outside the leaf's validity.
	if _, err := ek.Verify(viaR, now.Add(48*time.Hour)); !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("expired leaf: %v, want ErrCertificateExpired", err)
	}
}

func names(c []*x509.Certificate) []string {
	var out []string
	for _, x := range c {
		out = append(out, x.Subject.CommonName)
	}
	return out
}

func TestChainErrorsNameTheRule(t *testing.T) {
	p := newCrossSignedPKI(t)
	now := time.Now()

	// An EK certificate signed by a certificate that is not a CA.
	notCAKey := attesttest.NewKey(t)
	nt := attesttest.CATemplate("Not a CA", now.Add(-time.Hour), now.Add(time.Hour*24*365))
	nt.IsCA = false
	nt.KeyUsage = x509.KeyUsageDigitalSignature
	notCA := &attesttest.CA{Cert: p.v.Issue(t, nt, notCAKey.Public()), Key: notCAKey}
	ek := p.ekCert(t, notCA)
	if _, err := ek.Verify(bundleOf(t, p.v.Cert, notCA.Cert), now); !errors.Is(err, ErrIssuerNotCA) {
		t.Errorf("issuer not a CA: %v, want ErrIssuerNotCA", err)
	}

	// An expired intermediate.
	oldKey := attesttest.NewKey(t)
	ot := attesttest.CATemplate("Old Mfg CA", now.Add(-10*24*time.Hour), now.Add(-24*time.Hour))
	old := &attesttest.CA{Cert: p.v.Issue(t, ot, oldKey.Public()), Key: oldKey}
	ek = p.ekCert(t, old)
	if _, err := ek.Verify(bundleOf(t, p.v.Cert, old.Cert), now); !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("expired intermediate: %v, want ErrCertificateExpired", err)
	}

	// A leaf whose EKU does not allow EK use.
	ek = p.ekCert(t, p.m)
	leaf := *ek.Cert
	leaf.UnknownExtKeyUsage = nil
	leaf.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	bad := &EKCertificate{Cert: &leaf, TPM: ek.TPM, Raw: ek.Raw}
	if _, err := bad.Verify(bundleOf(t, p.v.Cert, p.m.Cert), now); !errors.Is(err, ErrNotEKCertificate) {
		t.Errorf("server-auth EKU: %v, want ErrNotEKCertificate", err)
	}

	// Any other unhandled critical extension still fails verification.
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl, _ := EKCertificateTemplate(&key.PublicKey, TPMInfo{"id:49465800", "m", "v"}, now.Add(-time.Hour), now.Add(time.Hour))
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}})
	withExt, err := ParseEKCertificate(p.m.Issue(t, tmpl, &key.PublicKey).Raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(withExt.Cert.UnhandledCriticalExtensions) != 1 {
		t.Errorf("unhandled critical extensions %v", withExt.Cert.UnhandledCriticalExtensions)
	}
	if _, err := withExt.Verify(bundleOf(t, p.v.Cert, p.m.Cert), now); err == nil {
		t.Error("verified a certificate with an unknown critical extension")
	}
}

func TestParseBundleRejects(t *testing.T) {
	if _, err := ParseBundle([]byte("no pem here")); err == nil {
		t.Error("accepted a bundle without certificates")
	}
	if _, err := ParseBundle([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")); err == nil {
		t.Error("accepted a malformed certificate")
	}
}
