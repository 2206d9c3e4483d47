package attest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseEKCertificate: parsing untrusted EK certificate bytes never
// panics, and a successful parse is stable: re-parsing Raw gives the same
// certificate and TPM description.
func FuzzParseEKCertificate(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*"))
	for _, name := range files {
		if strings.HasSuffix(name, ".der") || strings.HasSuffix(name, ".bin") {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{0x10, 0x01, 0x00, 0x00, 0x04, 0x10, 0x02, 0x30, 0x00})
	f.Add([]byte{0x30, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseEKCertificate(b)
		if err != nil {
			return
		}
		c2, err := ParseEKCertificate(c.Raw)
		if err != nil {
			t.Fatalf("re-parse of Raw failed: %v", err)
		}
		if !bytes.Equal(c2.Raw, c.Raw) || c2.TPM != c.TPM || !c2.Cert.Equal(c.Cert) ||
			len(c2.Cert.UnhandledCriticalExtensions) != len(c.Cert.UnhandledCriticalExtensions) {
			t.Fatalf("re-parse differs: %+v vs %+v", c2.TPM, c.TPM)
		}
		if !bytes.Contains(b, c.Raw) {
			t.Fatal("Raw is not part of the input")
		}
	})
}

// FuzzVerifyQuote: VerifyQuote never panics on hostile attestation bytes or
// signatures, and never accepts anything but the quote the TPM signed.
func FuzzVerifyQuote(f *testing.F) {
	// Evidence of the seeded simulator (testdata/sim/): the only quote its
	// IAK signed over this nonce, and a certification over the same nonce.
	sim := loadSimEvidence(f)
	iak, nonce, q, ev := sim.iak, sim.nonce, sim.quote, sim.certify

	f.Add(q.Attest, q.Signature)
	f.Add(ev.Attest, ev.Signature)
	f.Add(q.Attest[:len(q.Attest)/2], q.Signature)
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0x00, 0x18})
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		info, err := VerifyQuote(iak, &Quote{Attest: attest, Signature: sig, PCRs: q.PCRs}, nonce)
		if err != nil {
			return
		}
		if !bytes.Equal(attest, q.Attest) {
			t.Fatalf("accepted attestation data the TPM did not sign: %x", attest)
		}
		if !bytes.Equal(info.Nonce, nonce) {
			t.Fatal("accepted with another nonce")
		}
		// The evidence of a certify must never pass as a quote.
		if _, err := VerifyCertify(iak, &CertifyEvidence{Public: ev.Public, Attest: attest, Signature: sig}, nonce); err == nil {
			t.Fatal("a quote verified as a certify")
		}
	})
}
