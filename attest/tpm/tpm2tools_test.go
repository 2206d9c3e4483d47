package tpm

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/internal/attesttest"
)

// Interoperability with tpm2-tools (Debian package tpm2-tools, 5.x) on
// swtpm, both ways. TestTPM2ToolsQuoteVerifies can capture the quote
// tpm2-tools made into attest's testdata/tpm2tools/ (see the README there),
// which attest's TestTPM2ToolsCapturedQuote verifies with no TPM.

var captureTPM2Tools = flag.Bool("capture-tpm2tools", false,
	"TestTPM2ToolsQuoteVerifies: write the tpm2-tools quote to ../testdata/tpm2tools/")

// tpm2Tools runs tpm2-tools programs against one swtpm.
type tpm2Tools struct {
	t   *testing.T
	sw  *swtpmServer
	dir string
}

func newTPM2Tools(t *testing.T, sw *swtpmServer) *tpm2Tools {
	requirePrograms(t, "tpm2-tools", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_checkquote",
		"tpm2_flushcontext", "tpm2_pcrextend", "tpm2_readpublic")
	return &tpm2Tools{t: t, sw: sw, dir: t.TempDir()}
}

// run runs a tpm2-tools program in the working directory and fails the
// test if it fails. Without a resource manager transient objects outlive
// the program that loaded them, so they are flushed after each one.
func (x *tpm2Tools) run(prog string, args ...string) string {
	x.t.Helper()
	out, err := x.try(prog, args...)
	if err != nil {
		x.t.Fatalf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, out)
	}
	if prog != "tpm2_checkquote" {
		if out, err := x.try("tpm2_flushcontext", "--transient-object"); err != nil {
			x.t.Fatalf("tpm2_flushcontext: %v\n%s", err, out)
		}
	}
	return out
}

