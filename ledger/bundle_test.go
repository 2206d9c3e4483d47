package ledger_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/eventtest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
)

// bundleFixture logs three signed events (two about device A, one about
// device B) in a fresh store and returns device A's provenance, the log key
// and a provenance entry about device B.
func bundleFixture(t testing.TB) (string, *ledger.Provenance, *ecdsa.PrivateKey, ledger.ProvenEntry) {
	t.Helper()
	ctx := context.Background()
	partnerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "orbit-odm"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &partnerKey.PublicKey, partnerKey)
	if err != nil {
		t.Fatal(err)
	}
	logPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	logKey, err := ledger.NewLogKey("custody.test", logPriv)
	if err != nil {
		t.Fatal(err)
	}
	devA, devB := strings.Repeat("a1", 32), strings.Repeat("b2", 32)
	st, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rng := (&compact.RangeFactory{Hash: ledger.Hasher.HashChildren}).NewEmptyRange(0)
	nodes := map[compact.NodeID][]byte{}
	var entries []*ledger.Entry
	for i, dev := range []string{devA, devB, devA} {
		// Evidence of the right shape: the bundle proves what was logged, it
		// does not re-check quotes (the ledger did, against the IAK).
		s := eventtest.UnquotedStage("orbit-odm", dev, events.StageAssembly, eventID(40+i))
		env, signed, body := eventtest.Leaf(t, s, partnerKey, "orbit-odm", cert)
		e := &ledger.Entry{Index: uint64(i), Digest: signed.Digest[:], Kind: events.KindStageRecorded, Partner: "orbit-odm",
			Target: dev, Status: events.StatusAccepted, IntegratedTime: time.Now().Unix(), Body: body, Envelope: env}
		entries = append(entries, e)
		if err := rng.Append(ledger.LeafHash(body), func(id compact.NodeID, h []byte) { nodes[id] = h }); err != nil {
			t.Fatal(err)
		}
	}
	root, _ := rng.GetRootHash(nil)
	cp, err := logKey.SignCheckpoint(ctx, 3, root)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(&ledger.Commit{Head: ledger.Head{Size: 3, Root: root, Checkpoint: cp}, Entries: entries, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	proven := func(e *ledger.Entry) ledger.ProvenEntry {
		hashes, err := ledger.ProveInclusion(st, e.Index, 3)
		if err != nil {
			t.Fatal(err)
		}
		return ledger.ProvenEntry{Index: e.Index, Digest: e.DigestHex(), Kind: e.Kind, Partner: e.Partner, Status: e.Status,
			IntegratedTime: e.IntegratedTime, Body: e.Body, Envelope: e.Envelope, InclusionProof: hashes}
	}
	p := &ledger.Provenance{Device: &ledger.Device{ID: devA, Custodian: "orbit-odm"}, TreeSize: 3, RootHash: root, Checkpoint: string(cp),
		Entries: []ledger.ProvenEntry{proven(entries[0]), proven(entries[2])}}
	return devA, p, logPriv, proven(entries[1])
}

func TestBundle(t *testing.T) {
	dev, p, logPriv, other := bundleFixture(t)
	b, err := ledger.NewBundle(dev, p, &logPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	vb, err := ledger.VerifyBundle(data, &logPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if vb.Device != dev || len(vb.Entries) != 2 || vb.Checkpoint.Size != 3 {
		t.Fatalf("verified %+v", vb)
	}

	tamper := func(what string, f func(b *ledger.Bundle)) {
		t.Helper()
		var c ledger.Bundle
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatal(err)
		}
		f(&c)
		d, _ := json.Marshal(&c)
		if _, err := ledger.VerifyBundle(d, &logPriv.PublicKey); err == nil {
			t.Errorf("%s: the bundle still verifies", what)
		}
	}
	tamper("envelope swapped for another device's", func(b *ledger.Bundle) {
		b.Provenance.Entries[1] = other
	})
	tamper("entry claimed for another device", func(b *ledger.Bundle) { b.Device = strings.Repeat("c3", 32) })
	tamper("envelope changed", func(b *ledger.Bundle) {
		b.Provenance.Entries[0].Envelope = b.Provenance.Entries[1].Envelope
	})
	tamper("kind relabelled", func(b *ledger.Bundle) { b.Provenance.Entries[0].Kind = events.KindHandoffAccepted })
	tamper("entries repeated", func(b *ledger.Bundle) { b.Provenance.Entries[1] = b.Provenance.Entries[0] })
	tamper("root changed", func(b *ledger.Bundle) { b.Provenance.RootHash = make([]byte, 32) })
	tamper("wrong media type", func(b *ledger.Bundle) { b.MediaType = "application/json" })
	tamper("another log", func(b *ledger.Bundle) { b.LogID = strings.Repeat("00", 32) })

	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := ledger.VerifyBundle(data, &otherKey.PublicKey); err == nil {
		t.Error("a bundle verifies with another log's key")
	}
	if _, err := ledger.VerifyBundle(append(data, []byte(`{}`)...), &logPriv.PublicKey); err == nil {
		t.Error("trailing data accepted")
	}
}

// FuzzVerifyBundle feeds arbitrary bytes to the bundle verifier: it must
// never panic, and must accept only the genuine bundle's content.
func FuzzVerifyBundle(f *testing.F) {
	dev, p, logPriv, _ := bundleFixture(f)
	b, _ := ledger.NewBundle(dev, p, &logPriv.PublicKey)
	data, _ := json.Marshal(b)
	f.Add(data)
	f.Add([]byte(`{"mediaType":"` + ledger.BundleMediaType + `"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		vb, err := ledger.VerifyBundle(in, &logPriv.PublicKey)
		if err == nil && (vb.Device != dev || vb.Checkpoint.Size != 3) {
			t.Fatalf("accepted a different bundle: %+v", vb)
		}
	})
}
