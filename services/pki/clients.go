package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"time"
)

// TLSRoots is a pool holding the demo TLS CA: what a client of custodyd's
// listeners trusts.
func (d *Demo) TLSRoots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(d.TLSCA)
	return p
}

// ClientTLS is the TLS configuration of a client of custodyd's listeners:
// it trusts the demo TLS CA and, unless partner is "", presents the
// partner's certificate (its consortium identity) as its mTLS client
// certificate. The partner's signing key proves possession in the
// handshake; TLS 1.3 signs a context string of its own ("TLS 1.3, client
// CertificateVerify"), so a handshake signature can never pass for a DSSE
// event signature (which signs "DSSEv1 ..."), nor the other way round.
func (d *Demo) ClientTLS(partner string) (*tls.Config, error) {
	cfg := &tls.Config{RootCAs: d.TLSRoots(), MinVersion: tls.VersionTLS12}
	if partner == "" {
		return cfg, nil
	}
	p, ok := d.Partners[partner]
	if !ok {
		return nil, fmt.Errorf("pki: no partner %q in %s", partner, d.Dir)
	}
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key, Leaf: p.Cert}}
	return cfg, nil
}

// HTTPClient is an HTTP client of custodyd's API acting as partner (""
// for an anonymous client that only trusts the TLS CA).
func (d *Demo) HTTPClient(partner string) (*http.Client, error) {
	cfg, err := d.ClientTLS(partner)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second},
		Timeout:   2 * time.Minute,
	}, nil
}
