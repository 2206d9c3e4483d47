package trillian_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/natstest"
	"github.com/custodyledger/custody/internal/testservers"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/trillian"
	"github.com/custodyledger/custody/services/pki"
)

// TestLedgerOnTrillian runs the real ledger on the Trillian store: partner
// registrations published on JetStream are logged and answered with
// receipts that verify; the sequencer stops and a standby opens the same
// database and tree, rebuilds the tree's edge from it and goes on; an
// event sent again is answered from its first entry; consistency proofs
// from the first sequencer's checkpoints verify against the standby's;
// and Trillian's tree ends equal to Custody's.
func TestLedgerOnTrillian(t *testing.T) {
	tr := testservers.StartTrillian(t)
	nc := natstest.Connect(t)
	ctx := t.Context()
	consortium, logKey := authorities(t)
	cfg := newConfig(t, tr)
	answers := make(chan *nats.Msg, 256)
	for _, p := range []string{events.ReceiptsPrefix, events.RejectPrefix} {
		sub, err := nc.ChanSubscribe(p+".>", answers)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	// start runs a ledger on a Store of its own over the one database and
	// tree: a sequencer process.
	start := func() (*trillian.Store, func()) {
		t.Helper()
		s := open(t, cfg)
		l, err := ledger.New(ctx, ledger.Config{Store: s, NATS: nc, LogKey: logKey, Consortium: consortium.Cert, TPMTrust: &attest.Bundle{}})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l.Run(rctx) }()
		return s, func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("ledger.Run: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		}
	}
	n := 0
	register := func() []byte {
		t.Helper()
		n++
		return publishRegistration(t, ctx, js, consortium, fmt.Sprintf("partner-%d", n))
	}
	// receive waits for the answers to k events and checks each receipt
	// against the store: the entry's body, its inclusion proof, the
	// checkpoint's signature.
	receive := func(s ledger.Store, k int) []*events.Receipt {
		t.Helper()
		var out []*events.Receipt
		timeout := time.After(30 * time.Second)
		for len(out) < k {
			select {
			case m := <-answers:
				var r events.Receipt
				if err := json.Unmarshal(m.Data, &r); err != nil {
					t.Fatal(err)
				}
				if r.Status != events.StatusAccepted {
					t.Fatalf("%s: %s %s: %s", m.Subject, r.Status, r.Code, r.Reason)
				}
				e, err := s.Entry(r.LogIndex)
				if err != nil {
					t.Fatal(err)
				}
				if e.DigestHex() != r.Digest {
					t.Fatalf("receipt of %s names entry %d, which logs %s", r.Digest, r.LogIndex, e.DigestHex())
				}
				if err := ledger.VerifyInclusion(e.Body, r.LogIndex, r.TreeSize, r.Hashes, r.RootHash); err != nil {
					t.Fatalf("receipt of entry %d: %v", r.LogIndex, err)
				}
				cp, err := ledger.VerifyCheckpoint([]byte(r.Checkpoint), logKey.Public)
				if err != nil || cp.Size != r.TreeSize || !bytes.Equal(cp.Root, r.RootHash) {
					t.Fatalf("receipt of entry %d: checkpoint %+v, %v", r.LogIndex, cp, err)
				}
				out = append(out, &r)
			case <-timeout:
				t.Fatalf("%d of %d answers in 30 s", len(out), k)
			}
		}
		return out
	}

	s1, stop1 := start()
	var first [][]byte
	for range 12 {
		first = append(first, register())
	}
	receipts := receive(s1, 12)
	h1, err := s1.Head()
	if err != nil {
		t.Fatal(err)
	}
	if h1.Size != 12 {
		t.Fatalf("the first sequencer's head has size %d, want 12", h1.Size)
	}
	stop1()

	// The standby: the same database and tree, another Store and ledger.
	s2, stop2 := start()
	defer stop2()
	for range 9 {
		register()
	}
	receipts = append(receipts, receive(s2, 9)...)
	// An event sent again is answered from its first entry.
	if _, err := js.Publish(ctx, events.EventSubject(events.ConsortiumPartner, "partner-3"), first[2]); err != nil {
		t.Fatal(err)
	}
	again := receive(s2, 1)[0]
	signed, err := events.Open(first[2])
	if err != nil {
		t.Fatal(err)
	}
	var original *events.Receipt
	for _, r := range receipts {
		if r.Digest == signed.DigestHex() {
			original = r
		}
	}
	if original == nil || again.Digest != original.Digest || again.LogIndex != original.LogIndex {
		t.Fatalf("the event sent again was answered with %+v; first logged as %+v", again, original)
	}
	h2, err := s2.Head()
	if err != nil {
		t.Fatal(err)
	}
	if h2.Size != 21 {
		t.Fatalf("after the standby's events the head has size %d, want 21", h2.Size)
	}
	seen := map[string]bool{}
	for _, r := range receipts {
		if seen[r.Digest] {
			t.Fatalf("event %s answered twice with a new entry", r.Digest)
		}
		seen[r.Digest] = true
	}
	// Every checkpoint the first sequencer gave out is consistent with
	// the standby's head.
	for _, r := range receipts[:12] {
		p, err := ledger.ProveConsistency(s2, r.TreeSize, h2.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.VerifyConsistency(r.TreeSize, h2.Size, p, r.RootHash, h2.Root); err != nil {
			t.Fatalf("checkpoint of size %d against the standby's %d: %v", r.TreeSize, h2.Size, err)
		}
	}
	if err := s2.SyncTrillian(ctx); err != nil {
		t.Fatal(err)
	}
	waitTrillian(t, s2)
}

// TestSequencerLease: two sequencer candidates on one database and tree,
// each with its own NATS connection and Store. One holds the lease and
// logs; it dies without giving the lease up (its connection closes under
// it); the other takes over within the lease's lifetime, and logs the
// rest: every event once, the log consistent across the change of hands.
func TestSequencerLease(t *testing.T) {
	tr := testservers.StartTrillian(t)
	ns := natstest.Server(t)
	ctx := t.Context()
	consortium, logKey := authorities(t)
	cfg := newConfig(t, tr)
	const ttl = time.Second
	type candidate struct {
		l    *ledger.Ledger
		nc   *nats.Conn
		stop context.CancelFunc
		done chan error
	}
	start := func(name string) *candidate {
		nc := natstest.ConnectTo(t, ns)
		s := open(t, cfg)
		l, err := ledger.New(ctx, ledger.Config{Store: s, NATS: nc, LogKey: logKey, Consortium: consortium.Cert, TPMTrust: &attest.Bundle{}, LeaseTTL: ttl, Instance: name})
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		c := &candidate{l: l, nc: nc, stop: cancel, done: make(chan error, 1)}
		go func() { c.done <- l.Run(rctx) }()
		t.Cleanup(func() { cancel(); <-c.done; _ = s.Close() })
		return c
	}
	a, b := start("seq-a"), start("seq-b")
	leader := func(cs ...*candidate) *candidate {
		t.Helper()
		for deadline := time.Now().Add(10 * ttl); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var held []*candidate
			for _, c := range cs {
				if c.l.Leading() {
					held = append(held, c)
				}
			}
			if len(held) == 1 {
				return held[0]
			}
			if len(held) > 1 {
				t.Fatal("two candidates lead at once")
			}
		}
		t.Fatal("no candidate took the lease")
		return nil
	}

	pub := natstest.ConnectTo(t, ns)
	answers := make(chan *nats.Msg, 256)
	sub, err := pub.ChanSubscribe(events.ReceiptsPrefix+".>", answers)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, _ := jetstream.New(pub)
	n := 0
	register := func(k int) {
		for range k {
			n++
			publishRegistration(t, ctx, js, consortium, fmt.Sprintf("partner-%d", n))
		}
	}
	receipts := map[string]*events.Receipt{}
	receive := func(k int) {
		for timeout := time.After(30 * time.Second); k > 0; k-- {
			select {
			case m := <-answers:
				var r events.Receipt
				if err := json.Unmarshal(m.Data, &r); err != nil {
					t.Fatal(err)
				}
				if _, dup := receipts[r.Digest]; dup {
					t.Fatalf("event %s answered twice", r.Digest)
				}
				receipts[r.Digest] = &r
			case <-timeout:
				t.Fatalf("%d answers missing", k)
			}
		}
	}

	first := leader(a, b)
	register(8)
	receive(8)
	// The leader dies: its connection goes (no renewal, no release).
	died := time.Now()
	first.nc.Close()
	standby := b
	if first == b {
		standby = a
	}
	if next := leader(standby); next != standby {
		t.Fatal("the standby did not take over")
	}
	takeover := time.Since(died)
	t.Logf("%s died; the standby took over in %s (lease %s)", "the first sequencer", takeover, ttl)
	if takeover > 3*ttl {
		t.Fatalf("takeover took %s with a lease of %s", takeover, ttl)
	}
	register(8)
	receive(8)

	s := open(t, cfg)
	h, err := s.Head()
	if err != nil {
		t.Fatal(err)
	}
	if h.Size != 16 || len(receipts) != 16 {
		t.Fatalf("the log holds %d entries, %d receipts; want 16 each", h.Size, len(receipts))
	}
	for _, r := range receipts {
		if r.Status != events.StatusAccepted {
			t.Fatalf("%s: %s %s", r.Digest, r.Status, r.Reason)
		}
		p, err := ledger.ProveConsistency(s, r.TreeSize, h.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.VerifyConsistency(r.TreeSize, h.Size, p, r.RootHash, h.Root); err != nil {
			t.Fatalf("a checkpoint of size %d against the head %d: %v", r.TreeSize, h.Size, err)
		}
	}
}

// authorities returns a consortium CA and a log key for a test ledger.
func authorities(t *testing.T) (*pki.CA, *ledger.LogKey) {
	t.Helper()
	consortium, err := pki.NewRootCA("Custody Test Consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := ledger.NewLogKey("custody.test", key)
	if err != nil {
		t.Fatal(err)
	}
	return consortium, logKey
}

// publishRegistration publishes the consortium's registration of a new
// partner name on js and returns its envelope.
func publishRegistration(t *testing.T, ctx context.Context, js jetstream.JetStream, consortium *pki.CA, name string) []byte {
	t.Helper()
	p, err := consortium.NewPartner(name, "odm", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(p.Cert.Raw)
	st := events.NewPartnerStatement(events.KindPartnerRegistered, events.PartnerInfo{Name: p.Name, Role: p.Role, Certificate: p.Cert.Raw},
		hex.EncodeToString(sum[:]), time.Now(), events.NewEventID())
	env, err := events.Sign(ctx, st, consortium.Key, events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, events.EventSubject(events.ConsortiumPartner, p.Name), env); err != nil {
		t.Fatal(err)
	}
	return env
}
