package attest

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// crossCheckAttest decodes b with decodeAttest and with go-tpm's
// reflection-based decoder, and reports any disagreement: decodeAttest
// may refuse what go-tpm accepts (other attestation types, non-canonical
// booleans), never the reverse, and what both accept must decode to the
// same fields and re-encode to b.
func crossCheckAttest(b []byte) error {
	a, err := decodeAttest(b)
	if err != nil {
		return nil
	}
	g, gerr := tpm2.Unmarshal[tpm2.TPMSAttest](b)
	if gerr != nil {
		return fmt.Errorf("decodeAttest accepted what go-tpm refuses: %v", gerr)
	}
	if !bytes.Equal(tpm2.Marshal(*g), b) {
		return fmt.Errorf("decodeAttest accepted a non-canonical encoding")
	}
	if a.magic != uint32(g.Magic) || a.typ != g.Type || !bytes.Equal(a.qualifiedSigner, g.QualifiedSigner.Buffer) ||
		!bytes.Equal(a.extraData, g.ExtraData.Buffer) || a.clock != g.ClockInfo.Clock ||
		a.resetCount != g.ClockInfo.ResetCount || a.restartCount != g.ClockInfo.RestartCount ||
		a.safe != bool(g.ClockInfo.Safe) || a.firmwareVersion != g.FirmwareVersion {
		return fmt.Errorf("header differs: %+v vs %+v", a, g)
	}
	switch a.typ {
	case tpm2.TPMSTAttestQuote:
		qi, err := g.Attested.Quote()
		if err != nil {
			return err
		}
		if !bytes.Equal(a.pcrDigest, qi.PCRDigest.Buffer) || a.pcrBanks != len(qi.PCRSelect.PCRSelections) {
			return fmt.Errorf("quote info differs")
		}
		i := 0
		var diff error
		a.eachPCRSelection(func(hash tpm2.TPMIAlgHash, bitmap []byte) {
			s := qi.PCRSelect.PCRSelections[i]
			if s.Hash != hash || !bytes.Equal(s.PCRSelect, bitmap) {
				diff = fmt.Errorf("selection %d differs", i)
			}
			i++
		})
		if diff != nil {
			return diff
		}
		got, other := a.selectedSHA256PCRs(nil)
		if want := SelectedPCRs(qi.PCRSelect); other == 0 && !slices.Equal(got, want) {
			return fmt.Errorf("selected PCRs %v, go-tpm %v", got, want)
		}
	case tpm2.TPMSTAttestCertify:
		ci, err := g.Attested.Certify()
		if err != nil {
			return err
		}
		if !bytes.Equal(a.name, ci.Name.Buffer) || !bytes.Equal(a.qualifiedName, ci.QualifiedName.Buffer) {
			return fmt.Errorf("certify info differs")
		}
	default:
		return fmt.Errorf("decodeAttest accepted type %v", a.typ)
	}
	return nil
}

// crossCheckSignature is crossCheckAttest for TPMT_SIGNATURE.
func crossCheckSignature(b []byte) error {
	s, err := decodeSignature(b)
	if err != nil {
		return nil
	}
	g, gerr := tpm2.Unmarshal[tpm2.TPMTSignature](b)
	if gerr != nil {
		return fmt.Errorf("decodeSignature accepted what go-tpm refuses: %v", gerr)
	}
	if !bytes.Equal(tpm2.Marshal(*g), b) {
		return fmt.Errorf("decodeSignature accepted a non-canonical encoding")
	}
	if g.SigAlg != s.alg {
		return fmt.Errorf("algorithm %v, go-tpm %v", s.alg, g.SigAlg)
	}
	hashOf := map[tpm2.TPMIAlgHash]crypto.Hash{tpm2.TPMAlgSHA256: crypto.SHA256, tpm2.TPMAlgSHA384: crypto.SHA384, tpm2.TPMAlgSHA512: crypto.SHA512}
	switch s.alg {
	case tpm2.TPMAlgECDSA:
		es, err := g.Signature.ECDSA()
		if err != nil {
			return err
		}
		if hashOf[es.Hash] != s.hash || !bytes.Equal(es.SignatureR.Buffer, s.r) || !bytes.Equal(es.SignatureS.Buffer, s.s) {
			return fmt.Errorf("ECDSA signature differs")
		}
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		rs, err := g.Signature.RSASSA()
		if s.alg == tpm2.TPMAlgRSAPSS {
			rs, err = g.Signature.RSAPSS()
		}
		if err != nil {
			return err
		}
		if hashOf[rs.Hash] != s.hash || !bytes.Equal(rs.Sig.Buffer, s.r) {
			return fmt.Errorf("RSA signature differs")
		}
	}
	return nil
}

