// Package tpm is the device side of Custody's TPM 2.0 evidence: it opens a
// TPM (Open: the in-process go-tpm-tools simulator, swtpm over TCP, the TCG
// reference simulator's protocol, or a Linux character device such as
// /dev/tpmrm0), creates and reads the keys that identify a device (EK, IAK,
// LDevID), reads and writes EK certificates in NV, reads and extends PCRs,
// and makes the evidence a verifier asks for: quotes, credential activation
// and TPM2_Certify statements of LDevID keys. An LDevID also serves as a
// TLS client key (LDevIDSigner).
//
// The verifier and CA side, which checks that evidence and needs no TPM, is
// the package attest, as go-tpm-tools splits its client and server; the
// evidence types (attest.Quote, attest.CertifyEvidence, attest.Credential,
// attest.TPMInfo) are attest's. This package is where cgo lives: the
// simulator is C, and sim_seed.go reaches into it.
//
// A TPM trusts the device it was opened on: its outputs (EK, IAK, Info,
// ReadEKCertificate, Quote, NewLDevID) are evidence for a remote verifier,
// not proofs to the local caller. See attest's package comment for what
// each verification proves.
//
// It is a leaf library: it does not log and knows nothing of NATS or of the
// ledger. See docs/design/architecture.md ("TPM access is behind a URI").
//
// # Specifications
//
//   - TCG TPM 2.0 Library, Part 1–3 (structures and commands).
//   - TCG EK Credential Profile for TPM Family 2.0, version 2.x (the EK
//     templates L-1 and L-2; EK certificates in NV indices 0x01C00002 and
//     0x01C0000A).
//   - TCG TPM 2.0 Keys for Device Identity and Attestation (IAK and LDevID
//     keys, TPM2_Certify of DevID keys).
//   - tpm2-tss's swtpm TCTI (raw TPM commands over TCP), and the TCG
//     reference simulator's TCP protocol (go-tpm's tpm2/transport/tcp).
package tpm
