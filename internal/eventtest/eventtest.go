// Package eventtest makes signed custody events for tests of what is
// checked without a TPM: offline bundles (which prove what was logged and
// do not re-check quotes) and the ledger's refusals that come before any
// evidence is looked at.
package eventtest

import (
	"context"
	"crypto"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// UnquotedStage is a stage.recorded (stage name) by partner about device.
// Its evidence has the schema's shape but is not a TPM quote, and says so
// in its bytes: nothing a test makes with it may pass a quote check.
func UnquotedStage(partner, device, name, eventID string) *events.Statement {
	st := events.NewStatement(events.KindStageRecorded, partner, device, time.Now(), eventID)
	st.Predicate.Stage = &events.Stage{Name: name}
	st.Predicate.Evidence = &events.Evidence{Attest: []byte("not a quote"), Signature: []byte("not a signature"), PCRs: map[string][]byte{"0": make([]byte, 32)}}
	return st
}

// Leaf signs st with key as partner and returns the envelope, the opened
// event and its hashedrekord leaf body for the signer's certificate (DER).
func Leaf(t testing.TB, st *events.Statement, key crypto.Signer, partner string, cert []byte) ([]byte, *events.Signed, []byte) {
	t.Helper()
	env, err := events.Sign(context.Background(), st, key, partner)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := events.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	body, err := ledger.HashedRekordBody(signed.Digest[:], signed.Signature, cert)
	if err != nil {
		t.Fatal(err)
	}
	return env, signed, body
}
