package tpm

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/internal/attesttest"
)

// TestEKCertificateInNV: template → signed by a test CA → written to the
// TPM's NV → read back → parsed → verified, for both EK algorithms.
func TestEKCertificateInNV(t *testing.T) {
	tpm := openSim(t, 3)
	ca := attesttest.NewRootCA(t, "Test TPM Vendor Root")
	mfg := ca.SubCA(t, "Test TPM Vendor Manufacturing CA")
	bundle, err := attest.ParseBundle(attesttest.PEM(ca.Cert, mfg.Cert))
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
			tmpl, err := attest.EKCertificateTemplate(ek.PublicKey, info, now.Add(-time.Hour), now.Add(15*365*24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			cert := mfg.Issue(t, tmpl, ek.PublicKey)

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
			ekc, err := attest.ParseEKCertificate(raw)
			if err != nil {
				t.Fatalf("ParseEKCertificate: %v", err)
			}
			if ekc.TPM != info {
				t.Errorf("TPM info %+v, want %+v", ekc.TPM, info)
			}
			if !attest.SamePublicKey(ekc.Cert.PublicKey, ek.PublicKey) {
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
