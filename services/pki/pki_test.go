package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
)

// must returns v, panicking on err: for test set-up that cannot fail.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

var (
	oidSAN        = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidTCGEKCert  = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidTPMManufac = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
)

// ekTemplate is shaped like a real TCG EK certificate: empty subject, a
// critical subjectAltName holding only a directoryName with the TPM
// manufacturer attribute, and the EK certificate EKU.
func ekTemplate(t *testing.T) *x509.Certificate {
	t.Helper()
	dirName := must(asn1.Marshal(pkix.RDNSequence{{{Type: oidTPMManufac, Value: "id:41434D45"}}}))
	san := must(asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: dirName}}))
	return &x509.Certificate{
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageKeyEncipherment,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidTCGEKCert},
		BasicConstraintsValid: true,
		ExtraExtensions:       []pkix.Extension{{Id: oidSAN, Critical: true, Value: san}},
	}
}

func TestCrossCertification(t *testing.T) {
	webtrust := must(NewRootCA("Test WebTrust Root", time.Hour))
	vendor := must(NewRootCA("Test TPM Root CA", time.Hour))
	cross := must(webtrust.CrossCertify(vendor.Cert))
	mfg := must(vendor.NewSubCA("Test TPM Manufacturing CA 001", time.Hour))

	if !bytes.Equal(cross.RawSubject, vendor.Cert.RawSubject) ||
		!bytes.Equal(cross.SubjectKeyId, vendor.Cert.SubjectKeyId) ||
		!cross.PublicKey.(*ecdsa.PublicKey).Equal(vendor.Cert.PublicKey) {
		t.Fatal("cross-certificate does not carry the vendor root's subject, SKI and key")
	}
	if !bytes.Equal(cross.AuthorityKeyId, webtrust.Cert.SubjectKeyId) {
		t.Fatal("cross-certificate AKI is not the WebTrust root's SKI")
	}
	if err := cross.CheckSignatureFrom(webtrust.Cert); err != nil {
		t.Fatalf("cross-certificate not signed by the WebTrust root: %v", err)
	}
	if !mfg.Cert.IsCA || mfg.Cert.MaxPathLen > 0 || mfg.Cert.MaxPathLenZero {
		t.Fatalf("sub-CA: IsCA=%v MaxPathLen=%d MaxPathLenZero=%v", mfg.Cert.IsCA, mfg.Cert.MaxPathLen, mfg.Cert.MaxPathLenZero)
	}

	ekKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ek := must(mfg.Issue(ekTemplate(t), ekKey.Public()))
	var san *pkix.Extension
	for i, e := range ek.Extensions {
		if e.Id.Equal(oidSAN) {
			san = &ek.Extensions[i]
		}
	}
	if san == nil || !san.Critical {
		t.Fatal("EK certificate lost its critical subjectAltName")
	}
	if ek.SerialNumber.Sign() <= 0 || ek.SerialNumber.BitLen() > 128 {
		t.Fatalf("serial %v is not a positive 128-bit number", ek.SerialNumber)
	}
	if !bytes.Equal(ek.AuthorityKeyId, mfg.Cert.SubjectKeyId) {
		t.Fatal("EK AKI is not the manufacturing CA's SKI")
	}
	// crypto/x509 does not understand a SAN holding only a directoryName;
	// an EK verifier acknowledges it, as attest does.
	ek.UnhandledCriticalExtensions = nil

	verify := func(roots *x509.CertPool, inter ...*x509.Certificate) error {
		_, err := ek.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: pool(inter...),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		return err
	}
	if err := verify(pool(webtrust.Cert), cross, mfg.Cert); err != nil {
		t.Errorf("EK does not verify to the WebTrust root through the cross-certificate: %v", err)
	}
	if err := verify(pool(vendor.Cert), mfg.Cert); err != nil {
		t.Errorf("EK does not verify to the vendor root: %v", err)
	}
	if err := verify(pool(webtrust.Cert), mfg.Cert); err == nil {
		t.Error("EK verified to the WebTrust root without the cross-certificate")
	}
	other := must(NewRootCA("Test TPM Root CA", time.Hour)) // same name, other key
	if err := verify(pool(other.Cert), mfg.Cert); err == nil {
		t.Error("EK verified to an impostor root with the same name")
	}
}

