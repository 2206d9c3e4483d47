package ledger

import (
	"context"
	"encoding/hex"
	"encoding/pem"

	"github.com/go-openapi/swag/conv"
	"github.com/sigstore/rekor/pkg/generated/models"
	hashedrekord "github.com/sigstore/rekor/pkg/types/hashedrekord/v0.0.1"
)

// HashedRekordBody builds the log leaf for an event: a Rekor hashedrekord
// v0.0.1 canonical body over the event digest (SHA-256 of the DSSE PAE), the
// partner's signature and its certificate. Rekor's own canonicaliser builds
// it, and checks that the signature verifies over the digest, so an
// unmodified rekor-cli reads our leaves.
func HashedRekordBody(ctx context.Context, digest []byte, sig []byte, certDER []byte) ([]byte, error) {
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})
	e := hashedrekord.V001Entry{HashedRekordObj: models.HashedrekordV001Schema{
		Data: &models.HashedrekordV001SchemaData{Hash: &models.HashedrekordV001SchemaDataHash{
			Algorithm: conv.Pointer(models.HashedrekordV001SchemaDataHashAlgorithmSha256),
			Value:     conv.Pointer(hex.EncodeToString(digest)),
		}},
		Signature: &models.HashedrekordV001SchemaSignature{
			Content:   sig,
			PublicKey: &models.HashedrekordV001SchemaSignaturePublicKey{Content: certPEM},
		},
	}}
	return e.Canonicalize(ctx)
}
