// Package events is the custody event contract in Go: the in-toto Statement
// that describes one custody event, its DSSE envelope signed by a partner, the
// canonical digests that bind a TPM quote to one event, the NATS subjects and
// stream settings, and the publisher that waits for the ledger's receipt and
// verifies it ([VerifyReceipt]: digest, inclusion proof, checkpoint signed by
// the log's key, through a [ReceiptVerifier] the ledger implements; see
// docs/design/events.md, "What a publisher verifies").
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
// # Partners and their certificates
//
// Every partner (TPM vendor, ODM, OEM, EMS, operator, enrollment gate) holds an
// ECDSA P-256 certificate from the consortium CA. Its subject common name is
// the partner's name, which must be a valid NATS subject token
// ([ValidPartnerName]) because partner names appear in subjects
// (custody.v1.events.<partner>.<device>). Its role ([Roles]) travels in a
// non-critical extension:
//
//	id-custody-partnerRole EXTENSION ::= { SYNTAX UTF8String IDENTIFIED BY OIDPartnerRole }
//
// [VerifyPartner] proves a certificate chains to the consortium root at a given
// time and returns only what it proved ([PartnerIdentity]); [ParseRole] reads
// the role without verifying anything. The consortium CA and the demo PKI
// that issue these certificates are in services/pki.
//
// # The Custody OID arc
//
// Custody owns no IANA Private Enterprise Number, so its OIDs are derived from
// a UUID generated for the project, 43780695-41d0-4eb6-af9a-637ea9d99b61. The
// ITU-T X.667 form of that UUID is 2.25.89681484860435733258801470801477999457,
// but an arc that large cannot name a certificate extension: Go's
// crypto/x509 reads extension OID arcs only up to 2^31-1 and rejects the
// whole certificate otherwise (cryptobyte's readBase128Int), and many other
// stacks store arcs in machine integers too. Custody therefore uses
// Microsoft's GUID-derived arc 1.2.840.113556.1.8000.2554, delegated for
// exactly this purpose, which spells the same UUID as seven small arcs
// (4,4,4,4,4,6,6 hex digits):
//
//	custody arc      1.2.840.113556.1.8000.2554.17272.1685.16848.20150.44954.6520489.14261089 (OIDCustodyArc)
//	partner role     <custody arc>.1   (OIDPartnerRole)
//	LDevID evidence  <custody arc>.2   (attest.OIDLDevIDEvidence)
//
// Further Custody OIDs are numbered under the same arc.
//
// This package does not log and does not verify custody rules; the ledger does.
package events