func TestIssueDefaults(t *testing.T) {
	ca := must(NewRootCA("Test CA", time.Hour))
	if ca.Cert.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || !ca.Cert.IsCA || len(ca.Cert.SubjectKeyId) == 0 {
		t.Fatalf("root CA: KU=%v IsCA=%v SKI=%x", ca.Cert.KeyUsage, ca.Cert.IsCA, ca.Cert.SubjectKeyId)
	}
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "leaf"}, NotAfter: time.Now().Add(time.Hour)}
	c := must(ca.Issue(tmpl, key.Public()))
	if tmpl.SerialNumber != nil || !tmpl.NotBefore.IsZero() {
		t.Error("Issue modified the caller's template")
	}
	if c.NotBefore.After(time.Now()) {
		t.Error("NotBefore is in the future")
	}
	fixed := big.NewInt(42)
	c = must(ca.Issue(&x509.Certificate{SerialNumber: fixed, NotAfter: time.Now().Add(time.Hour)}, key.Public()))
	if c.SerialNumber.Cmp(fixed) != 0 {
		t.Errorf("serial %v, want 42", c.SerialNumber)
	}
	if _, err := ca.Issue(&x509.Certificate{}, key.Public()); err == nil {
		t.Error("Issue accepted a template without NotAfter")
	}
}

