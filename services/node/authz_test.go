package node_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// wildcard is a {name} path segment of a route pattern.
var wildcard = regexp.MustCompile(`\{[^}]+\}`)

// call sends a route's method to its path (wildcards filled with
// harmless values) with client hc and returns the status and body.
func call(t *testing.T, hc *http.Client, base, pattern string) (int, string) {
	t.Helper()
	method, path, _ := strings.Cut(pattern, " ")
	path = wildcard.ReplaceAllStringFunc(path, func(w string) string {
		switch w {
		case "{idScope}":
			return "0ne00C057D1"
		case "{index}":
			return "0"
		case "{name}":
			return "blue-operator"
		}
		return strings.Repeat("ab", 32)
	})
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut {
		body = strings.NewReader(`{}`)
	}
	req, err := http.NewRequest(method, base+path, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", pattern, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRoutesAdmitted calls every route of custodyd's HTTP API (the
// router's own tables, so a new route cannot be missed: one missing from
// them is refused to everyone) anonymously, as every partner, and with
// credentials that prove nothing, and checks each answer against the
// route's row of the authorisation matrix.
func TestRoutesAdmitted(t *testing.T) {
	n := start(t)
	partners := append(n.PKI.PartnerNames(), events.ConsortiumPartner)
	clients := map[string]*http.Client{"": n.HTTPClient("")}
	for _, p := range n.PKI.PartnerNames() {
		clients[p] = n.HTTPClient(p)
	}
	type mount struct {
		prefix string
		routes map[string]events.Action
		owners []string
		base   string // default the node's URL
	}
	// The ledger's API as a sequencer serves it (custodyd --role
	// sequencer): the same routes behind the same guard.
	seq := httptest.NewUnstartedServer(node.LedgerAPI(n.Ledger, slog.New(slog.DiscardHandler)))
	seq.TLS = node.ServerTLS(n.PKI)
	seq.StartTLS()
	defer seq.Close()
	mounts := []mount{
		{"/ledger", node.LedgerRoutes, nil, ""},
		{"", node.RekorRoutes, nil, ""},
		{"/gate", node.GateRoutes, []string{"blue-gate", "blue-operator"}, ""},
		{"/ledger", node.LedgerRoutes, nil, seq.URL},
		{"", node.RekorRoutes, nil, seq.URL},
	}
	for _, p := range n.PKI.PartnerNames() {
		if n.PKI.Partners[p].Role != events.RoleGate {
			mounts = append(mounts, mount{"/stations/" + p, node.StationRoutes(), []string{p}, ""})
		}
	}
	checked := 0
	for _, m := range mounts {
		for pattern, action := range m.routes {
			perm, ok := events.PermissionFor(action)
			if !ok {
				t.Errorf("%s%s: action %s has no row in events.Permissions", m.prefix, pattern, action)
				continue
			}
			for _, who := range append([]string{""}, n.PKI.PartnerNames()...) {
				base := n.URL()
				if m.base != "" {
					base = m.base
				}
				status, body := call(t, clients[who], base+m.prefix, pattern)
				denied := status == http.StatusUnauthorized || status == http.StatusForbidden
				checked++
				switch {
				case perm.Who == events.WhoAnyone || perm.Who == events.WhoDevice:
					if denied {
						t.Errorf("%s%s as %q: %d %s; the route is public", m.prefix, pattern, who, status, body)
					}
				case who == "":
					if status != http.StatusUnauthorized {
						t.Errorf("%s%s anonymously: %d %s; want 401", m.prefix, pattern, status, body)
					}
				case len(m.owners) > 0 && !slices.Contains(m.owners, who):
					if status != http.StatusForbidden {
						t.Errorf("%s%s as %s (not %v): %d %s; want 403", m.prefix, pattern, who, m.owners, status, body)
					}
				case len(m.owners) > 0:
					if denied {
						t.Errorf("%s%s as its owner %s: %d %s", m.prefix, pattern, who, status, body)
					}
				}
			}
		}
	}
	_ = partners
	t.Logf("%d route × identity calls checked", checked)

	// Credentials that prove nothing are refused, never served as
	// anonymous: a self-made certificate naming a partner, and a real
	// consortium certificate of a partner the registry does not hold.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fakeCA, err := pki.NewRootCA("Custody Consortium CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := fakeCA.NewPartner("acme-tpm", events.RoleTPMVendor, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	unregistered, err := (&pki.CA{Cert: n.PKI.ConsortiumCA.Cert, Key: n.PKI.ConsortiumCA.Key}).NewPartner("mallory-odm", events.RoleODM, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_ = key
	for name, p := range map[string]*pki.Partner{"forged acme-tpm": forged, "unregistered mallory-odm": unregistered} {
		cfg, _ := n.PKI.ClientTLS("")
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		for _, path := range []string{"/stations/acme-tpm/v1/pending", "/ledger/v1/log/checkpoint"} {
			status, body := call(t, hc, n.URL(), "GET "+path)
			if status != http.StatusUnauthorized {
				t.Errorf("%s: GET %s: %d %s; want 401", name, path, status, body)
			}
		}
	}
}

// TestAgentOutsideDeviceNetworks: a station refuses an agent address
// outside its device networks without contacting it, whoever calls.
func TestAgentOutsideDeviceNetworks(t *testing.T) {
	n, stop, err := node.Start(context.Background(), node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0",
		DeviceNetworks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop() }()
	var contacted atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			contacted.Add(1)
			c.Close()
		}
	}()
	c := station.NewClient(n.URL()+"/stations/acme-tpm", n.HTTPClient("acme-tpm"))
	for _, agent := range []string{"http://" + ln.Addr().String(), "http://localhost:" + strings.Split(ln.Addr().String(), ":")[1]} {
		resp, err := c.Call(context.Background(), "manufacture", &station.Request{Agent: agent})
		if err == nil || resp == nil || resp.Code != station.CodeAgentNetwork {
			t.Errorf("agent %s outside the device networks: %+v %v; want code %s", agent, resp, err, station.CodeAgentNetwork)
		}
	}
	// A batch with one address outside the networks contacts none of them.
	batch := []string{"http://192.0.2.7:1", "http://" + ln.Addr().String()}
	for op, req := range map[string]*station.Request{
		"stages":   {Agents: batch, Stage: events.StageTestPassed},
		"firmware": {Agents: batch, Image: []byte("image")},
	} {
		resp, err := c.Call(context.Background(), op, req)
		if err == nil || resp == nil || resp.Code != station.CodeAgentNetwork {
			t.Errorf("%s with an agent outside the device networks: %+v %v; want code %s", op, resp, err, station.CodeAgentNetwork)
		}
	}
	if got := contacted.Load(); got != 0 {
		t.Fatalf("the station contacted the agent address %d times", got)
	}
}

