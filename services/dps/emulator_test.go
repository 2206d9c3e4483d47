package dps

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
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/custodyledger/custody/services/pki"
)

const (
	testScope   = "0ne00C0FFEE"
	testKeyName = "provisioningserviceowner"
)

var testHubs = []string{"blue-hub-1.azure-devices.net", "blue-hub-2.azure-devices.net", "blue-hub-3.azure-devices.net"}

// must returns v, panicking on err: for test set-up that cannot fail.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

type testClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

type testEnv struct {
	emu    *Emulator
	srv    *httptest.Server
	roots  *x509.CertPool // verifies the server
	svc    *ServiceClient
	clock  *testClock
	devCA  *pki.CA // issues device certificates
	logBuf *strings.Builder
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	env := &testEnv{clock: &testClock{}, logBuf: &strings.Builder{}}
	var logMu sync.Mutex
	emu, err := NewEmulator(EmulatorConfig{
		IDScope:    testScope,
		Hubs:       testHubs,
		SASKeyName: testKeyName,
		SASKey:     testKey,
		Now:        env.clock.Now,
		Logger:     slog.New(slog.NewTextHandler(lockedWriter{&logMu, env.logBuf}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	env.emu = emu
	tlsCA := must(pki.NewRootCA("Test TLS CA", time.Hour))
	serverCert := must(tlsCA.IssueTLSServer(time.Hour, "localhost", "127.0.0.1"))
	env.roots = x509.NewCertPool()
	env.roots.AddCert(tlsCA.Cert)
	env.srv = httptest.NewUnstartedServer(emu.Handler())
	env.srv.TLS = emu.TLSConfig(*serverCert)
	env.srv.StartTLS()
	t.Cleanup(env.srv.Close)
	env.svc = NewServiceClient(env.srv.URL, testKeyName, testKey, env.httpClient())
	env.devCA = must(pki.NewRootCA("Blue Operator LDevID CA", time.Hour))
	return env
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (env *testEnv) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.roots}}}
}

// device issues a device certificate with subject CN=cn under ca and returns
// it as a TLS client certificate whose chain also carries inter.
func device(ca *pki.CA, cn string, inter ...*x509.Certificate) *tls.Certificate {
	key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	leaf := must(ca.Issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		NotAfter:    time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, key.Public()))
	chain := [][]byte{leaf.Raw}
	for _, c := range inter {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
}

func (env *testEnv) deviceClient(cert *tls.Certificate, scope string) *DeviceClient {
	cfg := &tls.Config{RootCAs: env.roots}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	dc := NewDeviceClient(env.srv.URL, scope, cfg)
	dc.PollInterval = 5 * time.Millisecond
	return dc
}

func (env *testEnv) register(t *testing.T, cert *tls.Certificate, regID string) (*RegistrationState, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return env.deviceClient(cert, testScope).Register(ctx, regID)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantError(t *testing.T, err error, status, code int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *dps.Error %d/%d", err, err, status, code)
	}
	if e.StatusCode != status || e.ErrorCode != code {
		t.Fatalf("err = %v, want HTTP %d errorCode %d", e, status, code)
	}
	if e.TrackingID == "" || e.Message == "" {
		t.Fatalf("error body lacks trackingId or message: %+v", e)
	}
	if _, perr := time.Parse(time.RFC3339Nano, e.TimestampUTC); perr != nil {
		t.Fatalf("timestampUtc %q: %v", e.TimestampUTC, perr)
	}
	t.Logf("refused as expected: %v", e)
	return e
}

func TestIndividualEnrollmentAssigned(t *testing.T) {
	env := newEnv(t)
	dev := device(env.devCA, "dev-001")
	en := NewX509Enrollment("dev-001", dev.Leaf, nil)
	en.DeviceID = "device-one"
	en.IoTHubs = []string{testHubs[1]}
	written, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en)
	if err != nil {
		t.Fatal(err)
	}
	info := written.Attestation.X509.ClientCertificates.Primary.Info
	if written.ETag == "" || written.CreatedDateTimeUTC.IsZero() || info == nil ||
		info.SHA256Thumbprint != CertificateInfo(dev.Leaf).SHA256Thumbprint || info.SubjectName != "CN=dev-001" {
		t.Fatalf("written enrollment: %+v, info %+v", written, info)
	}

	st, err := env.register(t, dev, "dev-001")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusAssigned || st.AssignedHub != testHubs[1] || st.DeviceID != "device-one" ||
		st.Substatus != SubstatusInitialAssignment || st.RegistrationID != "dev-001" || st.ETag == "" ||
		st.CreatedDateTimeUTC.IsZero() || st.LastUpdatedDateTimeUTC.IsZero() {
		t.Fatalf("registration state %+v", st)
	}
	if st.X509 == nil || st.X509.CertificateInfo == nil || st.X509.CertificateInfo.SHA256Thumbprint != info.SHA256Thumbprint || st.X509.EnrollmentGroupID != "" {
		t.Fatalf("x509 result %+v", st.X509)
	}

	// The service sees the registration, without x509, also inside the enrollment.
	rs, err := env.svc.GetRegistrationState(ctx(t), "dev-001")
	if err != nil {
		t.Fatal(err)
	}
	if rs.AssignedHub != testHubs[1] || rs.X509 != nil || rs.ETag != st.ETag {
		t.Fatalf("service registration state %+v", rs)
	}
	got, err := env.svc.GetEnrollment(ctx(t), "dev-001")
	if err != nil {
		t.Fatal(err)
	}
	if got.RegistrationState == nil || got.RegistrationState.AssignedHub != testHubs[1] || got.ETag != written.ETag {
		t.Fatalf("enrollment as read: %+v", got)
	}

	// Device registration status lookup.
	look, err := env.deviceClient(dev, testScope).LookupRegistration(ctx(t), "dev-001")
	if err != nil {
		t.Fatal(err)
	}
	if look.AssignedHub != testHubs[1] || look.Status != StatusAssigned {
		t.Fatalf("lookup %+v", look)
	}

	// The Node.js SDK's api-version works too.
	dc := env.deviceClient(dev, testScope)
	dc.APIVersion = APIVersion2019
	again, err := dc.Register(ctx(t), "dev-001")
	if err != nil {
		t.Fatal(err)
	}
	if again.AssignedHub != testHubs[1] || again.Substatus != SubstatusReprovisionedToInitialAssignment ||
		!again.CreatedDateTimeUTC.Equal(st.CreatedDateTimeUTC) {
		t.Fatalf("second registration %+v", again)
	}
	if !strings.Contains(env.logBuf.String(), "dps: registration") {
		t.Error("no registration log record")
	}
}

