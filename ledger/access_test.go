package ledger_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/nodetest"
	"github.com/custodyledger/custody/ledger"
)

// TestReadAccess: proofs are public, a device's history is private to its
// parties (DESIGN: partners see their own events; an operator sees the
// history of devices it holds or is about to receive).
func TestReadAccess(t *testing.T) {
	ctx := context.Background()
	agent := simAgent(t, 5151)
	n, stop := startNode(t, ctx, t.TempDir())
	defer stop()

	r, err := n.Stations["acme-tpm"].Manufacture(ctx, agent.URL)
	if err != nil {
		t.Fatal(err)
	}
	dev, mfgIndex := r.Device, r.Receipt.LogIndex
	if _, err := n.Stations["acme-tpm"].Offer(ctx, agent.URL, "orbit-odm"); err != nil {
		t.Fatal(err)
	}

	token := func(partner string) string {
		tok, err := ledger.NewReadToken(partner, n.PKI.Partners[partner].Key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	anonHC := n.HTTPClient("") // no client certificate: tokens are the identity here
	get := func(path, tok string, out any) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, n.URL()+"/ledger"+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := anonHC.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil && resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	provenance := "/v1/devices/" + dev + "/provenance"
	logKey := &n.PKI.LogKey.PublicKey

	// Nobody anonymous reads a history, nor with a forged or foreign token.
	if c := get(provenance, "", nil); c != http.StatusUnauthorized {
		t.Fatalf("anonymous provenance: %d, want 401", c)
	}
	forged, _ := ledger.NewReadToken("acme-tpm", n.PKI.Partners["nova-oem"].Key, time.Minute)
	if c := get(provenance, forged, nil); c != http.StatusUnauthorized {
		t.Fatalf("token for acme-tpm signed by nova-oem's key: %d, want 401", c)
	}
	tok := token("acme-tpm")
	if c := get(provenance, tok[:len(tok)-4]+"AAAA", nil); c != http.StatusUnauthorized {
		t.Fatalf("tampered token: %d, want 401", c)
	}
	if c := get(provenance, token("nova-oem"), nil); c != http.StatusForbidden {
		t.Fatalf("a partner with no part in the device: %d, want 403", c)
	}

	// The custodian and the offer's recipient read everything.
	for _, who := range []string{"acme-tpm", "orbit-odm"} {
		var p ledger.Provenance
		if c := get(provenance, token(who), &p); c != http.StatusOK {
			t.Fatalf("%s: %d", who, c)
		}
		if len(p.Entries) != 2 || p.Device == nil {
			t.Fatalf("%s sees %d entries (device state %v), want both", who, len(p.Entries), p.Device != nil)
		}
		if _, _, err := ledger.VerifyProvenance(&p, logKey); err != nil {
			t.Fatalf("%s: %v", who, err)
		}
	}
	var pending struct{ Devices []string }
	if c := get("/v1/partners/orbit-odm/pending", token("orbit-odm"), &pending); c != http.StatusOK || len(pending.Devices) != 1 || pending.Devices[0] != dev {
		t.Fatalf("orbit-odm's pending offers: %d %v", c, pending.Devices)
	}
	if c := get("/v1/partners/orbit-odm/pending", token("nova-oem"), nil); c != http.StatusForbidden {
		t.Fatalf("nova-oem reading orbit-odm's pending offers: %d, want 403", c)
	}
	if c := get("/v1/partners/orbit-odm/pending", "", nil); c != http.StatusUnauthorized {
		t.Fatalf("anonymous pending offers: %d, want 401", c)
	}

	// After the hand-off, the vendor sees only its own entries.
	if _, err := n.Stations["orbit-odm"].Accept(ctx, agent.URL); err != nil {
		t.Fatal(err)
	}
	var mine ledger.Provenance
	if c := get(provenance, token("acme-tpm"), &mine); c != http.StatusOK {
		t.Fatalf("former custodian: %d", c)
	}
	if len(mine.Entries) != 2 || mine.Device != nil {
		t.Fatalf("former custodian sees %d entries, device state %v; want its 2 and no state", len(mine.Entries), mine.Device != nil)
	}
	for _, e := range mine.Entries {
		if e.Partner != "acme-tpm" {
			t.Fatalf("former custodian sees %s's entry #%d", e.Partner, e.Index)
		}
	}
	if _, _, err := ledger.VerifyProvenance(&mine, logKey); err != nil {
		t.Fatal(err)
	}

	// Entries: proofs for anyone, the envelope only for its parties.
	type entryAnswer struct{ Entry ledger.ProvenEntry }
	var anon, own, other entryAnswer
	path := "/v1/log/entries/" + strconv.FormatUint(mfgIndex, 10)
	if get(path, "", &anon) != http.StatusOK || get(path, token("acme-tpm"), &own) != http.StatusOK || get(path, token("nova-oem"), &other) != http.StatusOK {
		t.Fatal("entry by index")
	}
	if len(anon.Entry.Envelope) != 0 || len(other.Entry.Envelope) != 0 || len(anon.Entry.Body) == 0 {
		t.Fatal("an entry's envelope went to a reader with no right to it")
	}
	if len(own.Entry.Envelope) == 0 {
		t.Fatal("the publisher did not get its own envelope")
	}

	// The NATS micro service applies the same rules.
	nc, err := n.Connect("nova-oem")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ask := func(tok string) string {
		msg := natsMsg(ledger.MicroSubjectPrefix+".provenance", dev, tok)
		resp, err := nc.RequestMsg(msg, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Get(micro.ErrorCodeHeader)
	}
	if c := ask(""); c != "401" {
		t.Fatalf("anonymous NATS provenance: %q, want 401", c)
	}
	if c := ask(token("nova-oem")); c != "403" {
		t.Fatalf("nova-oem NATS provenance: %q, want 403", c)
	}

	// A revoked partner's tokens stop working.
	revoked := token("orbit-odm")
	p := n.PKI.Partners["orbit-odm"]
	st := events.NewPartnerStatement(events.KindPartnerRevoked, events.PartnerInfo{Name: p.Name, Role: p.Role}, strings.Repeat("00", 32), time.Now(), eventID(7))
	env, err := events.Sign(ctx, st, n.PKI.ConsortiumCA.Key, events.ConsortiumPartner)
	if err != nil {
		t.Fatal(err)
	}
	if rr := nodetest.PublishAs(t, ctx, n, events.ConsortiumPartner, env); rr.Status != events.StatusAccepted {
		t.Fatalf("revocation: %+v", rr)
	}
	if c := get(provenance, revoked, nil); c != http.StatusUnauthorized {
		t.Fatalf("revoked partner's token: %d, want 401", c)
	}
}

// natsMsg is a request with an optional read token.
func natsMsg(subject, data, token string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	if token != "" {
		m.Header.Set("Authorization", "Bearer "+token)
	}
	return m
}
