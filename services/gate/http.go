package gate

import (
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"
)

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

// Handler serves the gate's device API:
//
//	PUT /{idScope}/registrations/{registrationId}/register?api-version=…
//	GET /v1/decisions
//
// A register call without Authorization gets 401 and a Challenge; with a
// SharedAccessSignature keyed by the activated secret it gets 200 and an
// Outcome (status "assigned" or "failed"). Errors are DPS-shaped:
// {"errorCode", "trackingId", "message", "timestampUtc"}.
func (g *Gate) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /{idScope}/registrations/{registrationId}/register", func(w http.ResponseWriter, r *http.Request) {
		var req RegisterRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			dpsError(w, http.StatusBadRequest, 400004, "the request body is not a registration: "+err.Error())
			return
		}
		if req.RegistrationID != r.PathValue("registrationId") {
			dpsError(w, http.StatusBadRequest, 400004, "registrationId in the body differs from the path")
			return
		}
		idScope := r.PathValue("idScope")
		auth := r.Header.Get("Authorization")
		if auth == "" {
			ch, err := g.Begin(r.Context(), idScope, &req)
			if errors.Is(err, ErrBadRequest) {
				dpsError(w, http.StatusBadRequest, 400004, err.Error())
				return
			} else if err != nil {
				dpsError(w, http.StatusInternalServerError, 500000, "internal error")
				return
			}
			writeJSON(w, http.StatusUnauthorized, ch)
			return
		}
		out, err := g.Finish(r.Context(), idScope, auth, &req)
		if errors.Is(err, ErrBadRequest) {
			dpsError(w, http.StatusBadRequest, 400004, err.Error())
			return
		} else if err != nil {
			g.cfg.Logger.Error("enrollment failed", "err", err)
			dpsError(w, http.StatusInternalServerError, 500000, "internal error")
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/decisions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, g.Decisions())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func dpsError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{
		"errorCode": code, "trackingId": newOperationID(), "message": msg,
		"timestampUtc": time.Now().UTC().Format(time.RFC3339Nano),
	})
}
