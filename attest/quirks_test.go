package attest

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

// One test per vendor quirk (testdata/README.md, "Quirks").

// G1: a critical SAN holding only a directoryName stays in Go's
// UnhandledCriticalExtensions; ParseEKCertificate reads it and removes it.
func TestQuirkG1CriticalDirectoryNameSAN(t *testing.T) {
	der := readTestdata(t, "infineon-ek-rsa-leaf-mfrca035.der")
	raw, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw.UnhandledCriticalExtensions) != 1 || !raw.UnhandledCriticalExtensions[0].Equal(oidSubjectAltName) {
		t.Fatalf("crypto/x509 left %v unhandled; quirk no longer reproduces", raw.UnhandledCriticalExtensions)
	}
	c, err := ParseEKCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Cert.UnhandledCriticalExtensions) != 0 {
		t.Errorf("left %v", c.Cert.UnhandledCriticalExtensions)
	}
	// Only the SAN is dropped.
	other := asn1.ObjectIdentifier{1, 2, 3}
	c.Cert.UnhandledCriticalExtensions = []asn1.ObjectIdentifier{other, oidSubjectAltName}
	dropHandledSAN(c.Cert)
	if len(c.Cert.UnhandledCriticalExtensions) != 1 || !c.Cert.UnhandledCriticalExtensions[0].Equal(other) {
		t.Errorf("dropHandledSAN left %v", c.Cert.UnhandledCriticalExtensions)
	}
}

