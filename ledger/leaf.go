package ledger

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"sync"
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
	certB64 := encodedCert(certDER)
	enc := base64.StdEncoding
	b := make([]byte, 0, 160+hex.EncodedLen(len(digest))+enc.EncodedLen(len(sig))+len(certB64))
	b = append(b, `{"apiVersion":"0.0.1","spec":{"data":{"hash":{"algorithm":"sha256","value":"`...)
	b = hex.AppendEncode(b, digest)
	b = append(b, `"}},"signature":{"content":"`...)
	b = enc.AppendEncode(b, sig)
	b = append(b, `","publicKey":{"content":"`...)
	b = append(b, certB64...)
	b = append(b, `"}}},"kind":"hashedrekord"}`...)
	return b, nil
}

// encodedCerts caches the leaf's form of signer certificates (base64 of
// the PEM), by DER: every event of a partner carries the same one.
var encodedCerts = struct {
	sync.RWMutex
	m map[string][]byte
}{m: map[string][]byte{}}

// maxEncodedCerts bounds encodedCerts (partners, and their renewals).
const maxEncodedCerts = 4096

func encodedCert(der []byte) []byte {
	encodedCerts.RLock()
	b, ok := encodedCerts.m[string(der)]
	encodedCerts.RUnlock()
	if ok {
		return b
	}
	b = base64.StdEncoding.AppendEncode(nil, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	encodedCerts.Lock()
	if len(encodedCerts.m) >= maxEncodedCerts {
		clear(encodedCerts.m)
	}
	encodedCerts.m[string(der)] = b
	encodedCerts.Unlock()
	return b
}
