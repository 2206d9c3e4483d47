package attest

import "errors"

// Sentinel errors. Functions wrap them with %w so callers can test with
// errors.Is; every rejection names the rule it broke.
var (
	// ErrEmptyNonce is returned when a nonce (qualifying data) is missing.
	ErrEmptyNonce = errors.New("attest: empty nonce")
	// ErrBadSignature is returned when a TPM signature does not verify
	// under the given key.
	ErrBadSignature = errors.New("attest: signature does not verify")
	// ErrNonceMismatch is returned when a TPMS_ATTEST's extraData is not
	// the expected nonce.
	ErrNonceMismatch = errors.New("attest: nonce mismatch")
	// ErrPCRDigestMismatch is returned when the PCR values supplied with a
	// quote do not hash to the digest the TPM signed.
	ErrPCRDigestMismatch = errors.New("attest: PCR digest mismatch")
	// ErrPCRSelectionMismatch is returned when the PCRs a quote covers are
	// not exactly the PCRs supplied with it (or are not in the SHA-256
	// bank).
	ErrPCRSelectionMismatch = errors.New("attest: PCR selection mismatch")
	// ErrNotAQuote is returned when signed attestation data is not a
	// TPM-generated TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE.
	ErrNotAQuote = errors.New("attest: not a TPM quote")
	// ErrNotACertify is returned when signed attestation data is not a
	// TPM-generated TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY.
	ErrNotACertify = errors.New("attest: not a TPM certify statement")
	// ErrNameMismatch is returned when a certify statement names an object
	// other than the public area supplied with it.
	ErrNameMismatch = errors.New("attest: certified name does not match public area")
	// ErrKeyAttributes is returned when a key's TPM attributes or algorithm
	// are not the ones the operation requires (for example a quote signed
	// by an unrestricted key, or an LDevID that is restricted or exportable).
	ErrKeyAttributes = errors.New("attest: key attributes not acceptable")
	// ErrMalformed is returned when TPM structures cannot be decoded or are
	// not canonically encoded.
	ErrMalformed = errors.New("attest: malformed TPM structure")

	// ErrResetCountDecreased: the later quote has a lower TPM resetCount.
	ErrResetCountDecreased = errors.New("attest: TPM resetCount went backwards")
	// ErrRestartCountDecreased: same resetCount, lower restartCount.
	ErrRestartCountDecreased = errors.New("attest: TPM restartCount went backwards")
	// ErrClockWentBackwards: same resetCount and restartCount, lower clock.
	ErrClockWentBackwards = errors.New("attest: TPM clock went backwards")

	// ErrNotEKCertificate is returned when bytes are not an EK certificate
	// in the TCG EK Credential Profile sense (no TPM manufacturer/model/
	// version in the subject alternative name, or wrong EKU).
	ErrNotEKCertificate = errors.New("attest: not a TCG EK certificate")
)
