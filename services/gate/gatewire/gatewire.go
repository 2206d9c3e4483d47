// Package gatewire is the wire format of the enrollment gate's device API:
// the requests and answers a device exchanges with the gate at first boot
// (RegisterRequest, Challenge, Outcome and its RegistrationState and
// Decision), the api-versions, registration statuses, rule names and error
// codes, and the SAS token a device signs with its activated credential.
// It is Azure DPS's device registration protocol with TPM attestation, plus
// what the gate adds (the quote and LDevID evidence, the decision record).
//
// Both sides import it: services/gate, which serves the API, and the device
// agent (services/device, cmd/custody-agent), which must not depend on the
// gate and the ledger behind it. It holds data and the token only, no
// logic of the gate's.
//
// See docs/design/enrollment.md for the protocol, the rules and their
// error codes.
package gatewire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// API versions the gate's device API accepts (DPS's): the official Node.js
// SDK's 2019-03-31, 2021-06-01, 2021-10-01, and 2025-07-01-preview, which
// adds the csr field.
const (
	APIVersion2019 = "2019-03-31"
	APIVersion2021 = "2021-06-01"
	APIVersion     = "2021-10-01"
	APIVersion2025 = "2025-07-01-preview"
)

// SupportedAPIVersions lists the accepted api-version values.
var SupportedAPIVersions = []string{APIVersion2019, APIVersion2021, APIVersion, APIVersion2025}

// Error codes of requests refused before any decision (DPS's error body).
const (
	CodeBadRequest         = 400004
	CodeUnsupportedVersion = 400002
	CodeNotFound           = 404001
	CodeThrottled          = 429001 // too many refused registrations: retry after Retry-After
	CodeInternal           = 500000
)

// Check is one policy check's outcome.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Decision is the record of one enrollment decision.
type Decision struct {
	RegistrationID string    `json:"registrationId"`
	OperationID    string    `json:"operationId"`
	Time           time.Time `json:"time"`
	Allowed        bool      `json:"allowed"`
	// Rule names the first check that failed (empty when allowed; one of
	// the events.Rule* names); Code is its DPS-shaped error code
	// (events.RuleErrorCode).
	Rule    string  `json:"rule,omitempty"`
	Code    int     `json:"errorCode,omitempty"`
	Message string  `json:"message,omitempty"`
	Checks  []Check `json:"checks"`
	// Logged says the decision is in the ledger: LogIndex is its
	// device.enrolled or enrollment.refused entry. LogNote says why a
	// refusal was not logged (unknown device, rate limit, ledger error).
	Logged   bool   `json:"logged"`
	LogIndex uint64 `json:"logIndex,omitempty"`
	LogNote  string `json:"logNote,omitempty"`
	// LDevIDSerial is the serial number (hex) of the LDevID issued.
	LDevIDSerial string `json:"ldevidSerial,omitempty"`
}

// TPMAttestation is the device's TPM attestation data, as DPS names it
// (its TpmAttestation): the EK public area, the registration's identity.
type TPMAttestation struct {
	EndorsementKey []byte `json:"endorsementKey"` // TPMT_PUBLIC of the EK
	// StorageRootKey is, for the gate, the TPMT_PUBLIC of the device's IAK:
	// in DPS the key the challenge is bound to besides the EK (there the
	// SRK), here the key the credential is made for. Required by the gate.
	StorageRootKey []byte `json:"storageRootKey,omitempty"`
}

// Evidence is what the device sends with its authorised call: a quote and
// the LDevID key's certification, both over the gate's nonce.
type Evidence struct {
	Quote  *events.Evidence        `json:"quote"`
	LDevID *attest.CertifyEvidence `json:"ldevid"`
}

// RegisterRequest is the body of PUT …/register.
type RegisterRequest struct {
	RegistrationID string          `json:"registrationId"`
	TPM            *TPMAttestation `json:"tpm"`
	Payload        *Evidence       `json:"payload,omitempty"`
	// CSR (api-version 2025-07-01-preview) is a base64 DER PKCS#10
	// request signed by the LDevID key, subject CN = the registration ID.
	// When present its key must be the one the IAK certified.
	CSR string `json:"csr,omitempty"`
}

// Challenge is the 401 answer to an unauthorised registration: the
// credential (DPS's authenticationKey) and the nonce to quote.
type Challenge struct {
	AuthenticationKey []byte `json:"authenticationKey"` // JSON of attest.Credential
	Nonce             []byte `json:"nonce"`
}

// Outcome is a registration operation, shaped like DPS's
// RegistrationOperationStatus: status "assigning" while it runs, then
// "assigned" or "failed".
type Outcome struct {
	OperationID       string             `json:"operationId"`
	Status            string             `json:"status"`
	RegistrationState *RegistrationState `json:"registrationState,omitempty"`
}

// RegistrationState is DPS's registration state (DeviceRegistrationResult),
// plus the LDevID chain (issuedCertificateChain, as DPS's
// 2025-07-01-preview names it), where to register next (the DPS endpoint
// and ID scope) and the decision record.
type RegistrationState struct {
	RegistrationID         string    `json:"registrationId"`
	Status                 string    `json:"status"`
	Substatus              string    `json:"substatus,omitempty"`
	ErrorCode              int       `json:"errorCode,omitempty"`
	ErrorMessage           string    `json:"errorMessage,omitempty"`
	CreatedDateTimeUTC     time.Time `json:"createdDateTimeUtc"`
	LastUpdatedDateTimeUTC time.Time `json:"lastUpdatedDateTimeUtc"`
	ETag                   string    `json:"etag,omitempty"`
	IssuedCertificateChain [][]byte  `json:"issuedCertificateChain,omitempty"`
	DPSEndpoint            string    `json:"dpsEndpoint,omitempty"`
	IDScope                string    `json:"idScope,omitempty"`
	Decision               *Decision `json:"decision,omitempty"`
}

// Registration status values (DPS's).
const (
	StatusAssigning = "assigning"
	StatusAssigned  = "assigned"
	StatusFailed    = "failed"
)

// SASToken signs a DPS SAS token for registration regID in idScope with key
// (the activated secret), as a device does after activating its credential.
func SASToken(idScope, regID string, key []byte, expiry time.Time) string {
	sr := url.QueryEscape(idScope + "/registrations/" + regID)
	se := strconv.FormatInt(expiry.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(sr + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return "SharedAccessSignature sr=" + sr + "&sig=" + sig + "&se=" + se + "&skn=registration"
}
