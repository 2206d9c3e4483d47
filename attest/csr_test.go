package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509/pkix"
	"errors"
	"testing"
)

func TestLDevIDCSR(t *testing.T) {
	tpm := openSim(t, 41)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	nonce := []byte("gate nonce for the CSR")
	key, ev, err := tpm.NewLDevID(nonce)
	if err != nil {
		t.Fatal(err)
	}
	der, err := tpm.LDevIDCSR(pkix.Name{CommonName: "device-1"}, ev)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ParseLDevIDCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := csr.Verify(iak.Public, nonce)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !sameKey(pub, key.PublicKey) || csr.CSR.Subject.CommonName != "device-1" {
		t.Fatal("the verified CSR is not for the LDevID")
	}
	if _, err := csr.Verify(iak.Public, []byte("another nonce")); !errors.Is(err, ErrNonceMismatch) {
		t.Errorf("wrong nonce: %v", err)
	}

	// A software key with the TPM key's genuine evidence: the CSR verifies
	// its own signature, but its key is not the certified one.
	soft, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	forged, err := CreateLDevIDCSR(soft, pkix.Name{CommonName: "device-1"}, ev)
	if err != nil {
		t.Fatal(err)
	}
	fc, err := ParseLDevIDCSR(forged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fc.Verify(iak.Public, nonce); !errors.Is(err, ErrNameMismatch) {
		t.Errorf("software key with borrowed evidence: %v", err)
	}

	// A CSR without evidence is refused at parse time.
	plain, _ := CreateLDevIDCSR(soft, pkix.Name{CommonName: "x"}, &CertifyEvidence{})
	if _, err := ParseLDevIDCSR(plain[:len(plain)-3]); err == nil {
		t.Error("a truncated CSR parsed")
	}
}

func FuzzParseLDevIDCSR(f *testing.F) {
	soft, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	seed, _ := CreateLDevIDCSR(soft, pkix.Name{CommonName: "seed"}, &CertifyEvidence{Public: []byte{0, 0x23}, Attest: []byte{0xff, 0x54}, Signature: []byte{0, 0x18}})
	f.Add(seed)
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := ParseLDevIDCSR(der)
		if err != nil {
			return
		}
		// What parses carries evidence that re-encodes to the same request
		// extension.
		again, err := ParseLDevIDCSR(c.CSR.Raw)
		if err != nil || string(again.Evidence.Attest) != string(c.Evidence.Attest) {
			t.Fatalf("re-parse differs: %v", err)
		}
	})
}
