package ledger

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/custodyledger/custody/events"
)

// Handler serves the ledger's read API:
//
//	GET /v1/log/checkpoint            the latest signed checkpoint (text/plain)
//	GET /v1/log/public-key            the checkpoint key (PEM)
//	GET /v1/log/consistency?first=&second=   consistency proof
//	GET /v1/log/entries/{index}       one entry with its inclusion proof
//	                                  (its envelope only for a reader with a right to it)
//	GET /v1/devices/{id}/provenance   a device's history with proofs (partners only)
//	GET /v1/events/{digest}           a publisher's receipt or rejection
//	                                  (that publisher only)
//	GET /v1/partners/{name}/pending   devices with a pending offer to a partner
//	                                  (that partner only)
//	GET /v1/shipments/{digest}        a shipment offer and its manifest
//	                                  (its sender and recipient only)
//
// Private reads need a proven caller (identity.go): the partner's mTLS
// client certificate or, as the alternative, "Authorization: Bearer
// <token>", a short-lived read token the partner signs (NewReadToken; see
// access.go for who may read what).
func (l *Ledger) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/log/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(l.Head().Checkpoint)
	})
	mux.HandleFunc("GET /v1/log/public-key", func(w http.ResponseWriter, r *http.Request) {
		der, err := x509.MarshalPKIXPublicKey(l.cfg.LogKey.Public)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal", "cannot encode the log key")
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_ = pem.Encode(w, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	})
	mux.HandleFunc("GET /v1/log/consistency", func(w http.ResponseWriter, r *http.Request) {
		a, err1 := strconv.ParseUint(r.URL.Query().Get("first"), 10, 64)
		b, err2 := strconv.ParseUint(r.URL.Query().Get("second"), 10, 64)
		if err1 != nil || err2 != nil {
			httpError(w, http.StatusBadRequest, "bad-request", "first and second must be tree sizes")
			return
		}
		hashes, err := l.ConsistencyProof(a, b)
		if err != nil {
			httpError(w, http.StatusBadRequest, "bad-request", "no consistency proof between those sizes: need first ≤ second ≤ the tree size")
			return
		}
		writeJSON(w, map[string]any{"first": a, "second": b, "hashes": hashes})
	})
	mux.HandleFunc("GET /v1/log/entries/{index}", func(w http.ResponseWriter, r *http.Request) {
		i, err := strconv.ParseUint(r.PathValue("index"), 10, 64)
		head := l.Head()
		if err != nil || i >= head.Size {
			httpError(w, http.StatusNotFound, "not-found", "no entry at that index")
			return
		}
		reader, ok := l.httpReader(w, r)
		if !ok {
			return
		}
		pe, err := l.entryFor(i, head.Size, reader)
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal", "cannot read the entry")
			return
		}
		writeJSON(w, map[string]any{"entry": pe, "treeSize": head.Size, "rootHash": head.Root, "checkpoint": string(head.Checkpoint)})
	})
	mux.HandleFunc("GET /v1/devices/{id}/provenance", func(w http.ResponseWriter, r *http.Request) {
		reader, ok := l.httpReader(w, r)
		if !ok {
			return
		}
		page, perr := parsePage(r)
		if perr != "" {
			httpError(w, http.StatusBadRequest, "bad-request", perr)
			return
		}
		p, err := l.ProvenancePageFor(r.PathValue("id"), reader, page)
		if accessError(w, err) {
			return
		}
		if errors.Is(err, ErrNotFound) {
			httpError(w, http.StatusNotFound, string(events.CodeUnknownDevice), "the ledger has no record of that device")
			return
		}
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal", "cannot read the device's history")
			return
		}
		writeJSON(w, p)
	})
	mux.HandleFunc("GET /v1/shipments/{digest}", func(w http.ResponseWriter, r *http.Request) {
		reader, ok := l.httpReader(w, r)
		if !ok {
			return
		}
		d, err := hex.DecodeString(r.PathValue("digest"))
		if err != nil || len(d) != 32 {
			httpError(w, http.StatusBadRequest, "bad-request", "digest: 64 hex digits (the shipment offer's digest)")
			return
		}
		sh, err := l.ShipmentFor(d, reader)
		if accessError(w, err) {
			return
		}
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal", "cannot read the shipment")
			return
		}
		writeJSON(w, sh)
	})
	mux.HandleFunc("GET /v1/partners/{name}/pending", func(w http.ResponseWriter, r *http.Request) {
		reader, ok := l.httpReader(w, r)
		if !ok {
			return
		}
		ids, err := l.PendingOffersFor(r.PathValue("name"), reader)
		if accessError(w, err) {
			return
		}
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal", "cannot read pending offers")
			return
		}
		writeJSON(w, map[string]any{"devices": ids})
	})
	mux.HandleFunc("GET /v1/events/{digest}", func(w http.ResponseWriter, r *http.Request) {
		// A digest is in every public leaf, so it is no secret: only the
		// event's publisher reads its receipt, and anyone else gets the
		// answer an unknown digest gets (nothing tells whether it exists).
		reader, ok := l.httpReader(w, r)
		if !ok {
			return
		}
		if reader == "" {
			accessError(w, ErrUnauthenticated)
			return
		}
		d, err := hex.DecodeString(r.PathValue("digest"))
		if err != nil || len(d) != 32 {
			httpError(w, http.StatusBadRequest, "bad-request", "digest must be 64 hex digits")
			return
		}
		rc, err := l.EventStatusFor(d, reader)
		if errors.Is(err, ErrNotFound) {
			httpError(w, http.StatusNotFound, "not-found", "no event with that digest published by "+reader)
			return
		}
		if err != nil {
			httpError(w, http.StatusInternalServerError, "internal", "cannot read the event")
			return
		}
		writeJSON(w, rc)
	})
	return mux
}

// httpReader is the proven caller's name: "" for anonymous; false (after
// answering 401) for a credential that proves no partner.
func (l *Ledger) httpReader(w http.ResponseWriter, r *http.Request) (string, bool) {
	c, err := l.caller(r)
	if err != nil {
		accessError(w, err)
		return "", false
	}
	return c.Name, true
}

// accessError answers an authentication or authorisation failure.
func accessError(w http.ResponseWriter, err error) bool {
	switch {
	case errors.Is(err, ErrUnauthenticated):
		w.Header().Set("WWW-Authenticate", `Bearer realm="custody-ledger"`)
		httpError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
	case errors.Is(err, ErrForbidden):
		httpError(w, http.StatusForbidden, "forbidden", forbiddenHistory)
	default:
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": msg})
}

func parseCertOrKey(blk *pem.Block) (any, error) {
	switch blk.Type {
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		return c.PublicKey, nil
	case "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(blk.Bytes)
	}
	return nil, errors.New("unknown PEM block " + blk.Type)
}

// parsePage reads ?after=<log index>&limit=<1..MaxPage> (both optional:
// without limit, the whole history).
func parsePage(r *http.Request) (Page, string) {
	var p Page
	q := r.URL.Query()
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return p, "after: a log index (a decimal integer)"
		}
		p.After, p.HasAfter = n, true
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxPage {
			return p, fmt.Sprintf("limit: 1 to %d entries", MaxPage)
		}
		p.Limit = n
	}
	return p, ""
}
