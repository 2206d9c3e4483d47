package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"

	"github.com/custodyledger/custody/events"
)

// PartnerTemplate returns a certificate template for partner name with role:
// subject CN=name, key usage digitalSignature, not a CA, the role extension
// (non-critical, [events.RoleExtension]), valid from a few minutes ago for
// validity. Sign it with the consortium CA's [CA.Issue]; the result passes
// [events.VerifyPartner].
func PartnerTemplate(name, role string, validity time.Duration) (*x509.Certificate, error) {
	if !events.ValidPartnerName(name) {
		return nil, fmt.Errorf("pki: %w: %q", events.ErrBadPartnerName, name)
	}
	if !events.KnownRole(role) {
		return nil, fmt.Errorf("pki: %w: %q", events.ErrBadRole, role)
	}
	if validity <= 0 {
		return nil, errors.New("pki: partner certificate validity must be positive")
	}
	ext, err := events.RoleExtension(role)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  false,
		ExtraExtensions:       []pkix.Extension{ext},
	}, nil
}
