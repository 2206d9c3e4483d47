package dps

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// EmulatorConfig configures an [Emulator].
type EmulatorConfig struct {
	// IDScope is the ID scope devices must use in device API paths, e.g.
	// "0ne00000A0A". Required; letters, digits and hyphens, at most 64.
	IDScope string
	// Hubs are the host names of the linked IoT hubs devices are allocated
	// to, e.g. "blue-hub-1.azure-devices.net". At least one; enrollments may
	// restrict themselves to a subset.
	Hubs []string
	// ServiceHost is the host name the service API's SAS tokens must name as
	// their resource (sr), e.g. "blue-dps.azure-devices-provisioning.net". A
	// port, if any, is ignored when comparing. Empty: the Host of each request.
	ServiceHost string
	// SASKeyName and SASKey are the service API's one shared access policy:
	// its name (e.g. "provisioningserviceowner") and raw key bytes (the
	// base64-decoded key; at least 16 bytes).
	SASKeyName string
	SASKey     []byte
	// Now is the clock used for certificate validity, token expiry and
	// timestamps. Nil: time.Now.
	Now func() time.Time
	// Logger receives one record per registration and per refusal. Nil:
	// discard.
	Logger *slog.Logger
}

// Limits of the emulator.
const (
	maxOperations     = 100_000 // operations remembered for status lookups, oldest dropped first
	maxDeviceBody     = 64 << 10
	maxServiceBody    = 1 << 20
	maxRegistrationID = 128
)

var (
	idScopeRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
	// Registration IDs: lowercase alphanumerics and -._: , no special
	// character first or last, at most 128 characters.
	registrationIDRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._:-]{0,126}[a-z0-9])?$`)
	// Enrollment group IDs: as registration IDs, in either case.
	groupIDRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?$`)
)

// ValidRegistrationID reports whether id is a registration ID the emulator
// accepts: 1 to 128 lowercase letters, digits and the characters - . _ :,
// beginning and ending with a letter or digit.
func ValidRegistrationID(id string) bool { return registrationIDRE.MatchString(id) }

// Emulator is an in-memory Azure IoT Hub Device Provisioning Service: the
// device API (X.509 attestation) and the service API (individual enrollments,
// enrollment groups, registration states). It is safe for concurrent use.
type Emulator struct {
	cfg  EmulatorConfig
	now  func() time.Time
	log  *slog.Logger
	hubs []string // sorted

	mu            sync.Mutex
	enrollments   map[string]*enrollmentRecord // by registration ID
	groups        map[string]*groupRecord      // by enrollment group ID
	registrations map[string]*registrationRecord
	ops           map[string]*operation
	opOrder       []string // operation IDs, oldest first
}

type enrollmentRecord struct {
	e       IndividualEnrollment // as stored: certificates as given, info filled
	client  []*x509.Certificate  // clientCertificates primary, secondary
	signing []*x509.Certificate  // signingCertificates primary, secondary
}

type groupRecord struct {
	g       EnrollmentGroup
	signing []*x509.Certificate
}

type registrationRecord struct {
	state   RegistrationState
	groupID string // enrollment group that admitted the device; "" for an individual enrollment
}

type operation struct {
	id, registrationID string
	leaf               []byte // DER of the client certificate that started it
	status             RegistrationOperationStatus
}

