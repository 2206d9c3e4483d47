package dps

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	userAgent           = "custody-dps/1"
	defaultPollInterval = 2 * time.Second // what the Azure device SDKs use
	maxRetryAfter       = 30 * time.Second
	maxResponseBody     = 4 << 20
)

// parseEndpoint accepts "https://host[:port]", "host" or "host:port" (the
// Azure SDKs take a bare host name) and returns the base URL.
func parseEndpoint(endpoint string) (*url.URL, error) {
	if endpoint == "" {
		return nil, errors.New("dps: empty endpoint")
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("dps: endpoint: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("dps: endpoint scheme %q is not https", u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("dps: endpoint %q has no host", endpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u, nil
}

// call is one HTTP exchange with a DPS API.
type call struct {
	hc         *http.Client
	method     string
	url        string
	header     http.Header
	body       any // marshalled as JSON when not nil
	out        any // decoded from a 2xx JSON body when not nil
	retryAfter time.Duration
	status     int
}

func (c *call) do(ctx context.Context) error {
	var rd io.Reader
	if c.body != nil {
		b, err := json.Marshal(c.body)
		if err != nil {
			return fmt.Errorf("dps: encoding request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, c.method, c.url, rd)
	if err != nil {
		return fmt.Errorf("dps: %w", err)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("dps: %s %s: %w", c.method, redact(c.url), err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("dps: reading response to %s %s: %w", c.method, redact(c.url), err)
	}
	c.status = resp.StatusCode
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		c.retryAfter = min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{StatusCode: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || (e.ErrorCode == 0 && e.Message == "") {
			e.Message = strings.TrimSpace(string(data))
			if len(e.Message) > 512 {
				e.Message = e.Message[:512]
			}
		}
		return e
	}
	if c.out != nil && len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, c.out); err != nil {
			return fmt.Errorf("dps: decoding response to %s %s: %w", c.method, redact(c.url), err)
		}
	}
	return nil
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(url)"
	}
	p.RawQuery = ""
	return p.String()
}

// ServiceClient calls the DPS service API (enrollments, enrollment groups,
// registration states), authenticating with SAS tokens signed by a shared
// access policy's key. It works against the emulator and the real service
// (endpoint https://<name>.azure-devices-provisioning.net).
type ServiceClient struct {
	// APIVersion is sent as api-version (default APIVersion).
	APIVersion string
	// TokenTTL is the lifetime of each request's SAS token (default 1 h).
	TokenTTL time.Duration

	base     *url.URL
	err      error
	resource string // sr: the service host
	keyName  string
	key      []byte
	hc       *http.Client
}

// NewServiceClient returns a client for the service API at endpoint (e.g.
// "https://blue-dps.azure-devices-provisioning.net") using the shared access
// policy keyName with key (raw bytes: the base64-decoded key). The SAS tokens
// name the endpoint's host as their resource. hc nil: a client with a 30 s
// timeout. An invalid endpoint is reported by every call.
func NewServiceClient(endpoint, keyName string, key []byte, hc *http.Client) *ServiceClient {
	c := &ServiceClient{APIVersion: APIVersion, TokenTTL: time.Hour, keyName: keyName, key: append([]byte(nil), key...), hc: hc}
	c.base, c.err = parseEndpoint(endpoint)
	if c.err == nil {
		c.resource = c.base.Host
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 30 * time.Second}
	}
	return c
}

func (c *ServiceClient) do(ctx context.Context, method, path, ifMatch string, body, out any) error {
	if c.err != nil {
		return c.err
	}
	u := *c.base
	u.Path += path
	u.RawPath = ""
	u.RawQuery = url.Values{"api-version": {c.APIVersion}}.Encode()
	ttl := c.TokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	h := http.Header{}
	h.Set("Authorization", SASToken(c.resource, c.keyName, c.key, time.Now().Add(ttl)))
	if ifMatch != "" {
		h.Set("If-Match", ifMatch) // verbatim, as the Azure SDKs send it
	}
	cl := &call{hc: c.hc, method: method, url: u.String(), header: h, body: body, out: out}
	return cl.do(ctx)
}

func escapeID(id string) string { return url.PathEscape(id) }

// CreateOrUpdateEnrollment writes an individual enrollment. When
// enrollment.ETag is set it is sent as If-Match, so the write fails with
// ErrPreconditionFailed if the enrollment changed since it was read; "*"
// replaces whatever is there. Without an etag the write only creates: DPS
// refuses it with 409 (ErrConflict) when the enrollment exists.
func (c *ServiceClient) CreateOrUpdateEnrollment(ctx context.Context, enrollment IndividualEnrollment) (*IndividualEnrollment, error) {
	var out IndividualEnrollment
	if err := c.putEnrollment(ctx, enrollment, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// putEnrollment writes an individual enrollment and decodes the service's
// answer into out (nil: the answer is not needed).
func (c *ServiceClient) putEnrollment(ctx context.Context, enrollment IndividualEnrollment, out *IndividualEnrollment) error {
	if enrollment.RegistrationID == "" {
		return errors.New("dps: enrollment has no registrationId")
	}
	var o any
	if out != nil {
		o = out
	}
	return c.do(ctx, http.MethodPut, "/enrollments/"+escapeID(enrollment.RegistrationID), enrollment.ETag, enrollment, o)
}

// Enroll makes cert the primary client certificate of the X.509 individual
// enrollment for registrationID, creating the enrollment (enabled, hashed
// allocation over all linked hubs) if there is none. An existing enrollment
// keeps its other settings (hubs, device ID) and is enabled again, replaced
// under If-Match, so a concurrent change makes Enroll fail with
// ErrPreconditionFailed rather than be lost. Enroll is what the enrollment
// gate needs of DPS.
//
// It tries the create first (a PUT without If-Match, which DPS refuses with
// 409 when the enrollment exists), so a device's first enrollment is one
// call; only a conflict reads the enrollment to update it.
func (c *ServiceClient) Enroll(ctx context.Context, registrationID string, cert *x509.Certificate) error {
	if cert == nil {
		return errors.New("dps: enroll: no certificate")
	}
	fresh := NewX509Enrollment(registrationID, cert, nil)
	err := c.putEnrollment(ctx, fresh, nil)
	if !errors.Is(err, ErrConflict) {
		return err
	}
	cur, err := c.GetEnrollment(ctx, registrationID)
	if err != nil {
		return err
	}
	cur.Attestation = fresh.Attestation
	cur.ProvisioningStatus = ProvisioningEnabled
	cur.RegistrationState = nil
	return c.putEnrollment(ctx, *cur, nil)
}

// SetEnabled sets the provisioningStatus of the individual enrollment for
// registrationID (enabled or disabled), under If-Match, keeping everything
// else. A disabled enrollment's devices get status "disabled" when they
// register. It is what the enrollment gate does when the ledger shows a
// device flagged or decommissioned.
func (c *ServiceClient) SetEnabled(ctx context.Context, registrationID string, enabled bool) error {
	cur, err := c.GetEnrollment(ctx, registrationID)
	if err != nil {
		return err
	}
	want := ProvisioningDisabled
	if enabled {
		want = ProvisioningEnabled
	}
	if cur.ProvisioningStatus == want {
		return nil
	}
	cur.ProvisioningStatus = want
	cur.RegistrationState = nil
	return c.putEnrollment(ctx, *cur, nil)
}

// GetEnrollment reads an individual enrollment.
func (c *ServiceClient) GetEnrollment(ctx context.Context, registrationID string) (*IndividualEnrollment, error) {
	var out IndividualEnrollment
	if err := c.do(ctx, http.MethodGet, "/enrollments/"+escapeID(registrationID), "", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteEnrollment deletes an individual enrollment (and its registration
// state). etag, if not empty, is sent as If-Match.
func (c *ServiceClient) DeleteEnrollment(ctx context.Context, registrationID, etag string) error {
	return c.do(ctx, http.MethodDelete, "/enrollments/"+escapeID(registrationID), etag, nil, nil)
}

// CreateOrUpdateEnrollmentGroup writes an enrollment group, with If-Match
// from group.ETag when set.
func (c *ServiceClient) CreateOrUpdateEnrollmentGroup(ctx context.Context, group EnrollmentGroup) (*EnrollmentGroup, error) {
	if group.EnrollmentGroupID == "" {
		return nil, errors.New("dps: enrollment group has no enrollmentGroupId")
	}
	var out EnrollmentGroup
	if err := c.do(ctx, http.MethodPut, "/enrollmentGroups/"+escapeID(group.EnrollmentGroupID), group.ETag, group, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetEnrollmentGroup reads an enrollment group.
func (c *ServiceClient) GetEnrollmentGroup(ctx context.Context, groupID string) (*EnrollmentGroup, error) {
	var out EnrollmentGroup
	if err := c.do(ctx, http.MethodGet, "/enrollmentGroups/"+escapeID(groupID), "", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteEnrollmentGroup deletes an enrollment group (and its devices'
// registration states). etag, if not empty, is sent as If-Match.
func (c *ServiceClient) DeleteEnrollmentGroup(ctx context.Context, groupID, etag string) error {
	return c.do(ctx, http.MethodDelete, "/enrollmentGroups/"+escapeID(groupID), etag, nil, nil)
}

// GetRegistrationState reads a device's registration state.
func (c *ServiceClient) GetRegistrationState(ctx context.Context, registrationID string) (*RegistrationState, error) {
	var out RegistrationState
	if err := c.do(ctx, http.MethodGet, "/registrations/"+escapeID(registrationID), "", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteRegistrationState deletes a device's registration state, so its next
// registration is an initial assignment. etag, if not empty, is sent as
// If-Match.
func (c *ServiceClient) DeleteRegistrationState(ctx context.Context, registrationID, etag string) error {
	return c.do(ctx, http.MethodDelete, "/registrations/"+escapeID(registrationID), etag, nil, nil)
}

// DeviceClient registers a device with DPS over HTTPS with X.509
// attestation, as the Azure device SDKs do: PUT register, then poll the
// operation until it is assigned, failed or disabled.
type DeviceClient struct {
	// APIVersion is sent as api-version (default APIVersion).
	APIVersion string
	// PollInterval is the wait between operation status polls (default 2 s,
	// like the Azure SDKs); a longer Retry-After from the service (at most
	// 30 s) takes precedence.
	PollInterval time.Duration

	base    *url.URL
	err     error
	idScope string
	hc      *http.Client
}

// NewDeviceClient returns a client for the device API at endpoint (e.g.
// "https://global.azure-devices-provisioning.net", or a bare host) in ID
// scope idScope. tlsCfg must carry the device's client certificate (with any
// intermediates its enrollment group needs) and the roots that verify the
// service; it is cloned.
func NewDeviceClient(endpoint, idScope string, tlsCfg *tls.Config) *DeviceClient {
	c := &DeviceClient{APIVersion: APIVersion, PollInterval: defaultPollInterval, idScope: idScope}
	c.base, c.err = parseEndpoint(endpoint)
	if c.err == nil && idScope == "" {
		c.err = errors.New("dps: empty ID scope")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tlsCfg != nil {
		tr.TLSClientConfig = tlsCfg.Clone()
	}
	c.hc = &http.Client{Transport: tr, Timeout: 60 * time.Second}
	return c
}

func (c *DeviceClient) url(path string) string {
	u := *c.base
	u.Path += "/" + escapeID(c.idScope) + path
	u.RawPath = ""
	u.RawQuery = url.Values{"api-version": {c.APIVersion}}.Encode()
	return u.String()
}

// Register registers the device registrationID (its certificate's CN) and
// waits for the outcome. It returns the registration state when assigned, a
// *RegistrationError when the registration ends failed or disabled, and an
// *Error when the service refuses a request.
func (c *DeviceClient) Register(ctx context.Context, registrationID string) (*RegistrationState, error) {
	if c.err != nil {
		return nil, c.err
	}
	var op RegistrationOperationStatus
	put := &call{hc: c.hc, method: http.MethodPut,
		url:  c.url("/registrations/" + escapeID(registrationID) + "/register"),
		body: DeviceRegistration{RegistrationID: registrationID}, out: &op}
	if err := put.do(ctx); err != nil {
		return nil, err
	}
	wait := put.retryAfter
	for {
		switch op.Status {
		case StatusAssigned:
			if op.RegistrationState == nil {
				return nil, errors.New("dps: assigned operation carries no registrationState")
			}
			return op.RegistrationState, nil
		case StatusFailed, StatusDisabled:
			re := &RegistrationError{OperationID: op.OperationID, Status: op.Status, State: op.RegistrationState}
			if st := op.RegistrationState; st != nil {
				re.ErrorCode, re.ErrorMessage = st.ErrorCode, st.ErrorMessage
			}
			return nil, re
		case StatusAssigning, StatusUnassigned:
		default:
			return nil, fmt.Errorf("dps: unexpected registration status %q", op.Status)
		}
		if op.OperationID == "" {
			return nil, errors.New("dps: registration in progress but no operationId to poll")
		}
		if err := sleep(ctx, max(wait, c.pollInterval())); err != nil {
			return nil, err
		}
		opID := op.OperationID
		op = RegistrationOperationStatus{}
		get := &call{hc: c.hc, method: http.MethodGet,
			url: c.url("/registrations/" + escapeID(registrationID) + "/operations/" + escapeID(opID)), out: &op}
		err := get.do(ctx)
		wait = get.retryAfter
		if err != nil {
			var e *Error
			if errors.As(err, &e) && e.StatusCode == http.StatusTooManyRequests {
				op = RegistrationOperationStatus{OperationID: opID, Status: StatusAssigning}
				continue
			}
			return nil, err
		}
		if op.OperationID == "" {
			op.OperationID = opID
		}
	}
}

// LookupRegistration returns the device's current registration state (device
// registration status lookup).
func (c *DeviceClient) LookupRegistration(ctx context.Context, registrationID string) (*RegistrationState, error) {
	if c.err != nil {
		return nil, c.err
	}
	var st RegistrationState
	post := &call{hc: c.hc, method: http.MethodPost,
		url:  c.url("/registrations/" + escapeID(registrationID)),
		body: DeviceRegistration{RegistrationID: registrationID}, out: &st}
	if err := post.do(ctx); err != nil {
		return nil, err
	}
	return &st, nil
}

func (c *DeviceClient) pollInterval() time.Duration {
	if c.PollInterval <= 0 {
		return defaultPollInterval
	}
	return c.PollInterval
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
