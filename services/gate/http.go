package gate

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/custodyledger/custody/services/gate/gatewire"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// Handler serves the gate's device API, DPS's registration protocol with
// TPM attestation:
//
//	PUT /{idScope}/registrations/{registrationId}/register?api-version=…
//	    no Authorization      → 401 Challenge {authenticationKey, nonce}
//	    SharedAccessSignature → 202 {operationId, status: "assigning"}
//	GET /{idScope}/registrations/{registrationId}/operations/{operationId}?api-version=…
//	    same Authorization    → 200 Outcome: status "assigned" (with
//	                            registrationState.issuedCertificateChain) or
//	                            "failed" (registrationState.errorCode and
//	                            errorMessage "<rule>: <sentence>")
//
// and the operator's API:
//
//	GET /v1/decisions[?device=<id>]  the gate's decisions, oldest first
//	GET /v1/policy                   the policy in force
//	GET /v1/crl                      the LDevID CA's CRL (DER, application/pkix-crl)
//	GET /v1/ocsp/{base64 request}    OCSP (RFC 6960 appendix A, RFC 5019) for its LDevIDs
//	POST /v1/ocsp                    the same, the DER request as the body
//	POST /v1/revocations             revoke an LDevID: {"serial": "<hex>", "reason": "keyCompromise"}
//
// Who may call what (the HTTP layer's authorisation wraps this handler):
// the registration routes are anonymous (a device at first boot proves
// itself with its TPM); /v1/crl and /v1/ocsp are public (relying parties);
// /v1/decisions, /v1/policy and /v1/revocations are the gate's operator's.
//
// A device or source address over its refusal limit is answered 429 with
// Retry-After and errorCode 429001, as DPS throttles.
//
// Requests refused before a decision get DPS's error body:
// {"errorCode", "trackingId", "message", "timestampUtc"}.
func (g *Gate) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /{idScope}/registrations/{registrationId}/register", func(w http.ResponseWriter, r *http.Request) {
		version, ok := apiVersion(w, r)
		if !ok {
			return
		}
		var req gatewire.RegisterRequest
		if msg := decodeRegistration(io.LimitReader(r.Body, maxBody), &req); msg != "" {
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, "the request body is not a registration: "+msg)
			return
		}
		if req.RegistrationID != r.PathValue("registrationId") {
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, "registrationId in the body differs from the path")
			return
		}
		if req.CSR != "" && version != gatewire.APIVersion2025 {
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, "csr needs api-version "+gatewire.APIVersion2025)
			return
		}
		idScope := r.PathValue("idScope")
		auth := r.Header.Get("Authorization")
		src := sourceOf(r)
		if auth == "" {
			ch, err := g.Begin(r.Context(), idScope, src, &req)
			if throttled(w, err) {
				return
			}
			if errors.Is(err, ErrBadRequest) {
				dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, err.Error())
				return
			} else if err != nil {
				g.cfg.Logger.Error("enrollment challenge failed", "err", err)
				dpsError(w, http.StatusInternalServerError, gatewire.CodeInternal, "internal error")
				return
			}
			writeJSON(w, http.StatusUnauthorized, ch)
			return
		}
		out, err := g.Finish(r.Context(), idScope, src, auth, &req)
		if throttled(w, err) {
			return
		}
		if errors.Is(err, ErrBadRequest) {
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, err.Error())
			return
		} else if err != nil {
			g.cfg.Logger.Error("enrollment failed", "err", err)
			dpsError(w, http.StatusInternalServerError, gatewire.CodeInternal, "internal error")
			return
		}
		// As DPS: the register call answers "assigning" and the device polls
		// the operation for the outcome, which the gate has already decided.
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, &gatewire.Outcome{OperationID: out.OperationID, Status: gatewire.StatusAssigning})
	})
	mux.HandleFunc("GET /{idScope}/registrations/{registrationId}/operations/{operationId}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := apiVersion(w, r); !ok {
			return
		}
		out, err := g.Operation(r.PathValue("idScope"), r.PathValue("registrationId"), r.PathValue("operationId"), r.Header.Get("Authorization"))
		switch {
		case errors.Is(err, ErrBadRequest):
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, err.Error())
		case err != nil:
			dpsError(w, http.StatusNotFound, gatewire.CodeNotFound, "no such registration operation for this registration and credential")
		default:
			writeJSON(w, http.StatusOK, out)
		}
	})
	mux.HandleFunc("GET /v1/decisions", func(w http.ResponseWriter, r *http.Request) {
		ds := g.Decisions()
		if dev := r.URL.Query().Get("device"); dev != "" {
			ds = slices.DeleteFunc(ds, func(d *gatewire.Decision) bool { return d.RegistrationID != dev })
		}
		if ds == nil {
			ds = []*gatewire.Decision{}
		}
		writeJSON(w, http.StatusOK, ds)
	})
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, g.Policy())
	})
	mux.HandleFunc("GET /v1/crl", func(w http.ResponseWriter, r *http.Request) {
		der, err := g.CRL()
		if err != nil {
			g.cfg.Logger.Error("CRL", "err", err)
			dpsError(w, http.StatusInternalServerError, gatewire.CodeInternal, "internal error")
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(der)
	})
	mux.HandleFunc("GET /v1/ocsp/{request...}", func(w http.ResponseWriter, r *http.Request) {
		// RFC 6960 appendix A.1: the base64 DER request, URL-encoded, as
		// the path (PathValue has undone the URL encoding).
		der, err := base64.StdEncoding.DecodeString(r.PathValue("request"))
		if err != nil {
			der = nil // answered malformedRequest
		}
		g.serveOCSP(w, der)
	})
	mux.HandleFunc("POST /v1/ocsp", func(w http.ResponseWriter, r *http.Request) {
		der, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPRequest+1))
		if err != nil || len(der) > maxOCSPRequest {
			der = nil
		}
		g.serveOCSP(w, der)
	})
	mux.HandleFunc("POST /v1/revocations", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Serial string `json:"serial"` // hex
			Reason string `json:"reason"`
		}
		dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
		dec.DisallowUnknownFields()
		serial, ok := new(big.Int), false
		if dec.Decode(&req) == nil {
			serial, ok = serial.SetString(req.Serial, 16)
		}
		if !ok {
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, `a revocation is {"serial": "<hex>", "reason": "<RFC 5280 reason name>"}`)
			return
		}
		switch err := g.Revoke(serial, req.Reason); {
		case errors.Is(err, ErrBadRequest):
			dpsError(w, http.StatusBadRequest, gatewire.CodeBadRequest, err.Error())
		case errors.Is(err, ErrUnknownLDevID):
			dpsError(w, http.StatusNotFound, gatewire.CodeNotFound, "this gate issued no LDevID with that serial")
		case err != nil:
			g.cfg.Logger.Error("revocation", "err", err)
			dpsError(w, http.StatusInternalServerError, gatewire.CodeInternal, "internal error")
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	return mux
}

