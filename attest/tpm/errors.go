package tpm

import "errors"

// Sentinel errors of the device side. Functions wrap them with %w so
// callers can test with errors.Is. Where the device refuses what a verifier
// would refuse too (an empty nonce, a key of the wrong kind), it returns
// attest's sentinels (attest.ErrEmptyNonce, attest.ErrKeyAttributes).
var (
	// ErrNoEKCertificate is returned when the TPM has no EK certificate in
	// the NV index for the requested algorithm.
	ErrNoEKCertificate = errors.New("attest: no EK certificate in TPM NV")
	// ErrCredentialRejected is returned when the TPM refuses to activate a
	// credential (it was made for another key, another EK, or tampered).
	ErrCredentialRejected = errors.New("attest: TPM rejected the credential")
	// ErrNoLDevID is returned when no LDevID key has been created yet.
	ErrNoLDevID = errors.New("attest: no LDevID key")
	// ErrLDevIDReplaced is returned by a signer whose LDevID key has been
	// replaced by a later NewLDevID call.
	ErrLDevIDReplaced = errors.New("attest: LDevID key was replaced")
	// ErrUnsupported is returned for operations the TPM transport cannot do.
	ErrUnsupported = errors.New("attest: unsupported")
	// ErrClosed is returned when a closed TPM is used.
	ErrClosed = errors.New("attest: TPM closed")
)
