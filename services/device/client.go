package device

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/custodyledger/custody/attest"
)

// Client talks to a device's factory API. Everything it returns is the
// device's claim, to be verified with package attest.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client for the device API at baseURL (for example
// "http://192.0.2.10:8080"). hc nil means http.DefaultClient.
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// APIError is an error answer of the device.
type APIError struct {
	StatusCode int
	Message    string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("device: HTTP %d: %s", e.StatusCode, e.Message)
}

// CallError is any failure of a call to a device's API: it could not be
// reached, answered with an error (wrapping *APIError), or answered
// something that is not the API's. Callers that face other parties (a
// station's API) say that the device failed without repeating what the
// device said, which is the device's text, not theirs.
type CallError struct {
	Method, Path string
	Err          error
}

func (e *CallError) Error() string { return fmt.Sprintf("device: %s %s: %v", e.Method, e.Path, e.Err) }
func (e *CallError) Unwrap() error { return e.Err }

// maxResponse bounds a device answer.
const maxResponse = 1 << 20

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (if not nil). wantStatus is the success status.
func (c *Client) do(ctx context.Context, method, path string, in, out any, wantStatus int) error {
	if err := c.call(ctx, method, path, in, out, wantStatus); err != nil {
		return &CallError{Method: method, Path: path, Err: err}
	}
	return nil
}

func (c *Client) call(ctx context.Context, method, path string, in, out any, wantStatus int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if len(data) > maxResponse {
		return fmt.Errorf("answer larger than %d bytes", maxResponse)
	}
	if resp.StatusCode != wantStatus {
		var e errorResponse
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &APIError{StatusCode: resp.StatusCode, Message: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("malformed answer: %w", err)
		}
	}
	return nil
}

// Identity returns the device's identity (GET /v1/identity).
func (c *Client) Identity(ctx context.Context) (*Identity, error) {
	var id Identity
	if err := c.do(ctx, http.MethodGet, "/v1/identity", nil, &id, http.StatusOK); err != nil {
		return nil, err
	}
	return &id, nil
}

// PutEKCertificate stores an EK certificate in the device's TPM NV (PUT
// /v1/ek-certificate). The device refuses a certificate that is not for
// one of its EKs.
func (c *Client) PutEKCertificate(ctx context.Context, der []byte) error {
	return c.do(ctx, http.MethodPut, "/v1/ek-certificate", ekCertificateRequest{Certificate: der}, nil, http.StatusNoContent)
}

// ActivateCredential asks the device to activate a credential made for its
// EK and IAK (POST /v1/activate-credential) and returns the secret.
func (c *Client) ActivateCredential(ctx context.Context, cred *attest.Credential) ([]byte, error) {
	if cred == nil {
		return nil, fmt.Errorf("device: nil credential")
	}
	var out activateResponse
	if err := c.do(ctx, http.MethodPost, "/v1/activate-credential", activateRequest{IDObject: cred.IDObject, EncryptedSecret: cred.EncryptedSecret}, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return out.Secret, nil
}

// Quote asks for a quote over nonce and the given SHA-256 PCRs (POST
// /v1/quote); nil pcrs means the device's firmware PCR.
func (c *Client) Quote(ctx context.Context, nonce []byte, pcrs []int) (*attest.Quote, error) {
	var out quoteResponse
	if err := c.do(ctx, http.MethodPost, "/v1/quote", quoteRequest{Nonce: nonce, PCRs: pcrs}, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &attest.Quote{Attest: out.Attest, Signature: out.Signature, PCRs: out.PCRs}, nil
}

// ProgramFirmware programs a firmware image (POST /v1/firmware) and returns
// the hex SHA-256 the device measured.
func (c *Client) ProgramFirmware(ctx context.Context, image []byte) (string, error) {
	var out firmwareResponse
	if err := c.do(ctx, http.MethodPost, "/v1/firmware", firmwareRequest{Image: image}, &out, http.StatusOK); err != nil {
		return "", err
	}
	return out.Digest, nil
}

// Reboot reboots the device (POST /v1/reboot).
func (c *Client) Reboot(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/reboot", nil, nil, http.StatusNoContent)
}

// NewLDevID has the device create a new LDevID key certified by its IAK
// over nonce (POST /v1/ldevid).
func (c *Client) NewLDevID(ctx context.Context, nonce []byte) (*attest.CertifyEvidence, error) {
	var out ldevidResponse
	if err := c.do(ctx, http.MethodPost, "/v1/ldevid", ldevidRequest{Nonce: nonce}, &out, http.StatusOK); err != nil {
		return nil, err
	}
	return &attest.CertifyEvidence{Public: out.Public, Attest: out.Attest, Signature: out.Signature}, nil
}
