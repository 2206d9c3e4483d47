// Package attest handles TPM 2.0 evidence for Custody: it opens a TPM,
// creates and reads the keys that identify a device (EK, IAK, LDevID),
// parses and verifies EK certificates as real vendors ship them, runs
// credential activation, and makes and verifies quotes and TPM2_Certify
// statements.
//
// It is a leaf library: it does not log and knows nothing of NATS or of the
// ledger. Verifier-side functions are pure software (go-tpm's tpm2 package
// for TPM structures, crypto/x509 and crypto/ecdsa for the cryptography) and
// need no TPM.
//
// # Trust model
//
// The package follows "parse, then verify; trust is in the type":
//
//   - Bytes that come from a device, a partner or the network are untrusted.
//     Parse functions (ParseEKCertificate, PublicKeyFromTPMT) only decode;
//     nothing they return is vouched for.
//   - An EK public key is trusted to belong to a genuine TPM only after
//     EKCertificate.Verify has built a chain from its certificate to a root
//     the caller chose to trust (Bundle.Roots) and the caller has compared
//     the certificate's key with the EK public key the device presented.
//   - An attestation key (IAK) is trusted to live in the same TPM as that EK
//     only after a credential made with MakeCredential for the IAK's Name
//     and the EK has been recovered by the device (ActivateCredential):
//     the TPM releases the secret only if it holds the EK's private key and
//     a loaded object with exactly that Name. The Name commits to the whole
//     public area, so the verifier must also check that area is an IAK
//     (ParseAttestationKey requires a restricted, fixedTPM signing key).
//   - A quote (VerifyQuote) proves, under an IAK trusted as above, that a
//     TPM held the reported PCR values and clock counters at the time it
//     saw the verifier's nonce. The IAK must be a restricted signing key:
//     the TPM refuses to sign external data that looks like a TPM_GENERATED
//     structure with such a key, so the signed TPMS_ATTEST is TPM-made.
//   - CheckMonotonic compares two verified quotes; nothing else orders them.
//   - An LDevID public key returned by VerifyCertify is trusted to be a
//     non-exportable (fixedTPM, fixedParent, TPM-generated), unrestricted
//     signing key resident in the TPM that holds the IAK.
//
// The in-TPM side (type TPM) trusts the TPM it was opened on: its outputs
// are evidence for a remote verifier, not proofs to the local caller.
//
// # Specifications
//
//   - TCG TPM 2.0 Library, Part 1–3 (structures and commands).
//   - TCG EK Credential Profile for TPM Family 2.0, version 2.x (EK
//     certificates, NV indices 0x01C00002 and 0x01C0000A).
//   - TCG TPM 2.0 Keys for Device Identity and Attestation (IAK, IDevID,
//     LDevID, TPM2_Certify of DevID keys).
//   - RFC 5280 (X.509), IEEE 802.1AR (DevID).
//
// Vendor quirks that break naive parsers are handled in quirks.go, each
// with its own test; the real certificates they were found in are in
// testdata/ (see testdata/README.md for their provenance).
package attest
