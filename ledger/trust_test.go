package ledger

import (
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
)

// Trust-boundary refusals through the real pipeline (prepare, apply,
// commit) on a store in memory: who an answer goes to, event IDs, and the
// signer's certificate at the event's time.

// TestSubjectMismatchIsTheSenders: an event published on orbit-odm's
// subject that claims to be nova-oem's is refused, and the answer and the
// rejection record go to orbit-odm (the subject's partner, which NATS
// permissions make the sender), never to nova-oem.
func TestSubjectMismatchIsTheSenders(t *testing.T) {
	f := newRegistryFixture(t)
	for _, spec := range []struct{ name, role string }{{"orbit-odm", events.RoleODM}, {"nova-oem", events.RoleOEM}} {
		f.partners[spec.name] = f.newPartner(f.ca, spec.name, spec.role)
		if r := f.m.Feed(f.msg(f.registryEvent(events.KindPartnerRegistered, f.partners[spec.name], ""), f.ca.Key, events.ConsortiumPartner, ""))[0]; r.Status != events.StatusAccepted {
			t.Fatalf("registering %s: %+v", spec.name, r)
		}
	}
	dev := "5555555555555555555555555555555555555555555555555555555555555555"
	st := f.stage("nova-oem", dev, events.StageAssembly)
	msg := f.msg(st, f.partners["orbit-odm"].Key, "nova-oem", events.EventSubject("orbit-odm", dev))
	f.m.Feed(msg)
	digest := mustOpen(t, msg[1])
	f.m.mu.Lock()
	var subjects []string
	for s := range f.m.subjects {
		subjects = append(subjects, s)
	}
	f.m.mu.Unlock()
	want := events.RejectionSubject("orbit-odm", digest)
	if !contains(subjects, want) || contains(subjects, events.RejectionSubject("nova-oem", digest)) {
		t.Fatalf("answered on %v, want %s only", subjects, want)
	}
	rec, err := f.m.store.Rejection(mustHex(digest))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Code != string(events.CodeSubject) || rec.Partner != "orbit-odm" || rec.Target != dev {
		t.Fatalf("rejection record %+v, want subject-mismatch under orbit-odm", rec)
	}
}

// TestDuplicateEventID: a signer's event ID names one event. Another
// envelope with an ID the signer already logged is refused
// (duplicate-event-id), in the same batch or a later one; the same
// envelope again is answered from the log; another signer's equal ID is
// its own.
func TestDuplicateEventID(t *testing.T) {
	f := newRegistryFixture(t)
	reg := func(name, role, id string) [2][]byte {
		p := f.newPartner(f.ca, name, role)
		st := f.registryEvent(events.KindPartnerRegistered, p, "")
		st.Predicate.EventID = id
		return f.msg(st, f.ca.Key, events.ConsortiumPartner, "")
	}
	const id = "0123456789abcdef0123456789abcdef"
	first := reg("orbit-odm", events.RoleODM, id)
	rs := f.m.Feed(first, reg("nova-oem", events.RoleOEM, id))
	if rs[0].Status != events.StatusAccepted || rs[1].Status != events.StatusRejected || rs[1].Code != string(events.CodeDuplicateID) {
		t.Fatalf("in one batch: %+v / %+v, want accepted then %s", rs[0], rs[1], events.CodeDuplicateID)
	}
	size := f.m.l.Head().Size
	if r := f.m.Feed(reg("delta-ems", events.RoleEMS, id))[0]; r.Status != events.StatusRejected || r.Code != string(events.CodeDuplicateID) || r.Reason == "" {
		t.Fatalf("in a later batch: %+v", r)
	}
	if r := f.m.Feed(first)[0]; r.Status != events.StatusAccepted || r.LogIndex != rs[0].LogIndex {
		t.Fatalf("the same envelope again: %+v, want entry #%d", r, rs[0].LogIndex)
	}
	if got := f.m.l.Head().Size; got != size {
		t.Fatalf("log grew from %d to %d", size, got)
	}
	if d, err := f.m.store.EventDigestByID(events.ConsortiumPartner, id); err != nil || hexOf(d) != rs[0].Digest {
		t.Fatalf("event-ID index: %x %v", d, err)
	}
	// An entry without an index record (a store written before the index)
	// is no obstacle: the ID is simply unknown.
	if _, err := f.m.store.EventDigestByID("orbit-odm", id); err != ErrNotFound {
		t.Fatalf("another signer's ID: %v", err)
	}
}

// TestExpiredSignerRefusedOnline: the signer's certificate must be valid at
// the event's time (its integrated time), online as offline (Replay): an
// event by a registered, unrevoked partner whose certificate has expired is
// refused with bad-certificate.
func TestExpiredSignerRefusedOnline(t *testing.T) {
	f := newRegistryFixture(t)
	odm2, err := f.ca.NewPartner("orbit-odm", events.RoleODM, time.Minute) // a one-minute certificate
	if err != nil {
		t.Fatal(err)
	}
	if r := f.m.Feed(f.msg(f.registryEvent(events.KindPartnerRegistered, odm2, ""), f.ca.Key, events.ConsortiumPartner, ""))[0]; r.Status != events.StatusAccepted {
		t.Fatalf("registration: %+v", r)
	}
	dev := "6666666666666666666666666666666666666666666666666666666666666666"
	// While valid, the stage gets as far as the device (unknown here).
	if r := f.m.Feed(f.msg(f.stage("orbit-odm", dev, events.StageAssembly), odm2.Key, "orbit-odm", ""))[0]; r.Code != string(events.CodeUnknownDevice) {
		t.Fatalf("valid certificate: %+v", r)
	}
	later := time.Now().Add(10 * time.Minute)
	f.m.l.cfg.Now = func() time.Time { return later }
	r := f.m.Feed(f.msg(f.stage("orbit-odm", dev, events.StageAssembly), odm2.Key, "orbit-odm", ""))[0]
	if r == nil || r.Status != events.StatusRejected || r.Code != string(events.CodeBadCertificate) {
		t.Fatalf("expired certificate: %+v, want %s", r, events.CodeBadCertificate)
	}
}