// TestWireFormat checks the raw JSON of the device API against DPS's field
// names, independently of this package's types.
func TestWireFormat(t *testing.T) {
	env := newEnv(t)
	dev := device(env.devCA, "dev-wire")
	if _, err := env.svc.CreateOrUpdateEnrollment(ctx(t), NewX509Enrollment("dev-wire", dev.Leaf, nil)); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.roots, Certificates: []tls.Certificate{*dev}}}}
	base := env.srv.URL + "/" + testScope + "/registrations/dev-wire"
	req := must(http.NewRequest(http.MethodPut, base+"/register?api-version=2019-03-31", strings.NewReader(`{"registrationId":"dev-wire"}`)))
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	resp := must(hc.Do(req))
	var put map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&put); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || put["status"] != "assigning" || put["operationId"] == "" {
		t.Fatalf("register: %d %v", resp.StatusCode, put)
	}
	resp = must(hc.Get(fmt.Sprintf("%s/operations/%s?api-version=2019-03-31", base, put["operationId"])))
	var op map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&op); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || op["status"] != "assigned" || op["operationId"] != put["operationId"] {
		t.Fatalf("operation: %d %v", resp.StatusCode, op)
	}
	rs, _ := op["registrationState"].(map[string]any)
	for _, k := range []string{"registrationId", "createdDateTimeUtc", "assignedHub", "deviceId", "status", "substatus", "lastUpdatedDateTimeUtc", "etag", "x509"} {
		if _, ok := rs[k]; !ok {
			t.Errorf("registrationState lacks %q: %v", k, rs)
		}
	}
	x, _ := rs["x509"].(map[string]any)
	ci, _ := x["certificateInfo"].(map[string]any)
	for _, k := range []string{"subjectName", "sha1Thumbprint", "sha256Thumbprint", "issuerName", "notBeforeUtc", "notAfterUtc", "serialNumber", "version"} {
		if _, ok := ci[k]; !ok {
			t.Errorf("x509.certificateInfo lacks %q: %v", k, ci)
		}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
}

