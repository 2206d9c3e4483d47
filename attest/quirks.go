package attest

// Vendor quirks: what real EK certificates do that breaks naive parsers.
// Each quirk has its own function here and its own test in quirks_test.go;
// testdata/README.md lists the certificates they were found in (G1..G8).

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TrimEKCertificate returns the certificate DER inside raw EK certificate
// NV contents, without copying:
//
//   - quirk NV header: a TCG PC Client "stored certificate" header
//     (tag 0x1001, certType, 16-bit size, then tag 0x1002) is removed;
//   - quirk G4 NV padding: bytes after the outer DER SEQUENCE (0xFF
//     padding of an NV index larger than the certificate, or any other
//     trailing data) are cut, using the DER length.
//
// The result is a single well-formed DER element; it is not parsed further.
func TrimEKCertificate(b []byte) ([]byte, error) {
	b = stripNVHeader(b)
	s := cryptobyte.String(b)
	var cert cryptobyte.String
	if !s.ReadASN1Element(&cert, cbasn1.SEQUENCE) {
		return nil, fmt.Errorf("%w: not a DER certificate", ErrNotEKCertificate)
	}
	return cert, nil
}

// stripNVHeader removes the TCG PC Client stored-certificate header
// (TCG_PCCLIENT_STORED_CERT: tag 0x1001, certType byte, UINT16 certSize,
// followed by TCG_FULL_CERT: tag 0x1002 and the DER) when present.
func stripNVHeader(b []byte) []byte {
	if len(b) >= 7 && b[0] == 0x10 && b[1] == 0x01 {
		size := int(binary.BigEndian.Uint16(b[3:5]))
		rest := b[5:]
		if size <= len(rest) {
			rest = rest[:size]
		}
		if len(rest) >= 2 && rest[0] == 0x10 && rest[1] == 0x02 {
			rest = rest[2:]
		}
		return rest
	}
	return b
}

// Object identifiers of the TCG EK Credential Profile.
var (
	oidTPMManufacturer    = asn1.ObjectIdentifier{2, 23, 133, 2, 1}
	oidTPMModel           = asn1.ObjectIdentifier{2, 23, 133, 2, 2}
	oidTPMVersion         = asn1.ObjectIdentifier{2, 23, 133, 2, 3}
	oidTPMSpecification   = asn1.ObjectIdentifier{2, 23, 133, 2, 16}
	oidEKCertificateEKU   = asn1.ObjectIdentifier{2, 23, 133, 8, 1}
	oidSubjectAltName     = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidSubjectDirAttrs    = asn1.ObjectIdentifier{2, 5, 29, 9}
	tagDirectoryName      = 4
	tcgSpecFamily         = "2.0"
	tcgSpecLevel          = 0
	tcgSpecRevision       = 138
	maxDirectoryNameValue = 256
)

// attrSET is one RDN: a SET OF AttributeTypeAndValue (the SET suffix makes
// encoding/asn1 expect a SET).
type attrSET []struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// parseTPMSAN reads the TPM manufacturer, model and version from a subject
// alternative name extension value (quirk G1: a SAN holding only a
// directoryName, marked critical because the subject is empty). The
// attributes may be spread over several RDNs or grouped in one multi-valued
// RDN whose members are not in DER SET order (quirk G6, Nuvoton); both are
// read. Other GeneralName forms (for example the hwModuleName otherName of
// the TCG example certificates) are skipped.
func parseTPMSAN(v []byte) (TPMInfo, bool, error) {
	var names []asn1.RawValue
	rest, err := asn1.Unmarshal(v, &names)
	if err != nil || len(rest) != 0 {
		return TPMInfo{}, false, fmt.Errorf("%w: malformed subject alternative name", ErrNotEKCertificate)
	}
	var info TPMInfo
	found := false
	for _, gn := range names {
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != tagDirectoryName || !gn.IsCompound {
			continue
		}
		var rdns []attrSET
		rest, err := asn1.Unmarshal(gn.Bytes, &rdns)
		if err != nil || len(rest) != 0 {
			return TPMInfo{}, false, fmt.Errorf("%w: malformed directoryName in subject alternative name", ErrNotEKCertificate)
		}
		for _, rdn := range rdns {
			for _, a := range rdn {
				var dst *string
				switch {
				case a.Type.Equal(oidTPMManufacturer):
					dst = &info.Manufacturer
				case a.Type.Equal(oidTPMModel):
					dst = &info.Model
				case a.Type.Equal(oidTPMVersion):
					dst = &info.Version
				default:
					continue
				}
				s, err := directoryString(a.Value)
				if err != nil {
					return TPMInfo{}, false, fmt.Errorf("%w: TPM attribute %v: %v", ErrNotEKCertificate, a.Type, err)
				}
				if *dst != "" && *dst != s {
					return TPMInfo{}, false, fmt.Errorf("%w: TPM attribute %v given twice", ErrNotEKCertificate, a.Type)
				}
				*dst = s
				found = true
			}
		}
	}
	return info, found, nil
}

// directoryString decodes the string forms TPM attributes use (the TCG
// profile says UTF8String; PrintableString and IA5String are seen too).
func directoryString(v asn1.RawValue) (string, error) {
	if v.Class != asn1.ClassUniversal || v.IsCompound {
		return "", fmt.Errorf("not a string")
	}
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
	default:
		return "", fmt.Errorf("unsupported string type %d", v.Tag)
	}
	var s string
	if _, err := asn1.Unmarshal(v.FullBytes, &s); err != nil {
		return "", err
	}
	if len(s) > maxDirectoryNameValue {
		return "", fmt.Errorf("value too long")
	}
	return s, nil
}

// dropHandledSAN removes the subject alternative name from the critical
// extensions Go could not handle, once parseTPMSAN has understood it (quirk
// G1). Any other unhandled critical extension stays, so Verify still fails
// on it.
func dropHandledSAN(c *x509.Certificate) {
	out := c.UnhandledCriticalExtensions[:0]
	for _, id := range c.UnhandledCriticalExtensions {
		if !id.Equal(oidSubjectAltName) {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		out = nil
	}
	c.UnhandledCriticalExtensions = out
}

// hasEKCertificateEKU reports whether a certificate may be used as an EK
// certificate (quirk G2: the only EKU is tcg-kp-EKCertificate, which Go
// files under UnknownExtKeyUsage). A certificate without an EKU extension,
// or with anyExtendedKeyUsage, is accepted.
func hasEKCertificateEKU(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageAny {
			return true
		}
	}
	for _, u := range c.UnknownExtKeyUsage {
		if u.Equal(oidEKCertificateEKU) {
			return true
		}
	}
	return false
}
