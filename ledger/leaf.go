package ledger

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
)

// HashedRekordBody builds the log leaf for an event: a Rekor hashedrekord
// v0.0.1 canonical body over the event digest (SHA-256 of the DSSE PAE), the
// partner's signature and its certificate (DER), so an unmodified rekor-cli
// reads our leaves.
//
// The bytes are exactly those of rekor v1.5.4's own Canonicalize (the JSON
// of models.Hashedrekord: apiVersion, spec{data{hash}, signature{content,
// publicKey{content: the certificate's PEM}}}, kind); the test
// TestHashedRekordBodyIsCanonical holds that. They are written directly,
// without Canonicalize's re-verification of the signature and without
// reflection: the ledger has already verified the signature with the
// partner's key (events.Signed.Verify, the same ECDSA check over the same
// digest) and must not pay for it twice. Callers must only pass a
// signature they have verified.
func HashedRekordBody(digest []byte, sig []byte, certDER []byte) ([]byte, error) {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	enc := base64.StdEncoding
	b := make([]byte, 0, 160+hex.EncodedLen(len(digest))+enc.EncodedLen(len(sig))+enc.EncodedLen(len(certPEM)))
	b = append(b, `{"apiVersion":"0.0.1","spec":{"data":{"hash":{"algorithm":"sha256","value":"`...)
	b = hex.AppendEncode(b, digest)
	b = append(b, `"}},"signature":{"content":"`...)
	b = enc.AppendEncode(b, sig)
	b = append(b, `","publicKey":{"content":"`...)
	b = enc.AppendEncode(b, certPEM)
	b = append(b, `"}}},"kind":"hashedrekord"}`...)
	return b, nil
}