func TestEnrollmentGroupWithIntermediate(t *testing.T) {
	env := newEnv(t)
	issuing := must(env.devCA.NewSubCA("Blue Operator LDevID Issuing CA 1", time.Hour))
	group := NewX509EnrollmentGroup("blue-devices", env.devCA.Cert)
	group.IoTHubs = testHubs[:2]
	g, err := env.svc.CreateOrUpdateEnrollmentGroup(ctx(t), group)
	if err != nil {
		t.Fatal(err)
	}
	if g.ETag == "" || g.Attestation.X509.SigningCertificates.Primary.Info.SubjectName != "CN=Blue Operator LDevID CA" {
		t.Fatalf("group as written: %+v", g)
	}
	dev := device(issuing, "dev-group-1", issuing.Cert)
	st, err := env.register(t, dev, "dev-group-1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusAssigned || (st.AssignedHub != testHubs[0] && st.AssignedHub != testHubs[1]) || st.DeviceID != "dev-group-1" {
		t.Fatalf("registration %+v", st)
	}
	if st.X509 == nil || st.X509.EnrollmentGroupID != "blue-devices" || st.X509.SigningCertificateInfo == nil ||
		st.X509.SigningCertificateInfo.SubjectName != "CN=Blue Operator LDevID CA" {
		t.Fatalf("x509 result %+v", st.X509)
	}

	// Without the intermediate the chain cannot be built.
	bare := device(issuing, "dev-group-2")
	_, err = env.register(t, bare, "dev-group-2")
	wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)

	// A device of another CA is not admitted by the group.
	otherCA := must(pki.NewRootCA("Blue Operator LDevID CA", time.Hour)) // same name, other key
	_, err = env.register(t, device(otherCA, "dev-group-3"), "dev-group-3")
	wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)

	// Disabling the group disables its devices.
	g.ProvisioningStatus = ProvisioningDisabled
	if _, err := env.svc.CreateOrUpdateEnrollmentGroup(ctx(t), *g); err != nil {
		t.Fatal(err)
	}
	_, err = env.register(t, dev, "dev-group-1")
	var re *RegistrationError
	if !errors.As(err, &re) || re.Status != StatusDisabled || re.ErrorCode != CodeEnrollmentDisabled || !errors.Is(err, ErrRegistrationDisabled) {
		t.Fatalf("disabled group: %v", err)
	}

	// Deleting the group deletes its devices' registrations.
	if err := env.svc.DeleteEnrollmentGroup(ctx(t), "blue-devices", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := env.svc.GetRegistrationState(ctx(t), "dev-group-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("registration after group deletion: %v", err)
	}
	if _, err := env.svc.GetEnrollmentGroup(ctx(t), "blue-devices"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("group after deletion: %v", err)
	}
}