// NewEmulator validates cfg and returns an empty emulator.
func NewEmulator(cfg EmulatorConfig) (*Emulator, error) {
	if !idScopeRE.MatchString(cfg.IDScope) {
		return nil, fmt.Errorf("dps: IDScope %q must be 1 to 64 letters, digits or hyphens", cfg.IDScope)
	}
	if len(cfg.Hubs) == 0 {
		return nil, errors.New("dps: at least one linked IoT hub is required")
	}
	hubs := slices.Clone(cfg.Hubs)
	slices.Sort(hubs)
	for i, h := range hubs {
		if h == "" || strings.ContainsAny(h, "/ \t") {
			return nil, fmt.Errorf("dps: hub %q is not a host name", h)
		}
		if i > 0 && hubs[i-1] == h {
			return nil, fmt.Errorf("dps: hub %q listed twice", h)
		}
	}
	if cfg.SASKeyName == "" {
		return nil, errors.New("dps: SASKeyName is required")
	}
	if len(cfg.SASKey) < 16 {
		return nil, errors.New("dps: SASKey must be at least 16 bytes")
	}
	cfg.SASKey = slices.Clone(cfg.SASKey)
	e := &Emulator{
		cfg:           cfg,
		now:           cfg.Now,
		log:           cfg.Logger,
		hubs:          hubs,
		enrollments:   map[string]*enrollmentRecord{},
		groups:        map[string]*groupRecord{},
		registrations: map[string]*registrationRecord{},
		ops:           map[string]*operation{},
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

// TLSConfig returns a server TLS configuration for the device API: it
// presents serverCert and requests, without verifying, a client certificate
// (tls.RequestClientCert; crypto/tls still checks the client's proof of
// possession of the key). The emulator verifies client certificates against
// its enrollments itself. The service API works on the same listener.
func (e *Emulator) TLSConfig(serverCert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}
}

// Handler returns the handler serving both APIs:
//
//	PUT    /{idScope}/registrations/{registrationId}/register                  device: register
//	GET    /{idScope}/registrations/{registrationId}/operations/{operationId}  device: operation status
//	POST   /{idScope}/registrations/{registrationId}                           device: registration status
//	PUT|GET|DELETE /enrollments/{registrationId}                               service: individual enrollment
//	PUT|GET|DELETE /enrollmentGroups/{enrollmentGroupId}                       service: enrollment group
//	GET|DELETE     /registrations/{registrationId}                             service: registration state
//
// Every request needs an api-version query parameter from
// SupportedAPIVersions.
func (e *Emulator) Handler() http.Handler { return http.HandlerFunc(e.serveHTTP) }

func (e *Emulator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(seg) == 2 && seg[0] == "enrollments":
		e.serviceAPI(w, r, func() { e.enrollment(w, r, seg[1]) })
	case len(seg) == 2 && seg[0] == "enrollmentGroups":
		e.serviceAPI(w, r, func() { e.enrollmentGroup(w, r, seg[1]) })
	case len(seg) == 2 && seg[0] == "registrations":
		e.serviceAPI(w, r, func() { e.registrationState(w, r, seg[1]) })
	case len(seg) == 4 && seg[1] == "registrations" && seg[3] == "register":
		if e.method(w, r, http.MethodPut) {
			e.register(w, r, seg[0], seg[2])
		}
	case len(seg) == 5 && seg[1] == "registrations" && seg[3] == "operations":
		if e.method(w, r, http.MethodGet) {
			e.operationStatus(w, r, seg[0], seg[2], seg[4])
		}
	case len(seg) == 3 && seg[1] == "registrations":
		if e.method(w, r, http.MethodPost) {
			e.registrationStatus(w, r, seg[0], seg[2])
		}
	default:
		e.fail(w, r, http.StatusNotFound, CodeNotFound, "no DPS operation at this path")
	}
}

func (e *Emulator) method(w http.ResponseWriter, r *http.Request, allowed ...string) bool {
	if slices.Contains(allowed, r.Method) {
		return true
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	e.fail(w, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed,
		fmt.Sprintf("method %s is not allowed here (allowed: %s)", r.Method, strings.Join(allowed, ", ")))
	return false
}

// apiVersion checks the api-version query parameter.
func (e *Emulator) apiVersion(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.URL.Query().Get("api-version")
	if v == "" {
		e.fail(w, r, http.StatusBadRequest, CodeUnsupportedAPIVersion, "the api-version query parameter is required")
		return "", false
	}
	if !slices.Contains(SupportedAPIVersions, v) {
		e.fail(w, r, http.StatusBadRequest, CodeUnsupportedAPIVersion,
			fmt.Sprintf("api-version %q is not supported (supported: %s)", v, strings.Join(SupportedAPIVersions, ", ")))
		return "", false
	}
	return v, true
}

// readJSON decodes the request body (at most limit bytes) into v. An empty
// body leaves v untouched and returns true.
func (e *Emulator) readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			e.fail(w, r, http.StatusUnsupportedMediaType, CodeUnsupportedContentType,
				fmt.Sprintf("content type %q is not application/json", ct))
			return false
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			e.fail(w, r, http.StatusRequestEntityTooLarge, CodeRequestEntityTooLarge,
				fmt.Sprintf("request body exceeds %d bytes", limit))
			return false
		}
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRequest, "reading the request body failed")
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return true
	}
	if err := json.Unmarshal(body, v); err != nil {
		e.fail(w, r, http.StatusBadRequest, CodeInvalidRequest, "the request body is not valid JSON for this operation: "+err.Error())
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail writes a DPS error body and logs the refusal.
func (e *Emulator) fail(w http.ResponseWriter, r *http.Request, status, code int, msg string) {
	now := e.now().UTC()
	body := &Error{
		ErrorCode:    code,
		TrackingID:   newUUID(),
		Message:      msg,
		TimestampUTC: now.Format(time.RFC3339Nano),
	}
	e.log.Warn("dps: request refused", "method", r.Method, "path", r.URL.Path, "status", status,
		"errorCode", code, "message", msg, "trackingId", body.TrackingID)
	writeJSON(w, status, body)
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newETag returns a fresh opaque entity tag.
func newETag() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// newOperationID returns an operation ID shaped like DPS's
// ("4.<16 hex>.<uuid>").
func newOperationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "4." + hex.EncodeToString(b[:]) + "." + newUUID()
}