// simDevice is a device on the in-process simulated TPM of seed, closed
// at the test's end.
func simDevice(t *testing.T, seed int) *device.Device {
	t.Helper()
	tp, err := tpm.Open(fmt.Sprintf("sim:seed=%d", seed))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	d, err := device.New(device.Config{TPM: tp, StateDir: filepath.Join(t.TempDir(), "dev")})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestEventReadsArePrivate: an event's receipt is the publisher's; anyone
// else, and the anonymous reader, learn nothing of its device, partner or
// kind, not even that it exists.
func TestEventReadsArePrivate(t *testing.T) {
	n := start(t)
	d := simDevice(t, 4242)
	agent := httptest.NewServer(d.Handler())
	defer agent.Close()
	resp, err := station.NewClient(n.URL()+"/stations/acme-tpm", n.HTTPClient("acme-tpm")).Call(context.Background(), "manufacture", &station.Request{Agent: agent.URL})
	if err != nil {
		t.Fatal(err)
	}
	path := "/ledger/v1/events/" + resp.Receipt.Digest
	unknown := "/ledger/v1/events/" + strings.Repeat("cd", 32)
	get := func(who, p string) (int, string) {
		return call(t, n.HTTPClient(who), n.URL(), "GET "+p)
	}
	if status, body := get("acme-tpm", path); status != http.StatusOK || !strings.Contains(body, resp.Device) {
		t.Fatalf("the publisher reads its receipt: %d %s", status, body)
	}
	if status, body := get("", path); status != http.StatusUnauthorized || strings.Contains(body, resp.Device) || strings.Contains(body, "tpm.manufactured") {
		t.Errorf("anonymous: %d %s; want 401 disclosing nothing", status, body)
	}
	_, unknownBody := get("nova-oem", unknown)
	for _, who := range []string{"nova-oem", "blue-operator", "blue-gate"} {
		status, body := get(who, path)
		if status != http.StatusNotFound || strings.Contains(body, resp.Device) || strings.Contains(body, "acme-tpm") || strings.Contains(body, "manufactured") {
			t.Errorf("%s reads acme-tpm's receipt: %d %s; want the unknown digest's 404", who, status, body)
		}
		if strings.ReplaceAll(body, who, "X") != strings.ReplaceAll(unknownBody, "nova-oem", "X") {
			t.Errorf("%s: the answer for another's event %q differs from an unknown digest's %q", who, body, unknownBody)
		}
	}
}

// TestAgentTLSStationManufactures: a device agent served over TLS to
// partners only (device.RequirePartner, device.ServerTLS, a server
// certificate from the PKI's TLS CA) is reached by custodyd's station with
// its partner's certificate through the device-network dialer, and the
// device is manufactured; a station whose client presents no certificate
// is refused by the agent (401) and publishes nothing.
func TestAgentTLSStationManufactures(t *testing.T) {
	n := start(t)
	d := simDevice(t, 4343)
	cert, err := n.PKI.TLSAuthority().IssueTLSServer(time.Hour, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	agent := httptest.NewUnstartedServer(device.RequirePartner(d.Handler(), n.PKI.ConsortiumPool()))
	agent.TLS = device.ServerTLS(*cert)
	agent.StartTLS()
	defer agent.Close()
	if !strings.HasPrefix(agent.URL, "https://") {
		t.Fatalf("agent URL %s", agent.URL)
	}

	// A station without the partner's certificate (the default client).
	vendor := n.PKI.Partners["acme-tpm"]
	nc, err := n.Connect(vendor.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rv, err := n.ReceiptVerifier(vendor.Name)
	if err != nil {
		t.Fatal(err)
	}
	anonymous, err := n.PKI.HTTPClient("")
	if err != nil {
		t.Fatal(err)
	}
	bare, err := station.New(station.Config{Name: vendor.Name, Role: vendor.Role, Key: vendor.Key, NATS: nc, ReceiptVerifier: rv,
		Ledger: n.Ledger.Store(), ManufacturingCA: n.PKI.VendorMfgCA, HTTPClient: anonymous})
	if err != nil {
		t.Fatal(err)
	}
	before := n.Ledger.Head().Size
	_, err = bare.Manufacture(context.Background(), agent.URL)
	var apiErr *device.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a station without a certificate: %v; want the agent's 401", err)
	}

	// custodyd's station, as its partner.
	resp, err := station.NewClient(n.URL()+"/stations/acme-tpm", n.HTTPClient("acme-tpm")).Call(context.Background(), "manufacture", &station.Request{Agent: agent.URL})
	if err != nil {
		t.Fatalf("manufacture through the TLS agent: %v", err)
	}
	if resp.Receipt == nil || resp.Receipt.Status != events.StatusAccepted {
		t.Fatalf("manufacture through the TLS agent: %+v", resp)
	}
	if got := n.Ledger.Head().Size; got != before+1 {
		t.Errorf("log size %d after one manufacture from %d: the refused station published", got, before)
	}
}
