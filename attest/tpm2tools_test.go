package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/custodyledger/custody/attest/internal/attesttest"
)

// A quote tpm2-tools made on swtpm, kept in testdata/tpm2tools/ (see the
// README there); the interoperability tests that run tpm2-tools against
// swtpm are attest/tpm's.

// TestTPM2ToolsCapturedQuote verifies the quote tpm2-tools made on swtpm
// and that TestTPM2ToolsQuoteVerifies captured (testdata/tpm2tools/), with
// no external program, and checks that it fails with another nonce, a
// tampered PCR value, a tampered message or another key.
func TestTPM2ToolsCapturedQuote(t *testing.T) {
	dir := "tpm2tools/"
	area, err := PublicArea(readTestdata(t, dir+"ak.pub"))
	if err != nil {
		t.Fatal(err)
	}
	ak, err := ParseAttestationKey(area)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ak.Name(), readTestdata(t, dir+"ak.name")) {
		t.Errorf("Name %x, tpm2_createak wrote %x", ak.Name(), readTestdata(t, dir+"ak.name"))
	}
	nonce, err := hex.DecodeString(strings.TrimSpace(string(readTestdata(t, dir+"nonce.hex"))))
	if err != nil {
		t.Fatal(err)
	}
	fw := sha256.Sum256([]byte("firmware measured by tpm2-tools"))
	want10 := attesttest.ExtendSoftware(make([]byte, 32), fw[:])
	for _, f := range []struct{ msg, sig, pcrs string }{
		{"quote.msg", "quote.sig", "quote.pcrs"},
		{"quote2.msg", "quote2.sig", "quote2.values"},
	} {
		t.Run(f.pcrs, func(t *testing.T) {
			q, err := QuoteFromTPM2Tools(readTestdata(t, dir+f.msg), readTestdata(t, dir+f.sig), readTestdata(t, dir+f.pcrs))
			if err != nil {
				t.Fatal(err)
			}
			info, err := VerifyQuote(area, q, nonce)
			if err != nil {
				t.Fatalf("VerifyQuote: %v", err)
			}
			if !bytes.Equal(info.PCRs[10], want10) || !bytes.Equal(info.Nonce, nonce) || !info.Safe {
				t.Errorf("info %+v", info)
			}
			if _, err := VerifyQuote(area, q, append(bytes.Clone(nonce[:31]), nonce[31]^1)); !errors.Is(err, ErrNonceMismatch) {
				t.Errorf("another nonce: %v", err)
			}
			bad := *q
			bad.PCRs = map[int][]byte{}
			for p, v := range q.PCRs {
				bad.PCRs[p] = bytes.Clone(v)
			}
			bad.PCRs[10][31] ^= 1
			if _, err := VerifyQuote(area, &bad, nonce); !errors.Is(err, ErrPCRDigestMismatch) {
				t.Errorf("tampered PCR: %v", err)
			}
			delete(bad.PCRs, 10)
			if _, err := VerifyQuote(area, &bad, nonce); !errors.Is(err, ErrPCRSelectionMismatch) {
				t.Errorf("PCR left out: %v", err)
			}
			bad = *q
			bad.Attest = bytes.Clone(q.Attest)
			bad.Attest[len(bad.Attest)-1] ^= 1 // the signed PCR digest
			if _, err := VerifyQuote(area, &bad, nonce); !errors.Is(err, ErrBadSignature) {
				t.Errorf("tampered message: %v", err)
			}
			other := loadSimEvidence(t).iak // the simulator's IAK
			if _, err := VerifyQuote(other, q, nonce); !errors.Is(err, ErrBadSignature) {
				t.Errorf("another key: %v", err)
			}
		})
	}
	// The PCR file round-trips through FormatTPM2ToolsPCRs byte for byte.
	raw := readTestdata(t, dir+"quote.pcrs")
	pcrs, err := ParseTPM2ToolsPCRs(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, err := FormatTPM2ToolsPCRs(pcrs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, raw) {
		t.Errorf("FormatTPM2ToolsPCRs differs from tpm2_quote's file:\n%x\n%x", again, raw)
	}
}

// FuzzParseTPM2ToolsPCRs: reading an untrusted tpm2-tools PCR file never
// panics, and what it reads writes back (FormatTPM2ToolsPCRs) to a file
// that reads the same values.
func FuzzParseTPM2ToolsPCRs(f *testing.F) {
	f.Add(readTestdata(f, "tpm2tools/quote.pcrs"), []byte{})
	f.Add(readTestdata(f, "tpm2tools/quote2.values"), []byte{0, 10, 16})
	f.Add(make([]byte, t2tSelectionList+4), []byte{})
	f.Fuzz(func(t *testing.T, b, selBytes []byte) {
		sel := make([]int, len(selBytes))
		for i, s := range selBytes {
			sel[i] = int(s)
		}
		pcrs, err := ParseTPM2ToolsPCRs(b, sel)
		if err != nil {
			return
		}
		out, err := FormatTPM2ToolsPCRs(pcrs)
		if err != nil {
			t.Fatalf("read %d PCRs that cannot be written: %v", len(pcrs), err)
		}
		back, err := ParseTPM2ToolsPCRs(out, nil)
		if err != nil {
			t.Fatalf("cannot read what was written: %v", err)
		}
		if len(back) != len(pcrs) {
			t.Fatalf("%d PCRs, then %d", len(pcrs), len(back))
		}
		for p, v := range pcrs {
			if !bytes.Equal(back[p], v) {
				t.Fatalf("PCR %d: %x, then %x", p, v, back[p])
			}
		}
	})
}