func TestDeviceRefusals(t *testing.T) {
	env := newEnv(t)
	enrolled := device(env.devCA, "dev-enrolled")
	if _, err := env.svc.CreateOrUpdateEnrollment(ctx(t), NewX509Enrollment("dev-enrolled", enrolled.Leaf, nil)); err != nil {
		t.Fatal(err)
	}
	disabled := device(env.devCA, "dev-disabled")
	en := NewX509Enrollment("dev-disabled", disabled.Leaf, nil)
	en.ProvisioningStatus = ProvisioningDisabled
	if _, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en); err != nil {
		t.Fatal(err)
	}

	t.Run("CN differs from registration ID", func(t *testing.T) {
		_, err := env.register(t, enrolled, "dev-disabled")
		e := wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
		if !strings.Contains(e.Message, "CN") || !errors.Is(err, ErrUnauthorized) {
			t.Errorf("message does not name the rule: %q", e.Message)
		}
	})
	t.Run("no enrollment", func(t *testing.T) {
		_, err := env.register(t, device(env.devCA, "dev-stranger"), "dev-stranger")
		e := wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
		if !strings.Contains(e.Message, "no enrollment") {
			t.Errorf("message does not name the rule: %q", e.Message)
		}
	})
	t.Run("other certificate for an individual enrollment", func(t *testing.T) {
		_, err := env.register(t, device(env.devCA, "dev-enrolled"), "dev-enrolled")
		wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
	})
	t.Run("disabled enrollment", func(t *testing.T) {
		_, err := env.register(t, disabled, "dev-disabled")
		var re *RegistrationError
		if !errors.As(err, &re) || re.Status != StatusDisabled || re.ErrorCode != CodeEnrollmentDisabled ||
			!strings.Contains(re.ErrorMessage, "disabled") || re.OperationID == "" {
			t.Fatalf("err = %v", err)
		}
		if _, err := env.svc.GetRegistrationState(ctx(t), "dev-disabled"); !errors.Is(err, ErrNotFound) {
			t.Errorf("a disabled device got a registration record: %v", err)
		}
	})
	t.Run("unknown ID scope", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := env.deviceClient(enrolled, "0ne00BADBAD").Register(ctx, "dev-enrolled")
		wantError(t, err, http.StatusNotFound, CodeNotFound)
	})
	t.Run("no client certificate", func(t *testing.T) {
		_, err := env.register(t, nil, "dev-enrolled")
		wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
	})
	t.Run("invalid registration ID", func(t *testing.T) {
		_, err := env.register(t, device(env.devCA, "Dev_Upper"), "Dev_Upper")
		wantError(t, err, http.StatusBadRequest, CodeInvalidRegistrationID)
	})
	t.Run("unsupported api-version", func(t *testing.T) {
		dc := env.deviceClient(enrolled, testScope)
		dc.APIVersion = "2017-11-15"
		_, err := dc.Register(ctx(t), "dev-enrolled")
		wantError(t, err, http.StatusBadRequest, CodeUnsupportedAPIVersion)
	})
	t.Run("expired certificate", func(t *testing.T) {
		env.clock.Advance(2 * time.Hour)
		defer env.clock.Advance(-2 * time.Hour)
		_, err := env.register(t, enrolled, "dev-enrolled")
		wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
	})
	t.Run("static allocation to an unlinked hub", func(t *testing.T) {
		dev := device(env.devCA, "dev-static")
		en := NewX509Enrollment("dev-static", dev.Leaf, nil)
		en.AllocationPolicy = AllocationStatic
		en.IoTHubHostName = "elsewhere.azure-devices.net"
		_, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en)
		wantError(t, err, http.StatusBadRequest, CodeInvalidRequest)
	})
	t.Run("operation of another certificate", func(t *testing.T) {
		// Start an operation with one certificate, poll it with another
		// certificate with the same CN.
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.roots, Certificates: []tls.Certificate{*enrolled}}}}
		resp := must(hc.Do(must(http.NewRequest(http.MethodPut, env.srv.URL+"/"+testScope+"/registrations/dev-enrolled/register?api-version="+APIVersion, strings.NewReader(`{"registrationId":"dev-enrolled"}`)))))
		var op RegistrationOperationStatus
		_ = json.NewDecoder(resp.Body).Decode(&op)
		resp.Body.Close()
		twin := device(env.devCA, "dev-enrolled")
		hc2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: env.roots, Certificates: []tls.Certificate{*twin}}}}
		resp = must(hc2.Get(env.srv.URL + "/" + testScope + "/registrations/dev-enrolled/operations/" + op.OperationID + "?api-version=" + APIVersion))
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestServiceAPIAuth(t *testing.T) {
	env := newEnv(t)
	host := strings.TrimPrefix(env.srv.URL, "https://")
	get := func(auth string) (*http.Response, *Error) {
		req := must(http.NewRequest(http.MethodGet, env.srv.URL+"/enrollments/dev-x?api-version="+APIVersion, nil))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp := must(env.httpClient().Do(req))
		defer resp.Body.Close()
		var e Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp, &e
	}
	for name, auth := range map[string]string{
		"missing":        "",
		"not SAS":        "Bearer abc",
		"expired":        SASToken(host, testKeyName, testKey, time.Now().Add(-time.Minute)),
		"bad signature":  SASToken(host, testKeyName, []byte("0123456789abcdef0123456789abcdef"), time.Now().Add(time.Hour)),
		"wrong key name": SASToken(host, "registrationstatusreader", testKey, time.Now().Add(time.Hour)),
		"other resource": SASToken("grey-dps.azure-devices-provisioning.net", testKeyName, testKey, time.Now().Add(time.Hour)),
	} {
		resp, e := get(auth)
		if resp.StatusCode != http.StatusUnauthorized || e.ErrorCode != CodeUnauthorized || e.TrackingID == "" || e.Message == "" {
			t.Errorf("%s: %d %+v", name, resp.StatusCode, e)
		} else {
			t.Logf("%s: %s", name, e.Message)
		}
	}
	// A good token reaches the API (the enrollment does not exist).
	if resp, e := get(SASToken(host, testKeyName, testKey, time.Now().Add(time.Hour))); resp.StatusCode != http.StatusNotFound || e.ErrorCode != CodeEnrollmentNotFound {
		t.Errorf("good token: %d %+v", resp.StatusCode, e)
	}
	// Through the client: a wrong key is refused.
	bad := NewServiceClient(env.srv.URL, testKeyName, []byte("0123456789abcdef0123456789abcdef"), env.httpClient())
	_, err := bad.GetEnrollment(ctx(t), "dev-x")
	wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
	// The emulator's clock decides expiry.
	env.clock.Advance(2 * time.Hour)
	_, err = env.svc.GetEnrollment(ctx(t), "dev-x")
	wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
}

