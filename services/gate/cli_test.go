package gate_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/gate"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// TestAgentEnrollCommand runs `custody-agent enroll` against a device on
// swtpm (an independent TPM that outlives processes): the device goes
// through the supply chain with its factory API in this process, then the
// command enrolls it (exit 0, hub and LDevID chain on stdout), enrolls it
// again with the same TPM (exit 0, a new LDevID: retrying is safe), is
// refused once the operator flags the device (exit 3, the rule on stderr),
// and reports an unreachable gate (exit 4).
func TestAgentEnrollCommand(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("swtpm is not installed: CI must install it (.ci/run)")
		}
		t.Skip("swtpm is not installed (Debian: swtpm)")
	}
	e := newEnv(t, gate.Policy{})
	dir := t.TempDir()
	var cleanups []func()
	d, err := startSWTPMDevice(filepath.Join(dir, "device"), func(f func()) { cleanups = append(cleanups, f) })
	t.Cleanup(func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.factory(d.http.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.must(d.http.URL, ems, "offer", &station.Request{To: operator})
	e.must(d.http.URL, operator, "accept", nil)
	// The device's firmware was measured when the EMS programmed it; the
	// command must not measure it again, so it gets a state directory of
	// its own, without the image (on real hardware the boot ROM measures,
	// not the agent).
	d.http.Close()
	if err := d.tpm.Close(); err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "dps-ca.pem")
	if err := pki.WriteCertPEM(caFile, e.n.PKI.TLSCA); err != nil {
		t.Fatal(err)
	}
	enroll := func(extra ...string) (int, string, string) {
		args := append([]string{"enroll", "--tpm", "swtpm://" + d.addr, "--state", t.TempDir(),
			"--gate", e.n.URL() + "/gate", "--id-scope", e.n.IDScope(), "--dps-ca", caFile, "--poll", "50ms"}, extra...)
		cmd := exec.CommandContext(e.ctx, e.bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
	}
	certOut := filepath.Join(dir, "ldevid.pem")
	ldevid := func() *x509.Certificate {
		certs, err := pki.ReadCertsPEM(certOut)
		if err != nil || len(certs) != 2 {
			t.Fatalf("--cert-out: %d certificates, %v", len(certs), err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(e.n.PKI.LDevIDCA.Cert)
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil || certs[0].Subject.CommonName != id {
			t.Fatalf("LDevID %s: %v", certs[0].Subject, err)
		}
		return certs[0]
	}

	code, out, errOut := enroll("--cert-out", certOut)
	if code != 0 || !strings.Contains(out, "enrolled    yes") || !strings.Contains(out, "hub         blue-hub-") ||
		!strings.Contains(out, "-----BEGIN CERTIFICATE-----") || !strings.Contains(out, id) {
		t.Fatalf("enroll: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	first := ldevid()

	code, out, errOut = enroll("--cert-out", certOut, "--api-version", gatewire.APIVersion2019)
	if code != 0 {
		t.Fatalf("second enroll: exit %d\n%s\n%s", code, out, errOut)
	}
	if second := ldevid(); second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("enrolling again returned the same LDevID")
	}

	// The operator flags the device (its factory API again, for the quote).
	d2, err := device.New(device.Config{TPM: mustOpen(t, d.addr), StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httpServe(t, d2)
	e.must(srv.URL, operator, "flag", &station.Request{Reason: events.FlagStolen})
	srv.Close()
	if err := d2.TPM().Close(); err != nil {
		t.Fatal(err)
	}
	// The device is told only that no custody record allows it (the one
	// answer of every refusal decided from the log); the operator reads
	// the rule in the gate's decisions.
	code, out, errOut = enroll()
	want := strconv.Itoa(events.RuleErrorCode(events.RuleCustodyChain))
	if code != 3 || !strings.Contains(errOut, events.RuleCustodyChain) || !strings.Contains(errOut, want) || strings.Contains(errOut, "flagged") {
		t.Fatalf("flagged device: exit %d, want 3 with %s (%s) and nothing of the record\nstdout:\n%s\nstderr:\n%s", code, events.RuleCustodyChain, want, out, errOut)
	}
	if ds := e.decisions(id); len(ds) == 0 || ds[len(ds)-1].Rule != events.RuleFlagged {
		t.Fatalf("the operator's last decision about the flagged device: %+v, want refused by %s", ds, events.RuleFlagged)
	}

	cmd := exec.CommandContext(e.ctx, e.bin, "enroll", "--tpm", "swtpm://"+d.addr, "--state", t.TempDir(),
		"--gate", "http://127.0.0.1:1/gate", "--retries", "0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	_ = cmd.Run()
	if c := cmd.ProcessState.ExitCode(); c != 4 {
		t.Fatalf("unreachable gate: exit %d, want 4: %s", c, stderr.String())
	}
}

// mustOpen opens the swtpm at addr, waiting for the previous client to be
// gone (swtpm serves one connection at a time).
func mustOpen(t *testing.T, addr string) *tpm.TPM {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tp, err := tpm.Open("swtpm://" + addr)
		if err == nil {
			return tp
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpServe(t *testing.T, d *device.Device) *httptest.Server {
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return srv
}
