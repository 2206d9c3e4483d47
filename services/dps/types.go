package dps

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// API versions accepted by the emulator. DeviceClient and ServiceClient use
// APIVersion by default.
const (
	APIVersion2019 = "2019-03-31" // the official Node.js device SDK
	APIVersion2021 = "2021-06-01"
	APIVersion     = "2021-10-01"
	APIVersion2025 = "2025-07-01-preview" // adds csr / issuedCertificateChain
)

// SupportedAPIVersions lists the api-version values the emulator accepts.
var SupportedAPIVersions = []string{APIVersion2019, APIVersion2021, APIVersion, APIVersion2025}

// Registration (operation) status values.
const (
	StatusUnassigned = "unassigned"
	StatusAssigning  = "assigning"
	StatusAssigned   = "assigned"
	StatusFailed     = "failed"
	StatusDisabled   = "disabled"
)

// Substatus values of an assigned registration.
const (
	SubstatusInitialAssignment                = "initialAssignment"
	SubstatusDeviceDataMigrated               = "deviceDataMigrated"
	SubstatusDeviceDataReset                  = "deviceDataReset"
	SubstatusReprovisionedToInitialAssignment = "reprovisionedToInitialAssignment"
)

// Provisioning status of an enrollment.
const (
	ProvisioningEnabled  = "enabled"
	ProvisioningDisabled = "disabled"
)

// Allocation policies.
const (
	AllocationHashed     = "hashed"
	AllocationGeoLatency = "geoLatency"
	AllocationStatic     = "static"
	AllocationCustom     = "custom"
)

// Attestation types.
const (
	AttestationX509         = "x509"
	AttestationTPM          = "tpm"
	AttestationSymmetricKey = "symmetricKey"
)

// DeviceRegistration is the body of the device API's register and status
// lookup calls.
type DeviceRegistration struct {
	RegistrationID string          `json:"registrationId"`
	Payload        json.RawMessage `json:"payload,omitempty"`
	TPM            *TPMAttestation `json:"tpm,omitempty"`
	CSR            string          `json:"csr,omitempty"` // 2025-07-01-preview
}

// RegistrationOperationStatus is the device API's answer to register and to an
// operation status lookup.
type RegistrationOperationStatus struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
}

// RegistrationState is a device's registration: DeviceRegistrationResult in
// the device API, DeviceRegistrationState in the service API (which omits
// x509).
type RegistrationState struct {
	RegistrationID         string                  `json:"registrationId"`
	CreatedDateTimeUTC     time.Time               `json:"createdDateTimeUtc,omitzero"`
	AssignedHub            string                  `json:"assignedHub,omitempty"`
	DeviceID               string                  `json:"deviceId,omitempty"`
	Status                 string                  `json:"status,omitempty"`
	Substatus              string                  `json:"substatus,omitempty"`
	ErrorCode              int                     `json:"errorCode,omitempty"`
	ErrorMessage           string                  `json:"errorMessage,omitempty"`
	LastUpdatedDateTimeUTC time.Time               `json:"lastUpdatedDateTimeUtc,omitzero"`
	ETag                   string                  `json:"etag,omitempty"`
	Payload                json.RawMessage         `json:"payload,omitempty"`
	X509                   *X509RegistrationResult `json:"x509,omitempty"`
	IssuedCertificateChain []string                `json:"issuedCertificateChain,omitempty"` // 2025-07-01-preview
}

// X509RegistrationResult tells a device which certificate it was
// authenticated with.
type X509RegistrationResult struct {
	CertificateInfo        *X509CertificateInfo `json:"certificateInfo,omitempty"`
	EnrollmentGroupID      string               `json:"enrollmentGroupId,omitempty"`
	SigningCertificateInfo *X509CertificateInfo `json:"signingCertificateInfo,omitempty"`
}

// X509CertificateInfo describes a certificate as DPS reports it.
type X509CertificateInfo struct {
	SubjectName      string    `json:"subjectName"`
	SHA1Thumbprint   string    `json:"sha1Thumbprint"`
	SHA256Thumbprint string    `json:"sha256Thumbprint"`
	IssuerName       string    `json:"issuerName"`
	NotBeforeUTC     time.Time `json:"notBeforeUtc"`
	NotAfterUTC      time.Time `json:"notAfterUtc"`
	SerialNumber     string    `json:"serialNumber"`
	Version          int       `json:"version"`
}

