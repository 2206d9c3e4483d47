package ledger

import (
	"errors"
	"fmt"
)

// Code is a rejection code from the fixed catalogue below. Every refusal a
// partner sees carries one, and a sentence naming the rule it broke.
type Code string

// The catalogue of rejection codes.
const (
	CodeMalformed      Code = "malformed"        // not a well-formed custody envelope/statement
	CodeSchema         Code = "schema"           // fails its kind's JSON Schema
	CodeSubject        Code = "subject-mismatch" // NATS subject does not name the signer and target
	CodeUnknownPartner Code = "unknown-partner"  // signer not in the partner registry
	CodePartnerRevoked Code = "partner-revoked"  // signer revoked before this event
	CodeBadSignature   Code = "bad-signature"    // DSSE signature does not verify with the registered key
	CodeWrongRole      Code = "wrong-role"       // signer's role may not publish this kind
	CodeBadCertificate Code = "bad-certificate"  // partner certificate does not chain to the consortium CA
	CodeAlreadyExists  Code = "already-exists"   // device or partner already registered, offer already accepted by its recipient
	CodeUnknownDevice  Code = "unknown-device"   // no tpm.manufactured for this device
	CodeEKChain        Code = "ek-chain"         // EK certificate does not chain to the TPM trust bundle
	CodeIAKCertificate Code = "iak-certificate"  // IAK certificate does not match or chain
	CodeDeviceID       Code = "device-id"        // device ID is not the SHA-256 of the EK public key
	CodeNotCustodian   Code = "not-custodian"    // signer is not the device's current custodian
	CodeRecipient      Code = "unregistered-recipient"
	CodeNoPendingOffer Code = "no-pending-offer"   // acceptance without a matching pending offer
	CodeNotRecipient   Code = "not-recipient"      // acceptance by someone other than the named recipient
	CodeEquivocation   Code = "equivocation"       // a second, conflicting offer or acceptance
	CodeEvidence       Code = "bad-evidence"       // TPM quote does not verify, bind this event, or match PCRs
	CodeCounters       Code = "counters-backwards" // TPM clock/reset counters went backwards
	CodeFlagged        Code = "device-flagged"     // device is flagged
	CodeDecommissioned Code = "device-decommissioned"
	CodeNotFlagged     Code = "not-flagged"
	CodeInternal       Code = "internal"
)

// Sentinel errors, one family per rule; a *RuleError wraps one.
var (
	ErrRejected       = errors.New("event rejected")
	ErrUnknownDevice  = errors.New("unknown device")
	ErrNotCustodian   = errors.New("not the current custodian")
	ErrEquivocation   = errors.New("equivocation")
	ErrUnknownPartner = errors.New("unknown partner")
)

// RuleError is a refusal: which rule, and a sentence for the publisher.
type RuleError struct {
	Code   Code
	Reason string
	err    error
}

func (e *RuleError) Error() string { return string(e.Code) + ": " + e.Reason }

// Unwrap lets errors.Is match the rule's sentinel and ErrRejected.
func (e *RuleError) Unwrap() []error {
	if e.err != nil {
		return []error{ErrRejected, e.err}
	}
	return []error{ErrRejected}
}

func reject(code Code, format string, args ...any) *RuleError {
	return &RuleError{Code: code, Reason: fmt.Sprintf(format, args...), err: sentinel(code)}
}

func sentinel(c Code) error {
	switch c {
	case CodeUnknownDevice:
		return ErrUnknownDevice
	case CodeNotCustodian:
		return ErrNotCustodian
	case CodeEquivocation:
		return ErrEquivocation
	case CodeUnknownPartner:
		return ErrUnknownPartner
	}
	return nil
}
