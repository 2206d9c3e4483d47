package gate

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

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
		if auth == "" {
			ch, err := g.Begin(r.Context(), idScope, &req)
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
		out, err := g.Finish(r.Context(), idScope, auth, &req)
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
	return mux
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
