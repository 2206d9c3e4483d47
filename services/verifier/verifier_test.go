package verifier_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
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
	"github.com/custodyledger/custody/services/verifier"
)

// startPool starts a node whose ledger takes verdicts, and a verifier
// connected to it over the network as the verifier user (TLS, NKEY).
func startPool(t *testing.T, wait time.Duration) (*node.Node, *verifier.Verifier, context.CancelFunc) {
	t.Helper()
	n, stop, err := node.Start(context.Background(), node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0", VerdictWait: wait, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	kp, err := n.PKI.NKey(node.VerifierUser)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(n.NATSURL(), append(node.UserOptions(node.VerifierUser, kp), node.NATSTLS(n.PKI), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { t.Logf("verifier connection: %v", err) }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	trust, err := attest.ParseBundle(n.PKI.EKTrustBundle())
	if err != nil {
		t.Fatal(err)
	}
	vf, err := verifier.New(verifier.Config{NATS: nc, Consortium: n.PKI.ConsortiumCA.Cert, TPMTrust: trust, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- vf.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return n, vf, cancel
}

// powered serves a device's factory API on the in-process simulated TPM
// of seed (one at a time: the simulator is a singleton) while fn runs.
func powered(t *testing.T, seed int, fn func(url string)) {
	t.Helper()
	tp, err := tpm.Open(fmt.Sprintf("sim:seed=%d", seed))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	dv, err := device.New(device.Config{TPM: tp, StateDir: filepath.Join(t.TempDir(), fmt.Sprint(seed))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(dv.Handler())
	defer srv.Close()
	fn(srv.URL)
}

// TestVerifierPool: with a verifier running, the ledger logs manufactured
// devices, single quoted events and a station batch, and uses the pool's
// verdicts for them instead of checking signatures and quotes itself; the
// log verifies as before.
func TestVerifierPool(t *testing.T) {
	n, vf, _ := startPool(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vendor := n.Stations["acme-tpm"]
	var members []*events.Statement
	for d := range 3 {
		powered(t, 9100+d, func(url string) {
			r, err := vendor.Manufacture(ctx, url)
			if err != nil {
				t.Fatalf("manufacture: %v", err)
			}
			for i := range 3 {
				r, err := vendor.RecordStage(ctx, url, events.StageTestPassed, fmt.Sprintf("pool %d", i))
				if err != nil {
					t.Fatalf("stage: %v", err)
				}
				if r.Receipt.Status != events.StatusAccepted {
					t.Fatalf("stage receipt %+v", r.Receipt)
				}
			}
			// A member of the station batch below, quoted now.
			st := events.NewStatement(events.KindStageRecorded, "acme-tpm", r.Device, time.Now(), events.NewEventID())
			st.Predicate.Stage = &events.Stage{Name: events.StageAssembly, Note: "pool batch"}
			nonce, err := events.StatementBindingDigest(st)
			if err != nil {
				t.Fatal(err)
			}
			q, err := device.NewClient(url, http.DefaultClient).Quote(ctx, nonce, []int{0})
			if err != nil {
				t.Fatal(err)
			}
			st.Predicate.Evidence = events.NewEvidence(q)
			members = append(members, st)
		})
	}
	b, err := events.SignBatch(ctx, "pool-batch", members, n.PKI.Partners["acme-tpm"].Key, "acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := n.Connect("acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, events.EventSubject("acme-tpm", b.Statement.Target()), b.Wire()); err != nil {
		t.Fatal(err)
	}
	var e *ledger.Entry
	for e == nil {
		if i, err := n.Ledger.Store().EntryIndexByDigest(b.Digest[:]); err == nil {
			if e, err = n.Ledger.Store().Entry(i); err != nil {
				t.Fatal(err)
			}
		} else if r, err := n.Ledger.Store().Rejection(b.Digest[:]); err == nil {
			t.Fatalf("the batch was refused: %+v", r)
		} else if ctx.Err() != nil {
			t.Fatalf("the batch was not logged (verdicts %+v, verifier %+v)", n.Ledger.VerdictStats(), vf.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, m := range e.Members {
		if m.Status != events.StatusAccepted {
			t.Fatalf("batch member %+v", m)
		}
	}
	st := n.Ledger.VerdictStats()
	vs := vf.Stats()
	t.Logf("ledger: %+v; verifier: %+v", st, vs)
	// Every message and member was checked by the verifier; the ledger
	// used a verdict for each quoted event (9 single, 3 members) at least.
	if vs.Checked < 3+9+1 || vs.Verdicts < 3+9+1+3 {
		t.Fatalf("the verifier checked %d messages, sent %d verdicts", vs.Checked, vs.Verdicts)
	}
	if st.Used+st.Waited < 9+3 {
		t.Fatalf("the ledger used %d verdicts (%+v)", st.Used+st.Waited, st)
	}
	h := n.Ledger.Head()
	if _, err := ledger.VerifyCheckpoint(h.Checkpoint, &n.PKI.LogKey.PublicKey); err != nil {
		t.Fatal(err)
	}
}

// TestVerifierPoolDown: with verdicts expected but no verifier sending, the
// ledger checks everything itself without waiting (an event is logged in
// well under the verdict wait).
func TestVerifierPoolDown(t *testing.T) {
	n, _, stopVerifier := startPool(t, time.Minute)
	stopVerifier()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	powered(t, 9200, func(url string) {
		if _, err := n.Stations["acme-tpm"].Manufacture(ctx, url); err != nil {
			t.Fatalf("manufacture without verifiers: %v", err)
		}
		if _, err := n.Stations["acme-tpm"].RecordStage(ctx, url, events.StageTestPassed, "alone"); err != nil {
			t.Fatalf("stage without verifiers: %v", err)
		}
	})
	if st := n.Ledger.VerdictStats(); st.Missed < 2 {
		t.Fatalf("verdict stats %+v", st)
	}
}

// TestVerifierPoolAdversary: what reaches the ledger on the verdict subject
// cannot make it accept what it would refuse. A partner cannot publish
// verdicts, ask the facts service or write the sequencer lease at all,
// and the verifier's identity cannot publish events, read receipts or
// touch the ledger's consumer (NATS permissions). A verdict
// that names another certificate than the one the ledger holds for the
// signer, or another IAK than the device's, is not used: a forged
// signature is refused as bad-signature with such a verdict in hand.
func TestVerifierPoolAdversary(t *testing.T) {
	n, _, stopVerifier := startPool(t, 5*time.Second)
	stopVerifier()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A partner (the ODM) tries the internal subjects over the network.
	kp, err := n.PKI.NKey("orbit-odm")
	if err != nil {
		t.Fatal(err)
	}
	perms := make(chan string, 8)
	pnc, err := nats.Connect(n.NATSURL(), append(node.UserOptions("orbit-odm", kp), node.NATSTLS(n.PKI),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { perms <- err.Error() }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer pnc.Close()
	_ = pnc.Publish(events.VerdictSubject, ledger.EncodeVerdicts(0, []ledger.Verdict{{Digest: [32]byte{1}, Schema: true}}))
	if _, err := pnc.Request(events.FactsSubject, []byte(`{"partner":"acme-tpm"}`), 2*time.Second); err == nil {
		t.Fatal("a partner asked the verifiers' facts service")
	}
	for _, want := range []string{`Publish to "` + events.VerdictSubject + `"`, `Publish to "` + events.FactsSubject + `"`} {
		select {
		case got := <-perms:
			if !strings.Contains(got, "Permissions Violation") || !strings.Contains(got, want) {
				t.Fatalf("permission error %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no permission violation for %s", want)
		}
	}

	// Nor write the sequencer lease (only ledger candidates do).
	_ = pnc.Publish("$KV."+ledger.LeaseBucket+"."+ledger.LeaseKey, []byte("orbit-odm"))
	select {
	case got := <-perms:
		if want := `Publish to "$KV.` + ledger.LeaseBucket + "." + ledger.LeaseKey + `"`; !strings.Contains(got, want) {
			t.Fatalf("permission error %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no permission violation for the lease bucket")
	}

	// The verifier's own identity reads its consumer and sends verdicts,
	// nothing more: it cannot publish an event, read a partner's
	// receipts, or delete the ledger's consumer.
	vperms := make(chan string, 8)
	vkp, _ := n.PKI.NKey(node.VerifierUser)
	vnc, err := nats.Connect(n.NATSURL(), append(node.UserOptions(node.VerifierUser, vkp), node.NATSTLS(n.PKI),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { vperms <- err.Error() }))...)
	if err != nil {
		t.Fatal(err)
	}
	defer vnc.Close()
	_ = vnc.Publish(events.EventSubject("acme-tpm", strings.Repeat("ab", 32)), []byte("{}"))
	_, _ = vnc.Subscribe(events.ReceiptsPrefix+".acme-tpm.>", func(*nats.Msg) {})
	_ = vnc.Publish("$JS.API.CONSUMER.DELETE."+events.StreamName+"."+ledger.ConsumerName, nil)
	for _, want := range []string{
		`Publish to "` + events.EventsPrefix + `.acme-tpm.`,
		`Subscription to "` + events.ReceiptsPrefix + `.acme-tpm.>"`,
		`Publish to "$JS.API.CONSUMER.DELETE.` + events.StreamName + "." + ledger.ConsumerName + `"`,
	} {
		select {
		case got := <-vperms:
			if !strings.Contains(got, "Permissions Violation") || !strings.Contains(got, want) {
				t.Fatalf("verifier permission error %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no permission violation for the verifier: %s", want)
		}
	}

	// A liar on the verifier's connection: a forged signature (the ODM's
	// key on an event it publishes as the vendor... through the vendor's
	// own connection) with a verdict naming the ODM's certificate.
	dev := strings.Repeat("cd", 32)
	st := events.NewStatement(events.KindStageRecorded, "acme-tpm", dev, time.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: "forged"}
	st.Predicate.Evidence = &events.Evidence{Attest: []byte("not a quote"), Signature: []byte("none"), PCRs: map[string][]byte{"0": make([]byte, 32)}}
	forged, err := events.SignStatement(ctx, st, n.PKI.Partners["orbit-odm"].Key, "acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	lie := ledger.Verdict{Digest: forged.Digest, Schema: true, SigCert: sha256.Sum256(n.PKI.Partners["orbit-odm"].Cert.Raw)}
	if err := vnc.Publish(events.VerdictSubject, ledger.EncodeVerdicts(0, []ledger.Verdict{lie})); err != nil {
		t.Fatal(err)
	}
	if err := vnc.Flush(); err != nil {
		t.Fatal(err)
	}
	anc, err := n.Connect("acme-tpm")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(anc)
	if _, err := js.Publish(ctx, events.EventSubject("acme-tpm", dev), forged.Wire()); err != nil {
		t.Fatal(err)
	}
	for {
		if r, err := n.Ledger.Store().Rejection(forged.Digest[:]); err == nil {
			if r.Code != string(events.CodeBadSignature) {
				t.Fatalf("the forged event was refused as %s (%s), want %s", r.Code, r.Reason, events.CodeBadSignature)
			}
			break
		}
		if _, err := n.Ledger.Store().EntryIndexByDigest(forged.Digest[:]); err == nil {
			t.Fatal("the forged event was logged on a lying verdict")
		}
		if ctx.Err() != nil {
			t.Fatal("no answer to the forged event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := n.Ledger.VerdictStats(); st.Used+st.Waited == 0 {
		t.Fatalf("the lying verdict was not even taken: %+v", st)
	}
}

// TestVerdictsDecodeHostile: a verdict batch is checked before use: bad
// versions, counts, lengths, flags and trailing bytes are refused, and a
// batch round-trips.
func TestVerdictsDecodeHostile(t *testing.T) {
	q := &attest.QuoteInfo{Nonce: bytes.Repeat([]byte{7}, 32), Clock: 1 << 40, ResetCount: 3, RestartCount: 1, Safe: true, FirmwareVersion: 9,
		PCRDigest: bytes.Repeat([]byte{8}, 32), PCRs: map[int][]byte{0: bytes.Repeat([]byte{1}, 32), 7: bytes.Repeat([]byte{2}, 32)}}
	vs := []ledger.Verdict{{Digest: [32]byte{1}, Schema: true, SigCert: [32]byte{2}, IAK: [32]byte{3}, Quote: q}, {Digest: [32]byte{4}}}
	data := ledger.EncodeVerdicts(42, vs)
	seq, got, err := ledger.DecodeVerdicts(data)
	if err != nil || seq != 42 || len(got) != 2 || !reflect.DeepEqual(got[0], vs[0]) || got[1].Schema || got[1].Quote != nil {
		t.Fatalf("round trip: %d %+v %v", seq, got, err)
	}
	bad := map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{2}, data[1:]...),
		"count":     {1, 0, 0xff, 0xff, 0x03},
		"trailing":  append(bytes.Clone(data), 0),
		"truncated": data[:len(data)-5],
		"flags":     append(append([]byte{1, 0, 1}, bytes.Repeat([]byte{0}, 32)...), 0x80),
		"field":     append(append(append([]byte{1, 0, 1}, bytes.Repeat([]byte{0}, 32)...), 4), append(bytes.Repeat([]byte{0}, 32), 200)...),
	}
	for name, b := range bad {
		if _, _, err := ledger.DecodeVerdicts(b); err == nil {
			t.Errorf("%s: a malformed verdict batch decoded", name)
		}
	}
}
