package gate

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strconv"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/services/pki"
)

var testTPMInfo = attest.TPMInfo{Manufacturer: "id:41434D45", Model: "ACME-TPM20", Version: "id:00010002"}

// issueEK issues an EK certificate under ca, valid from nb to na; edit, if
// not nil, changes the template first.
func issueEK(t *testing.T, ca *pki.CA, nb, na time.Time, edit func(*x509.Certificate)) *attest.EKCertificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl, err := attest.EKCertificateTemplate(key.Public(), testTPMInfo, nb, na)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(tmpl)
	}
	cert, err := ca.Issue(tmpl, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	ek, err := attest.ParseEKCertificate(cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return ek
}

// TestCAChainsAgreeWithFullVerification: an EK certificate verified
// through a remembered CA part is accepted exactly when the verification of
// its whole chain accepts it, at every time tried, and the shortcut is
// taken for good certificates under a known issuer.
func TestCAChainsAgreeWithFullVerification(t *testing.T) {
	now := time.Now()
	// The root expires first: its expiry only shows above the issuer.
	root, err := pki.NewRootCA("Test WebTrust Root", 2*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vendorRoot, err := pki.NewRootCA("Test TPM Root", 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cross, err := root.CrossCertify(vendorRoot.Cert)
	if err != nil {
		t.Fatal(err)
	}
	mfg, err := vendorRoot.NewSubCA("Test TPM Manufacturing CA", 5*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Same name as the manufacturing CA, another key, not in the bundle.
	rogue, err := pki.NewRootCA("Test TPM Manufacturing CA", 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := attest.ParseBundle(pki.EncodeCertsPEM(root.Cert, cross, mfg.Cert))
	if err != nil {
		t.Fatal(err)
	}
	hour, year := time.Hour, 365*24*time.Hour
	requireExplicitPolicy := pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 36}, Value: []byte{0x30, 0x03, 0x80, 0x01, 0x00}}
	cases := map[string]*attest.EKCertificate{
		"good":          issueEK(t, mfg, now.Add(-hour), now.Add(4*year), nil),
		"expired":       issueEK(t, mfg, now.Add(-2*hour), now.Add(-hour), nil),
		"not yet valid": issueEK(t, mfg, now.Add(hour), now.Add(5*year), nil),
		"rogue issuer":  issueEK(t, rogue, now.Add(-hour), now.Add(5*year), nil),
		"not an EK certificate": issueEK(t, mfg, now.Add(-hour), now.Add(5*year), func(c *x509.Certificate) {
			c.UnknownExtKeyUsage, c.ExtKeyUsage = nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		}),
		"policy constraints": issueEK(t, mfg, now.Add(-hour), now.Add(5*year), func(c *x509.Certificate) {
			c.ExtraExtensions = append(c.ExtraExtensions, requireExplicitPolicy)
		}),
	}
	if !cases["policy constraints"].Cert.RequireExplicitPolicyZero {
		t.Fatal("the policy-constraints certificate does not carry them")
	}
	times := map[string]time.Time{
		"now":                              now,
		"after the root":                   now.Add(3 * year),
		"after the manufacturing CA":       now.Add(6 * year),
		"before the manufacturing CA":      now.Add(-24 * hour),
		"after everything":                 now.Add(50 * year),
		"just before the manufacturing CA": mfg.Cert.NotBefore.Add(-time.Second),
	}
	var cc caChains
	// A first certificate teaches the CA part.
	if _, err := cc.verify(issueEK(t, mfg, now.Add(-hour), now.Add(5*year), nil), bundle, now); err != nil {
		t.Fatal(err)
	}
	if n := cc.Remembered(mfg.Cert.RawSubject); n != 1 {
		t.Fatalf("%d CA parts remembered for the manufacturing CA, want 1", n)
	}
	for cname, ek := range cases {
		for tname, at := range times {
			_, full := ek.Verify(bundle, at)
			before := cc.Shortcuts()
			chains, got := cc.verify(ek, bundle, at)
			took := cc.Shortcuts() > before
			if (got == nil) != (full == nil) {
				t.Errorf("%s at %s: shortcut verification says %v, full verification %v", cname, tname, got, full)
				continue
			}
			if got != nil && got.Error() != full.Error() {
				t.Errorf("%s at %s: error %q, full verification's %q", cname, tname, got, full)
			}
			if got == nil {
				if c := chains[0]; len(c) != 4 || c[0] != ek.Cert || !c[3].Equal(root.Cert) {
					t.Errorf("%s at %s: chain of %d certificates", cname, tname, len(c))
				}
			}
			wantShortcut := got == nil && cname != "policy constraints"
			if took != wantShortcut {
				t.Errorf("%s at %s: shortcut taken %v, want %v", cname, tname, took, wantShortcut)
			}
		}
	}
}

// TestCAChainsSkipNameConstraints: a CA part with name constraints is not
// remembered (they apply to the leaf's names).
func TestCAChainsSkipNameConstraints(t *testing.T) {
	root, err := pki.NewRootCA("Test TPM Root", 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := pki.RandomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "Constrained Manufacturing CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		PermittedDNSDomains: []string{"example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root.Cert, key.Public(), root.Key)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(der)
	ca := &pki.CA{Cert: caCert, Key: crypto.Signer(key)}
	bundle, err := attest.ParseBundle(pki.EncodeCertsPEM(root.Cert, caCert))
	if err != nil {
		t.Fatal(err)
	}
	var cc caChains
	ek := issueEK(t, ca, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), nil)
	if _, err := cc.verify(ek, bundle, time.Now()); err != nil {
		t.Fatal(err)
	}
	if cc.RememberedIssuers() != 0 {
		t.Fatal("a CA part with name constraints was remembered")
	}
}

// The cache of EK verifications stays bounded, dropping expired entries
// first.
func TestEKCacheBounded(t *testing.T) {
	g := &Gate{}
	now := time.Now()
	key := func(i int) [32]byte { return sha256.Sum256([]byte(strconv.Itoa(i))) }
	for i := range maxEKCache {
		until := now.Add(time.Hour)
		if i%2 == 0 {
			until = now.Add(-time.Second) // expired
		}
		g.rememberEK(key(i), ekVerified{until: until, manufacturer: "m"}, now)
	}
	if len(g.ekCache) != maxEKCache {
		t.Fatalf("%d entries before the cache is full", len(g.ekCache))
	}
	g.rememberEK(key(-1), ekVerified{until: now.Add(time.Hour)}, now)
	if n := len(g.ekCache); n != maxEKCache/2+1 {
		t.Fatalf("%d entries after a full cache dropped its expired ones, want %d", n, maxEKCache/2+1)
	}
	for i := maxEKCache; len(g.ekCache) < maxEKCache; i++ {
		g.rememberEK(key(i), ekVerified{until: now.Add(time.Hour)}, now)
	}
	g.rememberEK(key(-2), ekVerified{until: now.Add(time.Hour)}, now)
	if n := len(g.ekCache); n > maxEKCache*3/4+1 {
		t.Fatalf("%d entries after a full cache of live ones, want at most %d", n, maxEKCache*3/4+1)
	}
	if _, ok := g.ekCache[key(-2)]; !ok {
		t.Fatal("the new entry was not kept")
	}
}
