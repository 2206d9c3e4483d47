package ledger_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/natstest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
	"github.com/custodyledger/custody/services/pki"
)

// faultyStore fails its failAt-th commit, after persisting it or not.
type faultyStore struct {
	*pebble.Store
	mu      sync.Mutex
	commits int
	failAt  int
	persist bool
}

func (f *faultyStore) Commit(c *ledger.Commit) error {
	f.mu.Lock()
	f.commits++
	n := f.commits
	f.mu.Unlock()
	if n == f.failAt {
		if f.persist {
			if err := f.Store.Commit(c); err != nil {
				return err
			}
		}
		return errors.New("injected commit failure")
	}
	return f.Store.Commit(c)
}

// TestCommitFailure injects a failed commit ("fail and don't persist",
// "fail and persist") in the middle of a stream of events: every event must
// end up logged exactly once, in stream order, under a consistent tree.
func TestCommitFailure(t *testing.T) {
	for _, persist := range []bool{false, true} {
		t.Run(fmt.Sprintf("persist=%v", persist), func(t *testing.T) { commitFailure(t, persist) })
	}
}

// testKeys are a test ledger's TPM trust bundle (just ca) and a new log key.
func testKeys(t testing.TB, ca *x509.Certificate) (*attest.Bundle, *ledger.LogKey) {
	t.Helper()
	trust, err := attest.ParseBundle(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))
	if err != nil {
		t.Fatal(err)
	}
	lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := ledger.NewLogKey("custody.test", lk)
	if err != nil {
		t.Fatal(err)
	}
	return trust, logKey
}

// testLedger is a ledger on a new Pebble store and an embedded NATS server,
// with a new consortium CA, not yet running.
type testLedger struct {
	l      *ledger.Ledger
	nc     *nats.Conn
	ca     *pki.CA
	ps     *pebble.Store
	logKey *ledger.LogKey
}

// newTestLedger opens one; wrap (nil: none) wraps the store, batch (0: the
// default) bounds a batch.
func newTestLedger(t *testing.T, ctx context.Context, wrap func(*pebble.Store) ledger.Store, batch int) *testLedger {
	t.Helper()
	nc := natstest.Connect(t)
	ps, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	var store ledger.Store = ps
	if wrap != nil {
		store = wrap(ps)
	}
	ca, err := pki.NewRootCA("Test Consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust, logKey := testKeys(t, ca.Cert)
	l, err := ledger.New(ctx, ledger.Config{Store: store, NATS: nc, LogKey: logKey, Consortium: ca.Cert, TPMTrust: trust, BatchSize: batch})
	if err != nil {
		t.Fatal(err)
	}
	return &testLedger{l: l, nc: nc, ca: ca, ps: ps, logKey: logKey}
}

func commitFailure(t *testing.T, persist bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var store *faultyStore
	tl := newTestLedger(t, ctx, func(ps *pebble.Store) ledger.Store {
		store = &faultyStore{Store: ps, failAt: 2, persist: persist}
		return store
	}, 4)
	l, nc, ca, ps, logKey := tl.l, tl.nc, tl.ca, tl.ps, tl.logKey
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const n = 14
	var names []string
	for i := range n {
		name := fmt.Sprintf("odm-%02d", i)
		p, err := ca.NewPartner(name, events.RoleODM, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(p.Cert.Raw)
		st := events.NewPartnerStatement(events.KindPartnerRegistered, events.PartnerInfo{Name: name, Role: events.RoleODM, Certificate: p.Cert.Raw}, hex.EncodeToString(sum[:]), time.Now(), eventID(i))
		env, err := events.Sign(ctx, st, ca.Key, events.ConsortiumPartner)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishAsync(events.EventSubject(events.ConsortiumPartner, name), env); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	<-js.PublishAsyncComplete()
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	// Nothing more may arrive once the ledger has applied the whole stream
	// and its consumer has nothing left to deliver or redeliver: only then
	// is the log's size final.
	drained := func() bool {
		if l.Head().StreamSeq < last {
			return false
		}
		cons, err := stream.Consumer(ctx, ledger.ConsumerName)
		if err != nil {
			return false // being recreated after the failure
		}
		ci, err := cons.Info(ctx)
		return err == nil && ci.AckFloor.Stream >= last && ci.NumAckPending == 0 && ci.NumPending == 0
	}
	deadline := time.Now().Add(60 * time.Second)
	for !drained() {
		if time.Now().After(deadline) {
			h := l.Head()
			t.Fatalf("logged %d of %d events, up to stream sequence %d of %d", h.Size, n, h.StreamSeq, last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	head := l.Head()
	if head.Size != n {
		t.Fatalf("logged %d entries for %d events", head.Size, n)
	}
	store.mu.Lock()
	commits := store.commits
	store.mu.Unlock()
	if commits <= store.failAt {
		t.Fatalf("the failure was not injected (%d commits)", commits)
	}
	rng := (&compact.RangeFactory{Hash: ledger.Hasher.HashChildren}).NewEmptyRange(0)
	for i := range uint64(n) {
		e, err := ps.Entry(i)
		if err != nil {
			t.Fatal(err)
		}
		if e.Target != names[i] {
			t.Fatalf("entry %d registers %s, want %s (stream order)", i, e.Target, names[i])
		}
		if err := rng.Append(ledger.LeafHash(e.Body), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := rng.GetRootHash(nil)
	cp, err := ledger.VerifyCheckpoint(head.Checkpoint, logKey.Public)
	if err != nil || cp.Size != n || string(cp.Root) != string(root) {
		t.Fatalf("checkpoint %+v does not commit to the entries (%v)", cp, err)
	}
}
