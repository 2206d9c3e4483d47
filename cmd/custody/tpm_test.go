package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/google/go-tpm/tpm2"
)

// tpmVendor is a test TPM vendor: a CA, and simulated TPMs (sim:seed=N)
// with an EK certificate from it in NV, opened through openTPM.
type tpmVendor struct {
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	dir    string
}

func newTPMVendor(t *testing.T) *tpmVendor {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Test TPM Root CA", Organization: []string{"Test TPM Vendor"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	v := &tpmVendor{caCert: c, caKey: key, dir: t.TempDir()}
	old := openTPM
	t.Cleanup(func() { openTPM = old })
	openTPM = v.open
	return v
}

// open opens the simulator named by uri and writes an EK certificate for
// its ECC EK into NV, as a TPM vendor does at manufacture.
func (v *tpmVendor) open(uri string) (*tpm.TPM, error) {
	tp, err := tpm.Open(uri)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*tpm.TPM, error) { tp.Close(); return nil, err }
	ek, err := tp.EK(tpm.ECCP256)
	if err != nil {
		return fail(err)
	}
	info, err := tp.Info()
	if err != nil {
		return fail(err)
	}
	tmpl, err := attest.EKCertificateTemplate(ek.PublicKey, info, time.Now().Add(-time.Hour), time.Now().Add(5*365*24*time.Hour))
	if err != nil {
		return fail(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, v.caCert, ek.PublicKey, v.caKey)
	if err != nil {
		return fail(err)
	}
	if err := tp.WriteEKCertificate(tpm.ECCP256, der); err != nil {
		return fail(err)
	}
	return tp, nil
}