// maxOCSPRequest bounds a POSTed OCSP request.
const maxOCSPRequest = 16 << 10

func (g *Gate) serveOCSP(w http.ResponseWriter, der []byte) {
	resp, err := g.OCSP(der)
	if err != nil {
		g.cfg.Logger.Error("OCSP", "err", err)
		resp = ocsp.InternalErrorErrorResponse
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(resp)
}

// sourceOf is the address a request came from, without the port: the
// key of the per-source refusal limit. The gate trusts no forwarding
// header; behind a proxy, every device shares the proxy's address.
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// throttled answers a *ThrottledError as DPS throttles: 429, Retry-After
// and errorCode 429001.
func throttled(w http.ResponseWriter, err error) bool {
	var te *ThrottledError
	if !errors.As(err, &te) {
		return false
	}
	w.Header().Set("Retry-After", te.RetryAfterSeconds())
	dpsError(w, http.StatusTooManyRequests, gatewire.CodeThrottled, "too many refused registrations; retry after the Retry-After interval")
	return true
}

// apiVersion checks the api-version query parameter, as DPS does.
func apiVersion(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := r.URL.Query().Get("api-version")
	if !slices.Contains(gatewire.SupportedAPIVersions, v) {
		dpsError(w, http.StatusBadRequest, gatewire.CodeUnsupportedVersion,
			"api-version "+quote(v)+" is not supported (supported: "+strings.Join(gatewire.SupportedAPIVersions, ", ")+")")
		return "", false
	}
	return v, true
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func dpsError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{
		"errorCode": code, "trackingId": newOperationID(), "message": msg,
		"timestampUtc": time.Now().UTC().Format(time.RFC3339Nano),
	})
}

// decodeRegistration reads exactly one JSON registration request from body.
// It returns "" or a sentence for the caller that names the JSON problem
// (where, which field, what JSON type) without the decoder's Go internals.
func decodeRegistration(body io.Reader, req *gatewire.RegisterRequest) string {
	dec := json.NewDecoder(body)
	err := dec.Decode(req)
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var b64 base64.CorruptInputError
	switch {
	case err == nil:
		if dec.Decode(&json.RawMessage{}) != io.EOF {
			return "it holds more than one JSON value"
		}
		return ""
	case errors.Is(err, io.EOF):
		return "it is empty"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "it ends in the middle of a JSON value"
	case errors.As(err, &syntax):
		return fmt.Sprintf("it is not JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ) && typ.Field != "":
		return fmt.Sprintf("field %s cannot hold a JSON %s", typ.Field, typ.Value)
	case errors.As(err, &typ):
		return fmt.Sprintf("it is a JSON %s, not an object", typ.Value)
	case errors.As(err, &b64):
		return fmt.Sprintf("a field that holds bytes is not base64 (at its byte %d)", int64(b64))
	}
	return "its JSON does not fit a registration request"
}
