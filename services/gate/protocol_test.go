package gate_test

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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

// TestRegistrationProtocol enrolls one in-process device (the test
// process's one simulated TPM) with every api-version the gate speaks: the
// DPS shape (401 challenge, 202 assigning, operation polling), with a CSR
// on 2025-07-01-preview. It also checks the refusals made before any
// decision.
func TestRegistrationProtocol(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node")
	}
	e := newNode(t, gate.Policy{})
	tp, err := tpm.Open("sim:seed=4242")
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	d, err := device.New(device.Config{TPM: tp, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	id, err := e.factory(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	e.must(srv.URL, ems, "offer", &station.Request{To: operator})
	e.must(srv.URL, operator, "accept", nil)
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}

	var serials []string
	for _, v := range gatewire.SupportedAPIVersions {
		t.Run(v, func(t *testing.T) {
			cfg := device.EnrollConfig{
				GateURL: e.n.URL() + "/gate", IDScope: e.n.IDScope(), APIVersion: v,
				PollInterval: 20 * time.Millisecond, DPSRoots: pool(e.n.PKI),
			}
			res, err := d.Enroll(e.ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.DeviceID != id || res.AssignedHub == "" || len(res.Certificates) != 2 {
				t.Fatalf("result %+v", res)
			}
			var sawCSR bool
			for _, c := range res.Decision.Checks {
				sawCSR = sawCSR || c.Name == events.RuleCSR && c.OK
			}
			if sawCSR != (v == gatewire.APIVersion2025) {
				t.Errorf("CSR checked = %v with api-version %s", sawCSR, v)
			}
			serials = append(serials, res.Decision.LDevIDSerial)
		})
	}
	if len(serials) != len(gatewire.SupportedAPIVersions) {
		t.FailNow()
	}

	base := e.n.URL() + "/gate/" + e.n.IDScope() + "/registrations/" + id
	for _, c := range []struct {
		name, method, url, body string
		status, code            int
		msg                     string
	}{
		{"no api-version", http.MethodPut, base + "/register", `{"registrationId":"` + id + `"}`, 400, gatewire.CodeUnsupportedVersion, "api-version"},
		{"unknown api-version", http.MethodPut, base + "/register?api-version=2017-11-15", `{"registrationId":"` + id + `"}`, 400, gatewire.CodeUnsupportedVersion, "2019-03-31"},
		{"csr before 2025", http.MethodPut, base + "/register?api-version=2021-10-01", `{"registrationId":"` + id + `","tpm":{"endorsementKey":"AAEC"},"csr":"AAEC"}`, 400, gatewire.CodeBadRequest, "csr needs api-version"},
		{"no tpm", http.MethodPut, base + "/register?api-version=2021-10-01", `{"registrationId":"` + id + `"}`, 400, gatewire.CodeBadRequest, "endorsementKey"},
		{"other scope", http.MethodPut, e.n.URL() + "/gate/0ne0000FFFF/registrations/" + id + "/register?api-version=2021-10-01", `{"registrationId":"` + id + `","tpm":{"endorsementKey":"AAEC"}}`, 400, gatewire.CodeBadRequest, "ID scope"},
		{"unknown operation", http.MethodGet, base + "/operations/4.0.0?api-version=2021-10-01", "", 404, gatewire.CodeNotFound, "no such registration operation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body struct {
				ErrorCode  int    `json:"errorCode"`
				Message    string `json:"message"`
				TrackingID string `json:"trackingId"`
			}
			status := doJSON(t, e.n.HTTPClient(""), c.method, c.url, "", rawJSON(c.body), &body)
			if status != c.status || body.ErrorCode != c.code || !strings.Contains(body.Message, c.msg) || body.TrackingID == "" {
				t.Fatalf("%d %+v, want %d %d %q", status, body, c.status, c.code, c.msg)
			}
		})
	}
	// The gate's decisions name every enrollment.
	var n int
	for _, dec := range e.n.Gate.Decisions() {
		if dec.RegistrationID == id && dec.Allowed && dec.Logged {
			n++
		}
	}
	if n != len(gatewire.SupportedAPIVersions) {
		t.Errorf("%d logged decisions, want %d", n, len(gatewire.SupportedAPIVersions))
	}
}

func rawJSON(s string) any {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

func pool(p *pki.Demo) *x509.CertPool {
	roots := x509.NewCertPool()
	roots.AddCert(p.TLSCA)
	return roots
}

// TestRegisterBodyRefusals: a body that is not exactly one registration is
// refused with a sentence about the JSON, never the decoder's Go types, and
// trailing data after the registration is not ignored.
func TestRegisterBodyRefusals(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{``, "it is empty"},
		{`{"registrationId":`, "ends in the middle"},
		{`{"registrationId" 1}`, "not JSON"},
		{`{"registrationId":7}`, "field registrationId cannot hold a JSON number"},
		{`[1,2]`, "not an object"},
		{`{"registrationId":"x","tpm":{"endorsementKey":"!!"}}`, "not base64"},
		{`{"registrationId":"x"} {"registrationId":"y"}`, "more than one JSON value"},
	} {
		var req gatewire.RegisterRequest
		msg := gate.DecodeRegistration(strings.NewReader(tc.body), &req)
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, "Go ") || strings.Contains(msg, "gatewire") || strings.Contains(msg, "[]uint8") {
			t.Errorf("body %q: %q, want a sentence containing %q", tc.body, msg, tc.want)
		}
	}
	var req gatewire.RegisterRequest
	if msg := gate.DecodeRegistration(strings.NewReader(`{"registrationId":"x"}`+"\n"), &req); msg != "" || req.RegistrationID != "x" {
		t.Errorf("a good body: %q, %+v", msg, req)
	}
}
