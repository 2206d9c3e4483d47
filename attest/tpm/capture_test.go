package tpm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/custodyledger/custody/attest"
)

var captureSim = flag.Bool("capture-sim", false,
	"TestSimEvidence: write the seeded simulator's evidence to ../testdata/sim/")

// simEvidenceDir holds evidence this package made with the simulator, for
// attest's tests, which verify it without a TPM (see the README there).
var simEvidenceDir = filepath.Join("..", "testdata", "sim")

// simEvidenceSeed is the simulator seed of the captured evidence.
const simEvidenceSeed = 41

// TestSimEvidence checks that the evidence captured in attest's
// testdata/sim/ is what this package makes: the simulator seeded as it was
// derives the same EKs and IAK. With -capture-sim it makes the whole set
// again (a quote, an LDevID and its certification) and writes it there.
func TestSimEvidence(t *testing.T) {
	tpm := openSim(t, simEvidenceSeed)
	files := map[string][]byte{}
	for name, alg := range map[string]KeyAlg{"ek-rsa.pub": RSA2048, "ek-ecc.pub": ECCP256} {
		ek, err := tpm.EK(alg)
		if err != nil {
			t.Fatal(err)
		}
		files[name] = ek.Public
	}
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	files["iak.pub"], files["iak.name"] = iak.Public, iak.Name
	if !*captureSim {
		for name, want := range files {
			got, err := os.ReadFile(filepath.Join(simEvidenceDir, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: the seeded simulator now makes another key; capture again with -capture-sim", name)
			}
		}
		return
	}

	fw := sha256.Sum256([]byte("firmware measured by the simulator"))
	for _, p := range []int{0, 10} {
		if err := tpm.ExtendPCR(p, fw[:]); err != nil {
			t.Fatal(err)
		}
	}
	nonce := sha256.Sum256([]byte("a verifier's nonce for the simulator"))
	q, err := tpm.Quote(nonce[:], []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyQuote(iak.Public, q, nonce[:]); err != nil {
		t.Fatal(err)
	}
	_, ev, err := tpm.NewLDevID(nonce[:])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyCertify(iak.Public, ev, nonce[:]); err != nil {
		t.Fatal(err)
	}
	pcrs, err := attest.FormatTPM2ToolsPCRs(q.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	files["nonce.hex"] = []byte(hex.EncodeToString(nonce[:]) + "\n")
	files["quote.msg"], files["quote.sig"], files["quote.pcrs"] = q.Attest, q.Signature, pcrs
	files["ldevid.pub"], files["certify.msg"], files["certify.sig"] = ev.Public, ev.Attest, ev.Signature
	if err := os.MkdirAll(simEvidenceDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(simEvidenceDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote the simulator's evidence to %s", simEvidenceDir)
}