func TestReprovisionKeepsHub(t *testing.T) {
	env := newEnv(t)
	dev := device(env.devCA, "dev-reprov")
	en, err := env.svc.CreateOrUpdateEnrollment(ctx(t), NewX509Enrollment("dev-reprov", dev.Leaf, nil))
	if err != nil {
		t.Fatal(err)
	}
	first, err := env.register(t, dev, "dev-reprov")
	if err != nil {
		t.Fatal(err)
	}
	hub := first.AssignedHub

	// The enrollment's hubs change but still include the device's hub: it stays.
	en.IoTHubs = append([]string(nil), testHubs...)
	if en, err = env.svc.CreateOrUpdateEnrollment(ctx(t), *en); err != nil {
		t.Fatal(err)
	}
	second, err := env.register(t, dev, "dev-reprov")
	if err != nil {
		t.Fatal(err)
	}
	if second.AssignedHub != hub || second.Substatus != SubstatusReprovisionedToInitialAssignment ||
		!second.CreatedDateTimeUTC.Equal(first.CreatedDateTimeUTC) || second.ETag == first.ETag {
		t.Fatalf("reprovision: %+v (first %+v)", second, first)
	}

	// The enrollment drops the device's hub: it moves, migrating its data.
	var others []string
	for _, h := range testHubs {
		if h != hub {
			others = append(others, h)
		}
	}
	en.IoTHubs = others
	if en, err = env.svc.CreateOrUpdateEnrollment(ctx(t), *en); err != nil {
		t.Fatal(err)
	}
	third, err := env.register(t, dev, "dev-reprov")
	if err != nil {
		t.Fatal(err)
	}
	if third.AssignedHub == hub || third.Substatus != SubstatusDeviceDataMigrated {
		t.Fatalf("after the hub was removed: %+v", third)
	}

	// With updateHubAssignment false the device never moves.
	en.IoTHubs = []string{hub}
	en.ReprovisionPolicy = &ReprovisionPolicy{UpdateHubAssignment: false, MigrateDeviceData: false}
	if en, err = env.svc.CreateOrUpdateEnrollment(ctx(t), *en); err != nil {
		t.Fatal(err)
	}
	fourth, err := env.register(t, dev, "dev-reprov")
	if err != nil {
		t.Fatal(err)
	}
	if fourth.AssignedHub != third.AssignedHub || fourth.Substatus != SubstatusReprovisionedToInitialAssignment {
		t.Fatalf("updateHubAssignment=false: %+v", fourth)
	}

	// Deleting the registration state makes the next registration initial.
	if err := env.svc.DeleteRegistrationState(ctx(t), "dev-reprov", ""); err != nil {
		t.Fatal(err)
	}
	fifth, err := env.register(t, dev, "dev-reprov")
	if err != nil {
		t.Fatal(err)
	}
	if fifth.AssignedHub != hub || fifth.Substatus != SubstatusInitialAssignment {
		t.Fatalf("after deleting the registration: %+v", fifth)
	}
}

