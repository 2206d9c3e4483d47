package device

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
)

// Identity is the device's answer to GET /v1/identity. It is what the
// device claims; the EK certificate chain and credential activation are
// what prove it.
type Identity struct {
	// DeviceID is the lowercase hex SHA-256 of the EK's SPKI DER.
	DeviceID string `json:"deviceId"`
	// EKPublic is the EK's marshalled TPMT_PUBLIC (for MakeCredential).
	EKPublic []byte `json:"ekPublic"`
	// EKPublicKey is the EK public key as PKIX SubjectPublicKeyInfo DER.
	EKPublicKey []byte `json:"ekPublicKey"`
	// EKCertificate is the EK certificate DER from the TPM's NV, without
	// NV padding; absent if the TPM has none.
	EKCertificate []byte `json:"ekCertificate,omitempty"`
	// IAKPublic is the IAK's marshalled TPMT_PUBLIC.
	IAKPublic []byte `json:"iakPublic"`
	// IAKName is the IAK's TPM Name (for MakeCredential).
	IAKName []byte `json:"iakName"`
	// FirmwareDigest is the hex SHA-256 of the programmed firmware, if any.
	FirmwareDigest string `json:"firmwareDigest,omitempty"`
}

// Wire forms of the requests and responses.
type (
	ekCertificateRequest struct {
		Certificate []byte `json:"certificate"`
	}
	activateRequest struct {
		IDObject        []byte `json:"idObject"`
		EncryptedSecret []byte `json:"encryptedSecret"`
	}
	activateResponse struct {
		Secret []byte `json:"secret"`
	}
	quoteRequest struct {
		Nonce []byte `json:"nonce"`
		PCRs  []int  `json:"pcrs"`
	}
	quoteResponse struct {
		Attest    []byte         `json:"attest"`
		Signature []byte         `json:"signature"`
		PCRs      map[int][]byte `json:"pcrs"`
	}
	firmwareRequest struct {
		Image []byte `json:"image"`
	}
	firmwareResponse struct {
		Digest string `json:"digest"`
	}
	ldevidRequest struct {
		Nonce []byte `json:"nonce"`
	}
	ldevidResponse struct {
		Public    []byte `json:"public"`
		Attest    []byte `json:"attest"`
		Signature []byte `json:"signature"`
	}
	errorResponse struct {
		Error string `json:"error"`
	}
)

// Request body limits.
const (
	maxBody         = 64 << 10
	maxFirmwareBody = 64 << 20 // base64 of a 48 MiB image
	maxNonce        = 64
)

// Handler returns the device's HTTP API.
func (d *Device) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{http.MethodGet, "/v1/identity", d.handleIdentity},
		{http.MethodPut, "/v1/ek-certificate", d.handleEKCertificate},
		{http.MethodPost, "/v1/activate-credential", d.handleActivate},
		{http.MethodPost, "/v1/quote", d.handleQuote},
		{http.MethodPost, "/v1/firmware", d.handleFirmware},
		{http.MethodPost, "/v1/reboot", d.handleReboot},
		{http.MethodPost, "/v1/ldevid", d.handleLDevID},
	} {
		mux.HandleFunc(rt.path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != rt.method {
				w.Header().Set("Allow", rt.method)
				writeError(w, http.StatusMethodNotAllowed, rt.path+" takes "+rt.method)
				return
			}
			rt.h(w, r)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

func (d *Device) handleIdentity(w http.ResponseWriter, r *http.Request) {
	id, err := d.identity()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "identity: TPM failure")
		return
	}
	writeJSON(w, http.StatusOK, id)
}

