package attest

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Real EK certificates from TPM vendors (testdata/README.md says where each
// file comes from).

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verifyTime is inside the validity of every real chain below (including
// the Infineon intermediates re-issued in 2023, quirk G3).
var verifyTime = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

var realLeaves = []struct {
	file         string
	manufacturer string
	model        string
	version      string
	roots        []string // self-signed trust anchors
	inters       []string // intermediates, in no particular order
}{
	{"infineon-ek-rsa-leaf-mfrca007.der", "id:49465800", "SLB 9670 TPM2.0", "id:0728",
		[]string{"infineon-optiga-rsa-root-ca.pem"}, []string{"infineon-optiga-rsa-mfr-ca-007.pem"}},
	{"infineon-ek-rsa-leaf-mfrca029.der", "id:49465800", "SLB 9665", "id:053E",
		[]string{"infineon-optiga-rsa-root-ca.pem"}, []string{"infineon-optiga-rsa-mfr-ca-029.pem"}},
	{"infineon-ek-rsa-leaf-mfrca035.der", "id:49465800", "SLB 9670 TPM2.0", "id:073f",
		[]string{"infineon-optiga-rsa-root-ca.pem"}, []string{"infineon-optiga-rsa-mfr-ca-035.pem"}},
	{"infineon-ek-ecc-leaf-mfrca035.der", "id:49465800", "SLB 9670 TPM2.0", "id:073f",
		[]string{"infineon-optiga-ecc-root-ca.pem"}, []string{"infineon-optiga-ecc-mfr-ca-035.pem"}},
	{"infineon-ek-rsa-leaf-mfrca036.der", "id:49465800", "SLB 9665", "id:053f",
		[]string{"infineon-optiga-rsa-root-ca.pem"}, []string{"infineon-optiga-rsa-mfr-ca-036.pem"}},
	{"stm-ek-rsa-leaf-intca05-nvpadded.bin", "id:53544D20", "ST33HTPHAHB4", "id:00490004",
		[]string{"globalsign-tpm-root-ca.pem"}, []string{"stm-tpm-ek-root-ca.pem", "stm-tpm-ek-intermediate-ca-05.pem"}},
	{"stm-ek-rsa-leaf-intca05.der", "id:53544D20", "ST33HTPHAHB4", "id:00490004",
		[]string{"globalsign-tpm-root-ca.pem"}, []string{"stm-tpm-ek-root-ca.pem", "stm-tpm-ek-intermediate-ca-05.pem"}},
	{"stm-ek-ecc-leaf-eccintca01.der", "id:53544D20", "ST33HTPHAHB4", "id:00490004",
		[]string{"globalsign-tpm-ecc-root-ca.pem"}, []string{"stm-tpm-ecc-root-ca-01.pem", "stm-tpm-ecc-intermediate-ca-01.pem"}},
	{"stm-ek-rsa-leaf-intca06.der", "id:53544D20", "ST33HTPHAHD8", "id:00010102",
		[]string{"globalsign-tpm-root-ca.pem"}, []string{"stm-tpm-ek-root-ca.pem", "stm-tpm-ek-intermediate-ca-06.pem"}},
	{"nuvoton-ek-rsa-leaf-root2111-a.der", "id:4E544300", "NPCT75x", "id:00070002",
		[]string{"nuvoton-tpm-root-ca-2111.pem"}, nil},
	{"nuvoton-ek-rsa-leaf-root2111-b.der", "id:4E544300", "NPCT75x", "id:00070002",
		[]string{"nuvoton-tpm-root-ca-2111.pem"}, nil},
	{"nuvoton-ek-rsa-leaf-root1110.der", "id:4E544300", "NPCT6xx", "id:13",
		[]string{"nuvoton-tpm-root-ca-1110.pem"}, nil},
	{"intel-ptt-ek-rsa-leaf.der", "id:494E5443", "SPT", "id:00020000",
		[]string{"intel-tpm-ek-root-ca.pem"}, []string{"intel-tpm-ek-intermediate-spth-epid-prod.pem"}},
}

func TestParseEveryRealEKCertificate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"infineon": "id:49465800",
		"stm":      "id:53544D20",
		"nuvoton":  "id:4E544300",
		"intel":    "id:494E5443",
		"tcg":      "id:54434700",
	}
	n := 0
	for _, f := range files {
		if !strings.HasSuffix(f, ".der") && !strings.HasSuffix(f, ".bin") {
			continue
		}
		n++
		base := filepath.Base(f)
		t.Run(base, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ParseEKCertificate(b)
			if err != nil {
				t.Fatalf("ParseEKCertificate: %v", err)
			}
			vendor := strings.SplitN(base, "-", 2)[0]
			if c.TPM.Manufacturer != want[vendor] {
				t.Errorf("manufacturer %q, want %q", c.TPM.Manufacturer, want[vendor])
			}
			if c.TPM.Model == "" || c.TPM.Version == "" {
				t.Errorf("TPM info %+v", c.TPM)
			}
			if len(c.Cert.UnhandledCriticalExtensions) != 0 {
				t.Errorf("unhandled critical extensions left: %v", c.Cert.UnhandledCriticalExtensions)
			}
			if !hasEKCertificateEKU(c.Cert) {
				t.Error("no EK certificate EKU")
			}
			if !bytes.Equal(c.Raw, c.Cert.Raw) || !bytes.HasPrefix(b, c.Raw) {
				t.Error("Raw is not the DER prefix of the input")
			}
			t.Logf("%+v serial %x", c.TPM, c.Cert.SerialNumber)
		})
	}
	if n < 15 {
		t.Errorf("only %d leaf files found", n)
	}
}

