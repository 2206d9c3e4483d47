package dps

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error codes in DPS's shape: six digits, the first three the HTTP status.
// CodeUnauthorized (401002) is the code DPS itself returns for a device it
// does not authenticate; the rest are the emulator's catalogue.
const (
	CodeInvalidRequest         = 400001 // body or parameters malformed
	CodeUnsupportedAPIVersion  = 400002 // api-version missing or not supported
	CodeInvalidRegistrationID  = 400003 // registration or enrollment ID malformed
	CodeUnsupportedFeature     = 400004 // a DPS feature the emulator does not emulate
	CodeNoHubAvailable         = 400201 // registrationState: the enrollment allows no linked hub
	CodeUnauthorized           = 401002 // no, bad or unacceptable credentials
	CodeEnrollmentDisabled     = 403001 // registrationState: the enrollment is disabled
	CodeNotFound               = 404001 // ID scope, operation, registration or path unknown
	CodeEnrollmentNotFound     = 404002 // individual enrollment or group unknown
	CodeMethodNotAllowed       = 405001
	CodeConflict               = 409001 // a create (PUT without If-Match) of a resource that exists
	CodePreconditionFailed     = 412002 // If-Match does not match the current etag
	CodeRequestEntityTooLarge  = 413001
	CodeUnsupportedContentType = 415001
	CodeInternal               = 500001
)

// Sentinel errors; errors.Is matches an [*Error] by HTTP status and a
// [*RegistrationError] by status.
var (
	ErrBadRequest           = errors.New("dps: bad request")
	ErrUnauthorized         = errors.New("dps: unauthorized")
	ErrNotFound             = errors.New("dps: not found")
	ErrConflict             = errors.New("dps: conflict (the resource already exists)")
	ErrPreconditionFailed   = errors.New("dps: precondition failed (etag mismatch)")
	ErrThrottled            = errors.New("dps: throttled")
	ErrRegistrationFailed   = errors.New("dps: registration failed")
	ErrRegistrationDisabled = errors.New("dps: registration disabled")
)

// Error is a refusal by a DPS API: the HTTP status and DPS's error body
// (ProvisioningServiceErrorDetails).
type Error struct {
	StatusCode   int             `json:"-"`
	ErrorCode    int             `json:"errorCode"`
	TrackingID   string          `json:"trackingId,omitempty"`
	Message      string          `json:"message"`
	TimestampUTC string          `json:"timestampUtc,omitempty"`
	Info         json.RawMessage `json:"info,omitempty"`
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.StatusCode)
	}
	if e.ErrorCode != 0 {
		return fmt.Sprintf("dps: %d %s (errorCode %d, trackingId %s)", e.StatusCode, msg, e.ErrorCode, e.TrackingID)
	}
	return fmt.Sprintf("dps: %d %s", e.StatusCode, msg)
}

// Is matches the sentinel for e's HTTP status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.StatusCode == http.StatusBadRequest
	case ErrUnauthorized:
		return e.StatusCode == http.StatusUnauthorized
	case ErrNotFound:
		return e.StatusCode == http.StatusNotFound
	case ErrConflict:
		return e.StatusCode == http.StatusConflict
	case ErrPreconditionFailed:
		return e.StatusCode == http.StatusPreconditionFailed
	case ErrThrottled:
		return e.StatusCode == http.StatusTooManyRequests
	}
	return false
}

// RegistrationError is a registration that ended without an assignment
// (status failed or disabled).
type RegistrationError struct {
	OperationID  string
	Status       string // StatusFailed or StatusDisabled
	ErrorCode    int
	ErrorMessage string
	State        *RegistrationState // as returned by the service, may be nil
}

func (e *RegistrationError) Error() string {
	s := fmt.Sprintf("dps: registration %s", e.Status)
	if e.ErrorMessage != "" {
		s += ": " + e.ErrorMessage
	}
	if e.ErrorCode != 0 {
		s += fmt.Sprintf(" (errorCode %d)", e.ErrorCode)
	}
	return s
}

// Is matches ErrRegistrationDisabled for status disabled and
// ErrRegistrationFailed otherwise.
func (e *RegistrationError) Is(target error) bool {
	switch target {
	case ErrRegistrationDisabled:
		return e.Status == StatusDisabled
	case ErrRegistrationFailed:
		return e.Status != StatusDisabled
	}
	return false
}
