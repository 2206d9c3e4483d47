package schemas_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/schemas"
)

// benchEnvelope is a signed stage.recorded event of realistic size: a
// quote's attest (about 145 bytes) and signature, one PCR.
func benchEnvelope(b *testing.B) ([]byte, *ecdsa.PrivateKey) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	st := events.NewStatement(events.KindStageRecorded, "delta-ems", strings.Repeat("ab", 32), time.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: "line 4, station 2"}
	st.Predicate.Evidence = &events.Evidence{Attest: make([]byte, 145), Signature: make([]byte, 72), PCRs: map[string][]byte{"0": make([]byte, 32)}}
	env, err := events.Sign(context.Background(), st, key, "delta-ems")
	if err != nil {
		b.Fatal(err)
	}
	return env, key
}

// BenchmarkIngestJSON is the ledger's per-event JSON work before any
// signature check (ledger/prepare.go): open the envelope (which decodes
// the payload once, generically, and builds the statement from that),
// validate the decoding against its kind's schema, and compute the binding
// digest the quote must carry. Compare it with BenchmarkECDSAP256Verify,
// of which ingest does two per event.
func BenchmarkIngestJSON(b *testing.B) {
	env, _ := benchEnvelope(b)
	b.ReportAllocs()
	for b.Loop() {
		s, err := events.Open(env)
		if err != nil {
			b.Fatal(err)
		}
		doc := s.Doc
		if doc == nil {
			b.Fatal("Open did not decode the payload generically")
		}
		if err := schemas.ValidateDocument(s.Statement.Predicate.Kind, doc); err != nil {
			b.Fatal(err)
		}
		if _, err := events.BindingDigestOf(doc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkECDSAP256Verify is the baseline: one P-256 signature check.
func BenchmarkECDSAP256Verify(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sum := sha256.Sum256([]byte("custody"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, sum[:])
	for b.Loop() {
		if !ecdsa.VerifyASN1(&key.PublicKey, sum[:], sig) {
			b.Fatal("verify")
		}
	}
}
