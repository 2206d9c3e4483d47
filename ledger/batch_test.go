package ledger_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
)

// TestStationBatches has a station sign a batch of quoted events about
// four devices under one signature: the ledger checks the signature once,
// judges every member by its own kind's rules and answers per member (one
// bad quote refuses that member only), logs the batch as one leaf, and
// each device's history carries its member, which verifies and replays
// offline. A re-sent batch is recognised; a member logged before keeps its
// entry; a batch whose members all fail is refused with their verdicts;
// a forged signature or a tampered member list refuses the whole batch.
func TestStationBatches(t *testing.T) {
	e := nodeEnv(t)
	ctx, n := e.ctx, e.n
	key := n.PKI.Partners["acme-tpm"].Key

	// Four devices, each manufactured and quoted for its test-passed stage
	// while its TPM is powered (one simulated TPM at a time).
	var ids []string
	var members []*events.Statement
	for i := range 4 {
		url, closeSim := openSim(t, 7300+i)
		r := must(t, "manufacture")(e.station("acme-tpm").Manufacture(ctx, url))
		ids = append(ids, r.Target)
		e.dev = device.NewClient(url, n.HTTPClient("acme-tpm"))
		st := events.NewStatement(events.KindStageRecorded, "acme-tpm", r.Target, time.Now(), events.NewEventID())
		st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: "end of line"}
		members = append(members, e.quoted(st))
		closeSim()
	}
	// The third member's quote is another statement's.
	other := events.NewStatement(events.KindStageRecorded, "acme-tpm", ids[2], time.Now(), events.NewEventID())
	other.Predicate.Stage = &events.Stage{Name: events.StageAssembly}
	other.Predicate.Evidence = members[2].Predicate.Evidence
	members[2] = other

	b, err := events.SignBatch(ctx, "eol-1", members, key, "acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	head := n.Ledger.Head().Size
	r := e.publishRaw("acme-tpm", b.Parcel)
	if r.Status != events.StatusAccepted || len(r.Members) != 4 {
		t.Fatalf("batch: %+v", r)
	}
	if n.Ledger.Head().Size != head+1 {
		t.Fatalf("a batch of 4 took %d leaves, want 1", n.Ledger.Head().Size-head)
	}
	for i, v := range r.Members {
		want := events.StatusAccepted
		if i == 2 {
			want = events.StatusRejected
		}
		if v.Status != want || v.Digest != b.Members[i].DigestHex() || v.Target != ids[i] || v.Kind != events.KindStageRecorded {
			t.Fatalf("member %d: %+v", i, v)
		}
	}
	if r.Members[2].Code != string(events.CodeEvidence) {
		t.Fatalf("member with another statement's quote: %+v", r.Members[2])
	}
	for i, id := range ids {
		d, err := n.Ledger.Store().Device(id)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := d.Stages[events.StageTestPassed]; ok != (i != 2) {
			t.Fatalf("device %d stages after the batch: %v", i, d.Stages)
		}
	}

	// The same batch again: recognised, with the same verdicts.
	again := e.publishRaw("acme-tpm", b.Parcel)
	if again.LogIndex != r.LogIndex || len(again.Members) != 4 || again.Members[2].Status != events.StatusRejected {
		t.Fatalf("re-sent batch: %+v", again)
	}
	// A member asked about by its own digest answers with its batch.
	if st, err := n.Ledger.EventStatus(b.Members[0].Digest[:]); err != nil || st.LogIndex != r.LogIndex {
		t.Fatalf("status of a member: %+v, %v", st, err)
	}

	// A new batch: the first member again (logged already: it keeps its
	// entry) and a device the registry does not know.
	unknown := events.NewStatement(events.KindStageRecorded, "acme-tpm", strings.Repeat("ab", 32), time.Now(), events.NewEventID())
	unknown.Predicate.Stage = &events.Stage{Name: events.StageAssembly}
	unknown.Predicate.Evidence = members[0].Predicate.Evidence
	b2, err := events.SignBatch(ctx, "eol-2", []*events.Statement{members[0], unknown}, key, "acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	r2 := e.publishRaw("acme-tpm", b2.Parcel)
	if r2.Status != events.StatusRejected || r2.Code != string(events.CodeUnknownDevice) || len(r2.Members) != 2 ||
		!r2.Members[0].Existing || r2.Members[0].LogIndex != r.LogIndex || r2.Members[1].Code != string(events.CodeUnknownDevice) {
		t.Fatalf("batch of a logged member and an unknown device: %+v", r2)
	}

	// Whole-batch refusals: another partner's key, a member taken out.
	forged, err := events.SignBatch(ctx, "eol-3", members[3:], n.PKI.Partners["orbit-odm"].Key, "acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	rf := e.sendRaw("acme-tpm", forged.Parcel)
	wantCode(t, "forged batch", rf, nil, events.StatusRejected, events.CodeBadSignature)
	fresh, err := events.SignBatch(ctx, "eol-4", []*events.Statement{members[0], unknown}, key, "acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	var p events.Parcel
	if err := json.Unmarshal(fresh.Parcel, &p); err != nil {
		t.Fatal(err)
	}
	p.Members = p.Members[:1]
	cut, _ := json.Marshal(p)
	rc := e.sendRaw("acme-tpm", cut)
	wantCode(t, "member taken out", rc, nil, events.StatusRejected, events.CodeManifest)

	// Each device's history carries its member; it verifies and replays.
	tpmTrust, err := attest.ParseBundle(n.PKI.EKTrustBundle())
	if err != nil {
		t.Fatal(err)
	}
	trust := ledger.OfflineTrust{TPMTrust: tpmTrust, Consortium: n.PKI.ConsortiumCA.Cert}
	for i, id := range ids {
		prov, err := n.Ledger.Provenance(id)
		if err != nil {
			t.Fatal(err)
		}
		last := prov.Entries[len(prov.Entries)-1]
		if i == 2 {
			if len(prov.Entries) != 1 {
				t.Fatalf("device %d: a refused member is in its history: %+v", i, prov.Entries)
			}
		} else if last.Batch != b.DigestHex() || last.Digest != b.Members[i].DigestHex() || last.Kind != events.KindStageRecorded || last.Index != r.LogIndex {
			t.Fatalf("device %d: last entry %+v", i, last)
		}
		_, got, err := bundleReplay(id, prov, &n.PKI.LogKey.PublicKey, trust)
		if err != nil {
			t.Fatalf("device %d bundle: %v", i, err)
		}
		if _, ok := got.Stages[events.StageTestPassed]; ok != (i != 2) {
			t.Fatalf("device %d replayed stages: %v", i, got.Stages)
		}
		if i == 0 {
			// Another device's member proof in this device's history.
			prov.Entries[len(prov.Entries)-1].MemberProof = mustProof(t, n, ids[1], r.LogIndex)
			if _, _, err := ledger.VerifyProvenance(prov, &n.PKI.LogKey.PublicKey); err == nil {
				t.Fatal("device 0's history verified with device 1's member")
			}
		}
	}
}

func mustProof(t *testing.T, n *node.Node, device string, idx uint64) []byte {
	t.Helper()
	p, err := n.Ledger.Store().ManifestProof(device, idx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
