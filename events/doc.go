// Package events is the custody event contract in Go: the in-toto Statement
// that describes one custody event, its DSSE envelope signed by a partner, the
// canonical digests that bind a TPM quote to one event, the NATS subjects and
// stream settings, and the publisher that waits for the ledger's receipt.
//
// The contract, for a partner's engineer:
//
//   - A custody event is an in-toto Statement v1 (https://in-toto.io/Statement/v1)
//     whose subject is the device ("device:<id>", digest sha256 = device ID, the
//     SHA-256 of the EK's SPKI DER) and whose predicate is a [Predicate].
//   - The Statement is the payload of a DSSE envelope
//     (https://github.com/secure-systems-lab/dsse) of type
//     "application/vnd.in-toto+json", signed by the partner's ECDSA P-256 key.
//   - The event's digest is SHA-256 of the DSSE pre-authentication encoding
//     (PAE) of that payload: it is the hash a Rekor hashedrekord entry carries,
//     the JetStream Nats-Msg-Id, and the ledger's permanent dedup key.
//   - The TPM quote in predicate.evidence has qualifyingData equal to
//     [BindingDigest]: SHA-256 of the RFC 8785 canonical JSON of the payload
//     with predicate.evidence removed. A quote therefore binds exactly one event.
//
// This package does not log and does not verify custody rules; the ledger does.
package events
