package device

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/dps"
	"github.com/custodyledger/custody/services/gate/gatewire"
)

// EnrollConfig is what a device needs for its first boot.
type EnrollConfig struct {
	// GateURL is the operator's enrollment gate (its DPS-shaped device API).
	GateURL string
	// IDScope is the operator's DPS ID scope.
	IDScope string
	// DPSRoots verifies the DPS endpoint's TLS certificate (nil: system roots).
	DPSRoots *x509.CertPool
	// GateRoots verifies the gate's TLS certificate when HTTPClient is nil
	// (nil: DPSRoots, as in the demo, where one TLS CA serves both).
	GateRoots *x509.CertPool
	// PCRs quoted for the gate. Default [0].
	PCRs []int
	// HTTPClient reaches the gate. Default: a client trusting GateRoots.
	HTTPClient *http.Client
	// APIVersion is the DPS api-version spoken to the gate. Default
	// gatewire.APIVersion2025 (2025-07-01-preview), with which the device also
	// sends a CSR signed by its LDevID key; older versions send none.
	APIVersion string
	// PollInterval is how often registration operations (the gate's and
	// DPS's) are polled. Default 2s, as the Azure device SDKs.
	PollInterval time.Duration
}

// EnrollResult is a completed first boot.
type EnrollResult struct {
	DeviceID     string
	Decision     *gatewire.Decision
	Certificates []*x509.Certificate // LDevID, then its CA
	AssignedHub  string
	DPSDeviceID  string
}

// RefusedError is the gate's refusal, naming the rule the device failed.
type RefusedError struct {
	Rule     string
	Code     int // DPS-shaped errorCode (events.RuleErrorCode)
	Message  string
	Decision *gatewire.Decision
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("enrollment refused: %s: %s", e.Rule, e.Message)
}

// Enroll runs first boot with the gate, in DPS's registration protocol
// (docs/design/enrollment.md): register with the EK (401: a credential
// encrypted to it and a nonce), activate the credential, register again
// with a SAS token keyed by the activated secret, a fresh quote over the
// nonce, a new LDevID key certified by the IAK and (2025-07-01-preview) a
// CSR signed by that key (202: an operation), and poll the operation until
// it is assigned (the LDevID chain) or failed (a *RefusedError naming the
// rule). Then register at DPS over TLS with the LDevID key, which never
// leaves the TPM. Enrolling again with the same TPM is a renewal: a new
// LDevID, the previous one revoked by the gate.
func (d *Device) Enroll(ctx context.Context, cfg EnrollConfig) (*EnrollResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return enroll(ctx, d.cfg.TPM, d.cfg.EKAlg, cfg)
}

