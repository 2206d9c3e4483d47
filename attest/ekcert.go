package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// TPMInfo is the TPM description an EK certificate carries in its subject
// alternative name (TCG EK Credential Profile): manufacturer, model and
// firmware version, for example {"id:49465800", "SLB 9670 TPM2.0",
// "id:073f"} for an Infineon TPM.
//
// It is also how the ledger's tpm.manufactured event carries them (its JSON
// field names are part of schemas/custody/v1).
type TPMInfo struct {
	Manufacturer string `json:"manufacturer"` // tcg-at-tpmManufacturer (2.23.133.2.1), "id:" + 8 hex digits
	Model        string `json:"model"`        // tcg-at-tpmModel (2.23.133.2.2)
	Version      string `json:"version"`      // tcg-at-tpmVersion (2.23.133.2.3)
}

// EKCertificateTemplate returns a certificate template for an EK as real
// vendors issue them (TCG EK Credential Profile): an empty subject; a
// critical subject alternative name holding only a directoryName with the
// TPM manufacturer, model and version; extended key usage
// tcg-kp-EKCertificate (2.23.133.8.1); key usage keyEncipherment (RSA) or
// keyAgreement (ECC); critical basic constraints CA:FALSE; and a subject
// directory attributes extension with tpmSpecification family "2.0" level 0
// revision 138. SerialNumber is left nil for the issuing CA to fill in (Go's
// CreateCertificate picks a random one if it stays nil). Sign it with
// x509.CreateCertificate.
func EKCertificateTemplate(ekPub crypto.PublicKey, info TPMInfo, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if info.Manufacturer == "" || info.Model == "" || info.Version == "" {
		return nil, fmt.Errorf("attest: EK certificate template: TPM manufacturer, model and version are all required")
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("attest: EK certificate template: notAfter must be after notBefore")
	}
	var ku x509.KeyUsage
	switch k := ekPub.(type) {
	case *rsa.PublicKey:
		ku = x509.KeyUsageKeyEncipherment
	case *ecdsa.PublicKey, *ecdh.PublicKey:
		ku = x509.KeyUsageKeyAgreement
	default:
		return nil, fmt.Errorf("attest: EK certificate template: unsupported key type %T", k)
	}
	san, err := marshalTPMSAN(info)
	if err != nil {
		return nil, err
	}
	sda, err := marshalTPMSpecification()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		PublicKey:             ekPub,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              ku,
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{oidEKCertificateEKU},
		BasicConstraintsValid: true,
		IsCA:                  false,
		ExtraExtensions: []pkix.Extension{
			{Id: oidSubjectAltName, Critical: true, Value: san},
			{Id: oidSubjectDirAttrs, Critical: false, Value: sda},
		},
	}, nil
}

// marshalTPMSAN encodes GeneralNames holding one directoryName with the
// three TPM attributes, each in its own RDN, as UTF8Strings.
func marshalTPMSAN(info TPMInfo) ([]byte, error) {
	var rdns pkix.RDNSequence
	for _, a := range []struct {
		oid  asn1.ObjectIdentifier
		name string
		v    string
	}{{oidTPMManufacturer, "manufacturer", info.Manufacturer}, {oidTPMModel, "model", info.Model}, {oidTPMVersion, "version", info.Version}} {
		// What ParseEKCertificate would refuse is refused here, so no EK
		// certificate is issued that its own parser cannot read.
		if len(a.v) > maxDirectoryNameValue {
			return nil, fmt.Errorf("attest: the TPM %s is %d bytes, over the %d an EK certificate may hold", a.name, len(a.v), maxDirectoryNameValue)
		}
		if !utf8.ValidString(a.v) {
			return nil, fmt.Errorf("attest: the TPM %s %q is not UTF-8", a.name, a.v)
		}
		v, err := asn1.MarshalWithParams(a.v, "utf8")
		if err != nil {
			return nil, err
		}
		rdns = append(rdns, pkix.RelativeDistinguishedNameSET{{Type: a.oid, Value: asn1.RawValue{FullBytes: v}}})
	}
	name, err := asn1.Marshal(rdns)
	if err != nil {
		return nil, fmt.Errorf("attest: TPM directoryName: %w", err)
	}
	san, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: tagDirectoryName, IsCompound: true, Bytes: name}})
	if err != nil {
		return nil, fmt.Errorf("attest: TPM subject alternative name: %w", err)
	}
	return san, nil
}

