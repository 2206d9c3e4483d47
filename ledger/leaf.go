package ledger

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"

	"github.com/go-openapi/swag/conv"
	"github.com/sigstore/rekor/pkg/generated/models"
	hashedrekord "github.com/sigstore/rekor/pkg/types/hashedrekord/v0.0.1"
)

// HashedRekordBody builds the log leaf for an event: a Rekor hashedrekord
// v0.0.1 canonical body over the event digest (SHA-256 of the DSSE PAE), the
// partner's signature and its certificate (DER), so an unmodified rekor-cli
// reads our leaves.
//
// The bytes are exactly those of rekor's own Canonicalize (the test
// TestHashedRekordBodyIsCanonical holds that), built from rekor's models,
// but without Canonicalize's re-verification of the signature: the ledger
// has already verified it with the partner's key (events.Signed.Verify, the
// same ECDSA check over the same digest), and it must not pay for it twice.
// Callers must only pass a signature they have verified.
func HashedRekordBody(digest []byte, sig []byte, certDER []byte) ([]byte, error) {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	return json.Marshal(&models.Hashedrekord{
		APIVersion: conv.Pointer(hashedrekord.APIVERSION),
		Spec: &models.HashedrekordV001Schema{
			Data: &models.HashedrekordV001SchemaData{Hash: &models.HashedrekordV001SchemaDataHash{
				Algorithm: conv.Pointer(models.HashedrekordV001SchemaDataHashAlgorithmSha256),
				Value:     conv.Pointer(hex.EncodeToString(digest)),
			}},
			Signature: &models.HashedrekordV001SchemaSignature{
				Content:   sig,
				PublicKey: &models.HashedrekordV001SchemaSignaturePublicKey{Content: certPEM},
			},
		},
	})
}
