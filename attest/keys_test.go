package attest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

func TestPublicKeyFromTPMTRejectsJunk(t *testing.T) {
	ek := tpm2.Marshal(tpm2.ECCEKTemplate) // all-zero point: not on the curve
	if _, _, err := PublicKeyFromTPMT(ek); err == nil {
		t.Error("accepted a point not on the curve")
	}
	for _, b := range [][]byte{nil, {0}, {0x00, 0x23, 0x00}} {
		if _, _, err := PublicKeyFromTPMT(b); err == nil {
			t.Errorf("accepted %x", b)
		}
	}
}

// TestStrictEncoding: the cheap length check and the hand-written decoders
// agree with go-tpm for every structure a TPM produced (testdata/sim/),
// and trailing bytes are refused.
func TestStrictEncoding(t *testing.T) {
	sim := loadSimEvidence(t)
	q, ev, nonce := sim.quote, sim.certify, sim.nonce
	publics := [][]byte{sim.ekRSA, sim.ekECC, sim.iak, ev.Public, tpm2.Marshal(tpm2.RSASRKTemplate), tpm2.Marshal(tpm2.ECCSRKTemplate)}
	for i, b := range publics {
		p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
		if err != nil {
			t.Fatal(err)
		}
		if n, ok := publicLen(p); !ok || n != len(b) {
			t.Errorf("public %d: publicLen = %d, %v; encoded %d", i, n, ok, len(b))
		}
		if i < 4 {
			if _, _, err := PublicKeyFromTPMT(append(bytes.Clone(b), 0)); !errors.Is(err, ErrMalformed) {
				t.Errorf("public %d with a trailing byte: %v", i, err)
			}
		}
	}
	for i, a := range [][]byte{q.Attest, ev.Attest} {
		if err := crossCheckAttest(a); err != nil {
			t.Errorf("attest %d: %v", i, err)
		}
	}
	for i, s := range [][]byte{q.Signature, ev.Signature} {
		if err := crossCheckSignature(s); err != nil {
			t.Errorf("signature %d: %v", i, err)
		}
	}
	bad := *q
	bad.Attest = append(bytes.Clone(q.Attest), 0)
	if _, err := VerifyQuote(sim.iak, &bad, nonce); !errors.Is(err, ErrMalformed) {
		t.Errorf("attest with a trailing byte: %v", err)
	}
	bad = *q
	bad.Signature = append(bytes.Clone(q.Signature), 0)
	if _, err := VerifyQuote(sim.iak, &bad, nonce); !errors.Is(err, ErrMalformed) {
		t.Errorf("signature with a trailing byte: %v", err)
	}
	if _, err := VerifyQuote(sim.iak, q, nonce); err != nil {
		t.Errorf("untouched quote: %v", err)
	}
}
