package events

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// BindingDigest is the qualifyingData of the TPM quote that binds one event:
// SHA-256 of the RFC 8785 (JCS) canonical form of the statement payload with
// predicate.evidence removed. Publishers compute it before asking the device
// for a quote; the ledger recomputes it from the signed payload.
func BindingDigest(payload []byte) ([]byte, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if pred, ok := doc["predicate"].(map[string]any); ok {
		delete(pred, "evidence")
	}
	return canonicalDigest(doc)
}

// BindingDigestOf is BindingDigest of a payload already decoded into
// generic JSON (maps, slices, strings, json.Number); doc is not modified.
func BindingDigestOf(doc any) ([]byte, error) {
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: the statement is not a JSON object", ErrMalformed)
	}
	c := make(map[string]any, len(top))
	for k, v := range top {
		c[k] = v
	}
	if pred, ok := top["predicate"].(map[string]any); ok {
		p := make(map[string]any, len(pred))
		for k, v := range pred {
			if k != "evidence" {
				p[k] = v
			}
		}
		c["predicate"] = p
	}
	return canonicalDigest(c)
}

func canonicalDigest(doc any) ([]byte, error) {
	plain, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	canon, err := jsoncanonicalizer.Transform(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: canonicalising: %v", ErrMalformed, err)
	}
	sum := sha256.Sum256(canon)
	return sum[:], nil
}

// StatementBindingDigest is BindingDigest of a statement built in memory.
func StatementBindingDigest(s *Statement) ([]byte, error) {
	payload, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	return BindingDigest(payload)
}

// Digest is the event digest: SHA-256 of the DSSE pre-authentication encoding
// of the payload. It is what the ledger's hashedrekord leaf commits to.
func Digest(payloadType string, payload []byte) [32]byte {
	return sha256.Sum256(dsse.PAE(payloadType, payload))
}

// RawDigest is how the ledger names bytes that are not an envelope when it
// rejects them: lowercase hex SHA-256 of the message.
func RawDigest(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}
