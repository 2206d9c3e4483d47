package tpm

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
)

// TestSWTPM runs against swtpm (libtpms, an independent TPM 2.0
// implementation) over its TCP server channel, provisioned by swtpm_setup
// with EK certificates from swtpm_localca. It is skipped when swtpm is not
// installed (Debian packages swtpm and swtpm-tools).
func TestSWTPM(t *testing.T) {
	sw := startSWTPM(t, true)
	tpm := sw.open(t)
	defer tpm.Close()
	ca := sw.caDir

	// The EK certificate swtpm_setup stored is read, parsed and verified
	// against swtpm_localca's CA, and certifies the EK we derive.
	raw, err := tpm.ReadEKCertificate(RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	ekc, err := attest.ParseEKCertificate(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ekc.TPM.Model != "swtpm" {
		t.Errorf("TPM info %+v", ekc.TPM)
	}
	root, err := os.ReadFile(filepath.Join(ca, "swtpm-localca-rootca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := attest.ParseBundle(root, readFile(t, filepath.Join(ca, "issuercert.pem")))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ekc.Verify(bundle, time.Now()); err != nil {
		t.Errorf("Verify swtpm EK certificate: %v", err)
	}
	ek, err := tpm.EK(RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	if !attest.SamePublicKey(ekc.Cert.PublicKey, ek.PublicKey) {
		t.Error("swtpm's EK certificate is not for the EK from the TCG template")
	}

	// Credential activation, quote, LDevID, NV with libtpms.
	iak, err := tpm.IAK()
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range []KeyAlg{RSA2048, ECCP256} {
		ek, err := tpm.EK(alg)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := attest.MakeCredential(ek.Public, iak.Name, []byte("swtpm secret"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tpm.ActivateCredential(iak, alg, cred); err != nil || string(got) != "swtpm secret" {
			t.Errorf("activate with %v EK: %q %v", alg, got, err)
		}
	}
	nonce := []byte("swtpm nonce")
	q, err := tpm.Quote(nonce, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyQuote(iak.Public, q, nonce); err != nil {
		t.Errorf("VerifyQuote: %v", err)
	}
	_, ev, err := tpm.NewLDevID(nonce)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.VerifyCertify(iak.Public, ev, nonce); err != nil {
		t.Errorf("VerifyCertify: %v", err)
	}
	if err := tpm.WriteEKCertificate(ECCP256, bytes.Repeat([]byte{0x30}, 1500)); err != nil {
		t.Errorf("WriteEKCertificate: %v", err)
	} else if got, err := tpm.ReadEKCertificate(ECCP256); err != nil || len(got) != 1500 {
		t.Errorf("ReadEKCertificate: %d bytes, %v", len(got), err)
	}
	if err := tpm.Reboot(); err == nil {
		t.Error("Reboot of swtpm:// succeeded; it should say it is unsupported")
	}
}

// requirePrograms skips the test when one of the programs is not installed,
// or fails it when running in CI (CI=true), where .ci/run installs them
// (Debian packages named in pkgs).
func requirePrograms(t testing.TB, pkgs string, programs ...string) {
	t.Helper()
	for _, bin := range programs {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed: CI must install %s (.ci/run)", bin, pkgs)
			}
			t.Skipf("%s not installed (Debian: %s)", bin, pkgs)
		}
	}
}

// swtpmServer is a swtpm (libtpms) process serving a TPM for one test.
type swtpmServer struct {
	// addr is HOST:PORT of the server channel; the control channel is on
	// the next port, where tpm2-tss' swtpm TCTI expects it.
	addr string
	port int
	// caDir holds swtpm_localca's CA (swtpm-localca-rootca-cert.pem,
	// issuercert.pem) when the TPM was provisioned with EK certificates.
	caDir string
}

// startSWTPM starts swtpm on free local ports with a state of its own in
// t.TempDir(), and stops it when the test ends. With ekCerts, swtpm_setup
// first provisions the TPM with EK certificates from a local CA (RSA key
// generation: a few seconds). It returns once swtpm accepts connections.
func startSWTPM(t *testing.T, ekCerts bool) *swtpmServer {
	t.Helper()
	if ekCerts {
		requirePrograms(t, "swtpm and swtpm-tools", "swtpm", "swtpm_setup", "swtpm_localca")
	} else {
		requirePrograms(t, "swtpm", "swtpm")
	}
	dir := t.TempDir()
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	sw := &swtpmServer{}
	if ekCerts {
		// A local CA of our own instead of the system-wide one.
		localca := filepath.Join(dir, "localca.conf")
		write(t, localca, "statedir = "+ca+"\nsigningkey = "+ca+"/signkey.pem\nissuercert = "+ca+"/issuercert.pem\ncertserial = "+ca+"/certserial\n")
		write(t, filepath.Join(dir, "localca.options"), "--platform-manufacturer Custody\n--platform-version 2.1\n--platform-model test\n")
		setupConf := filepath.Join(dir, "swtpm_setup.conf")
		write(t, setupConf, "create_certs_tool = swtpm_localca\ncreate_certs_tool_config = "+localca+"\ncreate_certs_tool_options = "+filepath.Join(dir, "localca.options")+"\nactive_pcr_banks = sha256\n")
		out, err := exec.Command("swtpm_setup", "--tpm2", "--tpmstate", state, "--config", setupConf,
			"--create-ek-cert", "--overwrite").CombinedOutput()
		if err != nil {
			t.Fatalf("swtpm_setup: %v\n%s", err, out)
		}
		sw.caDir = ca
	}

	sw.port = freePortPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(sw.port),
		"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(sw.port+1),
		"--flags", "not-need-init,startup-clear")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	sw.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sw.port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", sw.addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on %s: %v\n%s", sw.addr, err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return sw
}

// open opens the swtpm with attest. swtpm serves one connection at a
// time, so it waits for the previous client to be gone; close the TPM
// before running another client (tpm2-tools).
func (sw *swtpmServer) open(t *testing.T) *TPM {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tpm, err := Open("swtpm://" + sw.addr)
		if err == nil {
			return tpm
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tcti is the tpm2-tss TCTI configuration that reaches the swtpm.
func (sw *swtpmServer) tcti() string {
	return "swtpm:host=127.0.0.1,port=" + strconv.Itoa(sw.port)
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
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

// freePortPair returns a local TCP port p such that p and p+1 are free
// (swtpm's server and control channels).
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+1)))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no two consecutive free TCP ports")
	return 0
}
