package attest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
)

func TestCheckMonotonic(t *testing.T) {
	base := QuoteInfo{Clock: 1000, ResetCount: 5, RestartCount: 2}
	for _, c := range []struct {
		name string
		cur  QuoteInfo
		want error
	}{
		{"same", base, nil},
		{"clock forward", QuoteInfo{Clock: 1001, ResetCount: 5, RestartCount: 2}, nil},
		{"clock backwards", QuoteInfo{Clock: 999, ResetCount: 5, RestartCount: 2}, ErrClockWentBackwards},
		{"restart", QuoteInfo{Clock: 10, ResetCount: 5, RestartCount: 3}, nil},
		{"restart count lower", QuoteInfo{Clock: 2000, ResetCount: 5, RestartCount: 1}, ErrRestartCountDecreased},
		{"reset", QuoteInfo{Clock: 1, ResetCount: 6, RestartCount: 0}, nil},
		{"reset count lower", QuoteInfo{Clock: 5000, ResetCount: 4, RestartCount: 9}, ErrResetCountDecreased},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := CheckMonotonic(&base, &c.cur)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("got %v, want %v", err, c.want)
			}
		})
	}
	if err := CheckMonotonic(nil, &base); err == nil {
		t.Error("accepted a nil quote")
	}
}

// TestVerifiedSignatureRemembered: a verified quote's signature check is
// remembered, and a second verification gives the same answer.
func TestVerifiedSignatureRemembered(t *testing.T) {
	sim := loadSimEvidence(t)
	forgetVerified()
	info, err := VerifyQuote(sim.iak, sim.quote, sim.nonce)
	if err != nil {
		t.Fatal(err)
	}
	if verified.len() == 0 {
		t.Fatal("no verified signature remembered")
	}
	again, err := VerifyQuote(sim.iak, sim.quote, sim.nonce)
	if err != nil || again.Clock != info.Clock || !bytes.Equal(again.PCRDigest, info.PCRDigest) {
		t.Fatalf("second verification: %+v, %v", again, err)
	}
	// Another message (the same quote with its signature damaged) does
	// not hit it.
	bad := *sim.quote
	bad.Signature = bytes.Clone(sim.quote.Signature)
	bad.Signature[len(bad.Signature)-1] ^= 1
	if _, err := VerifyQuote(sim.iak, &bad, sim.nonce); !errors.Is(err, ErrBadSignature) {
		t.Errorf("damaged signature: %v", err)
	}
}

// BenchmarkVerifyQuote measures VerifyQuote of a real simulator quote;
// compare with BenchmarkECDSAP256Verify, the bare signature check.
func BenchmarkVerifyQuote(b *testing.B) {
	iak, q, nonce := benchQuote(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		forgetVerified()
		if _, err := VerifyQuote(iak, q, nonce); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyQuoteRemembered is VerifyQuote of a quote verified before
// in the process (the ledger re-checking the quote of the gate's
// device.enrolled): the signature check is remembered.
func BenchmarkVerifyQuoteRemembered(b *testing.B) {
	iak, q, nonce := benchQuote(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := VerifyQuote(iak, q, nonce); err != nil {
			b.Fatal(err)
		}
	}
}

// benchQuote is a real simulator quote (testdata/sim/, of eleven PCRs),
// with its IAK and nonce.
func benchQuote(b *testing.B) (iak []byte, q *Quote, nonce []byte) {
	sim := loadSimEvidence(b)
	return sim.iak, sim.quote, sim.nonce
}

// forgetVerified empties the remembered signature checks, so that a
// benchmark measures the verification itself.
func forgetVerified() {
	verified.clear()
}

// BenchmarkECDSAP256Verify is the floor: ecdsa.VerifyASN1 of a P-256
// signature over a SHA-256 digest.
func BenchmarkECDSAP256Verify(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("message"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
			b.Fatal("verify failed")
		}
	}
}

// BenchmarkAttestationKeyVerifyQuote is VerifyQuote with the IAK decoded
// once, as a ledger verifying many quotes of one device would.
func BenchmarkAttestationKeyVerifyQuote(b *testing.B) {
	iak, q, nonce := benchQuote(b)
	k, err := ParseAttestationKey(iak)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		forgetVerified()
		if _, err := k.VerifyQuote(q, nonce); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyQuoteUncachedKey is VerifyQuote of a device seen for the
// first time: the IAK is decoded (go-tpm's reflection decoder, the Name's
// hash, the point check) on every call, as without the key cache.
func BenchmarkVerifyQuoteUncachedKey(b *testing.B) {
	iak, q, nonce := benchQuote(b)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		forgetVerified()
		k, err := ParseAttestationKey(iak)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := k.VerifyQuote(q, nonce); err != nil {
			b.Fatal(err)
		}
	}
}
