package device

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
)

// The simulator is one per process: tests here run one after the other.

func openTPM(t *testing.T, seed string) *tpm.TPM {
	t.Helper()
	tp, err := tpm.Open("sim:seed=" + seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

func startDevice(t *testing.T, cfg Config) (*Device, *Client) {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return d, NewClient(srv.URL, srv.Client())
}

func extend(pcr, digest []byte) []byte {
	h := sha256.New()
	h.Write(pcr)
	h.Write(digest)
	return h.Sum(nil)
}

// vendorCA signs EK certificates in the test.
type vendorCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newVendorCA(t *testing.T) *vendorCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test TPM Vendor CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &vendorCA{cert: cert, key: key}
}

func (ca *vendorCA) ekCertificate(t *testing.T, pub any) []byte {
	t.Helper()
	tmpl, err := attest.EKCertificateTemplate(pub, attest.TPMInfo{Manufacturer: "id:4D534654", Model: "SIM", Version: "id:00000001"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func wantAPIError(t *testing.T, err error, status int, contains string) {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want an APIError %d", err, status)
	}
	if ae.StatusCode != status || !strings.Contains(ae.Message, contains) {
		t.Errorf("got %d %q, want %d containing %q", ae.StatusCode, ae.Message, status, contains)
	}
}

func TestDeviceAPI(t *testing.T) {
	ctx := context.Background()
	tp := openTPM(t, "100")
	dir := t.TempDir()
	d, c := startDevice(t, Config{TPM: tp, StateDir: dir})
	if d.TPM() != tp {
		t.Fatal("TPM()")
	}

	// Identity of a fresh device: no EK certificate, no firmware.
	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ekPub, _, err := attest.PublicKeyFromTPMT(id.EKPublic)
	if err != nil {
		t.Fatal(err)
	}
	spkiKey, err := x509.ParsePKIXPublicKey(id.EKPublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ekPub.(*ecdsa.PublicKey); !ok || !ekPub.(*ecdsa.PublicKey).Equal(spkiKey) {
		t.Fatal("ekPublic and ekPublicKey disagree, or the default EK is not ECC")
	}
	wantID, _ := attest.DeviceID(ekPub)
	if id.DeviceID != wantID {
		t.Errorf("deviceId %s, want %s", id.DeviceID, wantID)
	}
	if _, name, err := attest.PublicKeyFromTPMT(id.IAKPublic); err != nil || !bytes.Equal(name, id.IAKName) {
		t.Errorf("iakName does not match iakPublic: %v", err)
	}
	if id.EKCertificate != nil || id.FirmwareDigest != "" {
		t.Errorf("fresh device has %d-byte EK certificate, firmware %q", len(id.EKCertificate), id.FirmwareDigest)
	}

	t.Run("ek-certificate", func(t *testing.T) {
		ca := newVendorCA(t)
		der := ca.ekCertificate(t, ekPub)
		if err := c.PutEKCertificate(ctx, der); err != nil {
			t.Fatal(err)
		}
		id2, err := c.Identity(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(id2.EKCertificate, der) {
			t.Fatal("identity does not return the stored EK certificate")
		}
		ekc, err := attest.ParseEKCertificate(id2.EKCertificate)
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := attest.ParseBundle(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ekc.Verify(bundle, time.Now()); err != nil {
			t.Errorf("Verify: %v", err)
		}
		// A certificate for some other key is refused.
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		wantAPIError(t, c.PutEKCertificate(ctx, ca.ekCertificate(t, other.Public())), 400, "not for this TPM")
		wantAPIError(t, c.PutEKCertificate(ctx, []byte("junk")), 400, "not DER")
		wantAPIError(t, c.PutEKCertificate(ctx, nil), 400, "required")
	})

	t.Run("activate-credential", func(t *testing.T) {
		secret := []byte("0123456789abcdef0123456789abcdef")
		cred, err := attest.MakeCredential(id.EKPublic, id.IAKName, secret)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.ActivateCredential(ctx, cred)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, secret) {
			t.Fatalf("secret %x", got)
		}
		otherName := append([]byte{0x00, 0x0b}, bytes.Repeat([]byte{7}, 32)...)
		bad, _ := attest.MakeCredential(id.EKPublic, otherName, secret)
		_, err = c.ActivateCredential(ctx, bad)
		wantAPIError(t, err, 400, "credential rejected")
		_, err = c.ActivateCredential(ctx, &attest.Credential{})
		wantAPIError(t, err, 400, "required")
	})

	var before *attest.QuoteInfo
	t.Run("quote", func(t *testing.T) {
		nonce := []byte("nonce-1")
		q, err := c.Quote(ctx, nonce, []int{0, 7})
		if err != nil {
			t.Fatal(err)
		}
		info, err := attest.VerifyQuote(id.IAKPublic, q, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(info.PCRs[0], make([]byte, 32)) {
			t.Errorf("PCR 0 before firmware: %x", info.PCRs[0])
		}
		before = info
		// Default PCRs: the firmware PCR.
		q, err = c.Quote(ctx, nonce, nil)
		if err != nil || len(q.PCRs) != 1 || q.PCRs[0] == nil {
			t.Errorf("default PCRs: %v %v", q, err)
		}
		_, err = c.Quote(ctx, nil, []int{0})
		wantAPIError(t, err, 400, "nonce is required")
		_, err = c.Quote(ctx, make([]byte, 65), []int{0})
		wantAPIError(t, err, 400, "nonce longer")
		_, err = c.Quote(ctx, nonce, []int{24})
		wantAPIError(t, err, 400, "pcrs")
		_, err = c.Quote(ctx, nonce, []int{1, 1})
		wantAPIError(t, err, 400, "pcrs")
	})

	image := []byte("firmware image v1.2.3 \x00\x01\x02")
	sum := sha256.Sum256(image)
	measured := extend(make([]byte, 32), sum[:])
	t.Run("firmware", func(t *testing.T) {
		digest, err := c.ProgramFirmware(ctx, image)
		if err != nil {
			t.Fatal(err)
		}
		if digest != hex.EncodeToString(sum[:]) {
			t.Errorf("digest %s", digest)
		}
		stored, err := os.ReadFile(filepath.Join(dir, "firmware.bin"))
		if err != nil || !bytes.Equal(stored, image) {
			t.Fatalf("stored image: %v", err)
		}
		nonce := []byte("nonce-2")
		q, err := c.Quote(ctx, nonce, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		info, err := attest.VerifyQuote(id.IAKPublic, q, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(info.PCRs[0], measured) {
			t.Errorf("PCR 0 after programming %x, want %x", info.PCRs[0], measured)
		}
		if err := attest.CheckMonotonic(before, info); err != nil {
			t.Error(err)
		}
		id2, _ := c.Identity(ctx)
		if id2.FirmwareDigest != digest {
			t.Errorf("identity firmwareDigest %q", id2.FirmwareDigest)
		}
		_, err = c.ProgramFirmware(ctx, nil)
		wantAPIError(t, err, 400, "image is required")
	})

	t.Run("reboot", func(t *testing.T) {
		nonce := []byte("nonce-3")
		q, _ := c.Quote(ctx, nonce, []int{0})
		pre, err := attest.VerifyQuote(id.IAKPublic, q, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		q, err = c.Quote(ctx, nonce, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		post, err := attest.VerifyQuote(id.IAKPublic, q, nonce)
		if err != nil {
			t.Fatalf("quote after reboot (same IAK): %v", err)
		}
		if !bytes.Equal(post.PCRs[0], measured) {
			t.Errorf("PCR 0 after reboot %x, want the same measurement %x", post.PCRs[0], measured)
		}
		if post.ResetCount != pre.ResetCount+1 {
			t.Errorf("resetCount %d → %d", pre.ResetCount, post.ResetCount)
		}
		if err := attest.CheckMonotonic(pre, post); err != nil {
			t.Error(err)
		}
		id2, err := c.Identity(ctx)
		if err != nil || id2.DeviceID != id.DeviceID || id2.EKCertificate == nil {
			t.Errorf("identity after reboot: %v", err)
		}
	})

	t.Run("ldevid", func(t *testing.T) {
		nonce := []byte("gate nonce")
		ev, err := c.NewLDevID(ctx, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := attest.VerifyCertify(id.IAKPublic, ev, nonce); err != nil {
			t.Errorf("VerifyCertify: %v", err)
		}
		if _, err := attest.VerifyCertify(id.IAKPublic, ev, []byte("other")); !errors.Is(err, attest.ErrNonceMismatch) {
			t.Errorf("wrong nonce: %v", err)
		}
		_, err = c.NewLDevID(ctx, nil)
		wantAPIError(t, err, 400, "nonce is required")
	})

	t.Run("boot measures programmed firmware", func(t *testing.T) {
		// Power-cycle: the TPM resets and a new Device (the next boot)
		// measures firmware.bin before serving anything.
		if err := tp.Reboot(); err != nil {
			t.Fatal(err)
		}
		_, c2 := startDevice(t, Config{TPM: tp, StateDir: dir})
		nonce := []byte("nonce-4")
		q, err := c2.Quote(ctx, nonce, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		info, err := attest.VerifyQuote(id.IAKPublic, q, nonce)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(info.PCRs[0], measured) {
			t.Errorf("PCR 0 after boot %x, want %x", info.PCRs[0], measured)
		}
		id2, _ := c2.Identity(ctx)
		if id2.FirmwareDigest != hex.EncodeToString(sum[:]) {
			t.Errorf("firmwareDigest %q", id2.FirmwareDigest)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		srv := httptest.NewServer(d.Handler())
		defer srv.Close()
		for _, tc := range []struct {
			method, path, body string
			status             int
		}{
			{"GET", "/v1/nothing", "", 404},
			{"POST", "/v1/quote", `{"nonce":"bm9uY2U=","extra":1}`, 400},
			{"POST", "/v1/quote", `{"nonce":`, 400},
			{"POST", "/v1/quote", `{"nonce":"bm9uY2U="} {}`, 400},
			{"POST", "/v1/quote", `{"nonce":"!!"}`, 400},
			{"POST", "/v1/ldevid", ``, 400},
			{"GET", "/v1/quote", "", 405},
		} {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("%s %s %q: %d, want %d", tc.method, tc.path, tc.body, resp.StatusCode, tc.status)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s %s: content type %q", tc.method, tc.path, resp.Header.Get("Content-Type"))
			}
		}
	})
}

func TestDeviceRSAEK(t *testing.T) {
	ctx := context.Background()
	tp := openTPM(t, "101")
	_, c := startDevice(t, Config{TPM: tp, StateDir: t.TempDir(), EKAlg: tpm.RSA2048, FirmwarePCR: 2})
	id, err := c.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := attest.MakeCredential(id.EKPublic, id.IAKName, []byte("rsa secret"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ActivateCredential(ctx, cred)
	if err != nil || string(got) != "rsa secret" {
		t.Fatalf("activate with the RSA EK: %q %v", got, err)
	}
	image := []byte("fw")
	if _, err := c.ProgramFirmware(ctx, image); err != nil {
		t.Fatal(err)
	}
	q, err := c.Quote(ctx, []byte("n"), nil) // default: the firmware PCR, 2
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(image)
	if !bytes.Equal(q.PCRs[2], extend(make([]byte, 32), sum[:])) || len(q.PCRs) != 1 {
		t.Errorf("PCRs %x", q.PCRs)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tp := openTPM(t, "102")
	dir := t.TempDir()
	for _, cfg := range []Config{
		{StateDir: dir},
		{TPM: tp},
		{TPM: tp, StateDir: dir, FirmwarePCR: 24},
		{TPM: tp, StateDir: dir, FirmwarePCR: -1},
		{TPM: tp, StateDir: dir, EKAlg: 9},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
	// A corrupt state directory path is reported.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := New(Config{TPM: tp, StateDir: filepath.Join(file, "sub")}); err == nil {
		t.Error("New with an unusable state directory succeeded")
	}
}
