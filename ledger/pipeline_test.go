package ledger_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/nodetest"
	"github.com/custodyledger/custody/services/node"
)

// TestFactsChangingInOneBatch publishes, in one burst (so usually one
// fetched batch, verified in parallel before any of it is applied): a new
// partner's registration, then its events, then its revocation and one
// more of its events. The parallel verification cannot know the partner
// yet; the answers must be exactly those of one-by-one ingest.
func TestFactsChangingInOneBatch(t *testing.T) {
	ctx := context.Background()
	n, stop := startNode(t, ctx, t.TempDir())
	defer stop()
	nc, err := n.Connect(node.LedgerUser)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	violet, err := n.PKI.ConsortiumCA.NewPartner("violet-odm", events.RoleODM, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	consortium := func(kind string, id int) []byte {
		sum := sha256.Sum256(violet.Cert.Raw)
		st := events.NewPartnerStatement(kind, events.PartnerInfo{Name: violet.Name, Role: violet.Role, Certificate: violet.Cert.Raw}, hex.EncodeToString(sum[:]), time.Now(), eventID(id))
		if kind == events.KindPartnerRevoked {
			st.Predicate.PartnerInfo.Certificate = nil
		}
		env, err := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	unknownDevice := strings.Repeat("ab", 32)
	stage := func(id int, forged bool) []byte {
		st := events.NewStatement(events.KindStageRecorded, violet.Name, unknownDevice, time.Now(), eventID(id))
		st.Predicate.Stage = &events.Stage{Name: events.StageAssembly}
		st.Predicate.Evidence = &events.Evidence{Attest: []byte{1}, Signature: []byte{1}, PCRs: map[string][]byte{"0": make([]byte, 32)}}
		key := violet.Key
		if forged {
			key = n.PKI.Partners["orbit-odm"].Key
		}
		env, err := events.Sign(ctx, st, key, violet.Name)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	type want struct {
		env     []byte
		subject string
		status  string
		code    events.Code
	}
	violetSubject := events.EventSubject(violet.Name, unknownDevice)
	consortiumSubject := events.EventSubject(events.ConsortiumPartner, violet.Name)
	burst := []want{
		{stage(20, false), violetSubject, events.StatusRejected, events.CodeUnknownPartner},
		{consortium(events.KindPartnerRegistered, 21), consortiumSubject, events.StatusAccepted, ""},
		{stage(22, false), violetSubject, events.StatusRejected, events.CodeUnknownDevice},
		{stage(23, true), violetSubject, events.StatusRejected, events.CodeBadSignature},
		{consortium(events.KindPartnerRevoked, 24), consortiumSubject, events.StatusAccepted, ""},
		{stage(25, false), violetSubject, events.StatusRejected, events.CodePartnerRevoked},
	}
	answers := make(chan *nats.Msg, 64)
	for _, p := range []string{events.ReceiptsPrefix, events.RejectPrefix} {
		sub, err := nc.ChanSubscribe(p+".>", answers)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	for _, w := range burst {
		if _, err := js.PublishAsync(w.subject, w.env); err != nil {
			t.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	got := map[string]*events.Receipt{}
	timeout := time.After(30 * time.Second)
	for len(got) < len(burst) {
		select {
		case m := <-answers:
			var r events.Receipt
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			got[r.Digest] = &r
		case <-timeout:
			t.Fatalf("%d of %d answers", len(got), len(burst))
		}
	}
	for i, w := range burst {
		s, err := events.Open(w.env)
		if err != nil {
			t.Fatal(err)
		}
		r := got[s.DigestHex()]
		if r == nil || r.Status != w.status || r.Code != string(w.code) {
			t.Errorf("event %d: got %+v, want %s %s", i, r, w.status, w.code)
		}
	}
}

// TestStreamLosesItsTail: the broker loses messages the log already applied
// (here all of its data, as a replaced or wiped JetStream store would). New
// events reuse stream sequences the log holds as applied; they must be
// logged, not skipped, and a re-sent old event must be answered from the
// log, not logged twice.
func TestStreamLosesItsTail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n, stop := startNode(t, ctx, dir)
	consortium := func(name string, id int) []byte {
		p, err := n.PKI.ConsortiumCA.NewPartner(name, events.RoleODM, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(p.Cert.Raw)
		st := events.NewPartnerStatement(events.KindPartnerRegistered, events.PartnerInfo{Name: p.Name, Role: p.Role, Certificate: p.Cert.Raw}, hex.EncodeToString(sum[:]), time.Now(), eventID(id))
		env, err := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	publish := func(n *node.Node, env []byte) *events.Receipt {
		t.Helper()
		r := nodetest.PublishAs(t, ctx, n, events.ConsortiumPartner, env)
		if r.Status != events.StatusAccepted {
			t.Fatalf("%s %s: %s", r.Status, r.Code, r.Reason)
		}
		return r
	}
	old := consortium("old-odm", 1)
	first := publish(n, old)
	for i := range 5 {
		publish(n, consortium(fmt.Sprintf("odm-%d", i), 10+i))
	}
	size := n.Ledger.Head().Size
	stop()
	if err := os.RemoveAll(filepath.Join(dir, "nats")); err != nil {
		t.Fatal(err)
	}

	n, stop = startNode(t, ctx, dir)
	defer stop()
	r := publish(n, consortium("new-odm", 99))
	if r.LogIndex != size {
		t.Fatalf("new event logged at #%d, want #%d", r.LogIndex, size)
	}
	again := publish(n, old)
	if again.LogIndex != first.LogIndex {
		t.Fatalf("re-sent event answered with #%d, want its original #%d", again.LogIndex, first.LogIndex)
	}
	if got := n.Ledger.Head().Size; got != size+1 {
		t.Fatalf("log size %d, want %d", got, size+1)
	}
}