// sdaAttribute is an Attribute of a Subject Directory Attributes extension.
type sdaAttribute struct {
	Type   asn1.RawValue   // an OBJECT IDENTIFIER, kept raw (see oidIAKEKCertDigest)
	Values []asn1.RawValue `asn1:"set"`
}

// marshalTPMSpecification encodes the subject directory attributes of an
// EK certificate: tpmSpecification {family "2.0", level 0, revision 138}.
func marshalTPMSpecification() ([]byte, error) {
	spec, err := asn1.Marshal(struct {
		Family   string `asn1:"utf8"`
		Level    int
		Revision int
	}{tcgSpecFamily, tcgSpecLevel, tcgSpecRevision})
	if err != nil {
		return nil, err
	}
	oid, err := asn1.Marshal(oidTPMSpecification)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal([]sdaAttribute{{Type: asn1.RawValue{FullBytes: oid}, Values: []asn1.RawValue{{FullBytes: spec}}}})
}

// EKCertificate is a parsed, UNVERIFIED EK certificate. Nothing in it is
// trusted until Verify succeeds; even then TPM names the TPM only as far as
// the issuing CA vouches for it, and Cert.PublicKey must still be compared
// with the EK the device presents.
type EKCertificate struct {
	// Cert is the parsed certificate. Its subject alternative name is
	// removed from UnhandledCriticalExtensions (it was parsed into TPM).
	Cert *x509.Certificate
	// TPM is the TPM description from the subject alternative name.
	TPM TPMInfo
	// Raw is the certificate DER, without NV header or padding.
	Raw []byte
}

// ParseEKCertificate parses an EK certificate as read from TPM NV or a
// vendor's service, without verifying anything. It removes an NV header and
// trailing padding (using the DER length), parses the certificate with
// crypto/x509, and reads the TPM manufacturer, model and version from the
// subject alternative name directoryName; that SAN is then taken off
// UnhandledCriticalExtensions (and nothing else is). It fails with
// ErrNotEKCertificate when the SAN has no TPM attributes. Serial numbers of
// any positive size are accepted (negative serials are refused by
// crypto/x509 unless the program sets GODEBUG=x509negativeserial=1).
func ParseEKCertificate(b []byte) (*EKCertificate, error) {
	der, err := TrimEKCertificate(b)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotEKCertificate, err)
	}
	var (
		info  TPMInfo
		found bool
	)
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidSubjectAltName) {
			info, found, err = parseTPMSAN(ext.Value)
			if err != nil {
				return nil, err
			}
			break
		}
	}
	if !found {
		return nil, fmt.Errorf("%w: no TPM manufacturer, model or version in the subject alternative name", ErrNotEKCertificate)
	}
	dropHandledSAN(cert)
	return &EKCertificate{Cert: cert, TPM: info, Raw: cert.Raw}, nil
}

// Bundle is a set of CA certificates to verify EK (and IAK) certificates
// against. Only Roots are trust anchors; Intermediates only help to build
// chains.
type Bundle struct {
	Roots, Intermediates *x509.CertPool

	roots, intermediates []*x509.Certificate
}

// ParseBundle reads PEM CERTIFICATE blocks. Self-signed certificates (the
// issuer is the subject and the certificate's own key verifies its
// signature) become Roots, every other certificate (intermediates,
// cross-certificates, roots issued by another root) an Intermediate. A
// Bundle is only as trusted as the PEM given to it: the caller decides
// which roots to trust.
func ParseBundle(pemBytes ...[]byte) (*Bundle, error) {
	b := &Bundle{Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool()}
	for i, data := range pemBytes {
		rest := data
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type != "CERTIFICATE" {
				continue
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("attest: bundle %d: %w", i, err)
			}
			b.Add(c)
		}
	}
	if len(b.roots)+len(b.intermediates) == 0 {
		return nil, fmt.Errorf("attest: bundle: no PEM certificates")
	}
	return b, nil
}

