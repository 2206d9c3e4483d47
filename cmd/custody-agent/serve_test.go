package main

// Tests of `custody-agent serve` as a partner's station meets it: TLS with
// a server certificate from the PKI, answering only partners' stations.

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/clitest"
	"github.com/custodyledger/custody/services/pki"
)

var agentURL = regexp.MustCompile(`device factory API listening.*url=(\S+)`)

// get calls GET /v1/identity with hc and returns the status and the JSON
// answer.
func get(t *testing.T, hc *http.Client, url string) (int, map[string]any) {
	t.Helper()
	resp, err := hc.Get(url + "/v1/identity")
	if err != nil {
		t.Fatalf("GET %s/v1/identity: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ans map[string]any
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatalf("GET %s/v1/identity: %d, not JSON: %q", url, resp.StatusCode, body)
	}
	return resp.StatusCode, ans
}

// forgedClient presents a self-made certificate for partner: the right
// name and role, issued by a consortium CA of its own making.
func forgedClient(t *testing.T, d *pki.Demo, partner, role string) *http.Client {
	t.Helper()
	ca, err := pki.NewRootCA(pki.DemoConsortiumName, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.NewPartner(partner, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := d.ClientTLS("")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: time.Minute}
}

// TestAgentServesPartnersOnly: with --pki, and with --tls-cert, --tls-key
// and --client-ca, the factory API is https://; a caller without a
// certificate and one with a self-made certificate get 401 and a JSON
// error, a gate's certificate 403, and every station role's partner the
// device's identity.
func TestAgentServesPartnersOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("starts custody-agent")
	}
	t.Parallel()
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	d, err := pki.InitDemo(pkiDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"pki", []string{"--pki", pkiDir}},
		{"files", []string{"--tls-cert", filepath.Join(pkiDir, pki.FileTLSServer), "--tls-key", filepath.Join(pkiDir, pki.FileTLSServerKey),
			"--client-ca", filepath.Join(pkiDir, pki.FileConsortiumCA)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"serve", "--tpm", "sim:seed=31", "--state", filepath.Join(t.TempDir(), "device")}, c.flags...)
			a := clitest.Start(t, dir, "custody-agent", args...)
			url := a.WaitLine(t, agentURL, time.Minute)[1]
			if !strings.HasPrefix(url, "https://127.0.0.1:") {
				t.Fatalf("the agent listens at %s; want https://127.0.0.1:PORT", url)
			}
			anonymous, err := d.HTTPClient("")
			if err != nil {
				t.Fatal(err)
			}
			callers := map[string]*http.Client{
				"anonymous":           anonymous,
				"self-made acme-tpm":  forgedClient(t, d, "acme-tpm", events.RoleTPMVendor),
				"self-made blue-oper": forgedClient(t, d, "blue-operator", events.RoleOperator),
			}
			for who, hc := range callers {
				status, ans := get(t, hc, url)
				if status != http.StatusUnauthorized || len(ans) != 1 || ans["error"] == "" {
					t.Errorf("%s: %d %v; want 401 with a JSON error only", who, status, ans)
				}
				if _, leaked := ans["deviceId"]; leaked {
					t.Errorf("%s read the device's identity", who)
				}
			}
			for _, name := range d.PartnerNames() {
				hc, err := d.HTTPClient(name)
				if err != nil {
					t.Fatal(err)
				}
				status, ans := get(t, hc, url)
				switch role := d.Partners[name].Role; {
				case role == events.RoleGate || role == events.RoleConsortium:
					if status != http.StatusForbidden || ans["deviceId"] != nil {
						t.Errorf("%s (%s): %d %v; want 403", name, role, status, ans)
					}
				default:
					if status != http.StatusOK || ans["deviceId"] == nil {
						t.Errorf("%s (%s): %d %v; want the device's identity", name, role, status, ans)
					}
				}
			}
			// Plain HTTP gets no answer from a TLS listener.
			if resp, err := http.Get("http" + strings.TrimPrefix(url, "https") + "/v1/identity"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					t.Errorf("plain HTTP read the device's identity")
				}
			}
			a.Stop(t)
		})
	}
}

// TestAgentInsecureHTTPWarns: --insecure-http serves plain HTTP to anyone
// and says so in a warning before it listens.
func TestAgentInsecureHTTPWarns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts custody-agent")
	}
	t.Parallel()
	dir := t.TempDir()
	a := clitest.Start(t, dir, "custody-agent", "serve", "--insecure-http", "--tpm", "sim:seed=32", "--state", filepath.Join(dir, "device"))
	a.WaitLine(t, regexp.MustCompile(`level=WARN.*--insecure-http.*plain HTTP.*answers anyone.*development only`), time.Minute)
	url := a.WaitLine(t, agentURL, time.Minute)[1]
	if !strings.HasPrefix(url, "http://") {
		t.Fatalf("--insecure-http listens at %s; want http://", url)
	}
	if status, ans := get(t, http.DefaultClient, url); status != http.StatusOK || ans["deviceId"] == nil {
		t.Errorf("--insecure-http: %d %v; want the identity", status, ans)
	}
}
