package attest

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"time"
)

// OIDIAKEKCertDigest identifies the attribute that binds an IAK certificate
// to the EK certificate of the same TPM: its single value is an OCTET
// STRING holding SHA-256 of the EK certificate DER.
//
// The arc is Custody's own, 2.25.<UUID as an integer> (ITU-T X.667), made
// from the random UUID 575628fc-8a76-4e2e-af43-5f204f0cea6b; ".1" is this
// attribute:
//
//	2.25.116090204467854729587939947713877830251.1
//
// Go's crypto/x509 cannot parse a certificate extension whose own OID has
// an arc above 2^31 (cryptobyte limits OID arcs to 31 bits), so this OID is
// not used as an extension ID: it is the attribute type inside a Subject
// Directory Attributes extension (2.5.29.9, non-critical), which crypto/x509
// leaves unparsed and this package reads with raw OID comparison.
const OIDIAKEKCertDigest = "2.25.116090204467854729587939947713877830251.1"

var oidIAKEKCertDigestDER = mustOIDDER(OIDIAKEKCertDigest)

func mustOIDDER(s string) []byte {
	oid, err := x509.ParseOID(s)
	if err != nil {
		panic(err)
	}
	content, err := oid.MarshalBinary()
	if err != nil {
		panic(err)
	}
	der, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagOID, Bytes: content})
	if err != nil {
		panic(err)
	}
	return der
}

// IAKCertificateTemplate returns a certificate template for a device's IAK,
// for the TPM vendor's CA to sign after credential activation has shown
// that the IAK lives in the TPM of ekCert: subject CN and serialNumber are
// the device ID; key usage digitalSignature; basic constraints CA:FALSE;
// the EK certificate's TPM subject alternative name copied (non-critical,
// as the subject is not empty); and a Subject Directory Attributes
// extension carrying OIDIAKEKCertDigest = SHA-256(ekCert.Raw). SerialNumber
// is left nil for the issuing CA.
func IAKCertificateTemplate(iakPub crypto.PublicKey, deviceID string, ekCert *x509.Certificate, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if iakPub == nil || deviceID == "" || ekCert == nil || len(ekCert.Raw) == 0 {
		return nil, fmt.Errorf("attest: IAK certificate template: IAK key, device ID and EK certificate are required")
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("attest: IAK certificate template: notAfter must be after notBefore")
	}
	var san []byte
	for _, ext := range ekCert.Extensions {
		if ext.Id.Equal(oidSubjectAltName) {
			san = ext.Value
		}
	}
	if san == nil {
		return nil, fmt.Errorf("%w: EK certificate has no subject alternative name", ErrNotEKCertificate)
	}
	sum := sha256.Sum256(ekCert.Raw)
	sda, err := marshalEKCertDigest(sum[:])
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		PublicKey:             iakPub,
		Subject:               pkix.Name{CommonName: deviceID, SerialNumber: deviceID},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		ExtraExtensions: []pkix.Extension{
			{Id: oidSubjectAltName, Critical: false, Value: bytes.Clone(san)},
			{Id: oidSubjectDirAttrs, Critical: false, Value: sda},
		},
	}, nil
}

func marshalEKCertDigest(sum []byte) ([]byte, error) {
	v, err := asn1.Marshal(sum)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal([]sdaAttribute{{
		Type:   asn1.RawValue{FullBytes: oidIAKEKCertDigestDER},
		Values: []asn1.RawValue{{FullBytes: v}},
	}})
}

// IAKCertificate is a parsed, UNVERIFIED IAK certificate.
type IAKCertificate struct {
	Cert *x509.Certificate
	// DeviceID is the subject common name.
	DeviceID string
	// EKCertDigest is SHA-256 of the DER of the EK certificate the IAK
	// certificate was issued against (attribute OIDIAKEKCertDigest).
	EKCertDigest []byte
	// TPM is the TPM description copied from the EK certificate.
	TPM TPMInfo
}

// ParseIAKCertificate parses an IAK certificate made from
// IAKCertificateTemplate. Nothing in it is trusted until Verify succeeds.
func ParseIAKCertificate(der []byte) (*IAKCertificate, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("attest: IAK certificate: %w", err)
	}
	out := &IAKCertificate{Cert: cert, DeviceID: cert.Subject.CommonName}
	for _, ext := range cert.Extensions {
		switch {
		case ext.Id.Equal(oidSubjectAltName):
			info, found, err := parseTPMSAN(ext.Value)
			if err != nil {
				return nil, err
			}
			if found {
				out.TPM = info
				if ext.Critical {
					dropHandledSAN(cert)
				}
			}
		case ext.Id.Equal(oidSubjectDirAttrs):
			var attrs []sdaAttribute
			rest, err := asn1.Unmarshal(ext.Value, &attrs)
			if err != nil || len(rest) != 0 {
				return nil, fmt.Errorf("attest: IAK certificate: malformed subject directory attributes")
			}
			for _, a := range attrs {
				if !bytes.Equal(a.Type.FullBytes, oidIAKEKCertDigestDER) {
					continue
				}
				if len(a.Values) != 1 {
					return nil, fmt.Errorf("attest: IAK certificate: EK certificate digest must have one value")
				}
				var sum []byte
				rest, err := asn1.Unmarshal(a.Values[0].FullBytes, &sum)
				if err != nil || len(rest) != 0 || len(sum) != sha256.Size {
					return nil, fmt.Errorf("attest: IAK certificate: malformed EK certificate digest")
				}
				out.EKCertDigest = sum
			}
		}
	}
	if out.DeviceID == "" || out.EKCertDigest == nil {
		return nil, fmt.Errorf("attest: IAK certificate: missing device ID or EK certificate digest")
	}
	return out, nil
}

// Verify verifies the IAK certificate's chain to a root of b at time now.
// After it succeeds, the IAK public key (Cert.PublicKey), DeviceID and
// EKCertDigest are vouched for by the issuing CA.
func (c *IAKCertificate) Verify(b *Bundle, now time.Time) ([][]*x509.Certificate, error) {
	if c == nil || c.Cert == nil {
		return nil, fmt.Errorf("attest: verify: no certificate")
	}
	return verifyChain(c.Cert, b, now)
}

// MatchesEK checks that the IAK certificate was issued for the TPM of ek:
// the EK certificate digest and the device ID (derived from the EK
// certificate's public key) match. It compares data only; both
// certificates must be verified separately.
func (c *IAKCertificate) MatchesEK(ek *EKCertificate) error {
	if ek == nil || ek.Cert == nil {
		return fmt.Errorf("attest: no EK certificate")
	}
	sum := sha256.Sum256(ek.Raw)
	if subtle.ConstantTimeCompare(sum[:], c.EKCertDigest) != 1 {
		return fmt.Errorf("attest: IAK certificate was issued for another EK certificate")
	}
	id, err := DeviceID(ek.Cert.PublicKey)
	if err != nil {
		return err
	}
	if id != c.DeviceID {
		return fmt.Errorf("attest: IAK certificate device ID %q is not the EK's %q", c.DeviceID, id)
	}
	return nil
}
