package tpm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"regexp"
	"sync"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
)

// openSim opens the in-process simulator with a fixed seed and closes it at
// the end of the test. The simulator is one per process: tests using it
// must not run in parallel.
func openSim(t testing.TB, seed int) *TPM {
	t.Helper()
	tpm, err := Open("sim:seed=" + itoa(seed))
	if err != nil {
		t.Fatalf("Open(sim): %v", err)
	}
	t.Cleanup(func() {
		if err := tpm.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return tpm
}

func itoa(i int) string {
	if i < 0 {
		return "-" + itoa(-i)
	}
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func TestOpenRejectsUnknownURIs(t *testing.T) {
	for _, uri := range []string{"", "tpm", "sim:", "sim:seed=x", "sim:foo=1", "mssim://nohostport", "http://x"} {
		if tpm, err := Open(uri); err == nil {
			tpm.Close()
			t.Errorf("Open(%q) succeeded", uri)
		}
	}
}

func TestEKAndIAK(t *testing.T) {
	tpm := openSim(t, 1)
	rsaEK, err := tpm.EK(RSA2048)
	if err != nil {
		t.Fatalf("EK(RSA2048): %v", err)
	}
	if k, ok := rsaEK.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("RSA EK public key = %T", rsaEK.PublicKey)
	}
	eccEK, err := tpm.EK(ECCP256)
	if err != nil {
		t.Fatalf("EK(ECCP256): %v", err)
	}
	if k, ok := eccEK.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("ECC EK public key = %T", eccEK.PublicKey)
	}
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatalf("IAK: %v", err)
	}
	// The EKs have the TCG template attributes, the IAK its own.
	for _, c := range []struct {
		key  *Key
		tmpl tpm2.TPMTPublic
	}{{rsaEK, tpm2.RSAEKTemplate}, {eccEK, tpm2.ECCEKTemplate}, {iak, iakTemplate}} {
		pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](c.key.Public)
		if err != nil {
			t.Fatal(err)
		}
		if pub.ObjectAttributes != c.tmpl.ObjectAttributes || !bytes.Equal(pub.AuthPolicy.Buffer, c.tmpl.AuthPolicy.Buffer) {
			t.Errorf("attributes %+v, want %+v", pub.ObjectAttributes, c.tmpl.ObjectAttributes)
		}
		gk, name, err := attest.PublicKeyFromTPMT(c.key.Public)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(name, c.key.Name) || !attest.SamePublicKey(gk, c.key.PublicKey) {
			t.Errorf("PublicKeyFromTPMT disagrees with the TPM")
		}
	}
	// More keys than the simulator's three object slots: all still work,
	// and come back identical after being swapped out.
	if _, _, err := tpm.NewLDevID([]byte("n")); err != nil {
		t.Fatalf("NewLDevID: %v", err)
	}
	for i := 0; i < 2; i++ {
		for _, alg := range []KeyAlg{RSA2048, ECCP256} {
			k, err := tpm.EK(alg)
			if err != nil {
				t.Fatal(err)
			}
			want := rsaEK
			if alg == ECCP256 {
				want = eccEK
			}
			if !bytes.Equal(k.Public, want.Public) {
				t.Errorf("EK(%v) changed after swapping", alg)
			}
		}
		k, err := tpm.IAK()
		if err != nil || !bytes.Equal(k.Public, iak.Public) {
			t.Errorf("IAK changed after swapping: %v", err)
		}
	}
	// Keys survive a reboot unchanged (they are derived from the seeds).
	if err := tpm.Reboot(); err != nil {
		t.Fatal(err)
	}
	k, err := tpm.EK(RSA2048)
	if err != nil || !bytes.Equal(k.Public, rsaEK.Public) {
		t.Errorf("RSA EK changed after reboot: %v", err)
	}
	k, err = tpm.IAK()
	if err != nil || !bytes.Equal(k.Public, iak.Public) {
		t.Errorf("IAK changed after reboot: %v", err)
	}

	id, err := attest.DeviceID(eccEK.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(id) {
		t.Errorf("DeviceID = %q", id)
	}
	tpm.Close()
	if _, err := tpm.EK(RSA2048); !errors.Is(err, ErrClosed) {
		t.Errorf("EK after Close: %v, want ErrClosed", err)
	}
}

func TestSeedDeterminesKeys(t *testing.T) {
	keys := func(seed int) (ek, iak []byte) {
		tpm := openSim(t, seed)
		defer tpm.Close()
		e, err := tpm.EK(ECCP256)
		if err != nil {
			t.Fatal(err)
		}
		i, err := tpm.IAK()
		if err != nil {
			t.Fatal(err)
		}
		return e.Public, i.Public
	}
	ek1, iak1 := keys(7)
	ek2, iak2 := keys(7)
	ek3, iak3 := keys(8)
	if !bytes.Equal(ek1, ek2) || !bytes.Equal(iak1, iak2) {
		t.Error("same seed gave different keys")
	}
	if bytes.Equal(ek1, ek3) || bytes.Equal(iak1, iak3) {
		t.Error("different seeds gave the same keys")
	}
}

// TestRandomSeedSimulatorKeepsKeysAcrossReboot: "sim" (random seeds) keeps
// its keys across a TPM reset, like a real TPM.
func TestRandomSeedSimulatorKeepsKeysAcrossReboot(t *testing.T) {
	tpm, err := Open("sim")
	if err != nil {
		t.Fatal(err)
	}
	defer tpm.Close()
	ek1, err := tpm.EK(ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	iak1, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm.Reboot(); err != nil {
		t.Fatal(err)
	}
	ek2, err := tpm.EK(ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	iak2, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ek1.Public, ek2.Public) || !bytes.Equal(iak1.Public, iak2.Public) {
		t.Error("keys changed across reboot")
	}
	// A seeded simulator has other keys.
	tpm.Close()
	seeded := openSim(t, 7)
	ek3, err := seeded.EK(ECCP256)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ek3.Public, ek1.Public) {
		t.Error("random and seeded simulators share an EK")
	}
}

func TestConcurrentUse(t *testing.T) {
	tpm := openSim(t, 2)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 4; j++ {
				nonce := []byte{byte(i), byte(j)}
				q, err := tpm.Quote(nonce, []int{0, 1})
				if err != nil {
					errs <- err
					return
				}
				if _, err := attest.VerifyQuote(iak.Public, q, nonce); err != nil {
					errs <- err
					return
				}
				if _, err := tpm.EK(RSA2048); err != nil {
					errs <- err
					return
				}
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
