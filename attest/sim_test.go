package attest

import (
	"encoding/hex"
	"strings"
	"testing"
)

// simEvidence is evidence attest/tpm made on the seeded simulator, captured
// in testdata/sim/ (see the README there): the verifier's tests read it and
// need no TPM.
type simEvidence struct {
	ekRSA, ekECC []byte // TPMT_PUBLIC of the EKs
	iak, iakName []byte // TPMT_PUBLIC and Name of the IAK
	nonce        []byte // of the quote and of the certification
	quote        *Quote // of PCRs 0..10
	certify      *CertifyEvidence
}

// loadSimEvidence reads testdata/sim/.
func loadSimEvidence(t testing.TB) *simEvidence {
	t.Helper()
	read := func(name string) []byte { return readTestdata(t, "sim/"+name) }
	nonce, err := hex.DecodeString(strings.TrimSpace(string(read("nonce.hex"))))
	if err != nil {
		t.Fatal(err)
	}
	q, err := QuoteFromTPM2Tools(read("quote.msg"), read("quote.sig"), read("quote.pcrs"))
	if err != nil {
		t.Fatal(err)
	}
	return &simEvidence{
		ekRSA: read("ek-rsa.pub"), ekECC: read("ek-ecc.pub"),
		iak: read("iak.pub"), iakName: read("iak.name"),
		nonce:   nonce,
		quote:   q,
		certify: &CertifyEvidence{Public: read("ldevid.pub"), Attest: read("certify.msg"), Signature: read("certify.sig")},
	}
}

// TestSimEvidenceVerifies: the captured evidence is what the tests below
// take it to be.
func TestSimEvidenceVerifies(t *testing.T) {
	sim := loadSimEvidence(t)
	k, err := ParseAttestationKey(sim.iak)
	if err != nil {
		t.Fatal(err)
	}
	if string(k.Name()) != string(sim.iakName) {
		t.Errorf("IAK Name %x, the TPM said %x", k.Name(), sim.iakName)
	}
	info, err := k.VerifyQuote(sim.quote, sim.nonce)
	if err != nil {
		t.Fatal(err)
	}
	if len(info.PCRs) != 11 {
		t.Errorf("%d PCRs quoted", len(info.PCRs))
	}
	if _, err := k.VerifyCertify(sim.certify, sim.nonce); err != nil {
		t.Fatal(err)
	}
	for _, ek := range [][]byte{sim.ekRSA, sim.ekECC} {
		if _, _, err := PublicKeyFromTPMT(ek); err != nil {
			t.Fatal(err)
		}
	}
}