func TestVerifyRealEKChains(t *testing.T) {
	for _, l := range realLeaves {
		t.Run(l.file, func(t *testing.T) {
			c, err := ParseEKCertificate(readTestdata(t, l.file))
			if err != nil {
				t.Fatal(err)
			}
			if c.TPM != (TPMInfo{l.manufacturer, l.model, l.version}) {
				t.Errorf("TPM info %+v", c.TPM)
			}
			var pems [][]byte
			for _, f := range append(append([]string(nil), l.roots...), l.inters...) {
				pems = append(pems, readTestdata(t, f))
			}
			b, err := ParseBundle(pems...)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.roots) != len(l.roots) || len(b.intermediates) != len(l.inters) {
				t.Fatalf("bundle sorted %d roots, %d intermediates", len(b.roots), len(b.intermediates))
			}
			chains, err := c.Verify(b, verifyTime)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got := len(chains[0]); got != 2+len(l.inters) {
				t.Errorf("chain of %d certificates", got)
			}
			// Without its intermediates, the leaf does not verify.
			if len(l.inters) > 0 {
				rb, _ := ParseBundle(pems[:len(l.roots)]...)
				if _, err := c.Verify(rb, verifyTime); !errors.Is(err, ErrUnknownCA) {
					t.Errorf("without intermediates: %v, want ErrUnknownCA", err)
				}
			}
			// Long after every CA expired.
			if _, err := c.Verify(b, time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC)); !errors.Is(err, ErrCertificateExpired) {
				t.Errorf("in 2060: %v, want ErrCertificateExpired", err)
			}
		})
	}
}

// TestVerifyRealEKChainsWithFullBundle verifies every real leaf against the
// public TPM CA bundle (26 roots and 143 intermediates of many vendors), as
// a verifier configured with "all TPM vendors" would.
func TestVerifyRealEKChainsWithFullBundle(t *testing.T) {
	b, err := ParseBundle(
		readTestdata(t, "bundle-tpm-root-ca-certificates.pem"),
		readTestdata(t, "bundle-tpm-intermediate-ca-certificates.pem"),
		// Not in that bundle: Intel's TPM EK root and intermediate.
		readTestdata(t, "intel-tpm-ek-root-ca.pem"),
		readTestdata(t, "intel-tpm-ek-intermediate-spth-epid-prod.pem"),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bundle: %d roots, %d intermediates", len(b.roots), len(b.intermediates))
	for _, l := range realLeaves {
		c, err := ParseEKCertificate(readTestdata(t, l.file))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Verify(b, verifyTime); err != nil {
			t.Errorf("%s: %v", l.file, err)
		}
	}
}

// TestVerifyRealEKChainWrongVendor: an Infineon EK does not verify with
// STMicro's CAs.
func TestVerifyRealEKChainWrongVendor(t *testing.T) {
	c, err := ParseEKCertificate(readTestdata(t, "infineon-ek-rsa-leaf-mfrca035.der"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBundle(readTestdata(t, "globalsign-tpm-root-ca.pem"), readTestdata(t, "stm-tpm-ek-root-ca.pem"), readTestdata(t, "stm-tpm-ek-intermediate-ca-05.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(b, verifyTime); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("Verify: %v, want ErrUnknownCA", err)
	}
	if _, err := c.Verify(nil, verifyTime); !errors.Is(err, ErrUnknownCA) {
		t.Errorf("Verify(nil bundle): %v, want ErrUnknownCA", err)
	}
}

// TestQuirkG3InfineonReissuedIntermediate: the Mfr CA 029 certificate now
// published was re-issued in 2023, after the leaf: the chain verifies today
// but not at the leaf's issuance, and the error says why.
func TestQuirkG3InfineonReissuedIntermediate(t *testing.T) {
	c, err := ParseEKCertificate(readTestdata(t, "infineon-ek-rsa-leaf-mfrca029.der"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBundle(readTestdata(t, "infineon-optiga-rsa-root-ca.pem"), readTestdata(t, "infineon-optiga-rsa-mfr-ca-029.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(b, verifyTime); err != nil {
		t.Fatalf("today: %v", err)
	}
	_, err = c.Verify(b, c.Cert.NotBefore.Add(24*time.Hour))
	if !errors.Is(err, ErrCertificateExpired) {
		t.Errorf("at issuance: %v, want ErrCertificateExpired", err)
	}
}