func (d *Device) handleEKCertificate(w http.ResponseWriter, r *http.Request) {
	var req ekCertificateRequest
	if !decode(w, r, maxBody, &req) {
		return
	}
	if len(req.Certificate) == 0 {
		writeError(w, http.StatusBadRequest, "certificate is required")
		return
	}
	der, err := attest.TrimEKCertificate(req.Certificate)
	if err != nil {
		writeError(w, http.StatusBadRequest, "certificate is not DER")
		return
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		writeError(w, http.StatusBadRequest, "certificate does not parse")
		return
	}
	var alg tpm.KeyAlg
	switch cert.PublicKey.(type) {
	case *rsa.PublicKey:
		alg = tpm.RSA2048
	case *ecdsa.PublicKey:
		alg = tpm.ECCP256
	default:
		writeError(w, http.StatusBadRequest, "certificate key is neither RSA nor ECC")
		return
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	ek, err := d.cfg.TPM.EK(alg)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "EK: TPM failure")
		return
	}
	if k, ok := ek.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(cert.PublicKey) {
		writeError(w, http.StatusBadRequest, "certificate is not for this TPM's "+alg.String()+" EK")
		return
	}
	if err := d.cfg.TPM.WriteEKCertificate(alg, der); err != nil {
		writeError(w, http.StatusInternalServerError, "EK certificate: TPM NV write failed")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *Device) handleActivate(w http.ResponseWriter, r *http.Request) {
	var req activateRequest
	if !decode(w, r, maxBody, &req) {
		return
	}
	if len(req.IDObject) == 0 || len(req.EncryptedSecret) == 0 {
		writeError(w, http.StatusBadRequest, "idObject and encryptedSecret are required")
		return
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	iak, err := d.cfg.TPM.IAK()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "IAK: TPM failure")
		return
	}
	secret, err := d.cfg.TPM.ActivateCredential(iak, d.cfg.EKAlg, &attest.Credential{IDObject: req.IDObject, EncryptedSecret: req.EncryptedSecret})
	switch {
	case errors.Is(err, tpm.ErrCredentialRejected):
		writeError(w, http.StatusBadRequest, "credential rejected by the TPM (not made for this EK and IAK, or damaged)")
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, "activate credential: TPM failure")
		return
	}
	writeJSON(w, http.StatusOK, activateResponse{Secret: secret})
}

// checkNonce validates a nonce; it writes the error and returns false if
// it is unacceptable.
func checkNonce(w http.ResponseWriter, nonce []byte) bool {
	switch {
	case len(nonce) == 0:
		writeError(w, http.StatusBadRequest, "nonce is required")
		return false
	case len(nonce) > maxNonce:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("nonce longer than %d bytes", maxNonce))
		return false
	}
	return true
}

func (d *Device) handleQuote(w http.ResponseWriter, r *http.Request) {
	var req quoteRequest
	if !decode(w, r, maxBody, &req) {
		return
	}
	if !checkNonce(w, req.Nonce) {
		return
	}
	if req.PCRs == nil {
		req.PCRs = []int{d.cfg.FirmwarePCR}
	}
	seen := map[int]bool{}
	for _, p := range req.PCRs {
		if p < 0 || p >= attest.NumPCRs || seen[p] {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("pcrs: %d is out of range 0..%d or repeated", p, attest.NumPCRs-1))
			return
		}
		seen[p] = true
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	q, err := d.cfg.TPM.Quote(req.Nonce, req.PCRs)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "quote: TPM failure")
		return
	}
	writeJSON(w, http.StatusOK, quoteResponse{Attest: q.Attest, Signature: q.Signature, PCRs: q.PCRs})
}

func (d *Device) handleFirmware(w http.ResponseWriter, r *http.Request) {
	var req firmwareRequest
	if !decode(w, r, maxFirmwareBody, &req) {
		return
	}
	if len(req.Image) == 0 {
		writeError(w, http.StatusBadRequest, "image is required")
		return
	}
	sum, err := d.programFirmware(req.Image)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "firmware: programming failed")
		return
	}
	writeJSON(w, http.StatusOK, firmwareResponse{Digest: hex.EncodeToString(sum)})
}

func (d *Device) handleReboot(w http.ResponseWriter, r *http.Request) {
	if err := d.Reboot(); err != nil {
		if errors.Is(err, tpm.ErrUnsupported) {
			writeError(w, http.StatusNotImplemented, "reboot: this TPM cannot be reset by software")
			return
		}
		writeError(w, http.StatusInternalServerError, "reboot: failed")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (d *Device) handleLDevID(w http.ResponseWriter, r *http.Request) {
	var req ldevidRequest
	if !decode(w, r, maxBody, &req) {
		return
	}
	if !checkNonce(w, req.Nonce) {
		return
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	_, ev, err := d.cfg.TPM.NewLDevID(req.Nonce)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "ldevid: TPM failure")
		return
	}
	writeJSON(w, http.StatusOK, ldevidResponse{Public: ev.Public, Attest: ev.Attest, Signature: ev.Signature})
}

// decode reads a JSON body of at most limit bytes into v, refusing unknown
// fields and trailing data. On failure it writes a 4xx and returns false.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", limit))
			return false
		}
		writeError(w, http.StatusBadRequest, "request body is not the expected JSON: "+jsonProblem(err))
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "request body has data after the JSON object")
		return false
	}
	return true
}

// jsonProblem describes a JSON decoding error without echoing input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q has the wrong type", te.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorResponse{Error: msg})
}
