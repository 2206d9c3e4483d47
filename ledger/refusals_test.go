package ledger

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/pki"
)

// The checks the ledger makes before the custody rules, one case per
// refusal code, through the real pipeline (prepare, then apply and commit)
// on a store in memory: no NATS, no TPM. The codes that need TPM evidence
// (ek-chain, iak-certificate, device-id, bad-evidence, counters-backwards)
// are covered with real quotes by TestCustodyRules and the simulator.

type registryFixture struct {
	t        *testing.T
	m        *memLedger
	ca       *pki.CA
	partners map[string]*pki.Partner
	n        int
}

func newRegistryFixture(t *testing.T) *registryFixture {
	ca, err := pki.NewRootCA("Test Consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := attest.ParseBundle(pki.EncodeCertsPEM(ca.Cert))
	if err != nil {
		t.Fatal(err)
	}
	return &registryFixture{t: t, m: newMemLedger(t, ca.Cert, trust), ca: ca, partners: map[string]*pki.Partner{}}
}

func (f *registryFixture) eventID() string {
	f.n++
	return fmt.Sprintf("%032x", f.n)
}

// msg signs st with key as partner and addresses it to subject ("" for the
// statement's own subject).
func (f *registryFixture) msg(st *events.Statement, key crypto.Signer, partner, subject string) [2][]byte {
	f.t.Helper()
	env, err := events.Sign(context.Background(), st, key, partner)
	if err != nil {
		f.t.Fatal(err)
	}
	if subject == "" {
		subject = events.EventSubject(st.Predicate.Partner, st.Target())
	}
	return [2][]byte{[]byte(subject), env}
}

// registryEvent is a consortium event about partner p.
func (f *registryFixture) registryEvent(kind string, p *pki.Partner, operator string) *events.Statement {
	sum := sha256.Sum256(p.Cert.Raw)
	return events.NewPartnerStatement(kind, events.PartnerInfo{Name: p.Name, Role: p.Role, Certificate: p.Cert.Raw, Operator: operator},
		hex.EncodeToString(sum[:]), time.Now(), f.eventID())
}

func (f *registryFixture) newPartner(ca *pki.CA, name, role string) *pki.Partner {
	f.t.Helper()
	p, err := ca.NewPartner(name, role, time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	return p
}

// stage is a stage.recorded by partner about device. Its evidence is not a
// TPM quote (bytes that say so): every case here is refused before any
// evidence is looked at.
func (f *registryFixture) stage(partner, device, name string) *events.Statement {
	st := events.NewStatement(events.KindStageRecorded, partner, device, time.Now(), f.eventID())
	st.Predicate.Stage = &events.Stage{Name: name}
	st.Predicate.Evidence = &events.Evidence{Attest: []byte("not a quote"), Signature: []byte("not a signature"), PCRs: map[string][]byte{"0": make([]byte, 32)}}
	return st
}

func TestRefusalsBeforeTheRules(t *testing.T) {
	f := newRegistryFixture(t)
	consortium := func(st *events.Statement) [2][]byte { return f.msg(st, f.ca.Key, events.ConsortiumPartner, "") }
	for _, spec := range []struct{ name, role string }{{"orbit-odm", events.RoleODM}, {"nova-oem", events.RoleOEM}, {"gone-ems", events.RoleEMS}} {
		f.partners[spec.name] = f.newPartner(f.ca, spec.name, spec.role)
	}
	setup := f.m.Feed(
		consortium(f.registryEvent(events.KindPartnerRegistered, f.partners["orbit-odm"], "")),
		consortium(f.registryEvent(events.KindPartnerRegistered, f.partners["nova-oem"], "")),
		consortium(f.registryEvent(events.KindPartnerRegistered, f.partners["gone-ems"], "")),
		consortium(f.registryEvent(events.KindPartnerRevoked, f.partners["gone-ems"], "")),
	)
	for i, r := range setup {
		if r == nil || r.Status != events.StatusAccepted {
			t.Fatalf("set-up event %d: %+v", i, r)
		}
	}
	size := f.m.l.Head().Size

	odm := f.partners["orbit-odm"]
	dev := strings.Repeat("5", 64)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	alienCA, err := pki.NewRootCA("Another Consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	noOperatorGate := f.newPartner(f.ca, "red-gate", events.RoleGate)
	cleared := events.NewStatement(events.KindDeviceCleared, "orbit-odm", dev, time.Now(), f.eventID())
	cleared.Predicate.Flag = &events.Flag{Reason: "cleared"}
	cleared.Predicate.Evidence = f.stage("orbit-odm", dev, events.StageAssembly).Predicate.Evidence

	byODM := f.registryEvent(events.KindPartnerRevoked, f.partners["nova-oem"], "")
	byODM.Predicate.Partner = "orbit-odm"
	for _, tc := range []struct {
		name string
		msg  [2][]byte
		want events.Code
	}{
		{"not an envelope", [2][]byte{[]byte(events.EventSubject("orbit-odm", dev)), []byte(`{"payloadType":`)}, events.CodeMalformed},
		{"fails its schema", f.msg(f.stage("orbit-odm", dev, "painting"), odm.Key, "orbit-odm", ""), events.CodeSchema},
		{"on another partner's subject", f.msg(f.stage("orbit-odm", dev, events.StageAssembly), odm.Key, "orbit-odm", events.EventSubject("nova-oem", dev)), events.CodeSubject},
		{"by a partner nobody registered", f.msg(f.stage("shadow-oem", dev, events.StageAssembly), otherKey, "shadow-oem", ""), events.CodeUnknownPartner},
		{"by a revoked partner", f.msg(f.stage("gone-ems", dev, events.StageAssembly), f.partners["gone-ems"].Key, "gone-ems", ""), events.CodePartnerRevoked},
		{"signed with another key", f.msg(f.stage("orbit-odm", dev, events.StageAssembly), otherKey, "orbit-odm", ""), events.CodeBadSignature},
		{"a kind the role may not publish", f.msg(cleared, odm.Key, "orbit-odm", ""), events.CodeWrongRole},
		{"about a device never manufactured", f.msg(f.stage("orbit-odm", dev, events.StageAssembly), odm.Key, "orbit-odm", ""), events.CodeUnknownDevice},
		{"a partner registered twice", consortium(f.registryEvent(events.KindPartnerRegistered, odm, "")), events.CodeAlreadyExists},
		{"a certificate from another CA", consortium(f.registryEvent(events.KindPartnerRegistered, f.newPartner(alienCA, "alien-oem", events.RoleOEM), "")), events.CodeBadCertificate},
		{"a gate without its operator", consortium(f.registryEvent(events.KindPartnerRegistered, noOperatorGate, "")), events.CodeMalformed},
		{"a registry event by a partner (its schema names the consortium)", f.msg(byODM, odm.Key, "orbit-odm", ""), events.CodeSchema},
		{"a registry event not signed by the consortium CA", f.msg(f.registryEvent(events.KindPartnerRevoked, f.partners["nova-oem"], ""), otherKey, events.ConsortiumPartner, ""), events.CodeBadSignature},
		{"revoking an unknown partner", consortium(f.registryEvent(events.KindPartnerRevoked, f.newPartner(f.ca, "never-oem", events.RoleOEM), "")), events.CodeUnknownPartner},
		{"revoking twice", consortium(f.registryEvent(events.KindPartnerRevoked, f.partners["gone-ems"], "")), events.CodePartnerRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.m.Feed(tc.msg)[0]
			if r == nil || r.Status != events.StatusRejected || r.Code != string(tc.want) || r.Reason == "" {
				t.Fatalf("answer %+v, want rejected with %s and a sentence", r, tc.want)
			}
			if got := f.m.l.Head().Size; got != size {
				t.Fatalf("a refused event entered the tree: size %d, was %d", got, size)
			}
			if _, ok := events.LookupRejection(events.ByLedger, string(tc.want)); !ok {
				t.Errorf("%s is not in the catalogue of rejections", tc.want)
			}
		})
	}

	// A repeat of an accepted event is answered from the log, not logged
	// again, and not refused.
	again := f.m.Feed(consortium(f.registryEvent(events.KindPartnerRegistered, noOperatorGate, "red-operator")))[0]
	if again == nil || again.Status != events.StatusAccepted {
		t.Fatalf("gate registration with its operator: %+v", again)
	}
	size = f.m.l.Head().Size
	first := f.m.store.entries[size-1]
	repeat := f.m.Feed([2][]byte{[]byte(events.EventSubject(events.ConsortiumPartner, "red-gate")), first.Envelope})[0]
	if repeat == nil || repeat.Status != events.StatusAccepted || repeat.LogIndex != first.Index || f.m.l.Head().Size != size {
		t.Fatalf("repeat answered %+v (log size %d, was %d), want entry #%d again", repeat, f.m.l.Head().Size, size, first.Index)
	}
}
