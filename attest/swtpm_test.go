package attest

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
)

// TestSWTPM runs against swtpm (libtpms, an independent TPM 2.0
// implementation) over its TCP server channel, provisioned by swtpm_setup
// with EK certificates from swtpm_localca. It is skipped when swtpm is not
// installed (Debian packages swtpm and swtpm-tools).
func TestSWTPM(t *testing.T) {
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed: CI must install swtpm and swtpm-tools (.ci/run)", bin)
			}
			t.Skipf("%s not installed", bin)
		}
	}
	dir := t.TempDir()
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
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

	port, ctrl := freePort(t), freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
		"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(ctrl),
		"--flags", "not-need-init,startup-clear")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm did not listen on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// swtpm serves one connection at a time; the probe above has closed.
	var tpm *TPM
	for tpm == nil {
		tpm, err = Open("swtpm://" + addr)
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer tpm.Close()

	// The EK certificate swtpm_setup stored is read, parsed and verified
	// against swtpm_localca's CA, and certifies the EK we derive.
	raw, err := tpm.ReadEKCertificate(RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	ekc, err := ParseEKCertificate(raw)
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
	bundle, err := ParseBundle(root, readFile(t, filepath.Join(ca, "issuercert.pem")))
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
	if !sameKey(ekc.Cert.PublicKey, ek.PublicKey) {
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
		cred, err := MakeCredential(ek.Public, iak.Name, []byte("swtpm secret"))
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
	if _, err := VerifyQuote(iak.Public, q, nonce); err != nil {
		t.Errorf("VerifyQuote: %v", err)
	}
	_, ev, err := tpm.NewLDevID(nonce)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyCertify(iak.Public, ev, nonce); err != nil {
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

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
