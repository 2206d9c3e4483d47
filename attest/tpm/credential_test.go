package tpm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
)

func TestCredentialActivation(t *testing.T) {
	tpm := openSim(t, 5)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []KeyAlg{RSA2048, ECCP256} {
		t.Run(alg.String(), func(t *testing.T) {
			ek, err := tpm.EK(alg)
			if err != nil {
				t.Fatal(err)
			}
			secret := make([]byte, 32)
			rand.Read(secret)
			cred, err := attest.MakeCredential(ek.Public, iak.Name, secret)
			if err != nil {
				t.Fatalf("MakeCredential: %v", err)
			}
			got, err := tpm.ActivateCredential(iak, alg, cred)
			if err != nil {
				t.Fatalf("ActivateCredential: %v", err)
			}
			if !bytes.Equal(got, secret) {
				t.Fatalf("secret %x, want %x", got, secret)
			}

			// A credential made for another key's name does not activate
			// for the IAK.
			otherName := append([]byte{0x00, 0x0b}, make([]byte, 32)...)
			sum := sha256.Sum256([]byte("another key"))
			copy(otherName[2:], sum[:])
			bad, err := attest.MakeCredential(ek.Public, otherName, secret)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tpm.ActivateCredential(iak, alg, bad); !errors.Is(err, ErrCredentialRejected) {
				t.Errorf("credential for another name: %v, want ErrCredentialRejected", err)
			}
			// Nor one made for the IAK but with the EK of the other
			// algorithm.
			otherAlg := ECCP256
			if alg == ECCP256 {
				otherAlg = RSA2048
			}
			if _, err := tpm.ActivateCredential(iak, otherAlg, cred); !errors.Is(err, ErrCredentialRejected) {
				t.Errorf("credential for the other EK: %v, want ErrCredentialRejected", err)
			}
			// Tampered blob.
			tampered := *cred
			tampered.IDObject = bytes.Clone(cred.IDObject)
			tampered.IDObject[len(tampered.IDObject)-1] ^= 1
			if _, err := tpm.ActivateCredential(iak, alg, &tampered); !errors.Is(err, ErrCredentialRejected) {
				t.Errorf("tampered credential: %v, want ErrCredentialRejected", err)
			}
			// The TPM still works after the refusals.
			if got, err := tpm.ActivateCredential(iak, alg, cred); err != nil || !bytes.Equal(got, secret) {
				t.Errorf("after refusals: %v", err)
			}
		})
	}
}

// TestCredentialForAnotherTPM: a credential encrypted to an EK this TPM
// does not hold (a software RSA key in the EK template) cannot be
// activated.
func TestCredentialForAnotherTPM(t *testing.T) {
	tpm := openSim(t, 6)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	foreign := tpm2.RSAEKTemplate
	foreign.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()})
	cred, err := attest.MakeCredential(tpm2.Marshal(foreign), iak.Name, []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tpm.ActivateCredential(iak, RSA2048, cred); !errors.Is(err, ErrCredentialRejected) {
		t.Errorf("foreign EK: %v, want ErrCredentialRejected", err)
	}
}

// TestActivateCredentialUnknownKey: a key the TPM struct does not hold
// cannot be the activation target. (attest's TestMakeCredentialRejects
// tests the credentials a verifier refuses to make.)
func TestActivateCredentialUnknownKey(t *testing.T) {
	tpm := openSim(t, 7)
	ek, err := tpm.EK(ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	stranger := &Key{Name: append([]byte{0, 0x0b}, make([]byte, 32)...)}
	cred, _ := attest.MakeCredential(ek.Public, stranger.Name, []byte("s"))
	if _, err := tpm.ActivateCredential(stranger, ECCP256, cred); err == nil {
		t.Error("activated for a key the TPM struct does not hold")
	}
}
