package dps_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/custodyledger/custody/services/dps"
	"github.com/custodyledger/custody/services/pki"
)

// skipOrFail skips a test whose external requirement is missing, and fails
// it in CI, where .ci/run installs every requirement.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// TestNodeSDKRegistersWithEmulator registers a device with the official
// Azure IoT provisioning device SDK for Node.js (azure-iot-provisioning-device
// 1.9.1, -http transport, azure-iot-security-x509; pinned in
// nodesdk/package-lock.json) against the emulator. The SDK takes a bare host
// name and talks to port 443, so the emulator listens on 127.0.0.1:443 (root
// here and in CI) with a TLS certificate for localhost that the SDK trusts
// through NODE_EXTRA_CA_CERTS. The device authenticates with an X.509
// certificate matched to an individual enrollment, and must end assigned.
func TestNodeSDKRegistersWithEmulator(t *testing.T) {
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		skipOrFail(t, "node is not installed")
	}
	sdkDir, err := filepath.Abs("nodesdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", "azure-iot-provisioning-device")); err != nil {
		skipOrFail(t, "the Node SDK is not installed: run npm ci in services/dps/nodesdk")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:443")
	if err != nil {
		skipOrFail(t, "cannot listen on 127.0.0.1:443 (the SDK's only port; needs root): %v", err)
	}
	defer ln.Close()

	const scope, keyName = "0ne00N0DE5D", "provisioningserviceowner"
	hubs := []string{"node-hub-1.azure-devices.net", "node-hub-2.azure-devices.net"}
	sasKey := make([]byte, 32)
	_, _ = rand.Read(sasKey)
	emu, err := dps.NewEmulator(dps.EmulatorConfig{IDScope: scope, Hubs: hubs, SASKeyName: keyName, SASKey: sasKey})
	if err != nil {
		t.Fatal(err)
	}
	tlsCA, err := pki.NewRootCA("Custody Test TLS CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serverCert, err := tlsCA.IssueTLSServer(time.Hour, "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: emu.Handler(), TLSConfig: emu.TLSConfig(*serverCert), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	defer srv.Close()

	// The device: an ECDSA key and a certificate with CN = registration ID.
	const regID = "node-sdk-device-01"
	devCA, err := pki.NewRootCA("Custody Test Device CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := devCA.Issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: regID}, NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "tls-ca.pem"), filepath.Join(dir, "device.pem"), filepath.Join(dir, "device-key.pem")
	if err := pki.WriteCertPEM(caFile, tlsCA.Cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCertPEM(certFile, leaf); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteKeyPEM(keyFile, key); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	roots := x509.NewCertPool()
	roots.AddCert(tlsCA.Cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	svc := dps.NewServiceClient("https://localhost", keyName, sasKey, hc)
	if _, err := svc.CreateOrUpdateEnrollment(ctx, dps.NewX509Enrollment(regID, leaf, nil)); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(ctx, nodeBin, filepath.Join(sdkDir, "register.js"), "localhost", scope, regID, certFile, keyFile)
	cmd.Dir = sdkDir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+caFile)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("the Node SDK's registration failed: %v\nstdout: %s\nstderr: %s", err, out, ee.Stderr)
	} else if err != nil {
		t.Fatal(err)
	}
	var res struct {
		RegistrationID string `json:"registrationId"`
		AssignedHub    string `json:"assignedHub"`
		DeviceID       string `json:"deviceId"`
		Status         string `json:"status"`
		Substatus      string `json:"substatus"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("the SDK printed %q: %v", out, err)
	}
	if res.Status != dps.StatusAssigned || res.RegistrationID != regID || res.DeviceID != regID || !slices.Contains(hubs, res.AssignedHub) {
		t.Fatalf("the SDK's registration result: %+v", res)
	}
	st, err := svc.GetRegistrationState(ctx, regID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != dps.StatusAssigned || st.AssignedHub != res.AssignedHub {
		t.Fatalf("the emulator's registration state %+v differs from what the SDK got", st)
	}
	t.Logf("Node SDK registered %s: %s to %s (%s)", regID, res.Status, res.AssignedHub, res.Substatus)
}
