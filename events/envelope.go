package events

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/custodyledger/custody/schemas"
)

// MaxEnvelopeSize bounds a custody event on the wire (and the JetStream
// stream's maximum message size).
const MaxEnvelopeSize = 256 << 10

// Envelope is a DSSE envelope as it travels on NATS.
type Envelope = dsse.Envelope

// Signed is a parsed envelope whose single signature has not been verified
// yet: Statement, Payload and Signature are untrusted until [Signed.Verify].
type Signed struct {
	Envelope  *Envelope
	Raw       []byte // the envelope as received
	Payload   []byte
	Signature []byte
	KeyID     string
	Statement *Statement
	Digest    [32]byte
	// Doc is the payload decoded generically, as schemas.Decode decodes it,
	// when Open had it decoded so (nil otherwise): the ledger validates the
	// schema and computes the binding digest on it without parsing the
	// payload again. Untrusted, as Statement.
	Doc any
	// Manifest is a shipment's manifest, from its parcel ([OpenMessage]);
	// nil for every other kind. Parcel is then the parcel's wire form.
	Manifest *Manifest
	Parcel   []byte
	// Members are a batch's events, opened (batch.go); nil for every other
	// kind. Batch is, for a member, the batch it belongs to (whose
	// signature signs it), and Position its place in the batch; a member
	// has no Envelope or Raw of its own.
	Members  []*Signed
	Batch    *Signed
	Position int
}

// Wire is what travels on the events stream: the parcel of a shipment, the
// envelope of any other event.
func (s *Signed) Wire() []byte {
	if s.Parcel != nil {
		return s.Parcel
	}
	return s.Raw
}

// DigestHex is the event digest in lowercase hex.
func (s *Signed) DigestHex() string { return hex.EncodeToString(s.Digest[:]) }

// ecdsaSigner adapts a crypto.Signer holding an ECDSA P-256 key to DSSE.
type ecdsaSigner struct {
	key   crypto.Signer
	keyID string
}

func (s ecdsaSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	h := sha256.Sum256(data)
	return s.key.Sign(rand.Reader, h[:], crypto.SHA256)
}
func (s ecdsaSigner) KeyID() (string, error) { return s.keyID, nil }

// Sign wraps st in a DSSE envelope signed by key (ECDSA P-256), with keyID
// naming the signer (the partner's name). It returns the envelope's JSON.
func Sign(ctx context.Context, st *Statement, key crypto.Signer, keyID string) ([]byte, error) {
	s, err := SignStatement(ctx, st, key, keyID)
	if err != nil {
		return nil, err
	}
	return s.Raw, nil
}

// SignStatement is Sign returning the envelope opened, as [Open] would
// return it, without parsing back what it just wrote: Statement is st
// itself.
func SignStatement(ctx context.Context, st *Statement, key crypto.Signer, keyID string) (*Signed, error) {
	if _, ok := key.Public().(*ecdsa.PublicKey); !ok {
		return nil, errors.New("events: partner keys are ECDSA P-256")
	}
	payload, err := marshalStatement(st)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(ecdsaSigner{key: key, keyID: keyID})
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, PayloadType, payload)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("events: the envelope has %d signatures, want 1", len(env.Signatures))
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		return nil, err
	}
	return &Signed{
		Envelope: env, Raw: raw, Payload: payload, Signature: sig, KeyID: keyID,
		Statement: st, Digest: Digest(PayloadType, payload),
	}, nil
}

// marshalStatement is a statement's payload as Sign writes it.
func marshalStatement(st *Statement) ([]byte, error) { return json.Marshal(st) }

// Open parses an envelope and its statement without verifying anything: the
// envelope must have one signature and the custody payload type, and the
// statement must be well formed (see [ParseStatement]).
func Open(raw []byte) (*Signed, error) {
	if len(raw) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: envelope of %d bytes exceeds %d", ErrMalformed, len(raw), MaxEnvelopeSize)
	}
	env, ok := decodeEnvelope(raw)
	if !ok {
		if err := json.Unmarshal(raw, &env); err != nil {
			return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
		}
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("%w: payloadType %q, want %q", ErrMalformed, env.PayloadType, PayloadType)
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("%w: want exactly one signature, have %d", ErrMalformed, len(env.Signatures))
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		if sig, err = base64.URLEncoding.DecodeString(env.Signatures[0].Sig); err != nil {
			return nil, fmt.Errorf("%w: signature encoding: %v", ErrMalformed, err)
		}
	}
	// The payload is decoded once, generically; the statement is built from
	// that when it can be (fromdoc.go), else parsed by ParseStatement.
	doc, simple := schemas.DecodeSimple(payload)
	var st *Statement
	if simple {
		st, simple = statementFromDoc(doc)
	}
	if !simple {
		if st, err = ParseStatement(payload); err != nil {
			return nil, err
		}
	}
	return &Signed{
		Doc:       doc,
		Envelope:  &env,
		Raw:       raw,
		Payload:   payload,
		Signature: sig,
		KeyID:     env.Signatures[0].KeyID,
		Statement: st,
		Digest:    Digest(env.PayloadType, payload),
	}, nil
}

// decodeEnvelope decodes an envelope of the usual shape (exactly the keys
// payload, payloadType and signatures, each signature exactly keyid and
// sig, all strings) from its generic form (schemas.DecodeSimple), which is
// cheaper than encoding/json's decoding into the struct; the result is
// the same. Any other shape (ok false) is left to encoding/json, with its
// rules: keys matched without regard to case, unknown keys ignored, null
// as the zero value.
func decodeEnvelope(raw []byte) (env Envelope, ok bool) {
	doc, ok := schemas.DecodeSimple(raw)
	if !ok {
		return env, false
	}
	m, _ := doc.(map[string]any)
	if len(m) != 3 {
		return env, false
	}
	env.PayloadType, ok = m["payloadType"].(string)
	if !ok {
		return env, false
	}
	if env.Payload, ok = m["payload"].(string); !ok {
		return env, false
	}
	sigs, ok := m["signatures"].([]any)
	if !ok {
		return env, false
	}
	env.Signatures = make([]dsse.Signature, len(sigs))
	for i, s := range sigs {
		sm, _ := s.(map[string]any)
		if len(sm) != 2 {
			return env, false
		}
		if env.Signatures[i].KeyID, ok = sm["keyid"].(string); !ok {
			return env, false
		}
		if env.Signatures[i].Sig, ok = sm["sig"].(string); !ok {
			return env, false
		}
	}
	return env, true
}

// ErrBadSignature reports an envelope signature that does not verify.
var ErrBadSignature = errors.New("envelope signature does not verify")

// Verify checks the envelope's signature against pub (an ECDSA P-256 key).
// After it returns nil, Statement is what the holder of pub signed.
//
// For a batch member, it is the batch's signature that is checked: the
// member was opened from a batch whose members hash to the root it signs.
func (s *Signed) Verify(pub crypto.PublicKey) error {
	if s.Batch != nil {
		return s.Batch.Verify(pub)
	}
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: not an ECDSA key", ErrBadSignature)
	}
	if !ecdsa.VerifyASN1(k, s.Digest[:], s.Signature) {
		return ErrBadSignature
	}
	return nil
}
