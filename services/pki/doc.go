// Package pki holds Custody's certificate authorities, partner certificates and
// the demo PKI that `custody pki init` writes and custodyd loads.
//
// # Certificate authorities
//
// A [CA] is a certificate and its signer. [NewRootCA] and [CA.NewSubCA] make
// ECDSA P-256 CAs (RFC 5280 §4.2.1.9 basic constraints, key usage keyCertSign
// and cRLSign, subject key identifier set); [CA.Issue] signs a caller's template
// (TCG EK certificate templates with a critical subjectAltName in
// ExtraExtensions survive untouched); [CA.CrossCertify] re-issues another CA's
// subject, key and key identifier under this CA, the way a WebTrust root
// (GlobalSign) cross-signs a TPM vendor's on-premises root, so an EK chain
// verifies either to the vendor root or, through the cross-certificate, to the
// WebTrust root; [CA.CRL] signs an RFC 5280 §5 CRL.
//
// # Partner certificates
//
// Every partner (TPM vendor, ODM, OEM, EMS, operator, enrollment gate) holds an
// ECDSA P-256 certificate from the consortium CA. Its subject common name is
// the partner's name, which must be a valid NATS subject token
// ([a-z0-9-]{1,64}) because partner names appear in subjects
// (custody.v1.events.<partner>.<device>). Its role travels in a non-critical
// extension:
//
//	id-custody-partnerRole EXTENSION ::= { SYNTAX UTF8String IDENTIFIED BY OIDPartnerRole }
//
// [VerifyPartner] proves a certificate chains to the consortium root at a given
// time and returns only what it proved ([Identity]); [ParseRole] reads the
// role without verifying anything.
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
//	custody arc      1.2.840.113556.1.8000.2554.17272.1685.16848.20150.44954.6520489.14261089
//	partner role     <custody arc>.1   (OIDPartnerRole)
//
// Further Custody OIDs are numbered under the same arc.
//
// # The demo PKI
//
// [InitDemo] writes, and [LoadDemo] reads, this layout (PEM everywhere; private
// keys PKCS#8 with mode 0600):
//
//	DIR/README.txt                  this layout, for humans
//	DIR/roots/webtrust-root.pem     "Custody Demo WebTrust Root" (self-signed, GlobalSign-style)
//	DIR/roots/webtrust-root.key
//	DIR/vendor/root-ca.pem          "Acme TPM Root CA" (self-signed, the vendor's on-prem root)
//	DIR/vendor/root-ca.key
//	DIR/vendor/root-ca-cross.pem    "Acme TPM Root CA" cross-certified by the WebTrust root
//	DIR/vendor/mfg-ca.pem           "Acme TPM Manufacturing CA 001", issued by the vendor root;
//	DIR/vendor/mfg-ca.key             issues EK and IAK certificates
//	DIR/consortium/ca.pem           "Custody Consortium CA" (self-signed); issues partner certificates
//	DIR/consortium/ca.key
//	DIR/operator/ldevid-ca.pem      "Blue Operator LDevID CA" (self-signed); the gate issues LDevIDs with it
//	DIR/operator/ldevid-ca.key
//	DIR/partners/<name>.crt         partner certificate (leaf only), CN=<name>, role extension
//	DIR/partners/<name>.key
//	DIR/log/log.key                 the ledger's checkpoint signing key (ECDSA P-256)
//	DIR/log/log.pub                 its public key (PKIX "PUBLIC KEY")
//	DIR/tls/ca.pem                  "Custody Demo TLS CA" (self-signed)
//	DIR/tls/ca.key
//	DIR/tls/server.pem              server certificate for localhost, 127.0.0.1 and ::1
//	DIR/tls/server.key                (used by the DPS emulator and custodyd)
//	DIR/ek-trust-bundle.pem         WebTrust root, vendor cross-certificate, manufacturing CA
//
// The EK trust bundle deliberately omits the vendor's own root: EK chains must
// verify through the cross-certificate, as they do for real ST and Infineon
// TPMs whose vendor roots are cross-signed by GlobalSign.
package pki