func (x *tpm2Tools) try(prog string, args ...string) (string, error) {
	cmd := exec.Command(prog, args...)
	cmd.Dir = x.dir
	cmd.Env = append(os.Environ(), "TPM2TOOLS_TCTI="+x.sw.tcti())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (x *tpm2Tools) read(name string) []byte {
	x.t.Helper()
	return readFile(x.t, filepath.Join(x.dir, name))
}

func (x *tpm2Tools) write(name string, b []byte) {
	x.t.Helper()
	if err := os.WriteFile(filepath.Join(x.dir, name), b, 0o600); err != nil {
		x.t.Fatal(err)
	}
}

// TestTPM2ToolsQuoteVerifies: an ECC P-256 AK made by tpm2_createek and
// tpm2_createak, a quote made by tpm2_quote: attest decodes the AK public
// area tpm2-tools wrote, and verifies the message, signature and PCR file
// (in both of tpm2-tools' PCR formats) against the nonce.
func TestTPM2ToolsQuoteVerifies(t *testing.T) {
	sw := startSWTPM(t, false)
	x := newTPM2Tools(t, sw)

	x.run("tpm2_createek", "-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub")
	x.run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa",
		"-u", "ak.pub", "-n", "ak.name")
	x.run("tpm2_readpublic", "-c", "ak.ctx", "-f", "tpmt", "-o", "ak.tpmt")
	fw := sha256.Sum256([]byte("firmware measured by tpm2-tools"))
	x.run("tpm2_pcrextend", "10:sha256="+hex.EncodeToString(fw[:]))
	nonce := sha256.Sum256([]byte("a verifier's nonce for tpm2-tools"))
	// Ten PCRs: the serialized PCR file then holds two TPML_DIGESTs.
	x.run("tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,1,2,3,4,5,6,7,10,16", "-q", hex.EncodeToString(nonce[:]),
		"-g", "sha256", "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs")
	x.run("tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,10,16", "-q", hex.EncodeToString(nonce[:]),
		"-g", "sha256", "-m", "quote2.msg", "-s", "quote2.sig", "-o", "quote2.values", "-F", "values")

	// The AK as tpm2_createak wrote it (TPM2B_PUBLIC) and as
	// tpm2_readpublic -f tpmt wrote it are the same key, with the Name
	// tpm2-tools computed.
	area, err := attest.PublicArea(x.read("ak.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if tpmt, err := attest.PublicArea(x.read("ak.tpmt")); err != nil || !bytes.Equal(tpmt, area) {
		t.Fatalf("TPMT_PUBLIC from tpm2_readpublic differs: %v", err)
	}
	ak, err := attest.ParseAttestationKey(area)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ak.Name(), x.read("ak.name")) {
		t.Errorf("Name %x, tpm2-tools says %x", ak.Name(), x.read("ak.name"))
	}
	want10 := attesttest.ExtendSoftware(make([]byte, 32), fw[:])
	for _, f := range []struct {
		msg, sig, pcrs string
		n              int
	}{{"quote.msg", "quote.sig", "quote.pcrs", 10}, {"quote2.msg", "quote2.sig", "quote2.values", 3}} {
		q, err := attest.QuoteFromTPM2Tools(x.read(f.msg), x.read(f.sig), x.read(f.pcrs))
		if err != nil {
			t.Fatalf("%s: %v", f.pcrs, err)
		}
		info, err := ak.VerifyQuote(q, nonce[:])
		if err != nil {
			t.Fatalf("%s: VerifyQuote: %v", f.msg, err)
		}
		if len(info.PCRs) != f.n || !bytes.Equal(info.PCRs[10], want10) || !bytes.Equal(info.PCRs[0], make([]byte, 32)) {
			t.Errorf("%s: PCRs %x", f.pcrs, info.PCRs)
		}
		if _, err := ak.VerifyQuote(q, []byte("another nonce")); !errors.Is(err, attest.ErrNonceMismatch) {
			t.Errorf("%s with another nonce: %v", f.msg, err)
		}
	}
	if *captureTPM2Tools {
		dst := filepath.Join("..", "testdata", "tpm2tools")
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"ak.pub", "ak.name", "quote.msg", "quote.sig", "quote.pcrs", "quote2.msg", "quote2.sig", "quote2.values"} {
			if err := os.WriteFile(filepath.Join(dst, f), x.read(f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dst, "nonce.hex"), []byte(hex.EncodeToString(nonce[:])+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote the tpm2-tools quote to %s", dst)
	}
}

// TestTPM2ToolsCheckquoteAcceptsAttestQuote: a quote made by attest on
// swtpm, written in tpm2-tools' formats (AK as PEM and as TPM2B_PUBLIC,
// message, TPMT_SIGNATURE, PCR file), passes tpm2_checkquote with the
// nonce as qualification, and fails it with another nonce or a tampered
// PCR value.
func TestTPM2ToolsCheckquoteAcceptsAttestQuote(t *testing.T) {
	sw := startSWTPM(t, false)
	x := newTPM2Tools(t, sw)
	tpm := sw.open(t)
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	fw := sha256.Sum256([]byte("firmware measured by attest"))
	if err := tpm.ExtendPCR(9, fw[:]); err != nil {
		t.Fatal(err)
	}
	nonce := sha256.Sum256([]byte("a verifier's nonce for attest"))
	pcrList := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11} // more than one TPML_DIGEST
	q, err := tpm.Quote(nonce[:], pcrList)
	if err != nil {
		t.Fatal(err)
	}
	// tpm2-tools 5.4 reads a "values" PCR file of at most eight PCRs
	// (one TPML_DIGEST); a second quote covers fewer.
	small := []int{0, 7, 9}
	q2, err := tpm.Quote(nonce[:], small)
	if err != nil {
		t.Fatal(err)
	}
	tpm.Close()
	if _, err := attest.VerifyQuote(iak.Public, q, nonce[:]); err != nil {
		t.Fatal(err)
	}

	spki, err := x509.MarshalPKIXPublicKey(iak.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	x.write("ak.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki}))
	x.write("ak.pub", tpm2.Marshal(tpm2.BytesAs2B[tpm2.TPMTPublic](iak.Public)))
	x.write("quote.msg", q.Attest)
	x.write("quote.sig", q.Signature)
	pcrFile, err := attest.FormatTPM2ToolsPCRs(q.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	x.write("quote.pcrs", pcrFile)
	nonceHex := hex.EncodeToString(nonce[:])

	for _, key := range []string{"ak.pem", "ak.pub"} {
		out := x.run("tpm2_checkquote", "-u", key, "-m", "quote.msg", "-s", "quote.sig", "-f", "quote.pcrs",
			"-g", "sha256", "-q", nonceHex)
		if !strings.Contains(out, hex.EncodeToString(q.PCRs[9])) && !strings.Contains(strings.ToLower(out), hex.EncodeToString(q.PCRs[9])) {
			t.Errorf("tpm2_checkquote output does not show PCR 9:\n%s", out)
		}
	}
	var values []byte
	var sel []string
	for _, p := range small {
		values = append(values, q2.PCRs[p]...)
		sel = append(sel, strconv.Itoa(p))
	}
	x.write("quote2.msg", q2.Attest)
	x.write("quote2.sig", q2.Signature)
	x.write("quote2.values", values)
	x.run("tpm2_checkquote", "-u", "ak.pem", "-m", "quote2.msg", "-s", "quote2.sig", "-f", "quote2.values",
		"-l", "sha256:"+strings.Join(sel, ","), "-g", "sha256", "-q", nonceHex)

	// tpm2_checkquote does check: another nonce, a tampered PCR value.
	if out, err := x.try("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig", "-f", "quote.pcrs",
		"-g", "sha256", "-q", hex.EncodeToString([]byte("another nonce"))); err == nil {
		t.Errorf("tpm2_checkquote accepted another nonce:\n%s", out)
	}
	tampered := map[int][]byte{}
	for p, v := range q.PCRs {
		tampered[p] = bytes.Clone(v)
	}
	tampered[9][0] ^= 1
	tamperedFile, err := attest.FormatTPM2ToolsPCRs(tampered)
	if err != nil {
		t.Fatal(err)
	}
	x.write("tampered.pcrs", tamperedFile)
	if out, err := x.try("tpm2_checkquote", "-u", "ak.pem", "-m", "quote.msg", "-s", "quote.sig", "-f", "tampered.pcrs",
		"-g", "sha256", "-q", nonceHex); err == nil {
		t.Errorf("tpm2_checkquote accepted a tampered PCR:\n%s", out)
	}
	// And the PCR file we wrote reads back as the quote's PCRs.
	back, err := attest.ParseTPM2ToolsPCRs(pcrFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyQuote(iak.Public, &attest.Quote{Attest: q.Attest, Signature: q.Signature, PCRs: back}, nonce[:]); err != nil {
		t.Errorf("PCR file read back: %v", err)
	}
}
