package node_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// TestCheckpointsPublished: when the log grows, a partner receives the new
// signed checkpoint on custody.v1.checkpoints, and the KV bucket holds it as
// "latest"; both verify with the log key.
func TestCheckpointsPublished(t *testing.T) {
	n := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	odm, err := n.Connect("orbit-odm")
	if err != nil {
		t.Fatal(err)
	}
	defer odm.Close()
	sub, err := odm.SubscribeSync(events.CheckpointTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := odm.Flush(); err != nil {
		t.Fatal(err)
	}
	// Grow the log by one partner registration.
	cons, err := n.Connect(events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	p, err := n.PKI.ConsortiumCA.NewPartner("late-ems", events.RoleEMS, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	st := events.NewPartnerStatement(events.KindPartnerRegistered,
		events.PartnerInfo{Name: p.Name, Role: p.Role, Certificate: p.Cert.Raw},
		"00000000000000000000000000000000000000000000000000000000000000bb", time.Now(), "fedcba9876543210fedcba9876543210")
	env, err := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := n.ReceiptVerifier(events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := events.NewPublisher(cons, events.ConsortiumPartner, rv)
	r, err := pub.Publish(ctx, env)
	if err != nil || r.Status != events.StatusAccepted {
		t.Fatalf("registration: %+v %v", r, err)
	}
	want := r.LogIndex + 1
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no checkpoint of size %d published: %v", want, err)
		}
		cp, err := ledger.VerifyCheckpoint(m.Data, &n.PKI.LogKey.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if cp.Size >= want {
			break
		}
	}
	// Any partner reads the bucket.
	lc, err := n.Connect("nova-oem")
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	js, _ := jetstream.New(lc)
	kv, err := js.KeyValue(ctx, ledger.CheckpointBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ledger.VerifyCheckpoint(e.Value(), &n.PKI.LogKey.PublicKey)
	if err != nil || cp.Size < want {
		t.Fatalf("KV latest checkpoint: %+v %v", cp, err)
	}
}

// TestLedgerMicroService: a partner asks the ledger's NATS micro service for
// the checkpoint and a device's provenance, as it would over HTTP.
func TestLedgerMicroService(t *testing.T) {
	n := start(t)
	nc, err := n.Connect("nova-oem")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	m, err := nc.Request(ledger.MicroSubjectPrefix+".checkpoint", nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := ledger.VerifyCheckpoint(m.Data, &n.PKI.LogKey.PublicKey)
	if err != nil || cp.Size == 0 {
		t.Fatalf("checkpoint: %+v %v", cp, err)
	}
	token, err := ledger.NewReadToken("nova-oem", n.PKI.Partners["nova-oem"].Key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req := nats.NewMsg(ledger.MicroSubjectPrefix + ".provenance")
	req.Data = []byte(strings.Repeat("0", 64))
	req.Header.Set("Authorization", "Bearer "+token)
	m, err = nc.RequestMsg(req, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code != "404" {
		t.Fatalf("unknown device answered code %q: %s", code, m.Data)
	}
	m, err = nc.Request(ledger.MicroSubjectPrefix+".entry", []byte("0"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Entry    ledger.ProvenEntry `json:"entry"`
		TreeSize uint64             `json:"treeSize"`
		RootHash []byte             `json:"rootHash"`
	}
	if err := json.Unmarshal(m.Data, &e); err != nil {
		t.Fatal(err)
	}
	if err := ledger.VerifyInclusion(e.Entry.Body, 0, e.TreeSize, e.Entry.InclusionProof, e.RootHash); err != nil {
		t.Fatalf("entry 0 over NATS: %v", err)
	}
}
