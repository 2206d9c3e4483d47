package station_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/eventtest"
	"github.com/custodyledger/custody/internal/natstest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// lockedBuffer is a log destination safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogKey(t *testing.T) *ledger.LogKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ledger.NewLogKey("custody.test", key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestReceiptForgedKeepsTheEvent: a stand-in "ledger" on the station's NATS
// answers the station's event on the partner's receipt subject. A receipt
// that proves the event logged (a tree holding its leaf, a checkpoint signed
// by the log's key) completes it; every forged one (signed by another key,
// a path into a tree without the event, another event's digest, no proof
// at all) is refused with the rule it broke: the station does not count the
// event as answered and keeps it in its outbox.
func TestReceiptForgedKeepsTheEvent(t *testing.T) {
	ca, err := pki.NewRootCA("Consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const partner = "delta-ems"
	p, err := ca.NewPartner(partner, events.RoleEMS, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	logKey, foreignKey := newLogKey(t), newLogKey(t)
	h := ledger.Hasher
	filler, other := h.HashLeaf([]byte("an entry before")), h.HashLeaf([]byte("another entry"))
	// logged is a receipt of the event at index 1 of a tree of two, its
	// checkpoint signed by key; withEvent false: the tree's second leaf is
	// another entry's, the path into it the same.
	logged := func(t *testing.T, s *events.Signed, key *ledger.LogKey, withEvent bool) *events.Receipt {
		body, err := ledger.HashedRekordBody(s.Digest[:], s.Signature, p.Cert.Raw)
		if err != nil {
			t.Fatal(err)
		}
		second := ledger.LeafHash(body)
		if !withEvent {
			second = other
		}
		root := h.HashChildren(filler, second)
		cp, err := key.SignCheckpoint(context.Background(), 2, root)
		if err != nil {
			t.Fatal(err)
		}
		return &events.Receipt{
			Digest: s.DigestHex(), Status: events.StatusAccepted, Kind: s.Statement.Predicate.Kind, Partner: partner, Target: s.Statement.Target(),
			LogIndex: 1, TreeSize: 2, RootHash: root, Hashes: [][]byte{filler}, Checkpoint: string(cp),
		}
	}
	for _, tc := range []struct {
		name  string
		forge func(t *testing.T, s *events.Signed) *events.Receipt
		want  error // nil: the receipt is genuine
	}{
		{"proven by the log", func(t *testing.T, s *events.Signed) *events.Receipt { return logged(t, s, logKey, true) }, nil},
		{"signed by another log's key", func(t *testing.T, s *events.Signed) *events.Receipt { return logged(t, s, foreignKey, true) }, events.ErrReceiptCheckpoint},
		{"a tree without the event", func(t *testing.T, s *events.Signed) *events.Receipt { return logged(t, s, logKey, false) }, events.ErrReceiptProof},
		{"another event's digest", func(t *testing.T, s *events.Signed) *events.Receipt {
			r := logged(t, s, logKey, true)
			r.Digest = strings.Repeat("ab", 32)
			return r
		}, events.ErrReceiptDigest},
		{"logged, without proof", func(t *testing.T, s *events.Signed) *events.Receipt {
			return &events.Receipt{Digest: s.DigestHex(), Status: events.StatusAccepted, LogIndex: 7}
		}, events.ErrReceiptCheckpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			nc := natstest.Connect(t)
			var answered atomic.Int64
			natstest.StandInLedger(t, ctx, nc, func(_ jetstream.Msg, s *events.Signed) {
				b, _ := json.Marshal(tc.forge(t, s))
				if err := nc.Publish(events.ReceiptSubject(partner, s.DigestHex()), b); err == nil {
					answered.Add(1)
				}
			})

			// The event waits in the station's outbox, as after a restart.
			dir := filepath.Join(t.TempDir(), "outbox")
			ob, err := events.OpenOutbox(dir)
			if err != nil {
				t.Fatal(err)
			}
			env, signed, _ := eventtest.Leaf(t, eventtest.UnquotedStage(partner, strings.Repeat("5", 64), events.StageAssembly, events.NewEventID()), p.Key, partner, p.Cert.Raw)
			if err := ob.Put(signed.DigestHex(), env); err != nil {
				t.Fatal(err)
			}
			rv, err := ledger.NewReceiptVerifier(logKey.Public, p.Cert.Raw)
			if err != nil {
				t.Fatal(err)
			}
			var logs lockedBuffer
			s, err := station.New(station.Config{
				Name: partner, Role: events.RoleEMS, Key: p.Key, NATS: nc, ReceiptVerifier: rv,
				Ledger: &states{}, OutboxDir: dir, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}

			// Recover runs until every event is answered; with a forged
			// answer it keeps trying, saying why, until it is stopped.
			rctx, stop := context.WithCancel(ctx)
			defer stop()
			done := make(chan error, 1)
			go func() { done <- s.Recover(rctx) }()
			if tc.want == nil {
				err := <-done
				left, _ := s.Unconfirmed()
				if err != nil || len(left) != 0 || !strings.Contains(logs.String(), "recovered event answered") {
					t.Fatalf("a proven receipt: Recover = %v, outbox %v, log:\n%s", err, left, logs.String())
				}
				return
			}
			for !strings.Contains(logs.String(), "trying again") {
				select {
				case err := <-done:
					t.Fatalf("Recover = %v before any retry, log:\n%s", err, logs.String())
				case <-ctx.Done():
					t.Fatalf("no failed round logged:\n%s", logs.String())
				case <-time.After(10 * time.Millisecond):
				}
			}
			stop()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Recover = %v, want it still trying when stopped", err)
			}
			left, _ := s.Unconfirmed()
			if answered.Load() == 0 {
				t.Fatal("the forged receipt was never sent")
			}
			if len(left) != 1 || left[0] != signed.DigestHex() {
				t.Fatalf("outbox %v, want the event %s kept", left, signed.DigestHex())
			}
			if l := logs.String(); strings.Contains(l, "recovered event answered") || !strings.Contains(l, tc.want.Error()) {
				t.Fatalf("the station's log does not name the rule %q, or reports the event answered:\n%s", tc.want, l)
			}
		})
	}
}
