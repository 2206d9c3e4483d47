package main

import (
	"net/http"
	"net/url"
	"path"
	"strings"

	"github.com/custodyledger/custody/services/pki"
)

// apiClient is an HTTP client of custodyd's API from the demo PKI in
// pkiDir: it trusts the PKI's TLS CA (<pki>/tls/ca.pem) and, unless
// partner is "", presents the partner's certificate (mTLS), which is how
// custodyd knows who calls.
func apiClient(pkiDir, partner string) (*http.Client, error) {
	d, err := pki.LoadDemo(pkiDir)
	if err != nil {
		return nil, &fileError{"--pki", pkiDir, `a demo PKI ("custody pki init"): custodyd's API needs its TLS CA and the partner's certificate`, err}
	}
	return d.HTTPClient(partner)
}

// stationPartner is the partner a station URL names: its last path
// element (https://127.0.0.1:8480/stations/delta-ems → delta-ems), or ""
// when the URL names none (a standalone station's --listen address).
func stationPartner(stationURL string) string {
	u, err := url.Parse(stationURL)
	if err != nil {
		return ""
	}
	dir, name := path.Split(strings.TrimRight(u.Path, "/"))
	if path.Base(dir) != "stations" {
		return ""
	}
	return name
}