// Add adds one certificate, as ParseBundle does.
func (b *Bundle) Add(c *x509.Certificate) {
	if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
		b.roots = append(b.roots, c)
		b.Roots.AddCert(c)
		return
	}
	b.intermediates = append(b.intermediates, c)
	b.Intermediates.AddCert(c)
}

// Chain verification errors. They wrap the crypto/x509 error.
var (
	// ErrUnknownCA: no chain leads to a root of the bundle.
	ErrUnknownCA = errors.New("attest: certificate not issued by a trusted CA")
	// ErrCertificateExpired: the certificate or a CA on the only possible
	// chain is expired (or not yet valid) at the verification time.
	ErrCertificateExpired = errors.New("attest: certificate expired or not yet valid")
	// ErrIssuerNotCA: the certificate was signed by a key whose certificate
	// is not a CA certificate.
	ErrIssuerNotCA = errors.New("attest: issuer is not a CA")
)

// Verify builds and verifies chains from the EK certificate to a root of
// b at time now, through any intermediates and cross-certificates in b.
// Key usage: any extended key usage is accepted along the chain, and the
// EK certificate itself must carry tcg-kp-EKCertificate (2.23.133.8.1) if
// it has an EKU extension. After Verify succeeds, c.Cert.PublicKey and
// c.TPM are vouched for by the CAs in the returned chains (leaf first).
func (c *EKCertificate) Verify(b *Bundle, now time.Time) ([][]*x509.Certificate, error) {
	if c == nil || c.Cert == nil {
		return nil, fmt.Errorf("attest: verify: no certificate")
	}
	if !hasEKCertificateEKU(c.Cert) {
		return nil, fmt.Errorf("%w: extended key usage does not allow tcg-kp-EKCertificate", ErrNotEKCertificate)
	}
	return verifyChain(c.Cert, b, now)
}

func verifyChain(leaf *x509.Certificate, b *Bundle, now time.Time) ([][]*x509.Certificate, error) {
	if b == nil || b.Roots == nil {
		return nil, fmt.Errorf("%w: empty bundle", ErrUnknownCA)
	}
	if now.IsZero() {
		return nil, fmt.Errorf("attest: verify: zero time")
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         b.Roots,
		Intermediates: b.Intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err == nil {
		return chains, nil
	}
	var cie x509.CertificateInvalidError
	if errors.As(err, &cie) {
		switch cie.Reason {
		case x509.Expired:
			return nil, fmt.Errorf("%w: %w", ErrCertificateExpired, err)
		case x509.NotAuthorizedToSign:
			return nil, fmt.Errorf("%w: %w", ErrIssuerNotCA, err)
		}
	}
	if diag := b.diagnose(leaf, now, 0); diag != nil {
		return nil, fmt.Errorf("%w: %w", diag, err)
	}
	var uae x509.UnknownAuthorityError
	if errors.As(err, &uae) {
		return nil, fmt.Errorf("%w: %w", ErrUnknownCA, err)
	}
	return nil, err
}

// diagnose walks up from c through the bundle to find why no chain
// verified: an issuer that is not a CA, or one that is expired. It returns
// nil if it finds neither.
func (b *Bundle) diagnose(c *x509.Certificate, now time.Time, depth int) error {
	if depth > 8 {
		return nil
	}
	for _, pool := range [][]*x509.Certificate{b.roots, b.intermediates} {
		for _, p := range pool {
			if !bytes.Equal(p.RawSubject, c.RawIssuer) || p == c {
				continue
			}
			if err := c.CheckSignatureFrom(p); err != nil {
				var cve x509.ConstraintViolationError
				if errors.As(err, &cve) && checkSignatureIgnoringCA(c, p) == nil {
					// Signed by p's key, but p is not a CA.
					return ErrIssuerNotCA
				}
				continue
			}
			if now.Before(p.NotBefore) || now.After(p.NotAfter) {
				return ErrCertificateExpired
			}
			if d := b.diagnose(p, now, depth+1); d != nil {
				return d
			}
		}
	}
	return nil
}

// checkSignatureIgnoringCA checks c's signature with parent's key, without
// the CA check of CheckSignatureFrom.
func checkSignatureIgnoringCA(c, parent *x509.Certificate) error {
	return parent.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature)
}
