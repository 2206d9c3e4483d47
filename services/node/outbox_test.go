package node_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/station"
)

// registration is a consortium connection to n and a signed registration
// of a new partner, to publish as the consortium.
func registration(t *testing.T, n *node.Node, name, role, certDigest string) (*nats.Conn, []byte) {
	t.Helper()
	nc, err := n.Connect(events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := n.PKI.ConsortiumCA.NewPartner(name, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st := events.NewPartnerStatement(events.KindPartnerRegistered,
		events.PartnerInfo{Name: name, Role: role, Certificate: p.Cert.Raw},
		certDigest, time.Now(), "0123456789abcdef0123456789abcdef")
	env, err := events.Sign(context.Background(), st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	return nc, env
}

// TestOutboxRecoversWithoutDuplicates: a publisher that crashed after
// publishing but before the receipt finds the event in its outbox on
// restart, re-sends it, and gets the original entry back: nothing lost,
// nothing logged twice.
func TestOutboxRecoversWithoutDuplicates(t *testing.T) {
	n := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, env := registration(t, n, "late-oem", events.RoleOEM, strings.Repeat("0", 62)+"aa")
	dir := filepath.Join(t.TempDir(), "outbox")
	ob, err := events.OpenOutbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := n.ReceiptVerifier(events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := events.NewPublisher(nc, events.ConsortiumPartner, rv)
	first, err := pub.WithOutbox(ob).Publish(ctx, env)
	if err != nil || first.Status != events.StatusAccepted {
		t.Fatalf("first publish: %+v %v", first, err)
	}
	if left, _ := ob.Digests(); len(left) != 0 {
		t.Fatalf("answered event still in the outbox: %v", left)
	}
	size := n.Ledger.Head().Size

	// The crash: the envelope is on disk, the receipt was never seen.
	s, _ := events.Open(env)
	if err := ob.Put(s.DigestHex(), env); err != nil {
		t.Fatal(err)
	}
	// A restarted station recovers under its whole run's context, which
	// has no deadline (Resend once failed on exactly that: "nats: context
	// requires a deadline").
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	restarted, _ := events.NewPublisher(nc, events.ConsortiumPartner, rv)
	answers, err := restarted.WithOutbox(ob).Resend(runCtx)
	if err != nil {
		t.Fatal(err)
	}
	r := answers[s.DigestHex()]
	if r == nil || r.Status != events.StatusAccepted || r.LogIndex != first.LogIndex {
		t.Fatalf("re-sent event answered %+v, want the original entry #%d", r, first.LogIndex)
	}
	if got := n.Ledger.Head().Size; got != size {
		t.Fatalf("the log grew from %d to %d: logged twice", size, got)
	}
	if left, _ := ob.Digests(); len(left) != 0 {
		t.Fatalf("outbox not emptied: %v", left)
	}
}

// TestStationRecoverSkipsBadEntries: Recover, under a context with no
// deadline, re-sends the real pending event, leaves a file that is not a
// signed envelope in place (logged, never sent), and returns once nothing
// it can send is left.
func TestStationRecoverSkipsBadEntries(t *testing.T) {
	n := start(t)
	nc, env := registration(t, n, "late-odm", events.RoleODM, strings.Repeat("0", 62)+"bb")
	signed, _ := events.Open(env)
	dir := filepath.Join(t.TempDir(), "outbox")
	ob, err := events.OpenOutbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	junk := strings.Repeat("ab", 32)
	for d, b := range map[string][]byte{signed.DigestHex(): env, junk: []byte("not an envelope")} {
		if err := ob.Put(d, b); err != nil {
			t.Fatal(err)
		}
	}
	rv, err := n.ReceiptVerifier(events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	s, err := station.New(station.Config{
		Name: events.ConsortiumPartner, Role: "consortium", Key: n.PKI.ConsortiumCA.Key,
		NATS: nc, ReceiptVerifier: rv, Ledger: station.NewLedgerClient(n.URL()+"/ledger", n.HTTPClient("")), OutboxDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	if err := s.Recover(runCtx); err != nil {
		t.Fatal(err)
	}
	if left, _ := ob.Digests(); len(left) != 1 || left[0] != junk {
		t.Fatalf("outbox after recovery: %v, want only the unsendable %s", left, junk)
	}
	if _, err := n.Ledger.EventStatus(signed.Digest[:]); err != nil {
		t.Fatalf("re-sent event not in the log: %v", err)
	}
}
