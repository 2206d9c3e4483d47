package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/internal/attesttest"
)

func TestQuote(t *testing.T) {
	tpm := openSim(t, 11)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	fw := sha256.Sum256([]byte("firmware image"))
	if err := tpm.ExtendPCR(0, fw[:]); err != nil {
		t.Fatal(err)
	}
	want0 := attesttest.ExtendSoftware(make([]byte, 32), fw[:])
	pcrs, err := tpm.ReadPCRs([]int{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pcrs[0], want0) || !bytes.Equal(pcrs[7], make([]byte, 32)) {
		t.Fatalf("PCRs %x", pcrs)
	}

	nonce := []byte("a fresh nonce from the verifier")
	q, err := tpm.Quote(nonce, []int{7, 0})
	if err != nil {
		t.Fatal(err)
	}
	info, err := attest.VerifyQuote(iak.Public, q, nonce)
	if err != nil {
		t.Fatalf("VerifyQuote: %v", err)
	}
	if !bytes.Equal(info.PCRs[0], want0) || len(info.PCRs) != 2 || !bytes.Equal(info.Nonce, nonce) {
		t.Errorf("info %+v", info)
	}
	if info.Clock == 0 && info.ResetCount == 0 && !info.Safe {
		t.Errorf("clock info %+v", info)
	}

	// The success is remembered (attest's verifySignature: see attest's
	// TestVerifiedSignatureRemembered); the subtests below, run after it,
	// show that nothing but the same key, message and signature hits it.
	t.Run("remembered success", func(t *testing.T) {
		again, err := attest.VerifyQuote(iak.Public, q, nonce)
		if err != nil || again.Clock != info.Clock || !bytes.Equal(again.PCRDigest, info.PCRDigest) {
			t.Fatalf("second verification: %+v, %v", again, err)
		}
	})
	t.Run("wrong nonce", func(t *testing.T) {
		if _, err := attest.VerifyQuote(iak.Public, q, []byte("another nonce")); !errors.Is(err, attest.ErrNonceMismatch) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("empty nonce", func(t *testing.T) {
		if _, err := attest.VerifyQuote(iak.Public, q, nil); !errors.Is(err, attest.ErrEmptyNonce) {
			t.Errorf("got %v", err)
		}
		if _, err := tpm.Quote(nil, []int{0}); !errors.Is(err, attest.ErrEmptyNonce) {
			t.Errorf("Quote: got %v", err)
		}
	})
	t.Run("tampered PCR value", func(t *testing.T) {
		bad := *q
		bad.PCRs = map[int][]byte{0: bytes.Clone(q.PCRs[0]), 7: q.PCRs[7]}
		bad.PCRs[0][0] ^= 1
		if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrPCRDigestMismatch) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("PCR left out", func(t *testing.T) {
		bad := *q
		bad.PCRs = map[int][]byte{0: q.PCRs[0]}
		if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrPCRSelectionMismatch) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("PCR added", func(t *testing.T) {
		bad := *q
		bad.PCRs = map[int][]byte{0: q.PCRs[0], 7: q.PCRs[7], 8: make([]byte, 32)}
		if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrPCRSelectionMismatch) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("tampered attest", func(t *testing.T) {
		for i := range q.Attest {
			bad := *q
			bad.Attest = bytes.Clone(q.Attest)
			bad.Attest[i] ^= 0x40
			if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); err == nil {
				t.Fatalf("accepted attest with byte %d flipped", i)
			}
		}
		// Flipping a clock byte keeps the structure valid: the signature
		// is what catches it.
		att, err := tpm2.Unmarshal[tpm2.TPMSAttest](q.Attest)
		if err != nil {
			t.Fatal(err)
		}
		clockAt := 4 + 2 + 2 + len(att.QualifiedSigner.Buffer) + 2 + len(nonce)
		bad := *q
		bad.Attest = bytes.Clone(q.Attest)
		bad.Attest[clockAt] ^= 1
		if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrBadSignature) {
			t.Errorf("clock changed: got %v, want ErrBadSignature", err)
		}
	})
	t.Run("tampered signature", func(t *testing.T) {
		bad := *q
		bad.Signature = bytes.Clone(q.Signature)
		bad.Signature[len(bad.Signature)-1] ^= 1
		if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrBadSignature) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		// Another restricted signing key of the same shape: the IAK of
		// another TPM would look like this.
		other := iakTemplate
		k, _ := ecdsa.GenerateKey(iak.PublicKey.(*ecdsa.PublicKey).Curve, rand.Reader)
		other.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
		})
		if _, err := attest.VerifyQuote(tpm2.Marshal(other), q, nonce); !errors.Is(err, attest.ErrBadSignature) {
			t.Errorf("got %v", err)
		}
		// The EK cannot sign quotes; as a "signer" it is refused outright.
		ek, _ := tpm.EK(ECCP256)
		if _, err := attest.VerifyQuote(ek.Public, q, nonce); !errors.Is(err, attest.ErrKeyAttributes) {
			t.Errorf("EK as signer: %v", err)
		}
	})
	t.Run("unrestricted signer", func(t *testing.T) {
		// The same IAK key with the restricted bit cleared: a key that
		// could sign forged attestation structures is refused.
		pub, _ := tpm2.Unmarshal[tpm2.TPMTPublic](iak.Public)
		pub.ObjectAttributes.Restricted = false
		if _, err := attest.VerifyQuote(tpm2.Marshal(*pub), q, nonce); !errors.Is(err, attest.ErrKeyAttributes) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("not a quote", func(t *testing.T) {
		_, ev, err := tpm.NewLDevID(nonce)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := attest.VerifyQuote(iak.Public, &attest.Quote{Attest: ev.Attest, Signature: ev.Signature, PCRs: q.PCRs}, nonce); !errors.Is(err, attest.ErrNotAQuote) {
			t.Errorf("certify as quote: %v", err)
		}
	})
	t.Run("PCRs extended after the quote", func(t *testing.T) {
		if err := tpm.ExtendPCR(0, fw[:]); err != nil {
			t.Fatal(err)
		}
		now, _ := tpm.ReadPCRs([]int{0, 7})
		bad := *q
		bad.PCRs = now
		if _, err := attest.VerifyQuote(iak.Public, &bad, nonce); !errors.Is(err, attest.ErrPCRDigestMismatch) {
			t.Errorf("got %v", err)
		}
	})
	t.Run("bad PCR requests", func(t *testing.T) {
		for _, pcrs := range [][]int{{24}, {-1}, {1, 1}} {
			if _, err := tpm.Quote(nonce, pcrs); err == nil {
				t.Errorf("Quote(%v) succeeded", pcrs)
			}
		}
		if _, err := tpm.Quote(make([]byte, 65), []int{0}); err == nil {
			t.Error("accepted a 65-byte nonce")
		}
	})
}

func TestQuoteManyPCRs(t *testing.T) {
	tpm := openSim(t, 12)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	all := make([]int, attest.NumPCRs)
	for i := range all {
		all[i] = i
	}
	for i := 0; i < 16; i++ { // PCRs 16..23 are resettable debug/application PCRs
		d := sha256.Sum256([]byte{byte(i)})
		if err := tpm.ExtendPCR(i, d[:]); err != nil {
			t.Fatal(err)
		}
	}
	q, err := tpm.Quote([]byte{1}, all)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.PCRs) != attest.NumPCRs {
		t.Fatalf("%d PCR values", len(q.PCRs))
	}
	if _, err := attest.VerifyQuote(iak.Public, q, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.Quote([]byte{1}, nil); err != nil {
		t.Errorf("quote of no PCRs: %v", err)
	}
}

// TestCheckMonotonicAcrossReboot uses real quotes: before and after a TPM
// reboot; swapping them is caught.
func TestCheckMonotonicAcrossReboot(t *testing.T) {
	tpm := openSim(t, 13)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	quote := func(n string) *attest.QuoteInfo {
		t.Helper()
		q, err := tpm.Quote([]byte(n), []int{0})
		if err != nil {
			t.Fatal(err)
		}
		info, err := attest.VerifyQuote(iak.Public, q, []byte(n))
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	q1 := quote("one")
	q2 := quote("two")
	if err := attest.CheckMonotonic(q1, q2); err != nil {
		t.Errorf("q1→q2: %v", err)
	}
	if err := tpm.Reboot(); err != nil {
		t.Fatal(err)
	}
	q3 := quote("three")
	if q3.ResetCount != q2.ResetCount+1 {
		t.Errorf("resetCount %d after %d", q3.ResetCount, q2.ResetCount)
	}
	if err := attest.CheckMonotonic(q2, q3); err != nil {
		t.Errorf("q2→reboot→q3: %v", err)
	}
	if err := attest.CheckMonotonic(q3, q1); !errors.Is(err, attest.ErrResetCountDecreased) {
		t.Errorf("replayed pre-reboot quote: %v, want ErrResetCountDecreased", err)
	}
	// PCRs were cleared by the reboot.
	if !bytes.Equal(q3.PCRs[0], make([]byte, 32)) {
		t.Errorf("PCR 0 after reboot %x", q3.PCRs[0])
	}
}
