package events_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/natstest"
)

// SignStatement returns what Open returns for the envelope it wrote.
func TestSignStatementMatchesOpen(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := events.SignStatement(context.Background(), offer(t), key, "delta-ems")
	if err != nil {
		t.Fatal(err)
	}
	o, err := events.Open(s.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if o.Digest != s.Digest || string(o.Payload) != string(s.Payload) || string(o.Signature) != string(s.Signature) || o.KeyID != s.KeyID {
		t.Fatal("SignStatement and Open disagree on the envelope")
	}
	if err := s.Verify(&key.PublicKey); err != nil {
		t.Fatal(err)
	}
	if o.Statement.Target() != s.Statement.Target() || o.Statement.Predicate.Partner != s.Statement.Predicate.Partner {
		t.Fatal("SignStatement and Open disagree on the statement")
	}
}

// unproven passes every logged receipt: the stand-in ledgers here build no
// Merkle tree. Proofs are checked with receipts of a real ledger in
// ledger/receipt_test.go.
type unproven struct{}

func (unproven) VerifyReceipt(*events.Signed, *events.Receipt) error { return nil }

// A Publisher's concurrent Publish calls each get the answer for their own
// event, over the publisher's standing subscriptions, whether a receipt or
// a rejection; answers for events it did not publish are dropped.
func TestPublisherRoutesAnswers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := natstest.Connect(t)
	// A stand-in for the ledger: events whose event ID ends in "f" are
	// rejected, the others logged at their stream sequence; every answer is
	// preceded by a stray receipt for an event nobody published.
	natstest.StandInLedger(t, ctx, nc, func(m jetstream.Msg, s *events.Signed) {
		meta, _ := m.Metadata()
		p := s.Statement.Predicate.Partner
		stray, _ := json.Marshal(events.Receipt{Status: events.StatusAccepted, LogIndex: 1 << 40})
		_ = nc.Publish(events.ReceiptSubject(p, fmt.Sprintf("%064x", meta.Sequence.Stream)), stray)
		id := s.Statement.Predicate.EventID
		r := events.Receipt{Status: events.StatusAccepted, Digest: s.DigestHex(), LogIndex: meta.Sequence.Stream}
		subj := events.ReceiptSubject(p, s.DigestHex())
		if id[len(id)-1] == 'f' {
			r = events.Receipt{Status: events.StatusRejected, Digest: s.DigestHex(), Code: "test", Reason: "ends in f"}
			subj = events.RejectionSubject(p, s.DigestHex())
		}
		b, _ := json.Marshal(r)
		_ = nc.Publish(subj, b)
	})

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := events.NewPublisher(nc, "delta-ems", unproven{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Go(func() {
			st := offer(t)
			st.Predicate.EventID = fmt.Sprintf("%032x", i)
			s, err := events.SignStatement(ctx, st, key, "delta-ems")
			if err != nil {
				t.Error(err)
				return
			}
			var r *events.Receipt
			if i%2 == 0 {
				r, err = pub.PublishSigned(ctx, s)
			} else {
				r, err = pub.Publish(ctx, s.Raw)
			}
			if err != nil {
				t.Error(err)
				return
			}
			if r.Digest != s.DigestHex() {
				t.Errorf("event %d got the answer for %s", i, r.Digest)
			}
			if wantRejected := i%16 == 15; (r.Status == events.StatusRejected) != wantRejected || r.Status == events.StatusRejected && r.Code != "test" {
				t.Errorf("event %d: status %s (%s)", i, r.Status, r.Code)
			}
		})
	}
	wg.Wait()
	// The other partner's events are not this publisher's to send.
	other := offer(t)
	other.Predicate.Partner = "blue-operator"
	s, _ := events.SignStatement(ctx, other, key, "blue-operator")
	if _, err := pub.PublishSigned(ctx, s); err == nil {
		t.Fatal("a publisher sent another partner's event")
	}
}

// refuses is a receipt verifier that proves nothing.
type refuses struct{}

func (refuses) VerifyReceipt(*events.Signed, *events.Receipt) error {
	return fmt.Errorf("%w: test verifier", events.ErrReceiptProof)
}

// Publish returns no receipt for an answer that does not verify, names the
// rule it broke, and keeps the event in the outbox.
func TestReceiptRefusedByPublisher(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := natstest.Connect(t)
	// The stand-in ledger says "logged" to every event, and gives events
	// whose ID ends in "d" another event's digest.
	natstest.StandInLedger(t, ctx, nc, func(_ jetstream.Msg, s *events.Signed) {
		r := events.Receipt{Status: events.StatusAccepted, Digest: s.DigestHex(), LogIndex: 3}
		if id := s.Statement.Predicate.EventID; id[len(id)-1] == 'd' {
			r.Digest = strings.Repeat("0", 64)
		}
		b, _ := json.Marshal(r)
		_ = nc.Publish(events.ReceiptSubject(s.Statement.Predicate.Partner, s.DigestHex()), b)
	})

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name    string
		eventID string
		v       events.ReceiptVerifier
		want    error
	}{
		{"another event's digest", strings.Repeat("0", 31) + "d", unproven{}, events.ErrReceiptDigest},
		{"a proof that does not verify", strings.Repeat("0", 31) + "e", refuses{}, events.ErrReceiptProof},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ob, err := events.OpenOutbox(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			pub, err := events.NewPublisher(nc, "delta-ems", tc.v)
			if err != nil {
				t.Fatal(err)
			}
			st := offer(t)
			st.Predicate.EventID = tc.eventID
			s, err := events.SignStatement(ctx, st, key, "delta-ems")
			if err != nil {
				t.Fatal(err)
			}
			r, err := pub.WithOutbox(ob).PublishSigned(ctx, s)
			var bad *events.BadReceiptError
			if r != nil || !errors.Is(err, tc.want) || !errors.As(err, &bad) || bad.Digest != s.DigestHex() {
				t.Fatalf("Publish = %+v, %v; want no receipt and a BadReceiptError naming %q", r, err, tc.want)
			}
			if !ob.Has(s.DigestHex()) {
				t.Fatal("the event left the outbox on a receipt that did not verify")
			}
		})
	}
	if _, err := events.NewPublisher(nc, "delta-ems", nil); err == nil {
		t.Fatal("a publisher without a receipt verifier")
	}
}
