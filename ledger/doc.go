// Package ledger verifies custody events against the custody rules and
// appends them to an append-only Merkle log (RFC 6962 hashing, compact
// ranges and proofs from transparency-dev/merkle).
//
// Events arrive on the JetStream stream events.StreamName and are applied in
// stream order by a single writer. For each group of events the ledger
// verifies schema, partner signature, TPM quote and custody rules (rules.go),
// appends accepted events (and equivocations, as evidence) as Rekor
// hashedrekord v0.0.1 leaves, signs a checkpoint (a C2SP signed note with an
// ECDSA P-256 key, as Rekor v1 signs them), and commits leaves, tree nodes,
// indexes, device and partner state, rejections and the last applied stream
// sequence in one durable Store commit. Only then are the messages acked and
// the publishers answered with receipts (inclusion proof + checkpoint) or
// rejections (a catalogued code and a sentence; see codes.go). A redelivered
// event is recognised by its digest and answered again, so ingest is
// exactly-once.
//
// Storage is behind the Store interface owned here (store.go); ledger/pebble
// is the default implementation.
package ledger
