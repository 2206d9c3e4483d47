package gate

// Tests of the gate's trust boundary (issue #13): the challenge is bound
// to the EK and IAK it was made for, nothing before the proof reads the
// ledger, unknown and refused devices get one answer, refusals are limited
// and recorded in aggregate, and LDevID revocations survive a restart (CRL
// and OCSP). They run in -short: the gate's ledger is a fake in this
// process, the TPM the in-process simulator.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/pki"
)

const testScope = "0ne00TRUST"

// fakeLedger answers device states and counts the questions.
type fakeLedger struct {
	mu    sync.Mutex
	devs  map[string]*ledger.Device
	calls atomic.Int64
}

func (f *fakeLedger) Device(id string) (*ledger.Device, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.devs[id]
	if d == nil {
		return nil, fmt.Errorf("device %s: %w", id, ledger.ErrNotFound)
	}
	return d.Clone(), nil
}

func (f *fakeLedger) set(id string, d *ledger.Device) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d == nil {
		delete(f.devs, id)
		return
	}
	f.devs[id] = d
}

// fakeRegistry is DPS: it counts enrollments.
type fakeRegistry struct{ enrolls atomic.Int64 }

func (r *fakeRegistry) Enroll(context.Context, string, *x509.Certificate) error {
	r.enrolls.Add(1)
	return nil
}
func (r *fakeRegistry) SetEnabled(context.Context, string, bool) error { return nil }

// fakeLog is the ledger's append: it keeps what the gate publishes; fail,
// if set, refuses a statement.
type fakeLog struct {
	mu   sync.Mutex
	sts  []*events.Statement
	fail func(*events.Statement) error
}

func (l *fakeLog) publish(_ context.Context, st *events.Statement) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		if err := l.fail(st); err != nil {
			return 0, err
		}
	}
	l.sts = append(l.sts, st)
	return uint64(len(l.sts)), nil
}

// setFail sets fail; the gate publishes refusal records in the background.
func (l *fakeLog) setFail(fail func(*events.Statement) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.fail = fail
}

func (l *fakeLog) kinds() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := map[string]int{}
	for _, st := range l.sts {
		m[st.Predicate.Kind]++
	}
	return m
}