func TestCRL(t *testing.T) {
	ca := must(NewRootCA("Test CA", time.Hour))
	revokedAt := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	entries := []x509.RevocationListEntry{{SerialNumber: big.NewInt(7), RevocationTime: revokedAt}}
	der := must(ca.CRL(entries, big.NewInt(3), time.Hour))
	crl := must(x509.ParseRevocationList(der))
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	if crl.Number.Cmp(big.NewInt(3)) != 0 {
		t.Errorf("CRL number %v", crl.Number)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(big.NewInt(7)) != 0 ||
		!crl.RevokedCertificateEntries[0].RevocationTime.Equal(revokedAt) {
		t.Errorf("CRL entries %+v", crl.RevokedCertificateEntries)
	}
	if !crl.NextUpdate.After(crl.ThisUpdate) {
		t.Error("nextUpdate not after thisUpdate")
	}
	if _, err := ca.CRL(nil, nil, time.Hour); err == nil {
		t.Error("CRL without a number accepted")
	}
}

// TestNewPartner: the consortium CA's partner certificates are what the
// contract verifies (events.VerifyPartner, tested in events), and
// PartnerTemplate refuses what it would refuse.
func TestNewPartner(t *testing.T) {
	consortium := must(NewRootCA("Test Consortium CA", time.Hour))
	p := must(consortium.NewPartner("nova-oem", events.RoleOEM, time.Hour))
	id, err := events.VerifyPartner(p.Cert, pool(consortium.Cert), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if id != (events.PartnerIdentity{Name: "nova-oem", Role: events.RoleOEM}) {
		t.Fatalf("identity %+v", id)
	}
	if _, err := PartnerTemplate("Bad Name", events.RoleOEM, time.Hour); !errors.Is(err, events.ErrBadPartnerName) {
		t.Errorf("PartnerTemplate bad name: %v", err)
	}
	if _, err := PartnerTemplate("x", "janitor", time.Hour); !errors.Is(err, events.ErrBadRole) {
		t.Errorf("PartnerTemplate bad role: %v", err)
	}
}

func TestDemoRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	d := must(InitDemo(dir, nil))
	if len(d.Partners) != len(DefaultPartners()) {
		t.Fatalf("%d partners", len(d.Partners))
	}
	l := must(LoadDemo(dir))

	sameCA := func(name string, a, b *CA) {
		if !a.Cert.Equal(b.Cert) || !publicKeysEqual(a.Key.Public(), b.Key.Public()) {
			t.Errorf("%s differs after load", name)
		}
	}
	sameCA("WebTrustRoot", d.WebTrustRoot, l.WebTrustRoot)
	sameCA("VendorRoot", d.VendorRoot, l.VendorRoot)
	sameCA("VendorMfgCA", d.VendorMfgCA, l.VendorMfgCA)
	sameCA("ConsortiumCA", d.ConsortiumCA, l.ConsortiumCA)
	sameCA("LDevIDCA", d.LDevIDCA, l.LDevIDCA)
	sameCA("TLS CA", d.TLSAuthority(), l.TLSAuthority())
	if !d.VendorCross.Equal(l.VendorCross) || !d.TLSCA.Equal(l.TLSCA) || !d.TLS.Leaf.Equal(l.TLS.Leaf) {
		t.Error("certificates differ after load")
	}
	if !d.LogKey.Equal(l.LogKey) {
		t.Error("log key differs after load")
	}
	for _, spec := range DefaultPartners() {
		a, b := d.Partners[spec.Name], l.Partners[spec.Name]
		if b == nil || b.Role != spec.Role || !a.Cert.Equal(b.Cert) || !publicKeysEqual(a.Key.Public(), b.Key.Public()) {
			t.Errorf("partner %s differs after load", spec.Name)
		}
	}
	if !bytes.Equal(d.EKTrustBundle(), l.EKTrustBundle()) {
		t.Error("EK trust bundle differs after load")
	}
	if got := must(os.ReadFile(filepath.Join(dir, FileEKTrustBundle))); !bytes.Equal(got, d.EKTrustBundle()) {
		t.Error("ek-trust-bundle.pem differs from EKTrustBundle()")
	}
	for _, rel := range []string{FileWebTrustRootKey, FileLogKey, FileTLSServerKey, "partners/blue-gate.key"} {
		fi := must(os.Stat(filepath.Join(dir, rel)))
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", rel, fi.Mode().Perm())
		}
	}
	if len(d.TLS.Leaf.IPAddresses) != 2 || d.TLS.Leaf.DNSNames[0] != "localhost" {
		t.Errorf("TLS SANs: %v %v", d.TLS.Leaf.DNSNames, d.TLS.Leaf.IPAddresses)
	}
	if _, err := d.TLS.Leaf.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: pool(d.TLSCA)}); err != nil {
		t.Errorf("TLS server certificate: %v", err)
	}

	// The bundle: WebTrust root, cross, mfg CA; not the vendor root.
	bundle := must(ParseCertsPEM(d.EKTrustBundle()))
	if len(bundle) != 3 || !bundle[0].Equal(d.WebTrustRoot.Cert) || !bundle[1].Equal(d.VendorCross) || !bundle[2].Equal(d.VendorMfgCA.Cert) {
		t.Fatal("EK trust bundle is not [WebTrust root, vendor cross, mfg CA]")
	}
	ekKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	ek := must(d.VendorMfgCA.Issue(ekTemplate(t), ekKey.Public()))
	ek.UnhandledCriticalExtensions = nil
	if _, err := ek.Verify(x509.VerifyOptions{Roots: pool(bundle[0]), Intermediates: pool(bundle[1:]...), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("EK does not verify against the trust bundle: %v", err)
	}

	// Partners verify against the consortium.
	for name, p := range l.Partners {
		if _, err := events.VerifyPartner(p.Cert, l.ConsortiumPool(), time.Now()); err != nil {
			t.Errorf("partner %s: %v", name, err)
		}
	}

	// Init again: loads, does not overwrite.
	again := must(InitDemo(dir, nil))
	if !again.WebTrustRoot.Cert.Equal(d.WebTrustRoot.Cert) {
		t.Error("second InitDemo replaced the PKI")
	}
	if _, err := InitDemo(dir, []PartnerSpec{{"new-odm", events.RoleODM}}); err == nil {
		t.Error("InitDemo on an existing PKI without the requested partner succeeded")
	}

	// A non-empty directory that is not a PKI is refused and left alone.
	other := t.TempDir()
	stray := filepath.Join(other, "notes.txt")
	if err := os.WriteFile(stray, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := InitDemo(other, nil); err == nil {
		t.Error("InitDemo overwrote a non-empty directory")
	}
	if b := must(os.ReadFile(stray)); string(b) != "keep me" {
		t.Error("stray file changed")
	}

	// An incomplete PKI does not load.
	if err := os.Remove(filepath.Join(dir, FileVendorCross)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDemo(dir); err == nil {
		t.Error("LoadDemo accepted a PKI without the cross-certificate")
	}
}

func TestPEMRoundTrip(t *testing.T) {
	dir := t.TempDir()
	ca := must(NewRootCA("Test CA", time.Hour))
	sub := must(ca.NewSubCA("Test Sub CA", time.Hour))
	path := filepath.Join(dir, "chain.pem")
	if err := WriteCertPEM(path, sub.Cert, ca.Cert); err != nil {
		t.Fatal(err)
	}
	certs := must(ReadCertsPEM(path))
	if len(certs) != 2 || !certs[0].Equal(sub.Cert) || !certs[1].Equal(ca.Cert) {
		t.Fatal("certificate chain differs after round trip")
	}
	kp := filepath.Join(dir, "k.key")
	if err := WriteKeyPEM(kp, sub.Key); err != nil {
		t.Fatal(err)
	}
	k := must(ReadKeyPEM(kp))
	if !publicKeysEqual(k.Public(), sub.Key.Public()) {
		t.Fatal("key differs after round trip")
	}
	if _, err := ReadCertsPEM(kp); err == nil {
		t.Error("ReadCertsPEM accepted a key file")
	}
	if _, err := ReadKeyPEM(path); err == nil {
		t.Error("ReadKeyPEM accepted a certificate file")
	}
}
