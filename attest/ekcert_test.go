package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest/internal/attesttest"
)

func TestEKCertificateTemplateRejects(t *testing.T) {
	k := attesttest.NewKey(t)
	now := time.Now()
	if _, err := EKCertificateTemplate(k.Public(), TPMInfo{Manufacturer: "id:1"}, now, now.Add(time.Hour)); err == nil {
		t.Error("accepted incomplete TPM info")
	}
	info := TPMInfo{"id:4D534654", "m", "id:1"}
	if _, err := EKCertificateTemplate(k.Public(), info, now, now); err == nil {
		t.Error("accepted empty validity")
	}
	if _, err := EKCertificateTemplate("key", info, now, now.Add(time.Hour)); err == nil {
		t.Error("accepted a non-key")
	}
	// What ParseEKCertificate would refuse is never issued: a TPM's vendor
	// strings come from the TPM itself (TPM.Info).
	for name, bad := range map[string]TPMInfo{
		"model not UTF-8":        {"id:4D534654", "SLB\xff9670", "id:1"},
		"model over the limit":   {"id:4D534654", strings.Repeat("m", maxDirectoryNameValue+1), "id:1"},
		"version over the limit": {"id:4D534654", "m", strings.Repeat("9", maxDirectoryNameValue+1)},
	} {
		if _, err := EKCertificateTemplate(k.Public(), bad, now, now.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "TPM") {
			t.Errorf("%s: template error %v, want one naming the TPM value", name, err)
		}
	}
}

// TestEKCertificateTemplate: template → signed by a vendor CA → parsed →
// verified, for the EKs of both algorithms a TPM made (testdata/sim/).
// attest/tpm's TestEKCertificateInNV takes such a certificate through a
// TPM's NV.
func TestEKCertificateTemplate(t *testing.T) {
	sim := loadSimEvidence(t)
	ca := attesttest.NewRootCA(t, "Test TPM Vendor Root")
	mfg := ca.SubCA(t, "Test TPM Vendor Manufacturing CA")
	bundle, err := ParseBundle(attesttest.PEM(ca.Cert, mfg.Cert))
	if err != nil {
		t.Fatal(err)
	}
	info := TPMInfo{"id:4D534654", "SIM", "id:00000001"}
	now := time.Now()
	for _, c := range []struct {
		name   string
		public []byte
		wantKU x509.KeyUsage
	}{{"RSA", sim.ekRSA, x509.KeyUsageKeyEncipherment}, {"ECC", sim.ekECC, x509.KeyUsageKeyAgreement}} {
		t.Run(c.name, func(t *testing.T) {
			ek, _, err := PublicKeyFromTPMT(c.public)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := EKCertificateTemplate(ek, info, now.Add(-time.Hour), now.Add(15*365*24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			cert := mfg.Issue(t, tmpl, ek)
			// Shape of a real vendor EK certificate.
			if len(cert.Subject.Names) != 0 || len(cert.RawSubject) != 2 {
				t.Errorf("subject not empty: %v", cert.Subject)
			}
			if !slices.ContainsFunc(cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectAltName) && e.Critical }) {
				t.Error("SAN not critical")
			}
			if !slices.ContainsFunc(cert.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(oidSubjectDirAttrs) && !e.Critical }) {
				t.Error("no subject directory attributes")
			}
			if cert.IsCA || !cert.BasicConstraintsValid {
				t.Error("basic constraints")
			}
			if cert.KeyUsage != c.wantKU {
				t.Errorf("key usage %v, want %v", cert.KeyUsage, c.wantKU)
			}
			// Go refuses it as is, like real ones (quirk G1).
			if _, err := cert.Verify(x509.VerifyOptions{Roots: bundle.Roots, Intermediates: bundle.Intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				t.Error("crypto/x509 verified a critical directoryName-only SAN: quirk G1 test is void")
			}

			ekc, err := ParseEKCertificate(cert.Raw)
			if err != nil {
				t.Fatalf("ParseEKCertificate: %v", err)
			}
			if ekc.TPM != info || !SamePublicKey(ekc.Cert.PublicKey, ek) {
				t.Errorf("parsed TPM info %+v, key %v", ekc.TPM, ekc.Cert.PublicKey)
			}
			chains, err := ekc.Verify(bundle, now)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(chains) != 1 || len(chains[0]) != 3 {
				t.Errorf("chains = %d", len(chains))
			}
		})
	}
}

// TestIAKCertificate: template → signed → parsed → bound to the EK cert,
// for the EK and the IAK of a TPM (testdata/sim/).
func TestIAKCertificate(t *testing.T) {
	sim := loadSimEvidence(t)
	ca := attesttest.NewRootCA(t, "Vendor")
	now := time.Now()
	ekPub, _, err := PublicKeyFromTPMT(sim.ekECC)
	if err != nil {
		t.Fatal(err)
	}
	iakPub, _, err := PublicKeyFromTPMT(sim.iak)
	if err != nil {
		t.Fatal(err)
	}
	info := TPMInfo{"id:4D534654", "SIM", "id:00000001"}
	tmpl, err := EKCertificateTemplate(ekPub, info, now.Add(-time.Hour), now.Add(time.Hour*24))
	if err != nil {
		t.Fatal(err)
	}
	ekCert := ca.Issue(t, tmpl, ekPub)
	ekc, err := ParseEKCertificate(ekCert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	id, err := DeviceID(ekPub)
	if err != nil {
		t.Fatal(err)
	}
	itmpl, err := IAKCertificateTemplate(iakPub, id, ekCert, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	iakCert := ca.Issue(t, itmpl, iakPub)
	if iakCert.Subject.CommonName != id || iakCert.Subject.SerialNumber != id || iakCert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IAK cert subject %v, KU %v", iakCert.Subject, iakCert.KeyUsage)
	}
	// Plain crypto/x509 verifies it (nothing critical is left unhandled).
	bundle, _ := ParseBundle(attesttest.PEM(ca.Cert))
	if _, err := iakCert.Verify(x509.VerifyOptions{Roots: bundle.Roots, CurrentTime: now}); err != nil {
		t.Errorf("crypto/x509 Verify: %v", err)
	}
	pc, err := ParseIAKCertificate(iakCert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ekCert.Raw)
	if pc.DeviceID != id || !bytes.Equal(pc.EKCertDigest, sum[:]) || pc.TPM != info {
		t.Errorf("parsed %+v", pc)
	}
	if _, err := pc.Verify(bundle, now); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := pc.MatchesEK(ekc); err != nil {
		t.Errorf("MatchesEK: %v", err)
	}
	// Another EK certificate for the same key (re-issued) does not match.
	other := ca.Issue(t, tmpl, ekPub)
	oc, _ := ParseEKCertificate(other.Raw)
	if err := pc.MatchesEK(oc); err == nil {
		t.Error("matched another EK certificate")
	}
	// The OID is what the documentation says.
	if !bytes.Contains(iakCert.Raw, oidIAKEKCertDigestDER) {
		t.Error("OID not in certificate")
	}
}
