package trillian

import (
	"crypto/tls"
	"crypto/x509"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Dial connects to Trillian's log server at addr (host:port) over TLS,
// trusting roots (a deployment's TLS CA: trillian_log_server runs with
// its server certificate, --tls_cert_file). The connection is made
// lazily, at the first call.
func Dial(addr string, roots *x509.CertPool) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})))
}