func (v *tpmVendor) bundle(t *testing.T) string {
	p := filepath.Join(v.dir, "bundle.pem")
	writeFile(t, p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: v.caCert.Raw}))
	return p
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTPMEKShow(t *testing.T) {
	newTPMVendor(t)
	var out bytes.Buffer
	if err := tpmEKShow(&out, []string{"--tpm", "sim:seed=31"}); err != nil {
		t.Fatal(err)
	}
	tp, err := tpm.Open("sim:seed=31")
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(tpm.ECCP256)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := attest.DeviceID(ek.PublicKey)
	for _, want := range []string{"device ID  " + id, "BEGIN PUBLIC KEY", "issuer       CN=Test TPM Root CA", "matches the TPM's EK", "manufacturer id:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// The RSA EK has no certificate in this TPM.
	out.Reset()
	if err := tpmEKShow(&out, []string{"--tpm", "sim:seed=31", "--alg", "rsa"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "EK certificate: none") {
		t.Errorf("RSA EK:\n%s", out.String())
	}
	for _, args := range [][]string{{}, {"--tpm", "sim:seed=31", "--alg", "dsa"}, {"--tpm", "nonsense"}} {
		if err := tpmEKShow(&out, args); err == nil {
			t.Errorf("tpm ek show %q succeeded", args)
		}
	}
}

func TestTPMEKVerify(t *testing.T) {
	v := newTPMVendor(t)
	bundle := v.bundle(t)
	var out bytes.Buffer
	if err := tpmEKVerify(&out, []string{"--bundle", bundle, "--tpm", "sim:seed=32"}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"chain 1:", "CN=Test TPM Root CA", "matches the TPM's EK", "VERIFIED at"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	// The same certificate from a file: DER, PEM, NV-padded.
	tp, err := v.open("sim:seed=32")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := tp.ReadEKCertificate(tpm.ECCP256)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"ek.der":    raw,
		"ek.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: raw}),
		"ek.nv.bin": append(bytes.Clone(raw), bytes.Repeat([]byte{0xff}, 300)...),
	}
	for name, b := range files {
		p := filepath.Join(v.dir, name)
		writeFile(t, p, b)
		out.Reset()
		if err := tpmEKVerify(&out, []string{"--bundle", bundle, "--cert", p}); err != nil || !strings.Contains(out.String(), "VERIFIED") {
			t.Errorf("%s: %v\n%s", name, err, out.String())
		}
	}
	certFile := filepath.Join(v.dir, "ek.der")

	// Failures name the reason and are errors (non-zero exit).
	other := newTPMVendor(t)
	err = tpmEKVerify(&out, []string{"--bundle", other.bundle(t), "--cert", certFile})
	if !errors.Is(err, attest.ErrUnknownCA) || !strings.Contains(err.Error(), "NOT verified") {
		t.Errorf("another vendor's bundle: %v", err)
	}
	err = tpmEKVerify(&out, []string{"--bundle", bundle, "--cert", certFile, "--at", "2100-01-01T00:00:00Z"})
	if !errors.Is(err, attest.ErrCertificateExpired) {
		t.Errorf("in 2100: %v", err)
	}
	junk := filepath.Join(v.dir, "junk")
	writeFile(t, junk, []byte("not a certificate"))
	if err := tpmEKVerify(&out, []string{"--bundle", bundle, "--cert", junk}); !errors.Is(err, attest.ErrNotEKCertificate) {
		t.Errorf("junk: %v", err)
	}
	for _, args := range [][]string{
		{"--cert", certFile},
		{"--bundle", bundle},
		{"--bundle", bundle, "--cert", certFile, "--tpm", "sim"},
		{"--bundle", bundle, "--cert", certFile, "--at", "yesterday"},
	} {
		if err := tpmEKVerify(&out, args); err == nil {
			t.Errorf("tpm ek verify %q succeeded", args)
		}
	}
}

// TestTPMEKVerifyRealVendor: a real STMicro EK certificate as read from NV
// (with its 0xFF padding) verifies through the vendor's published CAs.
func TestTPMEKVerifyRealVendor(t *testing.T) {
	td := filepath.Join("..", "..", "attest", "testdata")
	dir := t.TempDir()
	var pemBytes []byte
	for _, f := range []string{"globalsign-tpm-root-ca.pem", "stm-tpm-ek-root-ca.pem", "stm-tpm-ek-intermediate-ca-05.pem"} {
		pemBytes = append(pemBytes, readFile(t, filepath.Join(td, f))...)
	}
	bundle := filepath.Join(dir, "stm.pem")
	writeFile(t, bundle, pemBytes)
	var out bytes.Buffer
	err := tpmEKVerify(&out, []string{"--bundle", bundle, "--cert", filepath.Join(td, "stm-ek-rsa-leaf-intca05-nvpadded.bin"), "--at", "2026-06-01T00:00:00Z"})
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"id:53544D20 (STM)", "ST33HTPHAHB4", "STM TPM EK Intermediate CA 05", "GlobalSign", "VERIFIED"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// quoteFiles writes a quote from the simulator in tpm2-tools' formats.
func quoteFiles(t *testing.T, dir string, nonce []byte) (ak, msg, sig, pcrs string) {
	t.Helper()
	tp, err := tpm.Open("sim:seed=33")
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	iak, err := tp.IAK()
	if err != nil {
		t.Fatal(err)
	}
	q, err := tp.Quote(nonce, []int{0, 1, 7})
	if err != nil {
		t.Fatal(err)
	}
	pcrFile, err := attest.FormatTPM2ToolsPCRs(q.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	ak, msg, sig, pcrs = filepath.Join(dir, "ak.pub"), filepath.Join(dir, "quote.msg"), filepath.Join(dir, "quote.sig"), filepath.Join(dir, "quote.pcrs")
	writeFile(t, ak, tpm2.Marshal(tpm2.BytesAs2B[tpm2.TPMTPublic](iak.Public)))
	writeFile(t, msg, q.Attest)
	writeFile(t, sig, q.Signature)
	writeFile(t, pcrs, pcrFile)
	return ak, msg, sig, pcrs
}

func TestTPMQuoteVerify(t *testing.T) {
	dir := t.TempDir()
	nonce := []byte("nonce for the CLI")
	ak, msg, sig, pcrs := quoteFiles(t, dir, nonce)
	nonceHex := hex.EncodeToString(nonce)
	var out bytes.Buffer
	if err := tpmQuoteVerify(&out, []string{"--ak", ak, "--attest", msg, "--sig", sig, "--pcrs", pcrs, "--nonce", nonceHex}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sha256:0 ", "sha256:7 ", "VERIFIED", "nonce      " + nonceHex} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := tpmQuoteVerify(&out, []string{"--ak", ak, "--attest", msg, "--sig", sig, "--nonce", nonceHex}); err != nil ||
		!strings.Contains(out.String(), "PCR values not given") {
		t.Errorf("without --pcrs: %v\n%s", err, out.String())
	}

	// Failures.
	if err := tpmQuoteVerify(&out, []string{"--ak", ak, "--attest", msg, "--sig", sig, "--pcrs", pcrs, "--nonce", "00ff"}); !errors.Is(err, attest.ErrNonceMismatch) {
		t.Errorf("wrong nonce: %v", err)
	}
	// In tpm2-tools' serialized format the first PCR value starts after
	// the selection (132 bytes), the list count, the first list's count
	// and the digest's size.
	tampered := readFile(t, pcrs)
	tampered[132+4+4+2] ^= 1
	bad := filepath.Join(dir, "bad.pcrs")
	writeFile(t, bad, tampered)
	if err := tpmQuoteVerify(&out, []string{"--ak", ak, "--attest", msg, "--sig", sig, "--pcrs", bad, "--nonce", nonceHex}); !errors.Is(err, attest.ErrPCRDigestMismatch) {
		t.Errorf("tampered PCR: %v", err)
	}
	tp, err := tpm.Open("sim:seed=33")
	if err != nil {
		t.Fatal(err)
	}
	ek, err := tp.EK(tpm.ECCP256)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}
	spki, _ := x509.MarshalPKIXPublicKey(ek.PublicKey)
	pemAK := filepath.Join(dir, "ak.pem")
	writeFile(t, pemAK, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}))
	if err := tpmQuoteVerify(&out, []string{"--ak", pemAK, "--attest", msg, "--sig", sig, "--nonce", nonceHex}); err == nil || !strings.Contains(err.Error(), "TPM attributes") {
		t.Errorf("PEM key: %v", err)
	}
	ekFile := filepath.Join(dir, "ek.pub")
	writeFile(t, ekFile, ek.Public)
	if err := tpmQuoteVerify(&out, []string{"--ak", ekFile, "--attest", msg, "--sig", sig, "--nonce", nonceHex}); !errors.Is(err, attest.ErrKeyAttributes) {
		t.Errorf("EK as AK: %v", err)
	}
	if err := tpmQuoteVerify(&out, []string{"--ak", ak, "--attest", msg, "--sig", sig}); err == nil {
		t.Error("no nonce accepted")
	}
}

// TestTPMQuoteVerifyTPM2Tools: the quote tpm2-tools made (captured in
// attest/testdata/tpm2tools) verifies through the CLI, in both PCR formats.
func TestTPMQuoteVerifyTPM2Tools(t *testing.T) {
	td := filepath.Join("..", "..", "attest", "testdata", "tpm2tools")
	nonce := strings.TrimSpace(string(readFile(t, filepath.Join(td, "nonce.hex"))))
	for _, q := range [][3]string{{"quote.msg", "quote.sig", "quote.pcrs"}, {"quote2.msg", "quote2.sig", "quote2.values"}} {
		var out bytes.Buffer
		err := tpmQuoteVerify(&out, []string{"--ak", filepath.Join(td, "ak.pub"), "--attest", filepath.Join(td, q[0]),
			"--sig", filepath.Join(td, q[1]), "--pcrs", filepath.Join(td, q[2]), "--nonce", nonce})
		if err != nil || !strings.Contains(out.String(), "sha256:10") {
			t.Errorf("%s: %v\n%s", q[2], err, out.String())
		}
	}
}

func TestTPMCommandUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"ek"}, {"quote", "make"}, {"nonsense", "show"}} {
		if err := tpmCmd(t.Context(), args); !errors.Is(err, errUsage) {
			t.Errorf("tpm %q: %v", args, err)
		}
	}
	if err := tpmCmd(t.Context(), []string{"ek", "show", "--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}
