// Package attest is the verifier and CA side of TPM 2.0 evidence for
// Custody: it parses and verifies EK certificates as real vendors ship them
// (and makes EK and IAK certificate templates for a vendor's CA), creates
// credential-activation challenges (MakeCredential), and verifies quotes
// and TPM2_Certify statements. It is what the gate and the ledger need, and
// it needs no TPM.
//
// The device side, which talks to a TPM (the in-process simulator, swtpm,
// /dev/tpmrm0) and produces that evidence, is the package attest/tpm, as
// go-tpm-tools splits its client and server. This package does not import
// it, nor anything that needs cgo.
//
// It is a leaf library: it does not log and knows nothing of NATS or of the
// ledger. Its functions are pure software (go-tpm's tpm2 package for TPM
// structures, crypto/x509 and crypto/ecdsa for the cryptography).
//
// # Trust model
//
// The package follows "parse, then verify; trust is in the type". After
// each call, this is what the caller may rely on:
//
//   - Parse and format functions only decode or encode; nothing they
//     return is vouched for: ParseEKCertificate, ParseIAKCertificate,
//     TrimEKCertificate, PublicKeyFromTPMT, PublicArea,
//     ParseTPM2ToolsPCRs, FormatTPM2ToolsPCRs, QuoteFromTPM2Tools. Bytes
//     that come from a device, a partner, a file or the network are
//     untrusted until a Verify function below accepts them.
//   - ParseBundle: a Bundle trusts exactly the self-signed certificates
//     the caller gave it (Roots); the others only help build chains.
//   - EKCertificate.Verify: the certificate's key (Cert.PublicKey) and TPM
//     description are vouched for by a root of the bundle, through the
//     returned chains. That the key is the EK of the device at hand holds
//     only once the caller has compared it with the EK public key the
//     device presented. IAKCertificate.Verify likewise vouches for the IAK
//     key, DeviceID and EKCertDigest; MatchesEK compares data only.
//   - ParseAttestationKey: the key has the form of an IAK (restricted,
//     fixedTPM, signing, a valid public key), nothing more. An attestation
//     key (IAK) is trusted to live in the same TPM as a verified EK only
//     after a credential made with MakeCredential for the IAK's Name and
//     that EK has been recovered by the device (attest/tpm's
//     TPM.ActivateCredential): the TPM releases the secret only if it
//     holds the EK's private key and a loaded object with exactly that
//     Name. The Name commits to the
//     whole public area, so the verifier must also check that area is an
//     IAK, which ParseAttestationKey does.
//   - VerifyQuote (and AttestationKey.VerifyQuote): under an IAK trusted
//     as above, a TPM held the reported PCR values and clock counters at
//     the time it saw the verifier's nonce. The IAK must be a restricted
//     signing key: the TPM refuses to sign external data that looks like
//     a TPM_GENERATED structure with such a key, so the signed TPMS_ATTEST
//     is TPM-made. VerifyQuoteDigest proves the same of the signed PCR
//     digest, without the values (QuoteInfo.PCRs is nil).
//   - CheckMonotonic compares two verified quotes; nothing else orders them.
//   - VerifyCertify: the returned LDevID public key is a non-exportable
//     (fixedTPM, fixedParent, TPM-generated), unrestricted signing key
//     resident in the TPM that holds the IAK, certified after the TPM saw
//     the nonce.
//
// The device side (attest/tpm) trusts the TPM it was opened on: its
// outputs (EK, IAK, Info, ReadEKCertificate, Quote, NewLDevID) are
// evidence for a remote verifier, not proofs to the local caller.
//
// VerifyQuote and VerifyCertify keep decoded IAKs in a small bounded cache
// keyed by their exact bytes; a hit returns what a parse would, so the
// cache changes cost, not results. TPMS_ATTEST, TPMT_SIGNATURE and the
// TPMT_PUBLIC of ECC and RSA signing keys are decoded by hand (wire.go)
// for the same reason, and fuzzed against go-tpm's decoder.
//
// # tpm2-tools
//
// Quotes made by tpm2_quote verify here, and quotes made by attest/tpm
// pass tpm2_checkquote: tpm2-tools writes the message and signature as the
// TPMS_ATTEST and TPMT_SIGNATURE of a Quote; PublicArea reads its public
// keys, ParseTPM2ToolsPCRs and FormatTPM2ToolsPCRs its PCR files
// (tpm2tools.go). The "custody tpm" command is their command-line face.
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
// testdata/ (see testdata/README.md for their provenance). The package's
// tests need no TPM: TPM-made evidence they verify was captured from
// tpm2-tools on swtpm (testdata/tpm2tools/) and from attest/tpm on the
// simulator (testdata/sim/).
package attest