// CertificateInfo returns c's X509CertificateInfo: subject and issuer in
// RFC 2253 form, upper-case hex thumbprints and serial number.
func CertificateInfo(c *x509.Certificate) *X509CertificateInfo {
	s1 := sha1.Sum(c.Raw)
	s256 := sha256.Sum256(c.Raw)
	return &X509CertificateInfo{
		SubjectName:      c.Subject.String(),
		SHA1Thumbprint:   strings.ToUpper(hex.EncodeToString(s1[:])),
		SHA256Thumbprint: strings.ToUpper(hex.EncodeToString(s256[:])),
		IssuerName:       c.Issuer.String(),
		NotBeforeUTC:     c.NotBefore.UTC(),
		NotAfterUTC:      c.NotAfter.UTC(),
		SerialNumber:     strings.ToUpper(c.SerialNumber.Text(16)),
		Version:          c.Version,
	}
}

// IndividualEnrollment is a device enrollment record.
type IndividualEnrollment struct {
	RegistrationID             string                      `json:"registrationId"`
	DeviceID                   string                      `json:"deviceId,omitempty"`
	RegistrationState          *RegistrationState          `json:"registrationState,omitempty"`
	Attestation                AttestationMechanism        `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                json.RawMessage             `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         time.Time                   `json:"createdDateTimeUtc,omitzero"`
	LastUpdatedDateTimeUTC     time.Time                   `json:"lastUpdatedDateTimeUtc,omitzero"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
	OptionalDeviceInformation  json.RawMessage             `json:"optionalDeviceInformation,omitempty"`
}

// EnrollmentGroup is an enrollment group record.
type EnrollmentGroup struct {
	EnrollmentGroupID          string                      `json:"enrollmentGroupId"`
	Attestation                AttestationMechanism        `json:"attestation"`
	Capabilities               *DeviceCapabilities         `json:"capabilities,omitempty"`
	IoTHubHostName             string                      `json:"iotHubHostName,omitempty"`
	InitialTwin                json.RawMessage             `json:"initialTwin,omitempty"`
	ETag                       string                      `json:"etag,omitempty"`
	ProvisioningStatus         string                      `json:"provisioningStatus,omitempty"`
	ReprovisionPolicy          *ReprovisionPolicy          `json:"reprovisionPolicy,omitempty"`
	CreatedDateTimeUTC         time.Time                   `json:"createdDateTimeUtc,omitzero"`
	LastUpdatedDateTimeUTC     time.Time                   `json:"lastUpdatedDateTimeUtc,omitzero"`
	AllocationPolicy           string                      `json:"allocationPolicy,omitempty"`
	IoTHubs                    []string                    `json:"iotHubs,omitempty"`
	CustomAllocationDefinition *CustomAllocationDefinition `json:"customAllocationDefinition,omitempty"`
}

// AttestationMechanism is how devices of an enrollment prove who they are.
type AttestationMechanism struct {
	Type         string                   `json:"type"`
	TPM          *TPMAttestation          `json:"tpm,omitempty"`
	X509         *X509Attestation         `json:"x509,omitempty"`
	SymmetricKey *SymmetricKeyAttestation `json:"symmetricKey,omitempty"`
}

// X509Attestation holds an enrollment's certificates.
type X509Attestation struct {
	ClientCertificates  *X509Certificates `json:"clientCertificates,omitempty"`
	SigningCertificates *X509Certificates `json:"signingCertificates,omitempty"`
	CAReferences        *X509CAReferences `json:"caReferences,omitempty"`
}

// X509Certificates is a primary and an optional secondary certificate.
type X509Certificates struct {
	Primary   *X509CertificateWithInfo `json:"primary,omitempty"`
	Secondary *X509CertificateWithInfo `json:"secondary,omitempty"`
}

// X509CertificateWithInfo is a certificate (base64 DER or PEM) and, in
// answers, its description.
type X509CertificateWithInfo struct {
	Certificate string               `json:"certificate,omitempty"`
	Info        *X509CertificateInfo `json:"info,omitempty"`
}

// X509CAReferences names CA certificates registered with the service.
type X509CAReferences struct {
	Primary   string `json:"primary,omitempty"`
	Secondary string `json:"secondary,omitempty"`
}

// TPMAttestation is TPM attestation (not supported by the emulator).
type TPMAttestation struct {
	EndorsementKey string `json:"endorsementKey"`
	StorageRootKey string `json:"storageRootKey,omitempty"`
}

// SymmetricKeyAttestation is symmetric-key attestation (not supported by the
// emulator).
type SymmetricKeyAttestation struct {
	PrimaryKey   string `json:"primaryKey,omitempty"`
	SecondaryKey string `json:"secondaryKey,omitempty"`
}

// DeviceCapabilities of an enrolled device.
type DeviceCapabilities struct {
	IoTEdge bool `json:"iotEdge"`
}

// ReprovisionPolicy is what DPS does when an assigned device registers again.
// DPS's default (nil) is both true.
type ReprovisionPolicy struct {
	UpdateHubAssignment bool `json:"updateHubAssignment"`
	MigrateDeviceData   bool `json:"migrateDeviceData"`
}

// CustomAllocationDefinition names a custom allocation webhook (not supported
// by the emulator).
type CustomAllocationDefinition struct {
	WebhookURL string `json:"webhookUrl"`
	APIVersion string `json:"apiVersion"`
}

// NewX509Enrollment returns an enabled individual enrollment for
// registrationID whose devices authenticate with primary (and, if not nil,
// secondary) as their TLS client certificate.
func NewX509Enrollment(registrationID string, primary, secondary *x509.Certificate) IndividualEnrollment {
	certs := &X509Certificates{Primary: &X509CertificateWithInfo{Certificate: EncodeCertificate(primary)}}
	if secondary != nil {
		certs.Secondary = &X509CertificateWithInfo{Certificate: EncodeCertificate(secondary)}
	}
	return IndividualEnrollment{
		RegistrationID:     registrationID,
		ProvisioningStatus: ProvisioningEnabled,
		Attestation: AttestationMechanism{
			Type: AttestationX509,
			X509: &X509Attestation{ClientCertificates: certs},
		},
	}
}

// NewX509EnrollmentGroup returns an enabled enrollment group whose devices'
// certificates chain to signing.
func NewX509EnrollmentGroup(groupID string, signing *x509.Certificate) EnrollmentGroup {
	return EnrollmentGroup{
		EnrollmentGroupID:  groupID,
		ProvisioningStatus: ProvisioningEnabled,
		Attestation: AttestationMechanism{
			Type: AttestationX509,
			X509: &X509Attestation{SigningCertificates: &X509Certificates{
				Primary: &X509CertificateWithInfo{Certificate: EncodeCertificate(signing)},
			}},
		},
	}
}

// EncodeCertificate returns c as DPS takes it: base64 of the DER.
func EncodeCertificate(c *x509.Certificate) string {
	return base64.StdEncoding.EncodeToString(c.Raw)
}

// ParseCertificate parses a certificate as DPS accepts it: PEM, or base64 of
// the DER (whitespace ignored).
func ParseCertificate(s string) (*x509.Certificate, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty certificate")
	}
	var der []byte
	if strings.HasPrefix(s, "-----BEGIN") {
		b, rest := pem.Decode([]byte(s))
		if b == nil || b.Type != "CERTIFICATE" {
			return nil, errors.New("PEM does not hold a CERTIFICATE block")
		}
		if len(strings.TrimSpace(string(rest))) != 0 {
			return nil, errors.New("more than one PEM block")
		}
		der = b.Bytes
	} else {
		clean := strings.Map(func(r rune) rune {
			if r == ' ' || r == '\n' || r == '\r' || r == '\t' {
				return -1
			}
			return r
		}, s)
		var err error
		der, err = base64.StdEncoding.DecodeString(clean)
		if err != nil {
			return nil, fmt.Errorf("neither PEM nor base64: %v", err)
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return c, nil
}