func TestAllocationSpreadsAcrossHubs(t *testing.T) {
	env := newEnv(t)
	if _, err := env.svc.CreateOrUpdateEnrollmentGroup(ctx(t), NewX509EnrollmentGroup("fleet", env.devCA.Cert)); err != nil {
		t.Fatal(err)
	}
	const n = 30
	perHub := map[string]int{}
	devs := map[string]*tls.Certificate{}
	for i := range n {
		id := fmt.Sprintf("fleet-%03d", i)
		devs[id] = device(env.devCA, id)
		st, err := env.register(t, devs[id], id)
		if err != nil {
			t.Fatal(err)
		}
		perHub[st.AssignedHub]++
	}
	t.Logf("devices per hub: %v", perHub)
	for _, h := range testHubs {
		if perHub[h] == 0 || perHub[h] > n*2/3 {
			t.Errorf("hub %s got %d of %d devices", h, perHub[h], n)
		}
	}
	// Hashing is stable: a device that registers again lands on the same hub.
	for _, id := range []string{"fleet-000", "fleet-017"} {
		before := must(env.svc.GetRegistrationState(ctx(t), id))
		after, err := env.register(t, devs[id], id)
		if err != nil {
			t.Fatal(err)
		}
		if after.AssignedHub != before.AssignedHub {
			t.Errorf("%s moved from %s to %s", id, before.AssignedHub, after.AssignedHub)
		}
	}
}