// FuzzDecodeAttest: the hand-written decoders of TPMS_ATTEST and
// TPMT_SIGNATURE never panic, and accept only what go-tpm decodes to the
// same values from a canonical encoding.
func FuzzDecodeAttest(f *testing.F) {
	sim := loadSimEvidence(f)
	q, ev := sim.quote, sim.certify
	f.Add(q.Attest, q.Signature)
	f.Add(ev.Attest, ev.Signature)
	f.Add(tpm2.Marshal(tpm2.TPMSAttest{Magic: tpm2.TPMGeneratedValue, Type: tpm2.TPMSTAttestTime,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestTime, &tpm2.TPMSTimeAttestInfo{})}),
		tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgRSASSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgRSASSA,
			&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgSHA384, Sig: tpm2.TPM2BPublicKeyRSA{Buffer: []byte{1, 2, 3}}})}))
	f.Fuzz(func(t *testing.T, attest, sig []byte) {
		if err := crossCheckAttest(attest); err != nil {
			t.Fatal(err)
		}
		if err := crossCheckSignature(sig); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAttestationKeyCache: the cache returns the key a parse would, never
// caches a refused key, and stays bounded.
func TestAttestationKeyCache(t *testing.T) {
	sim := loadSimEvidence(t)
	iak, ek := sim.iak, sim.ekECC
	in := bytes.Clone(iak)
	k1, err := cachedAttestationKey(in)
	if err != nil {
		t.Fatal(err)
	}
	in[len(in)-1] ^= 1 // the caller's buffer is not the cache's key
	k2, err := cachedAttestationKey(iak)
	if err != nil || k2 != k1 || !bytes.Equal(k2.TPMTPublic(), iak) || !bytes.Equal(k2.Name(), sim.iakName) {
		t.Fatalf("second lookup: %v, same %v", err, k2 == k1)
	}
	for range 2 {
		if _, err := cachedAttestationKey(ek); !errors.Is(err, ErrKeyAttributes) {
			t.Fatalf("EK as attestation key: %v", err)
		}
	}
	if _, cached := akCache.get(string(ek)); cached {
		t.Error("a refused key was cached")
	}
	// Fill the cache past its bound with distinct valid keys.
	pub, _ := parseTPMTPublic(iak)
	for i := range akCacheSize + 10 {
		p := *pub
		p.AuthPolicy = tpm2.TPM2BDigest{Buffer: binary.BigEndian.AppendUint32(nil, uint32(i))}
		if _, err := cachedAttestationKey(tpm2.Marshal(p)); err != nil {
			t.Fatal(err)
		}
	}
	if n := akCache.len(); n > akCacheSize {
		t.Errorf("cache holds %d keys, bound %d", n, akCacheSize)
	}
}

// crossCheckPublic: what decodePublicFast accepts, go-tpm decodes to the
// same attributes and key, and it re-encodes to the input.
func crossCheckPublic(b []byte) error {
	fast, ok := decodePublicFast(b)
	if !ok {
		return nil
	}
	slow, err := unmarshalStrict[tpm2.TPMTPublic](b, "TPMT_PUBLIC", publicLen)
	if err != nil {
		return fmt.Errorf("decodePublicFast accepted what go-tpm refuses: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(*fast), b) {
		return fmt.Errorf("decodePublicFast result re-encodes differently")
	}
	if fast.Type != slow.Type || fast.NameAlg != slow.NameAlg || fast.ObjectAttributes != slow.ObjectAttributes ||
		!bytes.Equal(fast.AuthPolicy.Buffer, slow.AuthPolicy.Buffer) {
		return fmt.Errorf("header differs: %+v vs %+v", fast, slow)
	}
	kf, errf := goPublicKey(fast)
	ks, errs := goPublicKey(slow)
	if (errf == nil) != (errs == nil) || errf == nil && !SamePublicKey(kf, ks) {
		return fmt.Errorf("keys differ: %v / %v", errf, errs)
	}
	return nil
}

// FuzzDecodePublic: decodePublicFast never panics and agrees with go-tpm.
func FuzzDecodePublic(f *testing.F) {
	sim := loadSimEvidence(f)
	for _, k := range [][]byte{sim.iak, sim.certify.Public, sim.ekRSA, sim.ekECC} {
		f.Add(k)
	}
	ak, err := PublicArea(readTestdata(f, "tpm2tools/ak.pub"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ak)
	rsaAK := tpm2.RSASRKTemplate
	rsaAK.ObjectAttributes.Decrypt, rsaAK.ObjectAttributes.SignEncrypt = false, true
	rsaAK.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
		Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
		Scheme: tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgRSAPSS, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSAPSS,
			&tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA384})},
		KeyBits: 2048,
	})
	f.Add(tpm2.Marshal(rsaAK))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := crossCheckPublic(b); err != nil {
			t.Fatal(err)
		}
	})
}

// TestDecodePublicFastCoversAttestationKeys: the IAK, the LDevID, a
// tpm2-tools AK and both EKs (which carry AES-128 CFB) take the
// hand-written path, and agree with go-tpm's.
func TestDecodePublicFastCoversAttestationKeys(t *testing.T) {
	sim := loadSimEvidence(t)
	keys := [][]byte{sim.iak, sim.certify.Public, sim.ekRSA, sim.ekECC}
	ak, err := PublicArea(readTestdata(t, "tpm2tools/ak.pub"))
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range append(keys, ak) {
		if _, ok := decodePublicFast(b); !ok {
			t.Errorf("key %d: not decoded by hand", i)
		}
		if err := crossCheckPublic(b); err != nil {
			t.Errorf("key %d: %v", i, err)
		}
	}
}
