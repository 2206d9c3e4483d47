package ledger_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
)

// TestAdversaryPartner is the trust boundary seen from a hostile partner
// WITH valid credentials: delta-ems (an EMS registered in the log, its own
// consortium key and NATS user, the device in its hands so it can get
// quotes) publishing straight onto NATS as its real NATS user
// (node.PartnerPermissions), never through its station. The device is held
// by nova-oem. One subtest per attack; each asserts the refusal code (or
// NATS's permission error) and that the device's state did not change and
// the log did not grow (a flag report is logged by design, changing
// nothing).
//
// Attacks covered elsewhere, kept there and listed here so the list is
// whole:
//   - forged signature, a quote replayed into another event, tampered
//     firmware PCRs, a revoked partner: TestCustodyRules;
//   - every refusal before the rules (unknown or revoked partner, another
//     key, a registry event by a partner, an unregistered signer):
//     TestRefusalsBeforeTheRules;
//   - an envelope on another partner's subject that got onto the stream
//     (the ledger's own user): TestCustodyRules and
//     TestSubjectMismatchIsTheSenders;
//   - request replies aimed at event subjects or the checkpoint bucket:
//     TestRepliesOnlyIntoInboxes;
//   - a partner's NATS user against every other subject:
//     services/node TestPartnerPermissions;
//   - an expired signer certificate: TestExpiredSignerRefusedOnline.
func TestAdversaryPartner(t *testing.T) {
	ctx := context.Background()
	srv := simAgent(t, 4343)
	n, stop := startNode(t, ctx, t.TempDir())
	defer stop()
	dev := device.NewClient(srv.URL, nil)
	must(t, "manufacture")(n.Stations["acme-tpm"].Manufacture(ctx, srv.URL))
	must(t, "offer to odm")(n.Stations["acme-tpm"].Offer(ctx, srv.URL, "orbit-odm"))
	must(t, "odm accepts")(n.Stations["orbit-odm"].Accept(ctx, srv.URL))
	must(t, "offer to oem")(n.Stations["orbit-odm"].Offer(ctx, srv.URL, "nova-oem"))
	r := must(t, "oem accepts")(n.Stations["nova-oem"].Accept(ctx, srv.URL))
	id := r.Target
	store := n.Ledger.Store()

	const hostile = "delta-ems"
	hc, asyncErrs := connectAs(t, n, hostile)
	rv, err := n.ReceiptVerifier(hostile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(hc, hostile, rv)
	if err != nil {
		t.Fatal(err)
	}
	// statement builds an event about the device by partner, quoted by the
	// device's TPM over its binding digest.
	statement := func(kind, partner string, fill func(*events.Predicate)) *events.Statement {
		t.Helper()
		st := events.NewStatement(kind, partner, id, time.Now(), events.NewEventID())
		fill(&st.Predicate)
		nonce, err := events.StatementBindingDigest(st)
		if err != nil {
			t.Fatal(err)
		}
		q, err := dev.Quote(ctx, nonce, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		st.Predicate.Evidence = events.NewEvidence(q)
		return st
	}
	sign := func(partner string, st *events.Statement) []byte {
		t.Helper()
		env, err := events.Sign(ctx, st, n.PKI.Partners[partner].Key, partner)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	send := func(env []byte) *events.Receipt {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := pub.Publish(cctx, env)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// snapshot is the device's state and the log's size.
	type snap struct {
		state string
		size  uint64
	}
	snapshot := func() snap {
		t.Helper()
		d, err := store.Device(id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(d)
		return snap{string(b), n.Ledger.Head().Size}
	}
	// refused checks an answer and that nothing changed since before.
	refused := func(t *testing.T, before snap, r *events.Receipt, code events.Code) {
		t.Helper()
		if r == nil || r.Status != events.StatusRejected || r.Code != string(code) || r.Reason == "" {
			t.Fatalf("answer %+v, want rejected %s with a sentence", r, code)
		}
		if after := snapshot(); after != before {
			t.Fatalf("a refused event changed the device or the log:\nbefore %+v\nafter  %+v", before, after)
		}
	}

	t.Run("a kind its role may not publish", func(t *testing.T) {
		for _, kind := range []string{events.KindDeviceCleared, events.KindDeviceDecommissioned} {
			before := snapshot()
			st := statement(kind, hostile, func(p *events.Predicate) { p.Flag = &events.Flag{Reason: "cleared"} })
			refused(t, before, send(sign(hostile, st)), events.CodeWrongRole)
		}
	})

	t.Run("publishing on another partner's subject", func(t *testing.T) {
		before := snapshot()
		st := statement(events.KindStageRecorded, "nova-oem", func(p *events.Predicate) { p.Stage = &events.Stage{Name: events.StageTestPassed} })
		env := sign(hostile, st)
		if err := hc.Publish(events.EventSubject("nova-oem", id), env); err != nil {
			t.Fatal(err)
		}
		wantPermissionError(t, hc, asyncErrs, "publish", events.EventSubject("nova-oem", id))
		// The stream never had it: nothing logged, nothing refused.
		s, _ := events.Open(env)
		if _, err := n.Ledger.EventStatus(s.Digest[:]); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("the ledger knows the forbidden event: %v", err)
		}
		if after := snapshot(); after != before {
			t.Fatal("the forbidden publish changed the device or the log")
		}
	})

	t.Run("subscribing to another partner's receipts", func(t *testing.T) {
		for _, subj := range []string{events.ReceiptSubject("nova-oem", "*"), events.RejectionSubject("nova-oem", "*"), events.ReceiptsPrefix + ".>"} {
			if _, err := hc.SubscribeSync(subj); err != nil {
				t.Fatal(err)
			}
			wantPermissionError(t, hc, asyncErrs, "subscription", subj)
		}
	})

	t.Run("wrong schema", func(t *testing.T) {
		before := snapshot()
		st := statement(events.KindStageRecorded, hostile, func(p *events.Predicate) { p.Stage = &events.Stage{Name: "painting"} })
		refused(t, before, send(sign(hostile, st)), events.CodeSchema)
	})

	t.Run("a 10 MB message", func(t *testing.T) {
		before := snapshot()
		data := make([]byte, 10<<20)
		_, _ = rand.Read(data)
		js, err := jetstream.New(hc)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_, err = js.Publish(cctx, events.EventSubject(hostile, id), data)
		if !errors.Is(err, nats.ErrMaxPayload) && !errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
			t.Fatalf("publish of 10 MB: %v, want the broker's size limit", err)
		}
		sum := sha256.Sum256(data)
		if _, err := n.Ledger.EventStatus(sum[:]); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("the ledger saw the oversized message: %v", err)
		}
		if after := snapshot(); after != before {
			t.Fatal("the oversized message changed the device or the log")
		}
	})

	t.Run("hand-off of a device it does not hold", func(t *testing.T) {
		before := snapshot()
		st := statement(events.KindHandoffOffered, hostile, func(p *events.Predicate) { p.Handoff = &events.Handoff{From: hostile, To: "grey-operator"} })
		refused(t, before, send(sign(hostile, st)), events.CodeNotCustodian)
	})

	// Shipments: a manifest of devices under one signature.
	rawSend := func(partner string, msg []byte) *events.Receipt {
		t.Helper()
		s, _ := events.OpenMessage(msg)
		js, err := jetstream.New(hc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, events.EventSubject(partner, s.Statement.Target()), msg); err != nil {
			t.Fatal(err)
		}
		for range 500 {
			if r, err := n.Ledger.EventStatus(s.Digest[:]); err == nil {
				return r
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no answer")
		return nil
	}
	shipment := func(m *events.Manifest, signed *events.Manifest) []byte {
		t.Helper()
		st, err := events.NewShipmentStatement(events.KindShipmentOffered, hostile, events.Shipment{ID: "PAL-1", From: hostile, To: "grey-operator"}, signed, time.Now(), events.NewEventID())
		if err != nil {
			t.Fatal(err)
		}
		parcel, err := events.EncodeParcel(sign(hostile, st), m)
		if err != nil {
			t.Fatal(err)
		}
		return parcel
	}
	t.Run("a shipment of a device it does not hold", func(t *testing.T) {
		before := snapshot()
		m := &events.Manifest{Containers: []events.Container{{Path: "P-9", Devices: []string{id}}}}
		refused(t, before, send(shipment(m, m)), events.CodeNotCustodian)
	})
	t.Run("a shipment whose manifest is not the one signed", func(t *testing.T) {
		before := snapshot()
		signed := &events.Manifest{Containers: []events.Container{{Path: "P-9", Devices: []string{strings.Repeat("ab", 32)}}}}
		swapped := &events.Manifest{Containers: []events.Container{{Path: "P-9", Devices: []string{id}}}}
		refused(t, before, rawSend(hostile, shipment(swapped, signed)), events.CodeManifest)
	})
	t.Run("a manifest listing a device twice, or more than 10,000", func(t *testing.T) {
		before := snapshot()
		twice := &events.Manifest{Containers: []events.Container{{Path: "P-9", Devices: []string{id, id}}}}
		refused(t, before, rawSend(hostile, shipment(twice, twice)), events.CodeManifest)
		big := &events.Manifest{Containers: []events.Container{{Path: "P-9"}}}
		for i := range events.MaxManifestDevices + 1 {
			big.Containers[0].Devices = append(big.Containers[0].Devices, fmt.Sprintf("%064x", i))
		}
		st, err := events.NewShipmentStatement(events.KindShipmentOffered, hostile, events.Shipment{ID: "PAL-2", From: hostile, To: "grey-operator"}, big, time.Now(), events.NewEventID())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := events.SignShipment(ctx, st, big, n.PKI.Partners[hostile].Key, hostile); err == nil {
			t.Fatal("a publisher signed a shipment of 10,001 devices")
		}
		parcel, err := events.EncodeParcel(sign(hostile, st), big)
		if err != nil {
			t.Fatal(err)
		}
		// The statement says 10,001 devices: malformed, under the parcel's hash.
		js, _ := jetstream.New(hc)
		if _, err := js.Publish(ctx, events.EventSubject(hostile, events.ShipmentTarget("PAL-2")), parcel); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(parcel)
		var r *events.Receipt
		for range 500 {
			if r, err = n.Ledger.EventStatus(sum[:]); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		refused(t, before, r, events.CodeMalformed)
	})

	// batch publishes a station batch by hostile of members (statements,
	// whatever SignBatch would refuse), with the member list sent (nil:
	// the signed one), and returns the ledger's answer: under the batch's
	// digest, or the message's hash when it is malformed.
	batch := func(id string, members []*events.Statement, sent func([]string) []string) *events.Receipt {
		t.Helper()
		payloads := make([][]byte, len(members))
		b64 := make([]string, len(members))
		for i, m := range members {
			p, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			payloads[i], b64[i] = p, base64.StdEncoding.EncodeToString(p)
		}
		st, err := events.NewBatchStatement(hostile, id, payloads, time.Now(), events.NewEventID())
		if err != nil {
			t.Fatal(err)
		}
		env := sign(hostile, st)
		if sent != nil {
			b64 = sent(b64)
		}
		parcel, err := json.Marshal(events.Parcel{Envelope: env, Members: b64})
		if err != nil {
			t.Fatal(err)
		}
		key := sha256.Sum256(parcel)
		if s, err := events.OpenMessage(parcel); s != nil {
			key = s.Digest
		} else if err == nil {
			t.Fatal("no digest")
		}
		js, _ := jetstream.New(hc)
		if _, err := js.Publish(ctx, events.EventSubject(hostile, events.BatchTarget(id)), parcel); err != nil {
			t.Fatal(err)
		}
		for range 500 {
			if r, err := n.Ledger.EventStatus(key[:]); err == nil {
				return r
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatal("no answer")
		return nil
	}
	stage := func(partner string) *events.Statement {
		return statement(events.KindStageRecorded, partner, func(p *events.Predicate) { p.Stage = &events.Stage{Name: events.StageTestPassed} })
	}
	t.Run("a batch about a device it does not hold", func(t *testing.T) {
		before := snapshot()
		r := batch("B-1", []*events.Statement{stage(hostile)}, nil)
		refused(t, before, r, events.CodeNotCustodian)
		if len(r.Members) != 1 || r.Members[0].Code != string(events.CodeNotCustodian) {
			t.Fatalf("member verdicts: %+v", r.Members)
		}
	})
	t.Run("a batch carrying the custodian's event under its own signature", func(t *testing.T) {
		before := snapshot()
		refused(t, before, batch("B-2", []*events.Statement{stage("nova-oem")}, nil), events.CodeMalformed)
	})
	t.Run("a batch naming the device twice", func(t *testing.T) {
		before := snapshot()
		refused(t, before, batch("B-3", []*events.Statement{stage(hostile), stage(hostile)}, nil), events.CodeMalformed)
	})
	t.Run("a batch whose members are not the ones signed", func(t *testing.T) {
		before := snapshot()
		other := stage(hostile)
		swap := func(b64 []string) []string {
			p, _ := json.Marshal(other)
			return []string{base64.StdEncoding.EncodeToString(p)}
		}
		refused(t, before, batch("B-4", []*events.Statement{stage(hostile)}, swap), events.CodeManifest)
	})

	t.Run("reading another partner's receipt by digest over NATS", func(t *testing.T) {
		// The OEM's acceptance is in the public log; its digest is no
		// secret. Asked from delta-ems's own inbox, the status service and
		// the query service answer as for an unknown digest.
		m, err := hc.Request(events.StatusSubject, []byte(r.Digest), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var got events.Receipt
		if err := json.Unmarshal(m.Data, &got); err != nil || got.Status != events.StatusUnknown || got.Partner != "" || got.Target != "" {
			t.Fatalf("status of nova-oem's event, asked by %s: %s", hostile, m.Data)
		}
		tok, err := ledger.NewReadToken(hostile, n.PKI.Partners[hostile].Key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		req := nats.NewMsg(ledger.MicroSubjectPrefix + ".event")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Data = []byte(r.Digest)
		m, err = hc.RequestMsg(req, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code := m.Header.Get("Nats-Service-Error-Code"); code != "404" || strings.Contains(string(m.Data), id) {
			t.Fatalf("the query service gave nova-oem's receipt to %s: %s %s", hostile, code, m.Data)
		}
		// Without a token, nothing.
		m, err = hc.Request(ledger.MicroSubjectPrefix+".event", []byte(r.Digest), 10*time.Second)
		if err != nil || m.Header.Get("Nats-Service-Error-Code") != "401" {
			t.Fatalf("an anonymous receipt query: %v %v", m, err)
		}
	})

	t.Run("re-accepting an accepted offer as a third party", func(t *testing.T) {
		d, _ := store.Device(id)
		for _, to := range []string{hostile, "nova-oem"} { // in its own name, in the recipient's
			before := snapshot()
			st := statement(events.KindHandoffAccepted, hostile, func(p *events.Predicate) {
				p.Handoff = &events.Handoff{From: "orbit-odm", To: to, Offer: d.LastAccepted}
			})
			refused(t, before, send(sign(hostile, st)), events.CodeNotRecipient)
		}
	})

	var report []byte // a logged flag report of the hostile partner
	t.Run("getting someone else's device flagged", func(t *testing.T) {
		for _, flagger := range []string{hostile, "grey-operator"} {
			before := snapshot()
			st := statement(events.KindDeviceFlagged, flagger, func(p *events.Predicate) { p.Flag = &events.Flag{Reason: events.FlagStolen} })
			env := sign(flagger, st)
			var r *events.Receipt
			if flagger == hostile {
				r, report = send(env), env
			} else {
				gc, _ := connectAs(t, n, flagger)
				grv, err := n.ReceiptVerifier(flagger)
				if err != nil {
					t.Fatal(err)
				}
				gp, err := events.NewPublisher(gc, flagger, grv)
				if err != nil {
					t.Fatal(err)
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				r, err = gp.Publish(cctx, env)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
			if r.Status != events.StatusEvidence || r.Code != string(events.CodeFlagReport) {
				t.Fatalf("%s's flag: %+v, want a report (evidence, %s)", flagger, r, events.CodeFlagReport)
			}
			after := snapshot()
			if after.state != before.state || after.size != before.size+1 {
				t.Fatalf("%s's flag report changed the device (or was not logged once):\nbefore %+v\nafter  %+v", flagger, before, after)
			}
			// The gate would still enroll it: no flag, custody unchanged.
			if d, _ := store.Device(id); d.Flag != nil || d.Custodian != "nova-oem" {
				t.Fatalf("device after %s's report: %+v", flagger, d)
			}
		}
	})

	t.Run("replay of an accepted envelope", func(t *testing.T) {
		if report == nil {
			t.Skip("no logged envelope of the hostile partner")
		}
		before := snapshot()
		first := send(report) // the hostile partner's own logged event, again
		again := send(report)
		if again.LogIndex != first.LogIndex || again.Status != events.StatusEvidence {
			t.Fatalf("replay answered %+v, want the original entry #%d", again, first.LogIndex)
		}
		if after := snapshot(); after != before {
			t.Fatal("a replay changed the device or the log")
		}
	})

	t.Run("a duplicate event ID with different content", func(t *testing.T) {
		if report == nil {
			t.Skip("no logged envelope of the hostile partner")
		}
		s, _ := events.Open(report)
		before := snapshot()
		st := statement(events.KindDeviceFlagged, hostile, func(p *events.Predicate) {
			p.Flag = &events.Flag{Reason: events.FlagLost}
			p.EventID = s.Statement.Predicate.EventID
		})
		refused(t, before, send(sign(hostile, st)), events.CodeDuplicateID)
	})

	t.Run("accepting an offer addressed to someone else", func(t *testing.T) {
		must(t, "oem offers to blue-operator")(n.Stations["nova-oem"].Offer(ctx, srv.URL, "blue-operator"))
		d, _ := store.Device(id)
		for _, to := range []string{hostile, "blue-operator"} { // in its own name, in the recipient's
			before := snapshot()
			st := statement(events.KindHandoffAccepted, hostile, func(p *events.Predicate) {
				p.Handoff = &events.Handoff{From: "nova-oem", To: to, Offer: d.Pending.Digest}
			})
			refused(t, before, send(sign(hostile, st)), events.CodeNotRecipient)
		}
		// Nor can it withdraw the offer it did not make.
		before := snapshot()
		st := statement(events.KindHandoffWithdrawn, hostile, func(p *events.Predicate) {
			p.Handoff = &events.Handoff{From: "nova-oem", To: "blue-operator", Offer: d.Pending.Digest}
		})
		refused(t, before, send(sign(hostile, st)), events.CodeNotCustodian)
	})

	t.Run("the custodian's own retry and withdrawal stay harmless", func(t *testing.T) {
		before := snapshot()
		res, err := n.Stations["nova-oem"].Offer(ctx, srv.URL, "blue-operator")
		if err != nil || res.Existing == nil || res.Receipt != nil {
			t.Fatalf("a retried offer: %+v %v, want the existing offer", res, err)
		}
		// The same offer signed again reaches the ledger: a repeat.
		st := statement(events.KindHandoffOffered, "nova-oem", func(p *events.Predicate) {
			p.Handoff = &events.Handoff{From: "nova-oem", To: "blue-operator"}
		})
		nc, _ := connectAs(t, n, "nova-oem")
		nrv, err := n.ReceiptVerifier("nova-oem")
		if err != nil {
			t.Fatal(err)
		}
		np, err := events.NewPublisher(nc, "nova-oem", nrv)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := np.Publish(cctx, sign("nova-oem", st))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		refused(t, before, r, events.CodeAlreadyExists)
		if !strings.Contains(r.Reason, "log index") {
			t.Fatalf("the repeat does not name the pending offer's index: %s", r.Reason)
		}
		must(t, "withdraw")(n.Stations["nova-oem"].Withdraw(ctx, srv.URL))
		if d, _ := store.Device(id); d.Pending != nil || d.Flag != nil || d.Custodian != "nova-oem" {
			t.Fatalf("after withdrawal: %+v", d)
		}
	})

	t.Run("offline replay agrees with every verdict", func(t *testing.T) {
		// The bundle holds flag reports and a withdrawal: Replay runs the
		// ledger's own rule engine over them and must reach its state.
		logKey := &n.PKI.LogKey.PublicKey
		prov, err := n.Ledger.Provenance(id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ledger.NewBundle(id, prov, logKey)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(b)
		vb, err := ledger.VerifyBundle(data, logKey)
		if err != nil {
			t.Fatal(err)
		}
		tpmTrust, err := attest.ParseBundle(n.PKI.EKTrustBundle())
		if err != nil {
			t.Fatal(err)
		}
		got, err := vb.Replay(ledger.OfflineTrust{TPMTrust: tpmTrust, Consortium: n.PKI.ConsortiumCA.Cert})
		if err != nil {
			t.Fatalf("replay: %v", err)
		}
		want, _ := store.Device(id)
		gj, _ := json.Marshal(got)
		wj, _ := json.Marshal(want)
		if string(gj) != string(wj) {
			t.Fatalf("replayed state\n%s\nledger's\n%s", gj, wj)
		}
	})
}

// connectAs connects to the node as a partner's own NATS user, collecting
// the connection's asynchronous errors (permission violations).
func connectAs(t *testing.T, n *node.Node, partner string) (*nats.Conn, chan error) {
	t.Helper()
	nc, err := n.Connect(partner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	errs := make(chan error, 16)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default: // full: the test is not waiting for more
		}
	})
	return nc, errs
}

// wantPermissionError waits for the server's permission violation for op
// ("publish" or "subscription") on subject.
func wantPermissionError(t *testing.T, nc *nats.Conn, errs chan error, op, subject string) {
	t.Helper()
	_ = nc.Flush()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			// nats-server: Permissions Violation for Publish to "subject"
			msg := strings.ToLower(err.Error())
			if strings.Contains(msg, "permissions violation for "+op+` to "`+subject+`"`) {
				return
			}
		case <-timeout:
			t.Fatalf("no permission violation for %s on %s", op, subject)
		}
	}
}
