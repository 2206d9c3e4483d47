package ledger_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/station"
)

// env is a running node and one simulated device behind its factory API.
type env struct {
	t      *testing.T
	ctx    context.Context
	dir    string
	n      *node.Node
	stop   func()
	agent  string
	dev    *device.Client
	device string
	nc     *nats.Conn
}

func startNode(t *testing.T, ctx context.Context, dir string) (*node.Node, func()) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a whole node (NATS, ledger, stations); run without -short")
	}
	n, err := node.New(ctx, node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Run(rctx) }()
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("node stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("node not ready")
	}
	return n, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	}
}

func (e *env) station(name string) *station.Station { return e.n.Stations[name] }

// publish signs st with partner's key and publishes it, returning the receipt.
func (e *env) publish(partner string, st *events.Statement) *events.Receipt {
	e.t.Helper()
	env, err := events.Sign(e.ctx, st, e.n.PKI.Partners[partner].Key, partner)
	if err != nil {
		e.t.Fatal(err)
	}
	return e.publishRaw(partner, env)
}

func (e *env) publishRaw(partner string, envelope []byte) *events.Receipt {
	e.t.Helper()
	rv, err := e.n.ReceiptVerifier(partner)
	if err != nil {
		e.t.Fatal(err)
	}
	pub, err := events.NewPublisher(e.nc, partner, rv)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	r, err := pub.Publish(ctx, envelope)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// quoted fills st's evidence with a real quote over its binding digest.
func (e *env) quoted(st *events.Statement) *events.Statement {
	e.t.Helper()
	nonce, err := events.StatementBindingDigest(st)
	if err != nil {
		e.t.Fatal(err)
	}
	q, err := e.dev.Quote(e.ctx, nonce, []int{0})
	if err != nil {
		e.t.Fatal(err)
	}
	st.Predicate.Evidence = events.NewEvidence(q)
	return st
}

func eventID(i int) string { return strings.Repeat("0", 30) + hex.EncodeToString([]byte{byte(i)}) }

func wantCode(t *testing.T, what string, r *events.Receipt, err error, status string, code events.Code) {
	t.Helper()
	var rej *station.RejectedError
	if err != nil && !errors.As(err, &rej) {
		t.Fatalf("%s: %v", what, err)
	}
	if rej != nil {
		r = rej.Receipt
	}
	if r == nil || r.Status != status || r.Code != string(code) {
		t.Fatalf("%s: got %+v, want status %s code %q", what, r, status, code)
	}
}

// sameFlag reports whether two device flags are the same.
func sameFlag(a, b *ledger.DeviceFlag) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// must returns a check that a station call was accepted, for
// must(t, what)(station.Call(...)).
func must(t *testing.T, what string) func(*station.Result, error) *events.Receipt {
	return func(res *station.Result, err error) *events.Receipt {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if res.Receipt.Status != events.StatusAccepted {
			t.Fatalf("%s: %+v", what, res.Receipt)
		}
		return res.Receipt
	}
}

// TestCustodyRules drives one simulated device through the custody rules:
// every accepted event must come with a receipt whose proof verifies, and
// each attack must be refused with its own code, leaving the log intact.
// simAgent serves a device's factory API over the in-process simulated TPM
// (one per process at a time), closed at the test's end.
func simAgent(t *testing.T, seed int) *httptest.Server {
	t.Helper()
	tp, err := tpm.Open(fmt.Sprintf("sim:seed=%d", seed))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tp.Close() })
	d, err := device.New(device.Config{TPM: tp, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func TestCustodyRules(t *testing.T) {
	ctx := context.Background()
	srv := simAgent(t, 4242)
	dir := t.TempDir()
	n, stop := startNode(t, ctx, dir)
	nc, err := n.Connect(node.LedgerUser)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: ctx, dir: dir, n: n, stop: stop, agent: srv.URL, dev: device.NewClient(srv.URL, nil), nc: nc}
	logKey := &n.PKI.LogKey.PublicKey

	checkReceipt := func(r *events.Receipt) {
		t.Helper()
		cp, err := ledger.VerifyCheckpoint([]byte(r.Checkpoint), logKey)
		if err != nil {
			t.Fatal(err)
		}
		entry, err := n.Ledger.Store().Entry(r.LogIndex)
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.VerifyInclusion(entry.Body, r.LogIndex, cp.Size, r.Hashes, cp.Root); err != nil {
			t.Fatalf("receipt for #%d does not verify: %v", r.LogIndex, err)
		}
	}

	r := must(t, "manufacture")(e.station("acme-tpm").Manufacture(ctx, e.agent))
	checkReceipt(r)
	e.device = r.Target

	t.Run("manufacturing twice", func(t *testing.T) {
		_, err := e.station("acme-tpm").Manufacture(ctx, e.agent)
		wantCode(t, "second birth record", nil, err, events.StatusRejected, events.CodeAlreadyExists)
	})
	t.Run("stage by a non-custodian", func(t *testing.T) {
		_, err := e.station("orbit-odm").RecordStage(ctx, e.agent, events.StageAssembly, "")
		wantCode(t, "stage", nil, err, events.StatusRejected, events.CodeNotCustodian)
	})
	t.Run("hand-off to an unregistered party (grey market)", func(t *testing.T) {
		_, err := e.station("acme-tpm").Offer(ctx, e.agent, "shadow-broker")
		wantCode(t, "offer", nil, err, events.StatusRejected, events.CodeRecipient)
	})
	checkReceipt(must(t, "offer to odm")(e.station("acme-tpm").Offer(ctx, e.agent, "orbit-odm")))
	t.Run("acceptance by someone else", func(t *testing.T) {
		st := events.NewStatement(events.KindHandoffAccepted, "nova-oem", e.device, time.Now(), eventID(1))
		dev, _ := n.Ledger.Store().Device(e.device)
		st.Predicate.Handoff = &events.Handoff{From: "acme-tpm", To: "nova-oem", Offer: dev.Pending.Digest}
		rr := e.publish("nova-oem", e.quoted(st))
		wantCode(t, "accept", rr, nil, events.StatusRejected, events.CodeNotRecipient)
	})
	if ids, err := n.Ledger.Store().PendingOffers("orbit-odm"); err != nil || len(ids) != 1 || ids[0] != e.device {
		t.Fatalf("pending offers to orbit-odm: %v %v", ids, err)
	}
	checkReceipt(must(t, "odm accepts")(e.station("orbit-odm").Accept(ctx, e.agent)))
	if ids, _ := n.Ledger.Store().PendingOffers("orbit-odm"); len(ids) != 0 {
		t.Fatalf("accepted offer still pending: %v", ids)
	}
	t.Run("re-acceptance by the recipient is a repeat, not equivocation", func(t *testing.T) {
		dev, _ := n.Ledger.Store().Device(e.device)
		st := events.NewStatement(events.KindHandoffAccepted, "orbit-odm", e.device, time.Now(), eventID(21))
		st.Predicate.Handoff = &events.Handoff{From: "acme-tpm", To: "orbit-odm", Offer: dev.LastAccepted}
		wantCode(t, "re-accept", e.publish("orbit-odm", e.quoted(st)), nil, events.StatusRejected, events.CodeAlreadyExists)
		if dev, _ := n.Ledger.Store().Device(e.device); dev.Flag != nil || dev.Custodian != "orbit-odm" {
			t.Fatalf("a repeated acceptance changed the device: %+v", dev)
		}
	})
	assembly := must(t, "assembly")(e.station("orbit-odm").RecordStage(ctx, e.agent, events.StageAssembly, "line 3"))

	t.Run("replayed quote", func(t *testing.T) {
		// The evidence of the logged assembly event, moved into a new event.
		old, _ := n.Ledger.Store().Entry(assembly.LogIndex)
		s, err := events.Open(old.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		st := events.NewStatement(events.KindStageRecorded, "orbit-odm", e.device, time.Now(), eventID(2))
		st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed}
		st.Predicate.Evidence = s.Statement.Predicate.Evidence
		rr := e.publish("orbit-odm", st)
		wantCode(t, "replay", rr, nil, events.StatusRejected, events.CodeEvidence)
	})
	t.Run("forged signature", func(t *testing.T) {
		st := events.NewStatement(events.KindStageRecorded, "orbit-odm", e.device, time.Now(), eventID(3))
		st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed}
		env, err := events.Sign(ctx, e.quoted(st), n.PKI.Partners["grey-operator"].Key, "orbit-odm")
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, "forgery", e.publishRaw("orbit-odm", env), nil, events.StatusRejected, events.CodeBadSignature)
	})
	t.Run("tampered firmware PCRs", func(t *testing.T) {
		st := events.NewStatement(events.KindStageRecorded, "orbit-odm", e.device, time.Now(), eventID(4))
		st.Predicate.Stage = &events.Stage{Name: events.StageFirmwareProgrammed,
			FirmwareDigest: strings.Repeat("ab", 32), PCRs: map[string]string{"0": strings.Repeat("cd", 32)}}
		wantCode(t, "pcrs", e.publish("orbit-odm", e.quoted(st)), nil, events.StatusRejected, events.CodeEvidence)
	})
	t.Run("event on another partner's subject", func(t *testing.T) {
		st := events.NewStatement(events.KindStageRecorded, "orbit-odm", e.device, time.Now(), eventID(5))
		st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed}
		env, _ := events.Sign(ctx, e.quoted(st), n.PKI.Partners["orbit-odm"].Key, "orbit-odm")
		js, _ := e.nc.JetStream()
		// Answered to the subject's partner (the sender, under NATS
		// permissions), not to the partner the envelope names.
		sub, _ := e.nc.SubscribeSync(events.RejectionSubject("nova-oem", "*"))
		defer sub.Unsubscribe()
		if _, err := js.Publish(events.EventSubject("nova-oem", e.device), env); err != nil {
			t.Fatal(err)
		}
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var rr events.Receipt
		_ = json.Unmarshal(m.Data, &rr)
		wantCode(t, "subject", &rr, nil, events.StatusRejected, events.CodeSubject)
	})

	before := n.Ledger.Head()
	t.Run("duplicate is answered from the log", func(t *testing.T) {
		old, _ := n.Ledger.Store().Entry(assembly.LogIndex)
		rr := e.publishRaw("orbit-odm", old.Envelope)
		if rr.Status != events.StatusAccepted || rr.LogIndex != assembly.LogIndex {
			t.Fatalf("duplicate answered %+v, want the original entry #%d", rr, assembly.LogIndex)
		}
		if n.Ledger.Head().Size != before.Size {
			t.Fatal("a duplicate grew the log")
		}
	})

	must(t, "offer to oem")(e.station("orbit-odm").Offer(ctx, e.agent, "nova-oem"))
	t.Run("double hand-off is equivocation", func(t *testing.T) {
		_, err := e.station("orbit-odm").Equivocate(ctx, e.agent, "grey-operator")
		wantCode(t, "second offer", nil, err, events.StatusEvidence, events.CodeEquivocation)
		dev, _ := n.Ledger.Store().Device(e.device)
		if dev.Flag == nil || dev.Flag.Reason != "equivocation" {
			t.Fatalf("device not flagged: %+v", dev.Flag)
		}
		if dev.Pending == nil || dev.Pending.To != "nova-oem" {
			t.Fatal("the evidence changed the pending offer")
		}
	})
	must(t, "oem accepts")(e.station("nova-oem").Accept(ctx, e.agent))
	t.Run("acceptance of an accepted offer by another partner is refused, not evidence", func(t *testing.T) {
		dev, _ := n.Ledger.Store().Device(e.device)
		size := n.Ledger.Head().Size
		st := events.NewStatement(events.KindHandoffAccepted, "grey-operator", e.device, time.Now(), eventID(22))
		st.Predicate.Handoff = &events.Handoff{From: "orbit-odm", To: "grey-operator", Offer: dev.LastAccepted}
		wantCode(t, "second acceptance", e.publish("grey-operator", e.quoted(st)), nil, events.StatusRejected, events.CodeNotRecipient)
		if after, _ := n.Ledger.Store().Device(e.device); after.Custodian != "nova-oem" || !sameFlag(after.Flag, dev.Flag) || n.Ledger.Head().Size != size {
			t.Fatalf("a third party's acceptance changed the device or the log: %+v", after)
		}
	})

	t.Run("revoked partner", func(t *testing.T) {
		p := n.PKI.Partners["orbit-odm"]
		st := events.NewPartnerStatement(events.KindPartnerRevoked, events.PartnerInfo{Name: p.Name, Role: p.Role}, strings.Repeat("00", 32), time.Now(), eventID(6))
		env, _ := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
		if rr := e.publishRaw(events.ConsortiumPartner, env); rr.Status != events.StatusAccepted {
			t.Fatalf("revocation: %+v", rr)
		}
		_, err := e.station("orbit-odm").Flag(ctx, e.agent, events.KindDeviceFlagged, events.FlagLost, "")
		wantCode(t, "revoked", nil, err, events.StatusRejected, events.CodePartnerRevoked)
	})

	// Everything logged about the device, including orbit-odm's events from
	// before its revocation, still verifies.
	prov, err := n.Ledger.Provenance(e.device)
	if err != nil {
		t.Fatal(err)
	}
	entries, cp, err := ledger.VerifyProvenance(prov, logKey)
	if err != nil {
		t.Fatal(err)
	}
	kinds := []string{}
	for _, en := range entries {
		kinds = append(kinds, en.Kind+"/"+en.Status)
	}
	want := "tpm.manufactured/accepted handoff.offered/accepted handoff.accepted/accepted stage.recorded/accepted handoff.offered/accepted handoff.offered/evidence handoff.accepted/accepted"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("timeline:\n got %s\nwant %s", got, want)
	}

	t.Run("offline replay of the custody rules", func(t *testing.T) {
		tpmTrust, err := attest.ParseBundle(n.PKI.EKTrustBundle())
		if err != nil {
			t.Fatal(err)
		}
		trust := ledger.OfflineTrust{TPMTrust: tpmTrust, Consortium: n.PKI.ConsortiumCA.Cert}
		b, st, err := bundleReplay(e.device, prov, logKey, trust)
		if err != nil {
			t.Fatalf("bundle and replay: %v", err)
		}
		if st.Custodian != prov.Device.Custodian || st.Flag == nil || st.Flag.Reason != "equivocation" {
			t.Fatalf("replayed state %+v, ledger's %+v", st, prov.Device)
		}
		// The ledger's verdict is not in the leaf: a bundle that calls an
		// accepted hand-off evidence (or the equivocation accepted) is caught.
		for i := range b.Provenance.Entries {
			pe := &b.Provenance.Entries[i]
			if pe.Kind != events.KindHandoffOffered {
				continue
			}
			orig := pe.Status
			if orig == events.StatusAccepted {
				pe.Status = events.StatusEvidence
			} else {
				pe.Status = events.StatusAccepted
			}
			data, _ := json.Marshal(b)
			pe.Status = orig
			vb, err := ledger.VerifyBundle(data, logKey)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := vb.Replay(trust); err == nil {
				t.Errorf("entry %d: a false %s verdict replayed cleanly", pe.Index, orig)
			}
		}
		// Another consortium's CA does not vouch for these partners.
		other := n.PKI.WebTrustRoot.Cert
		if _, _, err := bundleReplay(e.device, prov, logKey, ledger.OfflineTrust{TPMTrust: tpmTrust, Consortium: other}); err == nil {
			t.Error("replay accepted partner certificates from another CA")
		}
	})

	// Restart: the log, the state and the proofs survive; the tree grows
	// consistently.
	sizeBefore, rootBefore := cp.Size, cp.Root
	nc.Close()
	stop()
	n2, stop2 := startNode(t, ctx, dir)
	defer stop2()
	if h := n2.Ledger.Head(); h.Size != sizeBefore || !bytes.Equal(h.Root, rootBefore) {
		t.Fatalf("after restart head is %d/%x, want %d/%x", h.Size, h.Root, sizeBefore, rootBefore)
	}
	nc2, _ := n2.Connect(node.LedgerUser)
	defer nc2.Close()
	e.n, e.nc = n2, nc2
	must(t, "oem offers to ems")(n2.Stations["nova-oem"].Offer(ctx, e.agent, "delta-ems"))
	head := n2.Ledger.Head()
	proof, err := n2.Ledger.ConsistencyProof(sizeBefore, head.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := ledger.VerifyConsistency(sizeBefore, head.Size, proof, rootBefore, head.Root); err != nil {
		t.Fatalf("consistency across restart: %v", err)
	}
	// The HTTP API serves the same provenance to the device's custodian.
	holder := prov.Device.Custodian
	token, err := ledger.NewReadToken(holder, n2.PKI.Partners[holder].Key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, n2.URL()+"/ledger/v1/devices/"+e.device+"/provenance", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := n2.HTTPClient("").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("provenance as the custodian %s: %s", holder, resp.Status)
	}
	defer resp.Body.Close()
	var hp ledger.Provenance
	if err := json.NewDecoder(resp.Body).Decode(&hp); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ledger.VerifyProvenance(&hp, logKey); err != nil {
		t.Fatal(err)
	}
	// And packaged as an offline bundle, it verifies with the log key alone.
	b, err := ledger.NewBundle(e.device, &hp, logKey)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(b)
	vb, err := ledger.VerifyBundle(data, logKey)
	if err != nil || len(vb.Entries) != len(hp.Entries) {
		t.Fatalf("bundle: %v", err)
	}
}
