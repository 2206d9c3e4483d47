package node

import (
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// The routes of custodyd's HTTP API and the row of the authorisation
// matrix (events.Permissions) that admits each. A route a service serves
// that is missing here is refused to everyone (fail closed) and logged;
// TestRoutesAdmitted calls every route below anonymously and as each wrong
// identity.

// LedgerRoutes are the ledger's read API's routes (under /ledger).
var LedgerRoutes = map[string]events.Action{
	"GET /v1/log/checkpoint":          events.ActReadProofs,
	"GET /v1/log/public-key":          events.ActReadProofs,
	"GET /v1/log/consistency":         events.ActReadProofs,
	"GET /v1/log/entries/{index}":     events.ActReadProofs, // the envelope only for a custody party (ledger/access.go)
	"GET /v1/devices/{id}/provenance": events.ActReadHistory,
	"GET /v1/events/{digest}":         events.ActReadReceipt,
	"GET /v1/partners/{name}/pending": events.ActReadPending,
	"GET /v1/shipments/{digest}":      events.ActReadHistory, // its sender and recipient only (ledger/shipments.go)
}

// RekorRoutes are the Rekor v1 read API's routes (under /api/v1).
var RekorRoutes = map[string]events.Action{
	"GET /api/v1/log":                   events.ActReadProofs,
	"GET /api/v1/log/publicKey":         events.ActReadProofs,
	"GET /api/v1/log/proof":             events.ActReadProofs,
	"GET /api/v1/log/entries":           events.ActReadProofs,
	"GET /api/v1/log/entries/{id}":      events.ActReadProofs,
	"POST /api/v1/log/entries/retrieve": events.ActReadProofs,
}

// GateRoutes are the enrollment gate's routes (under /gate).
var GateRoutes = map[string]events.Action{
	"PUT /{idScope}/registrations/{registrationId}/register":                 events.ActEnrollDevice,
	"GET /{idScope}/registrations/{registrationId}/operations/{operationId}": events.ActEnrollDevice,
	"GET /v1/decisions":         events.ActReadDecisions,
	"GET /v1/policy":            events.ActReadDecisions,
	"GET /v1/crl":               events.ActReadProofs,
	"GET /v1/ocsp/{request...}": events.ActReadProofs,
	"POST /v1/ocsp":             events.ActReadProofs,
	"POST /v1/revocations":      events.ActRevokeLDevID,
}

// StationRoutes are a station's routes (under /stations/<partner>): every
// one is its own partner's.
func StationRoutes() map[string]events.Action {
	m := map[string]events.Action{
		"GET /v1/pending":     events.ActCallStation,
		"GET /v1/unconfirmed": events.ActCallStation,
	}
	for _, op := range station.Operations {
		m["POST /v1/"+op] = events.ActCallStation
	}
	return m
}

// router is a ServeMux: it says which pattern a request matches.
type router interface {
	http.Handler
	Handler(r *http.Request) (http.Handler, string)
}

// guard admits each request to inner by the matrix row of the route it
// matches, for the resource's owners (none: the handler checks the
// resource), and hands the proven caller on in the request's context.
type guard struct {
	inner  router
	routes map[string]events.Action
	owners []string
	ledger *ledger.Ledger
	log    *slog.Logger
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, pattern := g.inner.Handler(r)
	if pattern == "" { // the service's own 404 or 405
		g.inner.ServeHTTP(w, r)
		return
	}
	action, ok := g.routes[pattern]
	perm, known := events.PermissionFor(action)
	if !ok || !known {
		g.log.Error("route has no row in the authorisation matrix: refused to everyone", "pattern", pattern)
		authzError(w, http.StatusForbidden, "forbidden", "this route has no authorisation rule")
		return
	}
	caller, err := g.ledger.Identify(r)
	if err != nil {
		authzError(w, http.StatusUnauthorized, "unauthenticated", err.Error())
		return
	}
	if err := perm.Admit(events.Principal{Name: caller.Name, Role: caller.Role}, g.owners...); err != nil {
		status, code := events.AdmitStatus(err)
		authzError(w, status, code, err.Error())
		return
	}
	g.inner.ServeHTTP(w, r.WithContext(ledger.WithCaller(r.Context(), caller)))
}

func authzError(w http.ResponseWriter, status int, code, msg string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="custody"`) // or an mTLS client certificate
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": msg})
}

// mount serves h under prefix (stripped unless keep), admitted by guard.
func (n *Node) mount(mux *http.ServeMux, prefix string, keep bool, h http.Handler, routes map[string]events.Action, owners ...string) {
	mount(mux, n.Ledger, n.cfg.Logger, prefix, keep, h, routes, owners...)
}

func mount(mux *http.ServeMux, l *ledger.Ledger, logger *slog.Logger, prefix string, keep bool, h http.Handler, routes map[string]events.Action, owners ...string) {
	rt, ok := h.(router)
	if !ok {
		panic("node: a service's handler is not a ServeMux")
	}
	var g http.Handler = &guard{inner: rt, routes: routes, owners: owners, ledger: l, log: logger.With("part", "http")}
	if !keep {
		g = http.StripPrefix(strings.TrimSuffix(prefix, "/"), g)
	}
	mux.Handle(prefix, g)
}

// ServerTLS is the TLS configuration of custodyd's HTTP API on the PKI
// p: its server certificate, and a request (not a demand) for the
// caller's certificate, which the guard checks against the partner
// registry (ledger.IdentifyCertificate).
func ServerTLS(p *pki.Demo) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{*p.TLS}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
}

// WarnInsecureHTTP logs, loudly, that the API on addr is plain HTTP
// (--insecure-http).
func WarnInsecureHTTP(logger *slog.Logger, addr string) {
	logger.Warn("INSECURE: the API is served as plain HTTP without client identities (--insecure-http); for development only, never on a network", "addr", addr)
}

// LedgerAPI is the ledger's HTTP read API as custodyd serves it, for a
// process that runs the ledger alone (custodyd --role sequencer): /ledger/
// and the Rekor v1 form under /api/v1/, each route admitted by the
// authorisation matrix as on the all-in-one node, and /healthz (200 once
// the ledger is ready: it serves, or stands by as a sequencer candidate).
func LedgerAPI(l *ledger.Ledger, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mount(mux, l, logger, "/ledger/", false, l.Handler(), LedgerRoutes)
	mount(mux, l, logger, "/api/v1/", true, l.RekorHandler(), RekorRoutes)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-l.Ready():
			_, _ = w.Write([]byte("ok\n"))
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	return mux
}
