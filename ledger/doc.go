// Package ledger verifies custody events against the custody rules and
// appends them to an append-only Merkle log (RFC 6962 hashing, compact
// ranges and proofs from transparency-dev/merkle).
//
// Events arrive on the JetStream stream events.StreamName and are applied in
// stream order by a single writer. Verification is split in two
// (prepare.go): the stateless checks (envelope, schema, subject, partner
// signature, binding digest, TPM quote, the EK and IAK chains of a birth
// record, the leaf body) run in parallel on every core, against facts that
// never change once logged (a partner's certificate, a device's IAK); the
// custody rules, counters, revocations and equivocation run after them in
// stream order (rules.go), and re-check anything the parallel part could not
// know yet (a partner registered, or a device manufactured, earlier in the
// same batch). Accepted events (and equivocations, as evidence) become Rekor
// hashedrekord v0.0.1 leaves (leaf.go). For each fetched batch the ledger
// signs a checkpoint (a C2SP signed note with an ECDSA P-256 key, as Rekor v1
// signs them) and commits leaves, tree nodes, indexes, device and partner
// state, rejections and the last applied stream sequence in one durable
// Store commit. Only then are the messages acked and the publishers answered
// with receipts (inclusion proof + checkpoint) or rejections (a code of the
// catalogue, events.Rejections, and a sentence; see codes.go). A redelivered
// event is recognised by its digest and answered again, so ingest is
// exactly-once.
//
// Reading: the ledger's own API (http.go: checkpoints, proofs, provenance,
// receipts), a Rekor v1 compatible read API that an unmodified rekor-cli
// verifies (rekorapi.go), and offline provenance bundles (bundle.go).
//
// Storage is behind the Store interface owned here (store.go); ledger/pebble
// is the default implementation, ledger/trillian the scale-out one (a
// Trillian tree and MariaDB), and ledger/storetest the conformance suite
// both pass. The top-level bench command measures verified ingest end
// to end (make bench).
package ledger
