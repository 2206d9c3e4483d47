package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// TestEKCertificateInNV: template → signed by a test CA → written to the
// TPM's NV → read back → parsed → verified, for both EK algorithms.
func TestEKCertificateInNV(t *testing.T) {
	tpm := openSim(t, 3)
	ca := newRootCA(t, "Test TPM Vendor Root")
	mfg := ca.subCA(t, "Test TPM Vendor Manufacturing CA")
	bundle, err := ParseBundle(pemOf(ca.cert, mfg.cert))
	if err != nil {
		t.Fatal(err)
	}
	info, err := tpm.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.Manufacturer == "" || info.Manufacturer == "id:00000000" {
		t.Errorf("Info() = %+v", info)
	}
	t.Logf("simulator: %+v", info)
	now := time.Now()
	for _, alg := range []KeyAlg{RSA2048, ECCP256} {
		t.Run(alg.String(), func(t *testing.T) {
			if _, err := tpm.ReadEKCertificate(alg); !errors.Is(err, ErrNoEKCertificate) {
				t.Fatalf("ReadEKCertificate before writing: %v, want ErrNoEKCertificate", err)
			}
			ek, err := tpm.EK(alg)
			if err != nil {
				t.Fatal(err)
			}
			tmpl, err := EKCertificateTemplate(ek.PublicKey, info, now.Add(-time.Hour), now.Add(15*365*24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			cert := mfg.issue(t, tmpl, ek.PublicKey)

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
			wantKU := x509.KeyUsageKeyEncipherment
			if alg == ECCP256 {
				wantKU = x509.KeyUsageKeyAgreement
			}
			if cert.KeyUsage != wantKU {
				t.Errorf("key usage %v, want %v", cert.KeyUsage, wantKU)
			}
			// Go refuses it as is, like real ones (quirk G1).
			if _, err := cert.Verify(x509.VerifyOptions{Roots: bundle.Roots, Intermediates: bundle.Intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				t.Error("crypto/x509 verified a critical directoryName-only SAN: quirk G1 test is void")
			}

			// Write twice: the second write replaces the first.
			if err := tpm.WriteEKCertificate(alg, bytes.Repeat([]byte{0x30}, 2000)); err != nil {
				t.Fatalf("WriteEKCertificate (junk): %v", err)
			}
			if err := tpm.WriteEKCertificate(alg, cert.Raw); err != nil {
				t.Fatalf("WriteEKCertificate: %v", err)
			}
			raw, err := tpm.ReadEKCertificate(alg)
			if err != nil {
				t.Fatalf("ReadEKCertificate: %v", err)
			}
			// The simulator lets the platform hierarchy define the index,
			// with the TCG attributes.
			idx, _ := ekCertIndex(alg)
			nvp, err := tpm2.NVReadPublic{NVIndex: idx}.Execute(tpm.tp)
			if err != nil {
				t.Fatal(err)
			}
			attrs := nvp.NVPublic.Bytes()
			pub, _ := nvp.NVPublic.Contents()
			if !pub.Attributes.PlatformCreate || !pub.Attributes.PPWrite || !pub.Attributes.OwnerRead || int(pub.DataSize) != len(cert.Raw) {
				t.Errorf("NV public %x: %+v", attrs, pub.Attributes)
			}
			if !bytes.Equal(raw, cert.Raw) {
				t.Fatalf("read %d bytes, wrote %d", len(raw), len(cert.Raw))
			}
			ekc, err := ParseEKCertificate(raw)
			if err != nil {
				t.Fatalf("ParseEKCertificate: %v", err)
			}
			if ekc.TPM != info {
				t.Errorf("TPM info %+v, want %+v", ekc.TPM, info)
			}
			if !sameKey(ekc.Cert.PublicKey, ek.PublicKey) {
				t.Error("certificate key is not the EK")
			}
			chains, err := ekc.Verify(bundle, now)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if len(chains) != 1 || len(chains[0]) != 3 {
				t.Errorf("chains = %d", len(chains))
			}
			// The certificate survives a reboot (NV is persistent).
			if err := tpm.Reboot(); err != nil {
				t.Fatal(err)
			}
			raw2, err := tpm.ReadEKCertificate(alg)
			if err != nil || !bytes.Equal(raw2, raw) {
				t.Fatalf("after reboot: %v", err)
			}
		})
	}
}

func TestEKCertificateTemplateRejects(t *testing.T) {
	k := newKey(t)
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
}

// TestIAKCertificate: template → signed → parsed → bound to the EK cert.
func TestIAKCertificate(t *testing.T) {
	tpm := openSim(t, 4)
	ca := newRootCA(t, "Vendor")
	now := time.Now()
	ek, err := tpm.EK(ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	info := TPMInfo{"id:4D534654", "SIM", "id:00000001"}
	tmpl, err := EKCertificateTemplate(ek.PublicKey, info, now.Add(-time.Hour), now.Add(time.Hour*24))
	if err != nil {
		t.Fatal(err)
	}
	ekCert := ca.issue(t, tmpl, ek.PublicKey)
	ekc, err := ParseEKCertificate(ekCert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	id, err := DeviceID(ek.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	itmpl, err := IAKCertificateTemplate(iak.PublicKey, id, ekCert, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	iakCert := ca.issue(t, itmpl, iak.PublicKey)
	if iakCert.Subject.CommonName != id || iakCert.Subject.SerialNumber != id || iakCert.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("IAK cert subject %v, KU %v", iakCert.Subject, iakCert.KeyUsage)
	}
	// Plain crypto/x509 verifies it (nothing critical is left unhandled).
	bundle, _ := ParseBundle(pemOf(ca.cert))
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
	other := ca.issue(t, tmpl, ek.PublicKey)
	oc, _ := ParseEKCertificate(other.Raw)
	if err := pc.MatchesEK(oc); err == nil {
		t.Error("matched another EK certificate")
	}
	// The OID is what the documentation says.
	if !bytes.Contains(iakCert.Raw, oidIAKEKCertDigestDER) {
		t.Error("OID not in certificate")
	}
}
