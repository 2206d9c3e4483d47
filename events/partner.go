package events

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Partner roles, as carried in the role extension of partner certificates
// and in [PartnerInfo].Role.
const (
	RoleTPMVendor  = "tpm-vendor"
	RoleODM        = "odm"
	RoleOEM        = "oem"
	RoleEMS        = "ems"
	RoleOperator   = "operator"
	RoleGate       = "gate"
	RoleConsortium = "consortium"
)

// Roles lists every known role.
var Roles = []string{RoleTPMVendor, RoleODM, RoleOEM, RoleEMS, RoleOperator, RoleGate, RoleConsortium}

// KnownRole reports whether role is one of [Roles].
func KnownRole(role string) bool { return slices.Contains(Roles, role) }

var partnerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// ValidPartnerName reports whether s is a partner name: a NATS subject token
// of 1 to 64 lowercase letters, digits and hyphens, not starting with a
// hyphen. Partner names appear in subjects ([EventSubject]) and as the
// common name of partner certificates ([VerifyPartner]).
func ValidPartnerName(s string) bool { return partnerNameRE.MatchString(s) }

// OIDCustodyArc is the root of Custody's OIDs: UUID
// 43780695-41d0-4eb6-af9a-637ea9d99b61 under Microsoft's GUID-derived arc
// 1.2.840.113556.1.8000.2554 (see the package documentation for why not 2.25).
var OIDCustodyArc = asn1.ObjectIdentifier{1, 2, 840, 113556, 1, 8000, 2554, 17272, 1685, 16848, 20150, 44954, 6520489, 14261089}

// OIDPartnerRole identifies the partner-role certificate extension, whose
// value is a DER UTF8String holding one of [Roles]. It is OIDCustodyArc.1.
var OIDPartnerRole = append(append(asn1.ObjectIdentifier{}, OIDCustodyArc...), 1)

// Errors returned by [VerifyPartner] and [ParseRole]; each is wrapped with the
// detail of the rule broken.
var (
	ErrPartnerUntrusted = errors.New("partner certificate does not chain to the consortium CA")
	ErrPartnerExpired   = errors.New("partner certificate is outside its validity period")
	ErrNoRole           = errors.New("partner certificate has no role extension")
	ErrBadRole          = errors.New("partner certificate role is malformed or unknown")
	ErrBadPartnerName   = errors.New("partner name is not a valid NATS token (1 to 64 of [a-z0-9-], not starting with '-')")
	ErrNotPartnerCert   = errors.New("certificate is not a partner signing certificate")
)

// RoleExtension returns the non-critical partner-role extension for role.
func RoleExtension(role string) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(role, "utf8")
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("events: encoding role: %w", err)
	}
	return pkix.Extension{Id: OIDPartnerRole, Critical: false, Value: v}, nil
}

// ParseRole returns the role in cert's partner-role extension. It checks the
// encoding only (a single DER UTF8String); it neither verifies the
// certificate nor checks that the role is known.
func ParseRole(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", errors.New("events: no certificate")
	}
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(OIDPartnerRole) {
			return parseRoleValue(ext.Value)
		}
	}
	return "", ErrNoRole
}

func parseRoleValue(v []byte) (string, error) {
	if len(v) == 0 || v[0] != asn1.TagUTF8String {
		return "", fmt.Errorf("%w: value is not a UTF8String", ErrBadRole)
	}
	var role string
	rest, err := asn1.UnmarshalWithParams(v, &role, "utf8")
	if err != nil {
		return "", fmt.Errorf("%w: not a DER UTF8String: %v", ErrBadRole, err)
	}
	if len(rest) != 0 {
		return "", fmt.Errorf("%w: %d trailing bytes after the UTF8String", ErrBadRole, len(rest))
	}
	return role, nil
}

// PartnerIdentity is what [VerifyPartner] proved about a partner certificate.
type PartnerIdentity struct {
	Name string // the certificate's subject CN, a valid partner name
	Role string // one of Roles
}

// VerifyPartner checks that cert is a partner certificate valid at time at:
// it chains to a root in consortium (intermediates are not accepted: partner
// certificates are issued by the consortium CA directly), is not a CA, allows
// digitalSignature, has an ECDSA P-256 key, carries a known role, and its CN
// is a valid partner name. Errors wrap one of the Err* values above and name
// the rule broken.
func VerifyPartner(cert *x509.Certificate, consortium *x509.CertPool, at time.Time) (PartnerIdentity, error) {
	if cert == nil {
		return PartnerIdentity{}, fmt.Errorf("events: %w: no certificate", ErrNotPartnerCert)
	}
	if consortium == nil {
		return PartnerIdentity{}, errors.New("events: verify partner: no consortium roots given")
	}
	if at.IsZero() {
		return PartnerIdentity{}, errors.New("events: verify partner: zero verification time")
	}
	name := cert.Subject.CommonName
	if at.Before(cert.NotBefore) || at.After(cert.NotAfter) {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w: valid %s to %s, checked at %s", name, ErrPartnerExpired,
			cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:       consortium,
		CurrentTime: at,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w: %v", name, ErrPartnerUntrusted, err)
	}
	if cert.IsCA {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w: it is a CA certificate", name, ErrNotPartnerCert)
	}
	if cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w: key usage lacks digitalSignature", name, ErrNotPartnerCert)
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve.Params().Name != "P-256" {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w: key is not ECDSA P-256", name, ErrNotPartnerCert)
	}
	if !ValidPartnerName(name) {
		return PartnerIdentity{}, fmt.Errorf("events: %w: subject CN %q", ErrBadPartnerName, name)
	}
	role, err := ParseRole(cert)
	if err != nil {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w", name, err)
	}
	if !KnownRole(role) {
		return PartnerIdentity{}, fmt.Errorf("events: partner %q: %w: %q", name, ErrBadRole, role)
	}
	return PartnerIdentity{Name: name, Role: role}, nil
}