// G2: the only EKU is tcg-kp-EKCertificate: crypto/x509's default key
// usage check refuses the chain, Verify accepts it.
func TestQuirkG2EKCertificateEKU(t *testing.T) {
	c, err := ParseEKCertificate(readTestdata(t, "stm-ek-rsa-leaf-intca05.der"))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Cert.ExtKeyUsage) != 0 || len(c.Cert.UnknownExtKeyUsage) != 1 || !c.Cert.UnknownExtKeyUsage[0].Equal(oidEKCertificateEKU) {
		t.Fatalf("EKU %v / %v", c.Cert.ExtKeyUsage, c.Cert.UnknownExtKeyUsage)
	}
	b, err := ParseBundle(readTestdata(t, "globalsign-tpm-root-ca.pem"), readTestdata(t, "stm-tpm-ek-root-ca.pem"), readTestdata(t, "stm-tpm-ek-intermediate-ca-05.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Cert.Verify(x509.VerifyOptions{Roots: b.Roots, Intermediates: b.Intermediates, CurrentTime: verifyTime})
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.IncompatibleUsage {
		t.Errorf("crypto/x509 default usages: %v, want incompatible usage", err)
	}
	if _, err := c.Verify(b, verifyTime); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

// G4: an NV read with 0xFF padding after the DER.
func TestQuirkG4NVPadding(t *testing.T) {
	bin := readTestdata(t, "stm-ek-rsa-leaf-intca05-nvpadded.bin")
	der := readTestdata(t, "stm-ek-rsa-leaf-intca05.der")
	if _, err := x509.ParseCertificate(bin); err == nil {
		t.Fatal("crypto/x509 parsed the padded certificate; quirk no longer reproduces")
	}
	trimmed, err := TrimEKCertificate(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(trimmed, der) {
		t.Errorf("trimmed to %d bytes, want the %d-byte DER", len(trimmed), len(der))
	}
	c, err := ParseEKCertificate(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Raw, der) {
		t.Error("Raw is not the DER")
	}
}

// NV header: a TCG PC Client stored-certificate header before the DER.
func TestQuirkNVHeader(t *testing.T) {
	der := readTestdata(t, "infineon-ek-ecc-leaf-mfrca035.der")
	hdr := []byte{0x10, 0x01, 0x00, 0, 0, 0x10, 0x02}
	binary.BigEndian.PutUint16(hdr[3:5], uint16(len(der)+2))
	in := append(append(hdr, der...), bytes.Repeat([]byte{0xFF}, 100)...)
	c, err := ParseEKCertificate(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.Raw, der) || c.TPM.Manufacturer != "id:49465800" {
		t.Errorf("got %+v", c.TPM)
	}
	for _, junk := range [][]byte{nil, {0x10, 0x01}, {0xFF, 0xFF}, {0x30, 0x82, 0x10, 0x00, 0x01}} {
		if _, err := ParseEKCertificate(junk); !errors.Is(err, ErrNotEKCertificate) {
			t.Errorf("ParseEKCertificate(%x): %v", junk, err)
		}
	}
}

// G5: the leaf outlives its issuer: fine while the CA is valid, refused
// (as expired) after, although the leaf itself is still valid.
func TestQuirkG5LeafOutlivesIssuer(t *testing.T) {
	c, err := ParseEKCertificate(readTestdata(t, "stm-ek-rsa-leaf-intca06.der"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBundle(readTestdata(t, "globalsign-tpm-root-ca.pem"), readTestdata(t, "stm-tpm-ek-root-ca.pem"), readTestdata(t, "stm-tpm-ek-intermediate-ca-06.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(b, verifyTime); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	if at.After(c.Cert.NotAfter) {
		t.Fatal("leaf expired by then")
	}
	if _, err := c.Verify(b, at); !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("in 2040: %v, want ErrCertificateExpired", err)
	}
}

// G6: Nuvoton puts manufacturer, model and version in one multi-valued
// RDN, not in DER SET order.
func TestQuirkG6MultiValuedRDN(t *testing.T) {
	c, err := ParseEKCertificate(readTestdata(t, "nuvoton-ek-rsa-leaf-root2111-a.der"))
	if err != nil {
		t.Fatal(err)
	}
	var rdnCount, attrCount int
	for _, e := range c.Cert.Extensions {
		if !e.Id.Equal(oidSubjectAltName) {
			continue
		}
		var names []asn1.RawValue
		if _, err := asn1.Unmarshal(e.Value, &names); err != nil {
			t.Fatal(err)
		}
		var rdns []attrSET
		if _, err := asn1.Unmarshal(names[0].Bytes, &rdns); err != nil {
			t.Fatal(err)
		}
		rdnCount = len(rdns)
		for _, r := range rdns {
			attrCount += len(r)
		}
	}
	if rdnCount != 1 || attrCount != 3 {
		t.Fatalf("SAN has %d RDNs with %d attributes; quirk no longer reproduces", rdnCount, attrCount)
	}
	if c.TPM != (TPMInfo{"id:4E544300", "NPCT75x", "id:00070002"}) {
		t.Errorf("got %+v", c.TPM)
	}
}

// G7: Intel PTT encodes DER DEFAULTs explicitly (cA FALSE, critical FALSE).
func TestQuirkG7ExplicitDefaults(t *testing.T) {
	der := readTestdata(t, "intel-ptt-ek-rsa-leaf.der")
	if !bytes.Contains(der, []byte{0x30, 0x03, 0x01, 0x01, 0x00}) {
		t.Fatal("no explicit cA FALSE; quirk no longer reproduces")
	}
	c, err := ParseEKCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cert.BasicConstraintsValid || c.Cert.IsCA {
		t.Error("basic constraints")
	}
}

// G8: the Intel OnDie CA root has explicit NULL ECDSA parameters; it still
// counts as a self-signed root.
func TestQuirkG8ExplicitNullParameters(t *testing.T) {
	b, err := ParseBundle(readTestdata(t, "intel-ondie-ca-root.pem"), readTestdata(t, "intel-odca-ca2-csme.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.roots) != 1 || len(b.intermediates) != 1 {
		t.Errorf("%d roots, %d intermediates", len(b.roots), len(b.intermediates))
	}
}

// CA table: the STM "roots" (RSA and ECC) are not self-signed but issued
// by GlobalSign's TPM roots. ParseBundle files them as intermediates, so
// trusting them alone anchors nothing; with GlobalSign's root the chain
// runs leaf → intermediate → STM "root" → GlobalSign.
func TestQuirkSTMRootIsAnIntermediate(t *testing.T) {
	for _, c := range []struct{ leaf, inter, stmRoot, globalsign string }{
		{"stm-ek-rsa-leaf-intca05.der", "stm-tpm-ek-intermediate-ca-05.pem", "stm-tpm-ek-root-ca.pem", "globalsign-tpm-root-ca.pem"},
		{"stm-ek-ecc-leaf-eccintca01.der", "stm-tpm-ecc-intermediate-ca-01.pem", "stm-tpm-ecc-root-ca-01.pem", "globalsign-tpm-ecc-root-ca.pem"},
	} {
		leaf, err := ParseEKCertificate(readTestdata(t, c.leaf))
		if err != nil {
			t.Fatal(err)
		}
		alone, err := ParseBundle(readTestdata(t, c.stmRoot), readTestdata(t, c.inter))
		if err != nil {
			t.Fatal(err)
		}
		if len(alone.roots) != 0 || len(alone.intermediates) != 2 {
			t.Fatalf("%s: %d roots, %d intermediates; quirk no longer reproduces", c.stmRoot, len(alone.roots), len(alone.intermediates))
		}
		if _, err := leaf.Verify(alone, verifyTime); !errors.Is(err, ErrUnknownCA) {
			t.Errorf("%s without GlobalSign: %v, want ErrUnknownCA", c.leaf, err)
		}
		full, err := ParseBundle(readTestdata(t, c.globalsign), readTestdata(t, c.stmRoot), readTestdata(t, c.inter))
		if err != nil {
			t.Fatal(err)
		}
		chains, err := leaf.Verify(full, verifyTime)
		if err != nil {
			t.Fatalf("%s: %v", c.leaf, err)
		}
		if len(chains[0]) != 4 || !bytes.Equal(chains[0][3].RawSubject, chains[0][3].RawIssuer) {
			t.Errorf("%s: chain of %d", c.leaf, len(chains[0]))
		}
	}
}

// Other observations: every real leaf has an empty subject; serial
// numbers are 4 (Infineon), 20 (STM) or 10 (Nuvoton) bytes, positive, with
// a leading zero byte in the DER where the top bit is set; Nuvoton and
// Intel sign RSA EKs with ECDSA P-256.
func TestQuirkLeafShapes(t *testing.T) {
	serialLen := map[string]int{"infineon": 4, "stm": 20, "nuvoton": 10}
	for _, l := range realLeaves {
		c, err := ParseEKCertificate(readTestdata(t, l.file))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Cert.RawSubject) != 2 || len(c.Cert.Subject.Names) != 0 {
			t.Errorf("%s: subject %v", l.file, c.Cert.Subject)
		}
		vendor := strings.SplitN(l.file, "-", 2)[0]
		sn := c.Cert.SerialNumber
		if sn.Sign() <= 0 {
			t.Errorf("%s: serial %v", l.file, sn)
		}
		if n, ok := serialLen[vendor]; ok && (sn.BitLen()+7)/8 > n || ok && (sn.BitLen()+7)/8 < n-1 {
			t.Errorf("%s: serial of %d bytes, want %d", l.file, (sn.BitLen()+7)/8, n)
		}
		switch vendor {
		case "nuvoton", "intel":
			if c.Cert.PublicKeyAlgorithm != x509.RSA || c.Cert.SignatureAlgorithm != x509.ECDSAWithSHA256 {
				t.Errorf("%s: %v key signed with %v", l.file, c.Cert.PublicKeyAlgorithm, c.Cert.SignatureAlgorithm)
			}
		}
	}
	// Nuvoton 2111-a: the serial's top bit is set, so the DER INTEGER has
	// 11 bytes (a leading 0x00) for a 10-byte number.
	c, err := ParseEKCertificate(readTestdata(t, "nuvoton-ek-rsa-leaf-root2111-a.der"))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Cert.SerialNumber.Bytes(); len(b) != 10 || b[0]&0x80 == 0 {
		t.Errorf("serial %x", b)
	}
}
