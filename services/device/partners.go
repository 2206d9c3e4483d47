package device

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"time"

	"github.com/custodyledger/custody/events"
)

// RequirePartner admits to h only callers whose mTLS client certificate is
// a consortium partner's (events.VerifyPartner against consortium, now)
// of a role that runs stations (the matrix row events.ActCallAgent:
// events.StationRoles). A caller with no certificate, or one that does not
// verify (self-made, another CA's, expired), gets 401; a partner of
// another role (a gate, the consortium) gets 403. Either answer is a JSON
// error naming the rule, and nothing of the device is read.
//
// The agent has no view of the log, so a partner revoked on the log but
// whose certificate is still valid is admitted: its events are refused by
// the ledger, which is where revocation is enforced.
func RequirePartner(h http.Handler, consortium *x509.CertPool) http.Handler {
	perm, _ := events.PermissionFor(events.ActCallAgent)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := perm.AdmitCertificate(r.TLS, consortium, time.Now()); err != nil {
			status, _ := events.AdmitStatus(err)
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Mutual realm="custody-agent"`)
			}
			writeError(w, status, err.Error())
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ServerTLS is the TLS configuration of an agent's factory API: it serves
// cert and asks every caller for its client certificate, which
// RequirePartner then verifies (asked, not required, in the handshake, so
// that a caller without one gets a 401 that says why rather than a failed
// handshake).
func ServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
}
