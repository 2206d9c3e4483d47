package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// backdate is subtracted from "now" for NotBefore so certificates are valid on
// machines whose clocks lag a little behind the issuer's.
const backdate = 5 * time.Minute

// CA is a certificate authority: its certificate and the signer of its key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewRootCA creates a self-signed ECDSA P-256 root CA named cn, valid from a
// few minutes ago for validity. It is a CA (basic constraints CA:true, no path
// length limit) with key usage keyCertSign|cRLSign and a subject key
// identifier.
func NewRootCA(cn string, validity time.Duration) (*CA, error) {
	if cn == "" {
		return nil, errors.New("pki: root CA needs a common name")
	}
	if validity <= 0 {
		return nil, errors.New("pki: root CA validity must be positive")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating root CA key: %w", err)
	}
	tmpl, err := caTemplate(cn, validity)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing root CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing root CA %q: %w", cn, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// NewSubCA creates an ECDSA P-256 intermediate CA named cn issued by ca. Like
// a root it has CA:true, keyCertSign|cRLSign and a subject key identifier; its
// path length is left unconstrained.
func (ca *CA) NewSubCA(cn string, validity time.Duration) (*CA, error) {
	if cn == "" {
		return nil, errors.New("pki: sub-CA needs a common name")
	}
	if validity <= 0 {
		return nil, errors.New("pki: sub-CA validity must be positive")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating sub-CA key: %w", err)
	}
	tmpl, err := caTemplate(cn, validity)
	if err != nil {
		return nil, err
	}
	cert, err := ca.Issue(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

func caTemplate(cn string, validity time.Duration) (*x509.Certificate, error) {
	serial, err := RandomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// SubjectKeyId left empty: crypto/x509 derives it from the key
		// (RFC 7093 §2 method 1) for CA templates.
	}, nil
}

// CrossCertify issues a cross-certificate for other: a CA certificate with
// other's exact subject, public key, subject key identifier, key usage and
// path length, signed by ca. A verifier that trusts only ca's root then accepts
// chains issued under other, by building leaf → … → other's subject (the
// cross-certificate) → ca. The cross-certificate's validity is other's,
// clipped to ca's.
func (ca *CA) CrossCertify(other *x509.Certificate) (*x509.Certificate, error) {
	if other == nil {
		return nil, errors.New("pki: cross-certify: no certificate")
	}
	if !other.IsCA || !other.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: cross-certify: %q is not a CA certificate", other.Subject.CommonName)
	}
	if len(other.SubjectKeyId) == 0 {
		return nil, fmt.Errorf("pki: cross-certify: %q has no subject key identifier", other.Subject.CommonName)
	}
	serial, err := RandomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := other.NotAfter
	if ca.Cert.NotAfter.Before(notAfter) {
		notAfter = ca.Cert.NotAfter
	}
	notBefore := other.NotBefore
	if notBefore.Before(ca.Cert.NotBefore) {
		notBefore = ca.Cert.NotBefore
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            other.RawSubject, // byte-identical, so name chaining works
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              other.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            other.MaxPathLen,
		MaxPathLenZero:        other.MaxPathLenZero,
		SubjectKeyId:          other.SubjectKeyId,
	}
	return ca.Issue(tmpl, other.PublicKey)
}

// Issue signs a certificate for pub from tmpl. It copies tmpl (the caller's
// value is not modified), fills a random positive 128-bit serial number when
// tmpl.SerialNumber is nil, NotBefore (a few minutes ago) when it is zero, and
// the authority key identifier from ca's subject key identifier. Everything
// else, including ExtraExtensions, is taken as given. tmpl.NotAfter must be
// set.
func (ca *CA) Issue(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("pki: issue: CA has no certificate or key")
	}
	if tmpl == nil {
		return nil, errors.New("pki: issue: no template")
	}
	if pub == nil {
		return nil, errors.New("pki: issue: no public key")
	}
	t := *tmpl
	if t.SerialNumber == nil {
		s, err := RandomSerial()
		if err != nil {
			return nil, err
		}
		t.SerialNumber = s
	}
	if t.NotBefore.IsZero() {
		t.NotBefore = time.Now().Add(-backdate)
	}
	if t.NotAfter.IsZero() {
		return nil, errors.New("pki: issue: template has no NotAfter")
	}
	if !t.NotAfter.After(t.NotBefore) {
		return nil, errors.New("pki: issue: template NotAfter is not after NotBefore")
	}
	t.AuthorityKeyId = ca.Cert.SubjectKeyId
	der, err := x509.CreateCertificate(rand.Reader, &t, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: %q issuing certificate: %w", ca.Cert.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing issued certificate: %w", err)
	}
	return cert, nil
}

// CRL signs a DER certificate revocation list listing revoked, with CRL number
// number, thisUpdate now and nextUpdate now+next.
func (ca *CA) CRL(revoked []x509.RevocationListEntry, number *big.Int, next time.Duration) ([]byte, error) {
	if number == nil || number.Sign() < 0 {
		return nil, errors.New("pki: CRL number must be a non-negative integer")
	}
	if next <= 0 {
		return nil, errors.New("pki: CRL next update interval must be positive")
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		RevokedCertificateEntries: revoked,
		Number:                    number,
		ThisUpdate:                now,
		NextUpdate:                now.Add(next),
	}, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: %q signing CRL: %w", ca.Cert.Subject.CommonName, err)
	}
	return der, nil
}

// IssueTLSServer issues an ECDSA P-256 TLS server certificate (EKU
// serverAuth) for hosts, which may be DNS names or IP addresses. The first
// host is also the subject common name. The returned certificate's chain holds
// the leaf only and Leaf is set.
func (ca *CA) IssueTLSServer(validity time.Duration, hosts ...string) (*tls.Certificate, error) {
	if len(hosts) == 0 {
		return nil, errors.New("pki: TLS server certificate needs at least one host")
	}
	if validity <= 0 {
		return nil, errors.New("pki: TLS server certificate validity must be positive")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating TLS key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:  pkix.Name{CommonName: hosts[0]},
		NotAfter: time.Now().Add(validity),
		KeyUsage: x509.KeyUsageDigitalSignature,
		// Client authentication too: the nodes of a NATS cluster present
		// this certificate at both ends of their routes.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := ca.Issue(tmpl, key.Public())
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// RandomSerial returns a uniformly random positive serial number of at most
// 128 bits (never zero).
func RandomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}
