// Package pki holds Custody's certificate authorities, the issuing of partner
// certificates, and the demo PKI that `custody pki init` writes and custodyd
// loads.
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
// ECDSA P-256 certificate from the consortium CA. What such a certificate
// must be (its name, its role extension, the Custody OID arc) is part of the
// event contract and lives in package events ([events.VerifyPartner],
// [events.OIDPartnerRole]); this package only issues them ([CA.NewPartner],
// [PartnerTemplate]).
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