func enroll(ctx context.Context, tp *tpm.TPM, ekAlg tpm.KeyAlg, cfg EnrollConfig) (*EnrollResult, error) {
	reg, err := prepareRegistration(ctx, tp, ekAlg, &cfg)
	if err != nil {
		return nil, err
	}
	id, regURL, query, token := reg.id, reg.regURL, reg.query, reg.token
	hc := cfg.HTTPClient

	// Second call: authorised by the activated secret. The gate answers
	// 202 "assigning" with an operation to poll, as DPS does.
	op, err := reg.Submit(ctx, hc)
	if err != nil {
		return nil, err
	}
	out := *op
	for out.Status == gatewire.StatusAssigning {
		if out.OperationID == "" {
			return nil, errors.New("enroll: the gate's registration is assigning but names no operation")
		}
		t := time.NewTimer(cfg.PollInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		opID := out.OperationID
		out = gatewire.Outcome{}
		if _, err := gateCall(ctx, hc, http.MethodGet, regURL+"/operations/"+url.PathEscape(opID)+query, token, nil, &out); err != nil {
			return nil, err
		}
	}
	if out.RegistrationState == nil {
		return nil, fmt.Errorf("enroll: the gate's operation ended %q without a registration state", out.Status)
	}
	res := &EnrollResult{DeviceID: id, Decision: out.RegistrationState.Decision}
	if out.Status != gatewire.StatusAssigned {
		// The gate answers "<rule>: <sentence>"; refusals decided from the
		// ledger's record all answer custody-chain's one sentence.
		rule, msg, _ := strings.Cut(out.RegistrationState.ErrorMessage, ": ")
		if res.Decision != nil {
			rule, msg = res.Decision.Rule, res.Decision.Message
		}
		return res, &RefusedError{Rule: rule, Code: out.RegistrationState.ErrorCode, Message: msg, Decision: res.Decision}
	}
	for _, der := range out.RegistrationState.IssuedCertificateChain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("enroll: issued certificate: %w", err)
		}
		res.Certificates = append(res.Certificates, c)
	}
	if len(res.Certificates) == 0 {
		return nil, errors.New("enroll: the gate assigned no certificate")
	}

	// DPS registration with the TPM-resident LDevID key as TLS client key.
	signer, err := tp.LDevIDSigner()
	if err != nil {
		return nil, err
	}
	tlsCert := tls.Certificate{PrivateKey: signer, Leaf: res.Certificates[0]}
	for _, c := range res.Certificates {
		tlsCert.Certificate = append(tlsCert.Certificate, c.Raw)
	}
	dc := dps.NewDeviceClient(out.RegistrationState.DPSEndpoint, out.RegistrationState.IDScope, &tls.Config{
		RootCAs:      cfg.DPSRoots,
		Certificates: []tls.Certificate{tlsCert},
		MinVersion:   tls.VersionTLS12,
	})
	dc.PollInterval = cfg.PollInterval
	st, err := dc.Register(ctx, id)
	if err != nil {
		return res, fmt.Errorf("enroll: DPS registration: %w", err)
	}
	res.AssignedHub, res.DPSDeviceID = st.AssignedHub, st.DeviceID
	return res, nil
}

// Registration is a device's authorised registration at the gate, ready to
// send: the first call was answered with a credential and a nonce, and the
// TPM work (credential activation, the quote, the LDevID key and its
// certification, and the CSR) is done. Enroll is PrepareRegistration, then
// Submit, then polling the operation and registering at DPS; a load test
// separates the halves to time the gate's decisions alone.
type Registration struct {
	id, regURL, query, token string
	body                     []byte // the JSON RegisterRequest
}

// PrepareRegistration runs the first half of Enroll: the unauthorised
// registration call and the device's TPM work for the second call, which it
// returns unsent. Only cfg's GateURL, IDScope, PCRs, HTTPClient and
// APIVersion are used. It holds the device for its whole duration, as
// Enroll does.
func (d *Device) PrepareRegistration(ctx context.Context, cfg EnrollConfig) (*Registration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return prepareRegistration(ctx, d.cfg.TPM, d.cfg.EKAlg, &cfg)
}