func TestEnrollmentETags(t *testing.T) {
	env := newEnv(t)
	dev := device(env.devCA, "dev-etag")
	v1, err := env.svc.CreateOrUpdateEnrollment(ctx(t), NewX509Enrollment("dev-etag", dev.Leaf, nil))
	if err != nil {
		t.Fatal(err)
	}
	v2in := *v1
	v2in.IoTHubs = []string{testHubs[0]}
	v2, err := env.svc.CreateOrUpdateEnrollment(ctx(t), v2in)
	if err != nil {
		t.Fatal(err)
	}
	if v2.ETag == v1.ETag || !v2.CreatedDateTimeUTC.Equal(v1.CreatedDateTimeUTC) {
		t.Fatalf("update: etag %q→%q created %v→%v", v1.ETag, v2.ETag, v1.CreatedDateTimeUTC, v2.CreatedDateTimeUTC)
	}
	// Without an etag a write only creates (as DPS: 409); * replaces.
	blind := *v2
	blind.ETag = ""
	_, err = env.svc.CreateOrUpdateEnrollment(ctx(t), blind)
	wantError(t, err, http.StatusConflict, CodeConflict)
	if !errors.Is(err, ErrConflict) {
		t.Error("not ErrConflict")
	}
	blind.ETag = "*"
	if v2, err = env.svc.CreateOrUpdateEnrollment(ctx(t), blind); err != nil {
		t.Fatalf("If-Match *: %v", err)
	}
	stale := *v1 // still carries the first etag
	stale.ProvisioningStatus = ProvisioningDisabled
	_, err = env.svc.CreateOrUpdateEnrollment(ctx(t), stale)
	wantError(t, err, http.StatusPreconditionFailed, CodePreconditionFailed)
	if !errors.Is(err, ErrPreconditionFailed) {
		t.Error("not ErrPreconditionFailed")
	}
	err = env.svc.DeleteEnrollment(ctx(t), "dev-etag", v1.ETag)
	wantError(t, err, http.StatusPreconditionFailed, CodePreconditionFailed)
	if err := env.svc.DeleteEnrollment(ctx(t), "dev-etag", v2.ETag); err != nil {
		t.Fatal(err)
	}
	if _, err := env.svc.GetEnrollment(ctx(t), "dev-etag"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	err = env.svc.DeleteEnrollment(ctx(t), "dev-etag", "")
	wantError(t, err, http.StatusNotFound, CodeEnrollmentNotFound)
}

func TestServiceValidation(t *testing.T) {
	env := newEnv(t)
	dev := device(env.devCA, "dev-valid")
	cases := map[string]func() error{
		"TPM attestation": func() error {
			en := IndividualEnrollment{RegistrationID: "dev-valid", Attestation: AttestationMechanism{Type: AttestationTPM, TPM: &TPMAttestation{EndorsementKey: "AAAA"}}}
			_, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en)
			return err
		},
		"unlinked hub": func() error {
			en := NewX509Enrollment("dev-valid", dev.Leaf, nil)
			en.IoTHubs = []string{"grey-hub.azure-devices.net"}
			_, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en)
			return err
		},
		"garbage certificate": func() error {
			en := NewX509Enrollment("dev-valid", dev.Leaf, nil)
			en.Attestation.X509.ClientCertificates.Primary.Certificate = "bm90IGEgY2VydA=="
			_, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en)
			return err
		},
		"group signing certificate is not a CA": func() error {
			_, err := env.svc.CreateOrUpdateEnrollmentGroup(ctx(t), NewX509EnrollmentGroup("bad-group", dev.Leaf))
			return err
		},
		"custom allocation": func() error {
			g := NewX509EnrollmentGroup("custom-group", env.devCA.Cert)
			g.AllocationPolicy = AllocationCustom
			_, err := env.svc.CreateOrUpdateEnrollmentGroup(ctx(t), g)
			return err
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			wantError(t, f(), http.StatusBadRequest, CodeInvalidRequest)
		})
	}

	// PEM certificates are accepted as well as base64 DER.
	en := NewX509Enrollment("dev-valid", dev.Leaf, nil)
	en.Attestation.X509.ClientCertificates.Primary.Certificate = string(pki.EncodeCertsPEM(dev.Leaf))
	if _, err := env.svc.CreateOrUpdateEnrollment(ctx(t), en); err != nil {
		t.Fatal(err)
	}
	if _, err := env.register(t, dev, "dev-valid"); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUse(t *testing.T) {
	env := newEnv(t)
	if _, err := env.svc.CreateOrUpdateEnrollmentGroup(ctx(t), NewX509EnrollmentGroup("fleet", env.devCA.Cert)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 8 {
		wg.Go(func() {
			id := fmt.Sprintf("conc-%d", i)
			dev := device(env.devCA, id)
			for range 3 {
				if _, err := env.register(t, dev, id); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			id := fmt.Sprintf("indiv-%d", i)
			dev := device(env.devCA, id)
			for range 3 { // creates, then updates
				if err := env.svc.Enroll(ctx(t), id, dev.Leaf); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNewEmulatorValidatesConfig(t *testing.T) {
	good := EmulatorConfig{IDScope: testScope, Hubs: testHubs, SASKeyName: testKeyName, SASKey: testKey}
	if _, err := NewEmulator(good); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*EmulatorConfig){
		"no scope":      func(c *EmulatorConfig) { c.IDScope = "" },
		"scope slash":   func(c *EmulatorConfig) { c.IDScope = "a/b" },
		"no hubs":       func(c *EmulatorConfig) { c.Hubs = nil },
		"duplicate hub": func(c *EmulatorConfig) { c.Hubs = []string{"a", "a"} },
		"no key name":   func(c *EmulatorConfig) { c.SASKeyName = "" },
		"short key":     func(c *EmulatorConfig) { c.SASKey = []byte("short") },
	} {
		c := good
		mutate(&c)
		if _, err := NewEmulator(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRegistrationIDs(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "dev-001": true, "a.b_c:d-e": true, strings.Repeat("a", 128): true,
		strings.Repeat("a", 129): false, "": false, "-a": false, "a-": false, "Upper": false, "a b": false, "a/b": false,
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855": true,
	} {
		if ValidRegistrationID(id) != want {
			t.Errorf("ValidRegistrationID(%q) = %v", id, !want)
		}
	}
}

func FuzzParseCertificate(f *testing.F) {
	ca := must(pki.NewRootCA("Fuzz CA", time.Hour))
	f.Add(EncodeCertificate(ca.Cert))
	f.Add(string(pki.EncodeCertsPEM(ca.Cert)))
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCertificate(s)
		if err != nil {
			return
		}
		// Round trip: the canonical encoding parses to the same certificate.
		again, err := ParseCertificate(EncodeCertificate(c))
		if err != nil || !again.Equal(c) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}

func TestEnrollReplacesCertificateKeepsSettings(t *testing.T) {
	env := newEnv(t)
	old := device(env.devCA, "dev-renew")
	if err := env.svc.Enroll(ctx(t), "dev-renew", old.Leaf); err != nil {
		t.Fatal(err)
	}
	en := must(env.svc.GetEnrollment(ctx(t), "dev-renew"))
	en.IoTHubs = []string{testHubs[2]}
	en.DeviceID = "renewed-device"
	if _, err := env.svc.CreateOrUpdateEnrollment(ctx(t), *en); err != nil {
		t.Fatal(err)
	}
	renewed := device(env.devCA, "dev-renew")
	if err := env.svc.Enroll(ctx(t), "dev-renew", renewed.Leaf); err != nil {
		t.Fatal(err)
	}
	_, err := env.register(t, old, "dev-renew")
	wantError(t, err, http.StatusUnauthorized, CodeUnauthorized)
	st, err := env.register(t, renewed, "dev-renew")
	if err != nil {
		t.Fatal(err)
	}
	if st.AssignedHub != testHubs[2] || st.DeviceID != "renewed-device" {
		t.Fatalf("settings lost: %+v", st)
	}
}