// countHandler counts slog records by message.
type countHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n[r.Message]++
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
func (h *countHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// trustEnv is a gate on fakes, and the simulated TPM of one device.
type trustEnv struct {
	t       *testing.T
	g       *Gate
	h       http.Handler
	cfg     Config
	led     *fakeLedger
	reg     *fakeRegistry
	log     *fakeLog
	logs    *countHandler
	tp      *tpm.TPM
	ek, iak *tpm.Key
	id      string
	record  *ledger.Device // the clean record of the device
}

var (
	simMu    sync.Mutex
	simTPM   *tpm.TPM
	simUsers int
)

// sim is the simulated TPM of the trust tests, open while a test uses it:
// the simulator is one per process, and other tests of the package open
// their own (sim:seed=N) after these end.
func sim(t *testing.T) *tpm.TPM {
	simMu.Lock()
	defer simMu.Unlock()
	if simTPM == nil {
		tp, err := tpm.Open("sim:seed=1313")
		if err != nil {
			t.Fatal(err)
		}
		simTPM = tp
	}
	simUsers++
	t.Cleanup(func() {
		simMu.Lock()
		defer simMu.Unlock()
		if simUsers--; simUsers == 0 {
			_ = simTPM.Close()
			simTPM = nil
		}
	})
	return simTPM
}

func newTrustEnv(t *testing.T, edit func(*Config)) *trustEnv {
	t.Helper()
	e := &trustEnv{t: t, led: &fakeLedger{devs: map[string]*ledger.Device{}}, reg: &fakeRegistry{}, log: &fakeLog{},
		logs: &countHandler{n: map[string]int{}}, tp: sim(t)}
	var err error
	if e.ek, err = e.tp.EK(tpm.ECCP256); err != nil {
		t.Fatal(err)
	}
	if e.iak, err = e.tp.IAK(); err != nil {
		t.Fatal(err)
	}
	if e.id, err = attest.DeviceID(e.ek.PublicKey); err != nil {
		t.Fatal(err)
	}
	tpmCA, err := pki.NewRootCA("TPM Vendor", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := attest.ParseBundle(pki.EncodeCertsPEM(tpmCA.Cert))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := attest.EKCertificateTemplate(e.ek.PublicKey, testTPMInfo, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	ekCert, err := tpmCA.Issue(tmpl, e.ek.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// The PCR 0 the EMS recorded is the simulator's.
	nonce := bytes.Repeat([]byte{1}, 32)
	q, err := e.tp.Quote(nonce, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	qi, err := attest.VerifyQuote(e.iak.Public, q, nonce)
	if err != nil {
		t.Fatal(err)
	}
	e.record = &ledger.Device{
		ID: e.id, Vendor: "acme-tpm", EKCertificate: ekCert.Raw, EKPublic: e.ek.Public, IAKPublic: e.iak.Public,
		Custodian: "blue-operator", Stages: map[string]uint64{"firmware-programmed": 3},
		ExpectedPCRs: map[string]string{"0": hex.EncodeToString(qi.PCRs[0])}, Handoffs: 3,
	}
	ldevidCA, err := pki.NewRootCA("LDevID CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e.cfg = Config{
		Name: "blue-gate", Operator: "blue-operator", IDScope: testScope, Key: key,
		Ledger: e.led, TPMTrust: trust, LDevIDCA: ldevidCA, Registry: e.reg, DPSEndpoint: "https://dps.invalid",
		Logger: slog.New(e.logs),
	}
	if edit != nil {
		edit(&e.cfg)
	}
	e.start()
	return e
}

// start (re)starts the gate on e.cfg: a restart keeps the files.
func (e *trustEnv) start() {
	e.t.Helper()
	g, err := newGate(e.cfg, e.log.publish)
	if err != nil {
		e.t.Fatal(err)
	}
	e.g, e.h = g, g.Handler()
}

func (e *trustEnv) call(method, target, auth string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

// exchange is a device's registration as the caller saw it.
type exchange struct {
	challenge, accepted, outcome *httptest.ResponseRecorder
	out                          gatewire.Outcome
	token                        string
	body                         []byte // of the authorised call
}

// register runs the device's side of the protocol with the simulated TPM:
// the first call, credential activation, the quote and LDevID
// certification, and the authorised call with edit applied to its body,
// then reads the operation.
func (e *trustEnv) register(edit func(*gatewire.RegisterRequest)) *exchange {
	t := e.t
	t.Helper()
	base := "/" + testScope + "/registrations/" + e.id
	q := "?api-version=" + gatewire.APIVersion
	req := &gatewire.RegisterRequest{RegistrationID: e.id, TPM: &gatewire.TPMAttestation{EndorsementKey: e.ek.Public, StorageRootKey: e.iak.Public}}
	body, _ := json.Marshal(req)
	x := &exchange{challenge: e.call(http.MethodPut, base+"/register"+q, "", body)}
	if x.challenge.Code != http.StatusUnauthorized {
		t.Fatalf("first call: %d %s", x.challenge.Code, x.challenge.Body)
	}
	var ch gatewire.Challenge
	var cred attest.Credential
	if err := json.Unmarshal(x.challenge.Body.Bytes(), &ch); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(ch.AuthenticationKey, &cred); err != nil {
		t.Fatal(err)
	}
	secret, err := e.tp.ActivateCredential(e.iak, tpm.ECCP256, &cred)
	if err != nil {
		t.Fatal(err)
	}
	quote, err := e.tp.Quote(ch.Nonce, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	_, certify, err := e.tp.NewLDevID(ch.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	req.Payload = &gatewire.Evidence{Quote: events.NewEvidence(quote), LDevID: certify}
	if edit != nil {
		edit(req)
	}
	body, _ = json.Marshal(req)
	token := gatewire.SASToken(testScope, e.id, secret, time.Now().Add(5*time.Minute))
	x.token, x.body = token, body
	x.accepted = e.call(http.MethodPut, base+"/register"+q, token, body)
	var op gatewire.Outcome
	if x.accepted.Code != http.StatusAccepted || json.Unmarshal(x.accepted.Body.Bytes(), &op) != nil {
		t.Fatalf("authorised call: %d %s", x.accepted.Code, x.accepted.Body)
	}
	x.outcome = e.call(http.MethodGet, base+"/operations/"+op.OperationID+q, token, nil)
	if x.outcome.Code != http.StatusOK || json.Unmarshal(x.outcome.Body.Bytes(), &x.out) != nil {
		t.Fatalf("operation: %d %s", x.outcome.Code, x.outcome.Body)
	}
	return x
}

// lastDecision is the gate's (the operator's) last decision.
func (e *trustEnv) lastDecision() *gatewire.Decision {
	ds := e.g.Decisions()
	if len(ds) == 0 {
		e.t.Fatal("no decision")
	}
	return ds[len(ds)-1]
}

// TestActivationEKBound: the challenge is bound to the EK Begin encrypted
// it to. A device activates a challenge made for its ECC EK with its TPM,
// then presents another EK (its RSA EK, which the ledger is made to hold
// for the registration, as the finding's attacker presented the recorded
// EK after activating with a key held in software): refused, and neither
// DPS nor the ledger sees an enrollment. An EK that is not the
// registration's is refused already by Begin, with no challenge made.
func TestActivationEKBound(t *testing.T) {
	e := newTrustEnv(t, nil)
	other, err := e.tp.EK(tpm.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	rec := e.record.Clone()
	rec.EKPublic = other.Public
	e.led.set(e.id, rec)

	x := e.register(func(r *gatewire.RegisterRequest) { r.TPM.EndorsementKey = other.Public })
	st := x.out.RegistrationState
	if x.out.Status != gatewire.StatusFailed || st.ErrorCode != events.RuleErrorCode(events.RuleEKIdentity) || st.Decision != nil {
		t.Fatalf("another EK than the challenge's: %s", x.outcome.Body)
	}
	if d := e.lastDecision(); d.Allowed || d.Rule != events.RuleEKIdentity || !strings.Contains(d.Message, "challenge was encrypted to") {
		t.Fatalf("decision %+v", d)
	}
	// The same for another IAK than the one the credential was bound to.
	x = e.register(func(r *gatewire.RegisterRequest) { r.TPM.StorageRootKey = other.Public })
	if d := e.lastDecision(); x.out.Status != gatewire.StatusFailed || d.Rule != events.RuleActivation || !strings.Contains(d.Message, "bound to") {
		t.Fatalf("another IAK than the credential's: %+v", d)
	}
	e.g.records.Wait()
	if n := e.reg.enrolls.Load(); n != 0 {
		t.Errorf("DPS saw %d enrollments", n)
	}
	if n := e.log.kinds()[events.KindDeviceEnrolled]; n != 0 {
		t.Errorf("the ledger got %d device.enrolled", n)
	}

	// Begin refuses an EK whose SHA-256 is not the registration ID.
	req := &gatewire.RegisterRequest{RegistrationID: e.id, TPM: &gatewire.TPMAttestation{EndorsementKey: other.Public, StorageRootKey: e.iak.Public}}
	if _, err := e.g.Begin(context.Background(), testScope, "", req); !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("Begin with another EK than the registration's: %v", err)
	}
	// And a challenge answered from another session (its token, another
	// session's evidence) fails: the quote is over the other nonce.
	e.led.set(e.id, e.record)
	var nonceB []byte
	x = e.register(func(r *gatewire.RegisterRequest) {
		req := &gatewire.RegisterRequest{RegistrationID: e.id, TPM: &gatewire.TPMAttestation{EndorsementKey: e.ek.Public, StorageRootKey: e.iak.Public}}
		ch, err := e.g.Begin(context.Background(), testScope, "", req)
		if err != nil {
			t.Fatal(err)
		}
		nonceB = ch.Nonce
		q, err := e.tp.Quote(ch.Nonce, []int{0})
		if err != nil {
			t.Fatal(err)
		}
		r.Payload.Quote = events.NewEvidence(q)
	})
	if d := e.lastDecision(); nonceB == nil || d.Rule != events.RuleQuote {
		t.Fatalf("evidence of another session: %+v", d)
	}
	// The token of a consumed challenge is not accepted again.
	again := e.call(http.MethodPut, "/"+testScope+"/registrations/"+e.id+"/register?api-version="+gatewire.APIVersion, x.token, x.body)
	// (the other session's challenge is still live: activation).
	if d := e.lastDecision(); again.Code != http.StatusAccepted || d.Rule != events.RuleActivation {
		t.Fatalf("a replayed token: %d %+v", again.Code, d)
	}
	if n := e.reg.enrolls.Load(); n != 0 {
		t.Errorf("DPS saw %d enrollments", n)
	}
	// The clean device enrolls.
	x = e.register(nil)
	if x.out.Status != gatewire.StatusAssigned || e.reg.enrolls.Load() != 1 {
		t.Fatalf("a clean device: %s", x.outcome.Body)
	}
}

// TestNoLedgerBeforeProof: Begin reads nothing of the ledger, and its
// answer has the same shape for a device the ledger knows and for one it
// does not.
func TestNoLedgerBeforeProof(t *testing.T) {
	e := newTrustEnv(t, nil)
	req := &gatewire.RegisterRequest{RegistrationID: e.id, TPM: &gatewire.TPMAttestation{EndorsementKey: e.ek.Public, StorageRootKey: e.iak.Public}}
	body, _ := json.Marshal(req)
	target := "/" + testScope + "/registrations/" + e.id + "/register?api-version=" + gatewire.APIVersion
	shape := func() string {
		w := e.call(http.MethodPut, target, "", body)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf("%d %v", w.Code, w.Header())
		for _, k := range []string{"authenticationKey", "nonce"} {
			s += fmt.Sprintf(" %s:%d", k, len(m[k]))
		}
		return s + fmt.Sprint(len(m))
	}
	unknown := shape()
	e.led.set(e.id, e.record)
	known := shape()
	if unknown != known {
		t.Errorf("Begin's answers differ:\nunknown %s\nknown   %s", unknown, known)
	}
	if n := e.led.calls.Load(); n != 0 {
		t.Errorf("Begin asked the ledger %d times", n)
	}
}

// TestUnknownAndRefusedAnswersIdentical: a device that proves its TPM gets
// the same answer, byte for byte but for the operation's own IDs and
// times, whether the ledger does not know it or knows it and a custody
// rule refuses it (flagged, another custodian, a stage missing,
// decommissioned). The rule is in the operator's decision only.
func TestUnknownAndRefusedAnswersIdentical(t *testing.T) {
	e := newTrustEnv(t, nil)
	strip := func(x *exchange) string {
		var m map[string]any
		if err := json.Unmarshal(x.outcome.Body.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "operationId")
		st := m["registrationState"].(map[string]any)
		for _, k := range []string{"etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"} {
			delete(st, k)
		}
		b, _ := json.Marshal(m)
		var acc map[string]any
		_ = json.Unmarshal(x.accepted.Body.Bytes(), &acc)
		delete(acc, "operationId")
		a, _ := json.Marshal(acc)
		return fmt.Sprintf("%d %d %s %s %s", x.accepted.Code, x.outcome.Code, a, b, x.outcome.Header().Get("Content-Type"))
	}
	want := strip(e.register(nil)) // unknown to the ledger
	if d := e.lastDecision(); d.Rule != events.RuleCustodyChain || !strings.Contains(d.Message, "no custody record") {
		t.Fatalf("unknown device: %+v", d)
	}
	t.Logf("the answer: %s", want)
	for name, edit := range map[string]func(*ledger.Device){
		events.RuleFlagged:        func(d *ledger.Device) { d.Flag = &ledger.DeviceFlag{Reason: "stolen", By: "blue-operator", Index: 9} },
		events.RuleCustodyChain:   func(d *ledger.Device) { d.Custodian = "grey-operator" },
		events.RuleStages:         func(d *ledger.Device) { d.Stages = nil },
		events.RuleDecommissioned: func(d *ledger.Device) { d.Decommissioned = true },
		events.RulePCRPolicy:      func(d *ledger.Device) { d.ExpectedPCRs = map[string]string{"0": strings.Repeat("ab", 32)} },
	} {
		rec := e.record.Clone()
		edit(rec)
		e.led.set(e.id, rec)
		got := strip(e.register(nil))
		if d := e.lastDecision(); d.Rule != name {
			t.Errorf("%s: the operator's decision names %s", name, d.Rule)
		}
		if got != want {
			t.Errorf("refused by %s, the caller sees\n%s\nunknown, it sees\n%s", name, got, want)
		}
	}
	if e.reg.enrolls.Load() != 0 {
		t.Error("DPS saw an enrollment")
	}
}

// TestRefusalsRateLimitedAndAggregated: 10,000 refused registrations of
// one device from one address add at most 3 ledger entries and log lines;
// over the limit the caller gets DPS's throttling answer and the gate does
// no work (no challenge is made). The aggregate record carries the count.
func TestRefusalsRateLimitedAndAggregated(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newTrustEnv(t, func(c *Config) { c.Now = clock })
	e.led.set(e.id, e.record)
	base := "/" + testScope + "/registrations/" + e.id + "/register?api-version=" + gatewire.APIVersion
	req := &gatewire.RegisterRequest{RegistrationID: e.id, TPM: &gatewire.TPMAttestation{EndorsementKey: e.ek.Public, StorageRootKey: e.iak.Public}}
	body, _ := json.Marshal(req)
	sas := gatewire.SASToken(testScope, e.id, []byte("no activated secret"), now.Add(time.Hour))
	const attempts = 10_000
	statuses := map[int]int{}
	for i := range attempts {
		w := e.call(http.MethodPut, base, sas, body)
		statuses[w.Code]++
		if w.Code == http.StatusTooManyRequests && statuses[w.Code] == 1 {
			var b struct{ ErrorCode int }
			_ = json.Unmarshal(w.Body.Bytes(), &b)
			if ra := w.Header().Get("Retry-After"); ra != "600" || b.ErrorCode != gatewire.CodeThrottled {
				t.Fatalf("attempt %d throttled with Retry-After %q, errorCode %d", i, ra, b.ErrorCode)
			}
		}
	}
	if statuses[http.StatusAccepted] != 10 || statuses[http.StatusTooManyRequests] != attempts-10 {
		t.Fatalf("answers %v, want 10 decided, the rest throttled", statuses)
	}
	// A throttled first call makes no challenge (no credential work).
	if w := e.call(http.MethodPut, base, "", body); w.Code != http.StatusTooManyRequests || len(e.g.challenges) != 0 {
		t.Fatalf("a throttled first call: %d, %d challenges", w.Code, len(e.g.challenges))
	}
	e.g.records.Wait()
	if n := e.log.kinds()[events.KindEnrollmentRefused]; n != 1 {
		t.Errorf("%d enrollment.refused within the window, want 1", n)
	}
	// The window ends: one more record, carrying the count.
	mu.Lock()
	now = now.Add(10*time.Minute + time.Second)
	mu.Unlock()
	e.g.flushRefusals()
	e.g.records.Wait()
	e.g.flushRefusals() // nothing more is due
	e.g.records.Wait()
	refused, lines := e.log.kinds()[events.KindEnrollmentRefused], e.logs.count("enrollment refused")
	if refused > 3 || lines > 3 || refused != 2 {
		t.Fatalf("%d attempts: %d enrollment.refused, %d log lines", attempts+1, refused, lines)
	}
	last := e.log.sts[len(e.log.sts)-1].Predicate.Refused
	if !strings.Contains(last.Message, fmt.Sprintf("[%d refusal(s)", attempts)) || last.Rule != events.RuleChallenge {
		t.Errorf("the aggregate record: %+v", last)
	}
	// The window is over: the device may try again.
	if w := e.call(http.MethodPut, base, "", body); w.Code != http.StatusUnauthorized {
		t.Errorf("after the window: %d", w.Code)
	}
	// An address refused for many devices is throttled too.
	e2 := newTrustEnv(t, func(c *Config) { c.RefusalsPerSource = 5 })
	for i := range 6 {
		id := fmt.Sprintf("%064x", i+1)
		r := &gatewire.RegisterRequest{RegistrationID: id, TPM: req.TPM}
		b, _ := json.Marshal(r)
		w := e2.call(http.MethodPut, "/"+testScope+"/registrations/"+id+"/register?api-version="+gatewire.APIVersion, sas, b)
		if want := map[bool]int{true: 429, false: 202}[i == 5]; w.Code != want {
			t.Fatalf("device %d from one address: %d, want %d", i, w.Code, want)
		}
	}
	e2.g.records.Wait()
}

// TestLDevIDRevocationSurvivesRestart: an LDevID issued but never recorded
// (the ledger refused device.enrolled) and one the operator revoked are in
// the revocation file; after a restart on the same file the CRL lists both
// and OCSP answers revoked for them, good for a valid one and unknown for
// a serial the gate never issued. A revocation of such a serial is
// refused.
func TestLDevIDRevocationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	e := newTrustEnv(t, func(c *Config) { c.RevocationFile = filepath.Join(dir, "revocations.jsonl") })
	e.led.set(e.id, e.record)
	chainOf := func(x *exchange) *x509.Certificate {
		t.Helper()
		st := x.out.RegistrationState
		if x.out.Status != gatewire.StatusAssigned || len(st.IssuedCertificateChain) == 0 {
			t.Fatalf("not enrolled: %s", x.outcome.Body)
		}
		c, err := x509.ParseCertificate(st.IssuedCertificateChain[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// 1. The ledger refuses device.enrolled: the LDevID is revoked.
	e.log.setFail(func(st *events.Statement) error {
		if st.Predicate.Kind == events.KindDeviceEnrolled {
			return errors.New("the ledger is down")
		}
		return nil
	})
	e.register(nil)
	d := e.lastDecision()
	if d.Rule != events.RuleLedger {
		t.Fatalf("decision %+v", d)
	}
	unrecorded, ok := new(big.Int).SetString(d.LDevIDSerial, 16)
	if !ok {
		t.Fatalf("the decision names no LDevID serial: %+v", d)
	}
	e.log.setFail(nil)
	// 2. Two enrollments: the first is superseded by the second (in the log).
	c1 := chainOf(e.register(nil))
	c2 := chainOf(e.register(nil))
	// 3. The operator revokes the valid one.
	if status := ocspStatus(t, e, c2, false); status.Status != ocsp.Good {
		t.Fatalf("a valid LDevID: OCSP status %d", status.Status)
	}
	w := e.call(http.MethodPost, "/v1/revocations", "", []byte(`{"serial":"`+c2.SerialNumber.Text(16)+`","reason":"keyCompromise"}`))
	if w.Code != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", w.Code, w.Body)
	}
	if err := e.g.Revoke(big.NewInt(12345), "keyCompromise"); !errors.Is(err, ErrUnknownLDevID) {
		t.Fatalf("revoking a serial never issued: %v", err)
	}
	if w := e.call(http.MethodPost, "/v1/revocations", "", []byte(`{"serial":"3039","reason":"keyCompromise"}`)); w.Code != http.StatusNotFound {
		t.Fatalf("revoking a serial never issued over HTTP: %d", w.Code)
	}

	// Restart on the same file. The log (which would hold c1 and c2's
	// device.enrolled) is not read here: the file alone must carry the
	// revocations it holds.
	e.start()
	crl := e.call(http.MethodGet, "/v1/crl", "", nil)
	if crl.Code != http.StatusOK || crl.Header().Get("Content-Type") != "application/pkix-crl" {
		t.Fatalf("CRL: %d %s", crl.Code, crl.Header())
	}
	rl, err := x509.ParseRevocationList(crl.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(e.cfg.LDevIDCA.Cert); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]int{}
	for _, r := range rl.RevokedCertificateEntries {
		reasons[r.SerialNumber.Text(16)] = r.ReasonCode
	}
	if reasons[unrecorded.Text(16)] != x509ReasonCessation || reasons[c2.SerialNumber.Text(16)] != 1 {
		t.Fatalf("CRL after the restart: %v, want %s cessationOfOperation and %s keyCompromise", reasons, unrecorded.Text(16), c2.SerialNumber.Text(16))
	}
	for _, post := range []bool{false, true} {
		if r := ocspStatus(t, e, c2, post); r.Status != ocsp.Revoked || r.RevocationReason != ocsp.KeyCompromise {
			t.Errorf("OCSP (POST %v) for the revoked LDevID: status %d reason %d", post, r.Status, r.RevocationReason)
		}
	}
	fake := *c2
	fake.SerialNumber = big.NewInt(12345)
	if r := ocspStatus(t, e, &fake, true); r.Status != ocsp.Unknown {
		t.Errorf("OCSP for a serial never issued: %d", r.Status)
	}
	_ = c1
	opensslChecks(t, e, c2, crl.Body.Bytes())
}

// ocspStatus asks the gate's OCSP responder about c, by GET or POST, and
// checks the response's signature by the LDevID CA.
func ocspStatus(t *testing.T, e *trustEnv, c *x509.Certificate, post bool) *ocsp.Response {
	t.Helper()
	der, err := ocsp.CreateRequest(c, e.cfg.LDevIDCA.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	var w *httptest.ResponseRecorder
	if post {
		w = e.call(http.MethodPost, "/v1/ocsp", "", der)
	} else {
		w = e.call(http.MethodGet, "/v1/ocsp/"+strings.ReplaceAll(base64.StdEncoding.EncodeToString(der), "/", "%2F"), "", nil)
	}
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("OCSP: %d %s", w.Code, w.Header())
	}
	r, err := ocsp.ParseResponseForCert(w.Body.Bytes(), c, e.cfg.LDevIDCA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// opensslChecks reads the CRL and asks the OCSP responder with openssl,
// over a real socket. Skipped without openssl, unless CI=true.
func opensslChecks(t *testing.T, e *trustEnv, revoked *x509.Certificate, crl []byte) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required in CI")
		}
		t.Log("no openssl: skipping the openssl checks")
		return
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := write("ca.pem", pki.EncodeCertsPEM(e.cfg.LDevIDCA.Cert))
	leaf := write("leaf.pem", pki.EncodeCertsPEM(revoked))
	crlFile := write("crl.der", crl)
	out, err := exec.Command(bin, "crl", "-inform", "DER", "-in", crlFile, "-CAfile", ca, "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(strings.ToUpper(string(out)), strings.ToUpper(revoked.SerialNumber.Text(16))) || !strings.Contains(string(out), "Key Compromise") {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	out, err = exec.Command(bin, "ocsp", "-issuer", ca, "-cert", leaf, "-url", srv.URL+"/v1/ocsp", "-CAfile", ca, "-no_nonce").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Response verify OK") || !strings.Contains(string(out), ": revoked") {
		t.Fatalf("openssl ocsp: %v\n%s", err, out)
	}
}