// prepareRegistration fills in cfg's defaults, runs the first call and the
// TPM work, and returns the second call.
func prepareRegistration(ctx context.Context, tp *tpm.TPM, ekAlg tpm.KeyAlg, cfg *EnrollConfig) (*Registration, error) {
	if cfg.GateURL == "" || cfg.IDScope == "" {
		return nil, errors.New("enroll: the gate URL and ID scope are required")
	}
	if len(cfg.PCRs) == 0 {
		cfg.PCRs = []int{0}
	}
	if cfg.HTTPClient == nil {
		roots := cfg.GateRoots
		if roots == nil {
			roots = cfg.DPSRoots
		}
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}, Timeout: 2 * time.Minute}
	}
	hc := cfg.HTTPClient
	ek, err := tp.EK(ekAlg)
	if err != nil {
		return nil, fmt.Errorf("enroll: EK: %w", err)
	}
	id, err := attest.DeviceID(ek.PublicKey)
	if err != nil {
		return nil, err
	}
	iak, err := tp.IAK()
	if err != nil {
		return nil, fmt.Errorf("enroll: IAK: %w", err)
	}
	if cfg.APIVersion == "" {
		cfg.APIVersion = gatewire.APIVersion2025
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 2 * time.Second
	}
	// The gate's credential is bound to the EK and to the IAK the device
	// names (DPS's storageRootKey field).
	req := &gatewire.RegisterRequest{RegistrationID: id, TPM: &gatewire.TPMAttestation{EndorsementKey: ek.Public, StorageRootKey: iak.Public}}
	regURL := strings.TrimRight(cfg.GateURL, "/") + "/" + url.PathEscape(cfg.IDScope) + "/registrations/" + id
	query := "?api-version=" + url.QueryEscape(cfg.APIVersion)

	// First call: no proof, the gate answers 401 with a credential.
	var ch gatewire.Challenge
	status, err := gateCall(ctx, hc, http.MethodPut, regURL+"/register"+query, "", req, &ch)
	if err != nil {
		return nil, err
	}
	if status != http.StatusUnauthorized {
		return nil, fmt.Errorf("enroll: the gate answered %d to an unauthenticated registration, want 401", status)
	}
	var cred attest.Credential
	if err := json.Unmarshal(ch.AuthenticationKey, &cred); err != nil {
		return nil, fmt.Errorf("enroll: authenticationKey: %w", err)
	}
	secret, err := tp.ActivateCredential(iak, ekAlg, &cred)
	if err != nil {
		return nil, fmt.Errorf("enroll: activating the gate's credential: %w", err)
	}
	q, err := tp.Quote(ch.Nonce, cfg.PCRs)
	if err != nil {
		return nil, fmt.Errorf("enroll: quote: %w", err)
	}
	_, certify, err := tp.NewLDevID(ch.Nonce)
	if err != nil {
		return nil, fmt.Errorf("enroll: LDevID key: %w", err)
	}
	req.Payload = &gatewire.Evidence{Quote: events.NewEvidence(q), LDevID: certify}
	if cfg.APIVersion == gatewire.APIVersion2025 {
		signer, err := tp.LDevIDSigner()
		if err != nil {
			return nil, err
		}
		csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, signer)
		if err != nil {
			return nil, fmt.Errorf("enroll: CSR: %w", err)
		}
		req.CSR = base64.StdEncoding.EncodeToString(csr)
	}

	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	token := gatewire.SASToken(cfg.IDScope, id, secret, time.Now().Add(5*time.Minute))
	return &Registration{id: id, regURL: regURL, query: query, token: token, body: body}, nil
}

// Submit sends the authorised registration call. The gate decides during
// the call and answers 202 "assigning" (or 200) with the operation, whose
// outcome GET …/operations/{operationId} returns.
func (r *Registration) Submit(ctx context.Context, hc *http.Client) (*gatewire.Outcome, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	var out gatewire.Outcome
	status, err := gateCallBody(ctx, hc, http.MethodPut, r.regURL+"/register"+r.query, r.token, r.body, &out)
	if err != nil {
		return nil, err
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		return nil, fmt.Errorf("enroll: the gate answered %d", status)
	}
	return &out, nil
}

// gateCall sends one request to the gate; 200, 202 and 401 answers are
// decoded into out.
func gateCall(ctx context.Context, hc *http.Client, method, endpoint, auth string, in, out any) (int, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, err
		}
	}
	return gateCallBody(ctx, hc, method, endpoint, auth, body, out)
}

// gateCallBody is gateCall with the request body already JSON (nil: none).
func gateCallBody(ctx context.Context, hc *http.Client, method, endpoint, auth string, in []byte, out any) (int, error) {
	var body io.Reader
	if in != nil {
		body = bytes.NewReader(in)
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, body)
	if err != nil {
		return 0, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("enroll: gate: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted, http.StatusUnauthorized:
		if err := json.Unmarshal(data, out); err != nil {
			return 0, fmt.Errorf("enroll: gate answer: %w", err)
		}
		return resp.StatusCode, nil
	}
	return resp.StatusCode, fmt.Errorf("enroll: gate answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
}
