package ledger_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/station"
)

// openSim serves one simulated device's factory API until the returned
// function closes it: the in-process simulator is one per process at a
// time, and a boxed device needs none.
func openSim(t *testing.T, seed int) (string, func()) {
	t.Helper()
	tp, err := tpm.Open(fmt.Sprintf("sim:seed=%d", seed))
	if err != nil {
		t.Fatal(err)
	}
	d, err := device.New(device.Config{TPM: tp, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	closed := false
	closeFn := func() {
		if !closed {
			closed = true
			srv.Close()
			_ = tp.Close()
		}
	}
	t.Cleanup(closeFn)
	return srv.URL, closeFn
}

// nodeEnv starts a node for the test (stopped at its end) with a
// connection as the ledger's own NATS user.
func nodeEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	n, stop := startNode(t, ctx, dir)
	t.Cleanup(stop)
	nc, err := n.Connect(node.LedgerUser)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &env{t: t, ctx: ctx, dir: dir, n: n, nc: nc}
}

// sendRaw publishes a message on partner's subject of the statement it
// holds, bypassing the publisher's checks, and waits for the ledger's
// answer by digest.
func (e *env) sendRaw(partner string, msg []byte) *events.Receipt {
	e.t.Helper()
	s, _ := events.OpenMessage(msg)
	if s == nil {
		e.t.Fatal("sendRaw: not an envelope or parcel")
	}
	js, err := jetstream.New(e.nc)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := js.Publish(e.ctx, events.EventSubject(partner, s.Statement.Target()), msg); err != nil {
		e.t.Fatal(err)
	}
	for range 300 {
		if r, err := e.n.Ledger.EventStatus(s.Digest[:]); err == nil {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.t.Fatal("sendRaw: no answer")
	return nil
}

// TestShipments moves a pallet of five devices in two cartons through the
// shipment rules: one signed offer, a sampled receiving inspection, a
// split acceptance, a withdrawal, a double-sold carton, a shipment sent on,
// and the attacks on manifests; then each device's history verifies and
// replays offline, device by device.
func TestShipments(t *testing.T) {
	e := nodeEnv(t)
	ctx, n := e.ctx, e.n
	st := n.Ledger.Store()
	state := func(id string) *ledger.Device {
		t.Helper()
		d, err := st.Device(id)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// Five devices; the last stays powered (its agent open) for its quotes.
	var ids []string
	var agent5 string
	for i := range 5 {
		url, closeSim := openSim(t, 7100+i)
		r := must(t, "manufacture")(e.station("acme-tpm").Manufacture(ctx, url))
		ids = append(ids, r.Target)
		if i < 4 {
			closeSim()
		} else {
			agent5 = url
		}
	}
	must(t, "firmware")(e.station("acme-tpm").ProgramFirmware(ctx, agent5, []byte("image v1")))
	pallet := &events.Manifest{Containers: []events.Container{
		{Path: "P-1/C-1", Devices: ids[:2]},
		{Path: "P-1/C-2", Devices: ids[2:]},
	}}
	carton1 := &events.Manifest{Containers: []events.Container{{Path: "P-1/C-1", Devices: ids[:2]}}}
	carton2 := &events.Manifest{Containers: []events.Container{{Path: "P-1/C-2", Devices: ids[2:]}}}

	t.Run("a manifest listing devices the sender does not hold", func(t *testing.T) {
		_, err := e.station("orbit-odm").Ship(ctx, "S-0", "nova-oem", pallet)
		wantCode(t, "ship", nil, err, events.StatusRejected, events.CodeNotCustodian)
		for _, id := range ids {
			if d := state(id); d.Custodian != "acme-tpm" || d.Pending != nil {
				t.Fatalf("a refused shipment moved device %s: %+v", id, d)
			}
		}
	})
	t.Run("a device slipped out of the signed manifest", func(t *testing.T) {
		stmt, err := events.NewShipmentStatement(events.KindShipmentOffered, "acme-tpm", events.Shipment{ID: "S-X", From: "acme-tpm", To: "orbit-odm"}, pallet, time.Now(), events.NewEventID())
		if err != nil {
			t.Fatal(err)
		}
		env, err := events.Sign(ctx, stmt, n.PKI.Partners["acme-tpm"].Key, "acme-tpm")
		if err != nil {
			t.Fatal(err)
		}
		slipped := &events.Manifest{Containers: []events.Container{{Path: "P-1/C-1", Devices: ids[:2]}, {Path: "P-1/C-2", Devices: ids[2:4]}}}
		parcel, err := events.EncodeParcel(env, slipped)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := events.OpenMessage(parcel); !errors.Is(err, events.ErrManifest) {
			t.Fatalf("a publisher would send the tampered parcel: %v", err)
		}
		// Sent anyway, past the publisher's own check.
		wantCode(t, "tampered manifest", e.sendRaw("acme-tpm", parcel), nil, events.StatusRejected, events.CodeManifest)
		if _, err := events.OpenMessage(env); err == nil || !strings.Contains(err.Error(), "parcel") {
			t.Fatalf("a shipment without its manifest opened: %v", err)
		}
	})

	offer := must(t, "ship the pallet")(e.station("acme-tpm").Ship(ctx, "S-1", "orbit-odm", pallet))
	if offer.Target != "shipment-S-1" {
		t.Fatalf("target %q", offer.Target)
	}
	for _, id := range ids {
		if d := state(id); d.Pending == nil || d.Pending.To != "orbit-odm" || d.Pending.Shipment != "S-1" || d.Pending.Digest != offer.Digest {
			t.Fatalf("device %s not pending in S-1: %+v", id, d.Pending)
		}
	}
	if pend, _ := st.PendingOffers("orbit-odm"); len(pend) != 5 {
		t.Fatalf("pending to orbit-odm: %d devices", len(pend))
	}
	t.Run("the same shipment again is a retry", func(t *testing.T) {
		_, err := e.station("acme-tpm").Ship(ctx, "S-1", "orbit-odm", pallet)
		wantCode(t, "retry", nil, err, events.StatusRejected, events.CodeAlreadyExists)
	})
	must(t, "receiving inspection of a sampled device")(e.station("orbit-odm").RecordStage(ctx, agent5, events.StageReceivingInspection, "sample 1 of 5"))
	t.Run("a third party accepts a carton", func(t *testing.T) {
		if _, err := e.station("nova-oem").AcceptShipment(ctx, offer.Digest, carton1); err == nil {
			t.Fatal("nova-oem's station signed an acceptance of a carton offered to orbit-odm")
		}
		for _, to := range []string{"nova-oem", "orbit-odm"} { // claiming itself, or orbit-odm, as recipient
			stmt, _ := events.NewShipmentStatement(events.KindShipmentAccepted, "nova-oem", events.Shipment{ID: "S-1", From: "acme-tpm", To: to, Offer: offer.Digest}, carton1, time.Now(), events.NewEventID())
			signed, err := events.SignShipment(ctx, stmt, carton1, n.PKI.Partners["nova-oem"].Key, "nova-oem")
			if err != nil {
				t.Fatal(err)
			}
			wantCode(t, "third-party accept", e.publishRaw("nova-oem", signed.Wire()), nil, events.StatusRejected, events.CodeNotRecipient)
		}
	})
	must(t, "accept carton 2 (split)")(e.station("orbit-odm").AcceptShipment(ctx, offer.Digest, carton2))
	for i, id := range ids {
		d := state(id)
		if i >= 2 && (d.Custodian != "orbit-odm" || d.Pending != nil) {
			t.Fatalf("accepted device %s: %+v", id, d)
		}
		if i < 2 && (d.Custodian != "acme-tpm" || d.Pending == nil) {
			t.Fatalf("carton 1 device %s moved: %+v", id, d)
		}
	}
	t.Run("accepting the carton again", func(t *testing.T) {
		stmt, _ := events.NewShipmentStatement(events.KindShipmentAccepted, "orbit-odm", events.Shipment{ID: "S-1", From: "acme-tpm", To: "orbit-odm", Offer: offer.Digest}, carton2, time.Now(), events.NewEventID())
		signed, err := events.SignShipment(ctx, stmt, carton2, n.PKI.Partners["orbit-odm"].Key, "orbit-odm")
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, "re-accept", e.publishRaw("orbit-odm", signed.Wire()), nil, events.StatusRejected, events.CodeAlreadyExists)
	})
	must(t, "withdraw carton 1")(e.station("acme-tpm").WithdrawShipment(ctx, offer.Digest, carton1))
	if d := state(ids[0]); d.Custodian != "acme-tpm" || d.Pending != nil {
		t.Fatalf("withdrawn device: %+v", d)
	}

	// A double-sold carton: offered to orbit-odm, then to nova-oem.
	must(t, "ship carton 1")(e.station("acme-tpm").Ship(ctx, "S-2", "orbit-odm", carton1))
	var pending *station.PendingOfferError
	if _, err := e.station("acme-tpm").Ship(ctx, "S-2b", "nova-oem", carton1); !errors.As(err, &pending) {
		t.Fatalf("the station signed a second sale of a pending carton: %v", err)
	}
	_, err := e.station("acme-tpm").EquivocateShipment(ctx, "S-2b", "nova-oem", carton1)
	wantCode(t, "double sale", nil, err, events.StatusEvidence, events.CodeEquivocation)
	for _, id := range ids[:2] {
		if d := state(id); d.Flag == nil || d.Flag.Reason != "equivocation" {
			t.Fatalf("double-sold device %s not flagged: %+v", id, d)
		}
	}

	// Carton 2 goes on to nova-oem, which accepts it whole.
	on := must(t, "send carton 2 on")(e.station("orbit-odm").Ship(ctx, "S-3", "nova-oem", carton2))
	t.Run("the shipment and its manifest, to its parties only", func(t *testing.T) {
		d, _ := hex.DecodeString(on.Digest)
		for _, who := range []string{"orbit-odm", "nova-oem"} {
			sh, err := n.Ledger.ShipmentFor(d, who)
			if err != nil || sh.Shipment.ID != "S-3" || sh.Manifest.Len() != 3 || sh.Index != on.LogIndex {
				t.Fatalf("%s reads shipment S-3: %+v, %v", who, sh, err)
			}
		}
		for who, want := range map[string]error{"": ledger.ErrUnauthenticated, "acme-tpm": ledger.ErrForbidden, "delta-ems": ledger.ErrForbidden} {
			if _, err := n.Ledger.ShipmentFor(d, who); !errors.Is(err, want) {
				t.Fatalf("%q reads shipment S-3: %v, want %v", who, err, want)
			}
		}
		other, _ := hex.DecodeString(offer.Digest) // not nova-oem's
		if _, err := n.Ledger.ShipmentFor(other, "nova-oem"); !errors.Is(err, ledger.ErrForbidden) {
			t.Fatalf("nova-oem reads another party's shipment: %v", err)
		}
		first, _ := st.Entry(0) // not a shipment at all
		if _, err := n.Ledger.ShipmentFor(first.Digest, "nova-oem"); !errors.Is(err, ledger.ErrForbidden) {
			t.Fatalf("a digest that is no shipment offer: %v", err)
		}
		hc := n.HTTPClient("delta-ems")
		resp, err := hc.Get(n.URL() + "/ledger/v1/shipments/" + on.Digest)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 403 {
			t.Fatalf("a stranger's GET of the shipment: %d, want 403", resp.StatusCode)
		}
		// The same over NATS, with a read token: the recipient reads it,
		// a stranger gets 403, no token 401.
		ask := func(who string) *nats.Msg {
			t.Helper()
			req := nats.NewMsg(ledger.MicroSubjectPrefix + ".shipment")
			req.Data = []byte(on.Digest)
			if who != "" {
				tok, err := ledger.NewReadToken(who, n.PKI.Partners[who].Key, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			m, err := e.nc.RequestMsg(req, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		var sh ledger.Shipment
		if m := ask("nova-oem"); json.Unmarshal(m.Data, &sh) != nil || sh.Shipment.ID != "S-3" || sh.Manifest.Len() != 3 {
			t.Fatalf("nova-oem's query of its shipment over NATS: %s", m.Data)
		}
		for who, code := range map[string]string{"delta-ems": "403", "": "401"} {
			if m := ask(who); m.Header.Get("Nats-Service-Error-Code") != code || strings.Contains(string(m.Data), ids[2]) {
				t.Fatalf("%q's query of the shipment over NATS: %s %s, want %s", who, m.Header.Get("Nats-Service-Error-Code"), m.Data, code)
			}
		}
		if _, err := e.station("acme-tpm").AcceptShipment(ctx, on.Digest, nil); err == nil {
			t.Fatal("acme-tpm's station accepted a shipment to nova-oem")
		}
	})
	// The recipient accepts the whole shipment by its digest: the station
	// reads the manifest from the ledger.
	must(t, "nova accepts")(e.station("nova-oem").AcceptShipment(ctx, on.Digest, nil))
	must(t, "inspection at nova")(e.station("nova-oem").RecordStage(ctx, agent5, events.StageReceivingInspection, ""))

	t.Run("tampered firmware is caught by a sampled quote", func(t *testing.T) {
		if _, err := device.NewClient(agent5, nil).ProgramFirmware(ctx, []byte("grey-market image")); err != nil {
			t.Fatal(err)
		}
		_, err := e.station("nova-oem").RecordStage(ctx, agent5, events.StageReceivingInspection, "")
		wantCode(t, "inspection", nil, err, events.StatusRejected, events.CodeEvidence)
	})

	// A former holder reads its own entries (its shipments among them),
	// without the device's state, and they verify.
	if p, err := n.Ledger.ProvenanceFor(ids[4], "orbit-odm"); err != nil || p.Device != nil {
		t.Fatalf("orbit-odm's part of the history: %v", err)
	} else if entries, _, err := ledger.VerifyProvenance(p, &n.PKI.LogKey.PublicKey); err != nil || len(entries) != 3 {
		t.Fatalf("orbit-odm's entries: %d, %v", len(entries), err)
	}
	tpmTrust, err := attest.ParseBundle(n.PKI.EKTrustBundle())
	if err != nil {
		t.Fatal(err)
	}
	trust := ledger.OfflineTrust{TPMTrust: tpmTrust, Consortium: n.PKI.ConsortiumCA.Cert}
	logKey := &n.PKI.LogKey.PublicKey
	for _, c := range []struct {
		id, custodian, kinds string
		flagged              bool
	}{
		{ids[4], "nova-oem", "tpm.manufactured stage.recorded shipment.offered stage.recorded shipment.accepted shipment.offered shipment.accepted stage.recorded", false},
		{ids[0], "acme-tpm", "tpm.manufactured shipment.offered shipment.withdrawn shipment.offered shipment.offered", true},
	} {
		prov, err := n.Ledger.Provenance(c.id)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, en := range prov.Entries {
			kinds = append(kinds, en.Kind)
		}
		if got := strings.Join(kinds, " "); got != c.kinds {
			t.Fatalf("device %s history:\n got %s\nwant %s", c.id, got, c.kinds)
		}
		_, got, err := bundleReplay(c.id, prov, logKey, trust)
		if err != nil {
			t.Fatalf("bundle of %s: %v", c.id, err)
		}
		if got.Custodian != c.custodian || (got.Flag != nil) != c.flagged {
			t.Fatalf("replayed %s: custodian %s flag %+v", c.id, got.Custodian, got.Flag)
		}
		// Another device's history cannot borrow this one's shipments.
		other := *prov
		other.Device = state(ids[1])
		if c.id != ids[1] {
			if _, err := ledger.NewBundle(ids[1], &other, logKey); err == nil {
				t.Fatalf("device %s's shipment proofs verified for %s", c.id, ids[1])
			}
		}
	}
}

// TestProvenancePages: a device's history read a page at a time is the
// whole history, each page verifying on its own; a page is never a
// bundle; a bad page request is a 400.
func TestProvenancePages(t *testing.T) {
	ctx := context.Background()
	srv := simAgent(t, 7300)
	n, stop := startNode(t, ctx, t.TempDir())
	defer stop()
	r := must(t, "manufacture")(n.Stations["acme-tpm"].Manufacture(ctx, srv.URL))
	for range 6 {
		must(t, "stage")(n.Stations["acme-tpm"].RecordStage(ctx, srv.URL, events.StageTestPassed, ""))
	}
	whole, err := n.Ledger.Provenance(r.Target)
	if err != nil {
		t.Fatal(err)
	}
	logKey := &n.PKI.LogKey.PublicKey
	var got []uint64
	page := ledger.Page{Limit: 3}
	for pages := 0; ; pages++ {
		p, err := n.Ledger.ProvenancePageFor(r.Target, "acme-tpm", page)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ledger.VerifyProvenance(p, logKey); err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			got = append(got, e.Index)
		}
		if p.Next == nil {
			break
		}
		if _, err := ledger.NewBundle(r.Target, p, logKey); err == nil {
			t.Fatal("a page made a bundle")
		}
		page = ledger.Page{After: *p.Next, HasAfter: true, Limit: 3}
		if pages > 5 {
			t.Fatal("paging does not end")
		}
	}
	if len(got) != len(whole.Entries) || len(got) != 7 {
		t.Fatalf("pages hold %v, the history %d entries", got, len(whole.Entries))
	}
	for i, e := range whole.Entries {
		if got[i] != e.Index {
			t.Fatalf("pages %v differ from the history", got)
		}
	}
	hc := n.HTTPClient("acme-tpm")
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "after=-1"} {
		resp, err := hc.Get(n.URL() + "/ledger/v1/devices/" + r.Target + "/provenance?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("%s: %d, want 400", q, resp.StatusCode)
		}
	}
}

// bundleReplay writes a device's provenance into a bundle, reads it back
// and verifies it, then replays the custody rules offline.
func bundleReplay(device string, prov *ledger.Provenance, logKey *ecdsa.PublicKey, trust ledger.OfflineTrust) (*ledger.Bundle, *ledger.Device, error) {
	b, err := ledger.NewBundle(device, prov, logKey)
	if err != nil {
		return nil, nil, err
	}
	data, _ := json.Marshal(b)
	vb, err := ledger.VerifyBundle(data, logKey)
	if err != nil {
		return nil, nil, err
	}
	st, err := vb.Replay(trust)
	return b, st, err
}
