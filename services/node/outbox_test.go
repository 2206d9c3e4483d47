package node_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/pki"
)

// TestOutboxRecoversWithoutDuplicates: a publisher that crashed after
// publishing but before the receipt finds the event in its outbox on
// restart, re-sends it, and gets the original entry back: nothing lost,
// nothing logged twice.
func TestOutboxRecoversWithoutDuplicates(t *testing.T) {
	n := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc, err := n.Connect(events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	late, err := n.PKI.ConsortiumCA.NewPartner("late-oem", pki.RoleOEM, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st := events.NewPartnerStatement(events.KindPartnerRegistered,
		events.PartnerInfo{Name: "late-oem", Role: pki.RoleOEM, Certificate: late.Cert.Raw},
		"00000000000000000000000000000000000000000000000000000000000000aa", time.Now(), "0123456789abcdef0123456789abcdef")
	env, err := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "outbox")
	ob, err := events.OpenOutbox(dir)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := events.NewPublisher(nc, events.ConsortiumPartner)
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
	restarted, _ := events.NewPublisher(nc, events.ConsortiumPartner)
	answers, err := restarted.WithOutbox(ob).Resend(ctx)
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
