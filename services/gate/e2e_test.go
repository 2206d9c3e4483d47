package gate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/nodetest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/gate"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// reflash is the firmware programmed after the EMS.
var reflash = []byte("field update 6.6.6\n")

const (
	vendor, odm, oem, ems = "acme-tpm", "orbit-odm", "nova-oem", "delta-ems"
	operator, grey        = "blue-operator", "grey-operator"
)

// buildAgent compiles cmd/custody-agent once per test binary: each
// simulated device is its own process, because the TPM simulator is one per
// process.
var (
	agentOnce sync.Once
	agentBin  string
	agentErr  error
)

func buildAgent(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: builds custody-agent and runs one process per device")
	}
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "custody-gate-e2e-")
		if err != nil {
			agentErr = err
			return
		}
		benchTeardown = append(benchTeardown, func() { os.RemoveAll(dir) }) // run by TestMain
		agentBin = filepath.Join(dir, "custody-agent")
		cmd := exec.Command("go", "build", "-o", agentBin, "github.com/custodyledger/custody/cmd/custody-agent")
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("building custody-agent: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentBin
}

// env is a running node and the device agents of one test.
type env struct {
	t   *testing.T
	ctx context.Context
	n   *node.Node
	bin string
}

func newEnv(t *testing.T, pol gate.Policy) *env {
	t.Helper()
	e := newNode(t, pol)
	e.bin = buildAgent(t)
	return e
}

// newNode starts a node (NATS, ledger, stations, gate, DPS) without agents.
func newNode(t *testing.T, pol gate.Policy) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	n, err := node.New(ctx, node.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", GatePolicy: pol,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("node: %v", err)
		}
	})
	select {
	case <-n.Ready():
	case err := <-done:
		t.Fatalf("node stopped: %v", err)
	case <-ctx.Done():
		t.Fatal("node not ready")
	}
	return &env{t: t, ctx: ctx, n: n}
}

// agent starts a custody-agent serve process around a simulated TPM and
// returns its factory API URL.
func (e *env) agent(seed int) string {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	addrFile := filepath.Join(dir, "addr")
	cmd := exec.Command(e.bin, "serve", "--tpm", fmt.Sprintf("sim:seed=%d", seed), "--state", dir,
		"--listen", "127.0.0.1:0", "--addr-file", addrFile, "--pki", e.n.PKI.Dir)
	var logBuf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			return strings.TrimSpace(string(b))
		}
		select {
		case <-exited:
			t.Fatalf("custody-agent (seed %d) exited:\n%s", seed, logBuf.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("custody-agent (seed %d) did not start", seed)
		}
	}
}

// call runs one station operation for the device at agent.
func (e *env) call(agent, partner, op string, req *station.Request) (*station.Response, error) {
	if req == nil {
		req = &station.Request{}
	}
	req.Agent = agent
	return station.NewClient(e.n.URL()+"/stations/"+partner, e.n.HTTPClient(partner)).Call(e.ctx, op, req)
}

// must runs a station operation that the ledger must accept and returns the
// device ID.
func (e *env) must(agent, partner, op string, req *station.Request) string {
	e.t.Helper()
	resp, err := e.call(agent, partner, op, req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", partner, op, err)
	}
	return resp.Device
}

// factory runs vendor → ODM → OEM → EMS, firmware and test, as the demo.
func (e *env) factory(agent string) (string, error) {
	return runSteps(e.ctx, e.n.HTTPClient, e.n.URL(), agent, factorySteps)
}

// step is one station operation on a device.
type step struct {
	partner, op string
	req         station.Request
}

// factorySteps take a device from its manufacture to the EMS's test, as the
// demo does; toOperator then hands it to the operator.
var (
	factorySteps = []step{
		{vendor, "manufacture", station.Request{}},
		{vendor, "offer", station.Request{To: odm}},
		{odm, "accept", station.Request{}},
		{odm, "stage", station.Request{Stage: events.StageAssembly}},
		{odm, "offer", station.Request{To: oem}},
		{oem, "accept", station.Request{}},
		{oem, "offer", station.Request{To: ems}},
		{ems, "accept", station.Request{}},
		{ems, "firmware", station.Request{Image: []byte("custody e2e firmware 2.0.1\n")}},
		{ems, "stage", station.Request{Stage: events.StageTestPassed}},
	}
	toOperator = []step{
		{ems, "offer", station.Request{To: operator}},
		{operator, "accept", station.Request{}},
	}
)

// runSteps runs station operations, in order, on the device whose factory
// API is at agent, through the stations of the node at nodeURL, each called
// as its own partner (clients), and returns the device ID.
func runSteps(ctx context.Context, clients func(partner string) *http.Client, nodeURL, agent string, steps ...[]step) (string, error) {
	var id string
	for _, s := range slices.Concat(steps...) {
		req := s.req
		req.Agent = agent
		resp, err := station.NewClient(nodeURL+"/stations/"+s.partner, clients(s.partner)).Call(ctx, s.op, &req)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", s.partner, s.op, err)
		}
		if id == "" {
			id = resp.Device
		}
	}
	return id, nil
}

// firstBootResult is custody-agent's answer to POST /v1/firstboot.
type firstBootResult struct {
	DeviceID    string             `json:"deviceId"`
	Enrolled    bool               `json:"enrolled"`
	Rule        string             `json:"rule"`
	Message     string             `json:"message"`
	AssignedHub string             `json:"assignedHub"`
	Decision    *gatewire.Decision `json:"decision"`
	Error       string             `json:"error"`
}

// firstBoot power-cycles the device and runs its enrollment at the node's
// gate.
func (e *env) firstBoot(agent string) *firstBootResult {
	e.t.Helper()
	return e.firstBootAt(agent, e.n.URL()+"/gate")
}

// firstBootAt power-cycles the device and runs its enrollment at gateURL.
func (e *env) firstBootAt(agent, gateURL string) *firstBootResult {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{
		"gate": gateURL, "idScope": e.n.IDScope(), "dpsCa": pki.EncodeCertsPEM(e.n.PKI.TLSCA),
	})
	req, _ := http.NewRequestWithContext(e.ctx, http.MethodPost, agent+"/v1/firstboot", bytes.NewReader(body))
	resp, err := e.n.HTTPClient(operator).Do(req) // the agent answers only partners
	if err != nil {
		e.t.Fatalf("first boot: %v", err)
	}
	defer resp.Body.Close()
	var r firstBootResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		e.t.Fatalf("first boot answer: %v", err)
	}
	if r.Error != "" {
		e.t.Fatalf("first boot failed: %s", r.Error)
	}
	return &r
}

// timeline is the device's verified provenance.
func (e *env) timeline(id string) ([]ledger.VerifiedEntry, *ledger.Device) {
	e.t.Helper()
	p, err := e.n.Ledger.Provenance(id)
	if err != nil {
		e.t.Fatal(err)
	}
	entries, _, err := ledger.VerifyProvenance(p, &e.n.PKI.LogKey.PublicKey)
	if err != nil {
		e.t.Fatal(err)
	}
	return entries, p.Device
}

// lastOf returns the device's last entry of kind.
func (e *env) lastOf(id, kind string) *ledger.VerifiedEntry {
	e.t.Helper()
	entries, _ := e.timeline(id)
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Kind == kind {
			return &entries[i]
		}
	}
	e.t.Fatalf("device %s has no %s entry", id, kind)
	return nil
}

// wantRefused asserts a refusal by rule, decided from the custody record:
// the device hears only the one answer every such refusal gets
// (custody-chain, saying nothing of the record), while the operator reads
// the rule in the gate's decisions, and the refusal is recorded in the
// ledger (in the background, at most once a window per device). It
// returns the operator's decision.
func (e *env) wantRefused(r *firstBootResult, rule string) *gatewire.Decision {
	e.t.Helper()
	if r.Enrolled || r.Rule != events.RuleCustodyChain || r.Decision != nil {
		e.t.Fatalf("want the device told only %s, got enrolled=%v rule=%q decision=%+v: %s", events.RuleCustodyChain, r.Enrolled, r.Rule, r.Decision, r.Message)
	}
	var d *gatewire.Decision
	deadline := time.Now().Add(30 * time.Second)
	for {
		ds := e.decisions(r.DeviceID)
		if len(ds) > 0 {
			d = ds[len(ds)-1]
		}
		if d != nil && (d.Logged || counted(d)) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d == nil || d.Allowed || d.Rule != rule || !(d.Logged || counted(d)) || d.Code != events.RuleErrorCode(rule) {
		e.t.Fatalf("the operator's decision: %+v; want refused by %s and logged", d, rule)
	}
	ent := e.lastOf(r.DeviceID, events.KindEnrollmentRefused)
	if counted(d) {
		// The device was refused earlier in this window: this refusal is
		// counted into its next aggregate record, and the window's first
		// is in the ledger already.
		return d
	}
	if ent.Index != d.LogIndex || ent.Statement.Predicate.Refused.Rule != rule || ent.Partner != "blue-gate" {
		e.t.Fatalf("enrollment.refused entry %d (%+v) does not match the decision (log index %d)", ent.Index, ent.Statement.Predicate.Refused, d.LogIndex)
	}
	return d
}

// counted reports whether a refusal was counted into the device's next
// aggregate refusal record rather than opening one.
func counted(d *gatewire.Decision) bool { return strings.HasPrefix(d.LogNote, "counted:") }

// decisions are the gate's decisions about device, as its operator reads
// them.
func (e *env) decisions(device string) []*gatewire.Decision {
	e.t.Helper()
	resp, err := e.n.HTTPClient("blue-operator").Get(e.n.URL() + "/gate/v1/decisions?device=" + device)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var ds []*gatewire.Decision
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&ds) != nil {
		e.t.Fatalf("decisions: %s", resp.Status)
	}
	return ds
}

// wantEnrolled asserts an enrollment: device.enrolled in the ledger, an
// LDevID that chains to the operator's CA, and DPS's registration state
// "assigned" to the hub the device was given. It returns the LDevID.
func (e *env) wantEnrolled(r *firstBootResult) *x509.Certificate {
	e.t.Helper()
	if !r.Enrolled || r.AssignedHub == "" {
		e.t.Fatalf("want enrolled, got rule %q: %s", r.Rule, r.Message)
	}
	ent := e.lastOf(r.DeviceID, events.KindDeviceEnrolled)
	if r.Decision == nil || !r.Decision.Logged || r.Decision.LogIndex != ent.Index {
		e.t.Fatalf("decision %+v does not name device.enrolled entry %d", r.Decision, ent.Index)
	}
	cert, err := x509.ParseCertificate(ent.Statement.Predicate.Enrolled.LDevIDCertificate)
	if err != nil {
		e.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(e.n.PKI.LDevIDCA.Cert)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		e.t.Fatalf("the LDevID does not chain to the operator's LDevID CA: %v", err)
	}
	if cert.Subject.CommonName != r.DeviceID || cert.SerialNumber.Text(16) != r.Decision.LDevIDSerial {
		e.t.Fatalf("LDevID subject %q serial %s, decision serial %s", cert.Subject.CommonName, cert.SerialNumber.Text(16), r.Decision.LDevIDSerial)
	}
	st, err := e.n.DPSService().GetRegistrationState(e.ctx, r.DeviceID)
	if err != nil {
		e.t.Fatalf("DPS registration state: %v", err)
	}
	if st.Status != "assigned" || st.AssignedHub != r.AssignedHub {
		e.t.Fatalf("DPS says %s to %q, the device was given %q", st.Status, st.AssignedHub, r.AssignedHub)
	}
	return cert
}

// crl fetches and verifies the gate's CRL.
func (e *env) crl() *x509.RevocationList {
	e.t.Helper()
	resp, err := e.n.HTTPClient("").Get(e.n.URL() + "/gate/v1/crl")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" {
		e.t.Fatalf("CRL: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	crl, err := x509.ParseRevocationList(buf.Bytes())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(e.n.PKI.LDevIDCA.Cert); err != nil {
		e.t.Fatalf("CRL signature: %v", err)
	}
	return crl
}

// r2id is the registration ID an LDevID was issued for.
func r2id(c *x509.Certificate) string { return c.Subject.CommonName }

func crlReason(crl *x509.RevocationList, c *x509.Certificate) (int, bool) {
	for _, r := range crl.RevokedCertificateEntries {
		if r.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return r.ReasonCode, true
		}
	}
	return 0, false
}

// TestFirstBootGate runs six devices through the supply chain and the
// operator's gate, each its own custody-agent process with its own
// simulated TPM, and checks every decision, its ledger record, the LDevID
// and DPS:
//
//   - clean: enrolled; LDevID chains to the operator's CA; DPS assigned.
//   - double-sold: the EMS offers it twice; refused (flagged).
//   - diverted: sold to grey-operator (an offer to an unregistered party is
//     refused by the ledger); refused at blue's gate (custody-chain).
//   - re-flashed: new firmware through the factory API after the EMS;
//     refused (pcr-policy).
//   - cloned EK: a second TPM presents the clean device's EK; refused
//     (activation): it cannot activate the credential.
//   - flagged, then cleared by the operator: refused, then enrolled; then
//     flagged again, which puts its LDevID on hold in the CRL.
//
// The clean device also enrolls a second time with the same TPM (a
// renewal): a new LDevID, the old one revoked as superseded; then the
// operator decommissions it: its LDevID is revoked and it is refused.
func TestFirstBootGate(t *testing.T) {
	e := newEnv(t, gate.Policy{RequiredStages: []string{events.StageAssembly, events.StageFirmwareProgrammed, events.StageTestPassed}})
	names := []string{"clean", "double", "diverted", "reflashed", "flagged", "clone"}
	agents := map[string]string{}
	for i, name := range names {
		agents[name] = e.agent(4101 + i)
	}
	ids := map[string]string{}
	var mu sync.Mutex
	var g errgroup.Group
	for _, name := range names[:5] {
		g.Go(func() error {
			id, err := e.factory(agents[name])
			mu.Lock()
			ids[name] = id
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// The last custody steps of each story.
	for _, name := range []string{"clean", "reflashed", "flagged"} {
		e.must(agents[name], ems, "offer", &station.Request{To: operator})
		e.must(agents[name], operator, "accept", nil)
	}
	e.must(agents["double"], ems, "offer", &station.Request{To: operator})
	resp, err := e.call(agents["double"], ems, "offer", &station.Request{To: grey, Equivocate: true})
	var rej *station.RejectedError
	if !errors.As(err, &rej) || rej.Receipt.Status != events.StatusEvidence || rej.Receipt.Code != string(events.CodeEquivocation) {
		t.Fatalf("double-sold: second offer: %+v, %v", resp, err)
	}
	e.must(agents["double"], operator, "accept", nil)
	_, err = e.call(agents["diverted"], ems, "offer", &station.Request{To: "shady-broker"})
	if !errors.As(err, &rej) || rej.Receipt.Code != string(events.CodeRecipient) {
		t.Fatalf("diverted: offer to an unregistered party: %v", err)
	}
	e.must(agents["diverted"], ems, "offer", &station.Request{To: grey})
	e.must(agents["diverted"], grey, "accept", nil)
	if _, err := device.NewClient(agents["reflashed"], e.n.HTTPClient(operator)).ProgramFirmware(e.ctx, reflash); err != nil {
		t.Fatal(err)
	}
	e.must(agents["flagged"], operator, "flag", &station.Request{Reason: events.FlagLost, Note: "lost in transit"})

	var cleanCert *x509.Certificate
	t.Run("clean", func(t *testing.T) {
		e := *e
		e.t = t
		cleanCert = e.wantEnrolled(e.firstBoot(agents["clean"]))
	})
	t.Run("double-sold", func(t *testing.T) {
		e := *e
		e.t = t
		r := e.firstBoot(agents["double"])
		if d := e.wantRefused(r, events.RuleFlagged); !strings.Contains(d.Message, "equivocation") {
			t.Errorf("refusal %q does not name the equivocation", d.Message)
		}
		// The gate's fresh quote verified, so the refusal carries it.
		if ent := e.lastOf(r.DeviceID, events.KindEnrollmentRefused); ent.Statement.Predicate.Evidence == nil {
			t.Error("the refusal after a verified quote carries no evidence")
		}
	})
	t.Run("diverted", func(t *testing.T) {
		e := *e
		e.t = t
		r := e.firstBoot(agents["diverted"])
		if d := e.wantRefused(r, events.RuleCustodyChain); !strings.Contains(d.Message, grey) {
			t.Errorf("refusal %q does not name the custodian", d.Message)
		}
	})
	t.Run("re-flashed", func(t *testing.T) {
		e := *e
		e.t = t
		e.wantRefused(e.firstBoot(agents["reflashed"]), events.RulePCRPolicy)
		// A gate whose operator allow-lists that firmware's PCR 0 (the
		// firmware's digest extended into a reset PCR) enrolls it.
		fw := sha256.Sum256(reflash)
		pcr0 := sha256.Sum256(append(make([]byte, 32), fw[:]...))
		g2 := e.secondGate(gate.Policy{PCRAllowList: map[int][]string{0: {hex.EncodeToString(pcr0[:])}}})
		srv := httptest.NewServer(g2.Handler())
		defer srv.Close()
		r := e.firstBootAt(agents["reflashed"], srv.URL)
		if !r.Enrolled {
			t.Fatalf("the allow-listed firmware was refused: %s: %s", r.Rule, r.Message)
		}
		var src string
		for _, c := range r.Decision.Checks {
			if c.Name == events.RulePCRPolicy {
				src = c.Detail
			}
		}
		if !strings.Contains(src, "operator allow-list") {
			t.Errorf("pcr-policy check: %q", src)
		}
	})
	t.Run("cloned-ek", func(t *testing.T) {
		e := *e
		e.t = t
		e.clonedEK(agents["clean"], agents["clone"])
	})
	t.Run("flagged-then-cleared", func(t *testing.T) {
		e := *e
		e.t = t
		e.wantRefused(e.firstBoot(agents["flagged"]), events.RuleFlagged)
		e.must(agents["flagged"], operator, "clear", &station.Request{Reason: "cleared", Note: "found"})
		cert := e.wantEnrolled(e.firstBoot(agents["flagged"]))
		if _, ok := crlReason(e.crl(), cert); ok {
			t.Fatal("a valid LDevID is on the CRL")
		}
		e.must(agents["flagged"], operator, "flag", &station.Request{Reason: events.FlagStolen})
		if reason, ok := crlReason(e.crl(), cert); !ok || reason != 6 {
			t.Fatalf("the flagged device's LDevID is not on hold in the CRL (listed %v, reason %d)", ok, reason)
		}
		// DPS does not read CRLs: the gate's sweep disables the enrollment.
		if n, err := e.n.Gate.Sweep(e.ctx); err != nil || n != 1 {
			t.Fatalf("sweep disabled %d enrollments: %v", n, err)
		}
		en, err := e.n.DPSService().GetEnrollment(e.ctx, r2id(cert))
		if err != nil || en.ProvisioningStatus != "disabled" {
			t.Fatalf("the flagged device's DPS enrollment: %+v, %v", en, err)
		}
		if n, err := e.n.Gate.Sweep(e.ctx); err != nil || n != 0 {
			t.Fatalf("a second sweep disabled %d enrollments: %v", n, err)
		}
	})
	t.Run("renewal", func(t *testing.T) {
		e := *e
		e.t = t
		if cleanCert == nil {
			t.Skip("the clean device did not enroll")
		}
		cert := e.wantEnrolled(e.firstBoot(agents["clean"]))
		if cert.SerialNumber.Cmp(cleanCert.SerialNumber) == 0 {
			t.Fatal("re-enrollment returned the same LDevID")
		}
		crl := e.crl()
		if reason, ok := crlReason(crl, cleanCert); !ok || reason != 4 {
			t.Fatalf("the superseded LDevID is not revoked as superseded (listed %v, reason %d)", ok, reason)
		}
		if _, ok := crlReason(crl, cert); ok {
			t.Fatal("the new LDevID is on the CRL")
		}
		// Decommissioned: its LDevID is revoked for good, and it is refused.
		if _, err := e.n.Stations[operator].Flag(e.ctx, agents["clean"], events.KindDeviceDecommissioned, "end-of-life", "retired"); err != nil {
			t.Fatal(err)
		}
		if reason, ok := crlReason(e.crl(), cert); !ok || reason != 5 {
			t.Fatalf("the decommissioned device's LDevID is not revoked (listed %v, reason %d)", ok, reason)
		}
		e.wantRefused(e.firstBoot(agents["clean"]), events.RuleDecommissioned)
	})
	t.Run("refusal-rules", func(t *testing.T) {
		e := *e
		e.t = t
		e.refusalRules(ids["double"], agents["clone"])
	})
	t.Run("restart", func(t *testing.T) {
		// A gate started on the same log rebuilds its register of LDevIDs
		// from its device.enrolled entries: the same CRL entries.
		g2 := e.secondGate(gate.Policy{})
		key := func(rs []gate.Revoked) []string {
			var out []string
			for _, r := range rs {
				out = append(out, fmt.Sprintf("%s/%s/%d", r.Device[:8], r.Serial.Text(16), r.Reason))
			}
			return out
		}
		before, err := e.n.Gate.RevokedLDevIDs()
		if err != nil {
			t.Fatal(err)
		}
		after, err := g2.RevokedLDevIDs()
		if err != nil {
			t.Fatal(err)
		}
		if len(before) < 3 || !slices.Equal(key(before), key(after)) {
			t.Fatalf("revoked LDevIDs after a restart:\n%v\nbefore:\n%v", key(after), key(before))
		}
	})
	t.Run("decisions", func(t *testing.T) {
		resp, err := e.n.HTTPClient(e.n.PKI.Partners["blue-operator"].Name).Get(e.n.URL() + "/gate/v1/decisions?device=" + ids["flagged"])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ds []*gatewire.Decision
		if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range ds {
			got = append(got, fmt.Sprintf("%v:%s", d.Allowed, d.Rule))
		}
		if want := []string{"false:flagged", "true:"}; !slices.Equal(got, want) {
			t.Fatalf("decisions of the flagged device: %v, want %v", got, want)
		}
	})
}

// clonedEK is a second TPM presenting victim's EK and IAK public keys and
// registration ID: it gets the challenge, cannot activate the credential
// (the TPM refuses it), forges a SAS token, quotes with its own IAK, and is
// refused: the forged token matches no challenge the gate made, so the
// refusal names the activation rule and the clone learns nothing of the
// custody record.
func (e *env) clonedEK(victim, clone string) {
	t := e.t
	ctx := e.ctx
	id, err := device.NewClient(victim, e.n.HTTPClient(operator)).Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cloneTPM := device.NewClient(clone, e.n.HTTPClient(operator))
	base := e.n.URL() + "/gate/" + e.n.IDScope() + "/registrations/" + id.DeviceID
	q := "?api-version=" + gatewire.APIVersion
	req := &gatewire.RegisterRequest{RegistrationID: id.DeviceID, TPM: &gatewire.TPMAttestation{EndorsementKey: id.EKPublic, StorageRootKey: id.IAKPublic}}
	var ch gatewire.Challenge
	if status := doJSON(t, e.n.HTTPClient(""), http.MethodPut, base+"/register"+q, "", req, &ch); status != http.StatusUnauthorized {
		t.Fatalf("first call: %d", status)
	}
	var cred attest.Credential
	if err := json.Unmarshal(ch.AuthenticationKey, &cred); err != nil {
		t.Fatal(err)
	}
	_, err = cloneTPM.ActivateCredential(ctx, &cred)
	var apiErr *device.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusBadRequest {
		t.Fatalf("the clone's TPM activated a credential made for another EK: %v", err)
	}
	forged := make([]byte, 32)
	_, _ = rand.Read(forged)
	quote, err := cloneTPM.Quote(ctx, ch.Nonce, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	certify, err := cloneTPM.NewLDevID(ctx, ch.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	req.Payload = &gatewire.Evidence{Quote: events.NewEvidence(quote), LDevID: certify}
	token := gatewire.SASToken(e.n.IDScope(), id.DeviceID, forged, time.Now().Add(time.Minute))
	var op gatewire.Outcome
	if status := doJSON(t, e.n.HTTPClient(""), http.MethodPut, base+"/register"+q, token, req, &op); status != http.StatusAccepted || op.Status != gatewire.StatusAssigning {
		t.Fatalf("second call: %d %+v", status, op)
	}
	// Another credential cannot read the operation.
	var none gatewire.Outcome
	if status := doJSON(t, e.n.HTTPClient(""), http.MethodGet, base+"/operations/"+op.OperationID+q, "SharedAccessSignature sr=x", nil, &none); status != http.StatusNotFound {
		t.Fatalf("an operation was readable with another credential: %d", status)
	}
	var out gatewire.Outcome
	if status := doJSON(t, e.n.HTTPClient(""), http.MethodGet, base+"/operations/"+op.OperationID+q, token, nil, &out); status != http.StatusOK {
		t.Fatalf("operation: %d", status)
	}
	st := out.RegistrationState
	if out.Status != gatewire.StatusFailed || st == nil || st.ErrorCode != events.RuleErrorCode(events.RuleActivation) ||
		!strings.HasPrefix(st.ErrorMessage, events.RuleActivation+": ") || len(st.IssuedCertificateChain) != 0 {
		t.Fatalf("the clone was not refused by activation: %+v %+v", out, st)
	}
	if st.Decision != nil {
		t.Fatalf("a refused caller got the gate's decision record: %+v", st.Decision)
	}
	var d *gatewire.Decision
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ds := e.decisions(id.DeviceID)
		if len(ds) > 0 {
			d = ds[len(ds)-1]
		}
		if d != nil && d.Rule == events.RuleActivation && d.Logged || time.Now().After(deadline) {
			break
		}
	}
	if d == nil || d.Rule != events.RuleActivation || !d.Logged {
		t.Fatalf("the clone's refusal, as the operator reads it: %+v", d)
	}
	ent := e.lastOf(id.DeviceID, events.KindEnrollmentRefused)
	if ent.Index != d.LogIndex || ent.Statement.Predicate.Evidence != nil {
		t.Fatalf("refusal entry %d (evidence %v), decision %d: an unverified quote must not be recorded", ent.Index, ent.Statement.Predicate.Evidence != nil, d.LogIndex)
	}
}

func doJSON(t *testing.T, hc *http.Client, method, url, auth string, in, out any) int {
	t.Helper()
	var body bytes.Buffer
	if in != nil {
		_ = json.NewEncoder(&body).Encode(in)
	}
	req, _ := http.NewRequest(method, url, &body)
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(out)
	return resp.StatusCode
}

// refusalRules publishes enrollment.refused statements the ledger must
// refuse: by a partner that is not a gate, by a gate for another operator,
// about a device the ledger does not know, and with a quote that is not the
// device's over the named challenge (a real quote by another TPM).
func (e *env) refusalRules(dev, otherTPM string) {
	t := e.t
	publish := func(partner string, st *events.Statement) *events.Receipt {
		t.Helper()
		env, err := events.Sign(e.ctx, st, e.n.PKI.Partners[partner].Key, partner)
		if err != nil {
			t.Fatal(err)
		}
		return nodetest.PublishAs(t, e.ctx, e.n, partner, env)
	}
	refusal := func(partner, id, operator string) *events.Statement {
		st := events.NewStatement(events.KindEnrollmentRefused, partner, id, time.Now(), fmt.Sprintf("%032x", time.Now().UnixNano()))
		st.Predicate.Refused = &events.Refused{Operator: operator, RegistrationID: id, IDScope: e.n.IDScope(), Rule: events.RuleFlagged, Message: "test"}
		return st
	}
	nonce := bytes.Repeat([]byte{7}, 32)
	q, err := device.NewClient(otherTPM, e.n.HTTPClient(operator)).Quote(e.ctx, nonce, []int{0})
	if err != nil {
		t.Fatal(err)
	}
	withForeignQuote := refusal("blue-gate", dev, operator)
	withForeignQuote.Predicate.Refused.Challenge = nonce
	withForeignQuote.Predicate.Evidence = events.NewEvidence(q)
	unknown := strings.Repeat("0", 63) + "1"
	for _, c := range []struct {
		name, partner string
		st            *events.Statement
		code          events.Code
	}{
		{"not a gate", operator, refusal(operator, dev, operator), events.CodeWrongRole},
		{"another operator", "blue-gate", refusal("blue-gate", dev, grey), events.CodeWrongRole},
		{"unknown device", "blue-gate", refusal("blue-gate", unknown, operator), events.CodeUnknownDevice},
		{"foreign quote", "blue-gate", withForeignQuote, events.CodeEvidence},
	} {
		if r := publish(c.partner, c.st); r.Status != events.StatusRejected || r.Code != string(c.code) {
			t.Errorf("%s: %s %s (%s), want rejected %s", c.name, r.Status, r.Code, r.Reason, c.code)
		}
	}
	// And the well-formed one is accepted.
	if r := publish("blue-gate", refusal("blue-gate", dev, operator)); r.Status != events.StatusAccepted {
		t.Errorf("a gate's refusal record: %s %s: %s", r.Status, r.Code, r.Reason)
	}
}

// secondGate starts another gate of blue-operator on the node's ledger,
// NATS and DPS, with pol: a restarted gate, or one with another policy.
func (e *env) secondGate(pol gate.Policy) *gate.Gate {
	return e.secondGateWith(pol, 0)
}

// secondGateWith is secondGate with a group-commit window for its records.
func (e *env) secondGateWith(pol gate.Policy, window time.Duration) *gate.Gate {
	t := e.t
	t.Helper()
	nc, err := e.n.Connect("blue-gate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	trust, err := attest.ParseBundle(e.n.PKI.EKTrustBundle())
	if err != nil {
		t.Fatal(err)
	}
	rv, err := e.n.ReceiptVerifier("blue-gate")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gate.New(gate.Config{
		Name: "blue-gate", Operator: operator, IDScope: e.n.IDScope(), Key: e.n.PKI.Partners["blue-gate"].Key,
		NATS: nc, ReceiptVerifier: rv, Ledger: e.n.Ledger.Store(), Log: e.n.Ledger.Store(), TPMTrust: trust,
		LDevIDCA: e.n.PKI.LDevIDCA, Registry: e.n.DPSService(), DPSEndpoint: e.n.DPSURL(), Policy: pol,
		RecordWindow: window,
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestGateGroupCommit enrolls three devices at once at a gate that logs
// its records by group commit: each decision is answered once its record
// is logged, the three device.enrolled records are one station batch (one
// signature, one leaf), each device's verified history shows its own
// member, and a gate restarted on the log rebuilds its register of LDevIDs
// from the batch (it can revoke them).
func TestGateGroupCommit(t *testing.T) {
	e := newEnv(t, gate.Policy{})
	agents := make([]string, 3)
	for i := range agents {
		agents[i] = e.agent(4201 + i)
	}
	var g errgroup.Group
	for _, a := range agents {
		g.Go(func() error {
			_, err := runSteps(e.ctx, e.n.HTTPClient, e.n.URL(), a, factorySteps, toOperator)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	g2 := e.secondGateWith(gate.Policy{}, 500*time.Millisecond)
	srv := httptest.NewServer(g2.Handler())
	defer srv.Close()
	results := make([]*firstBootResult, len(agents))
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Go(func() { results[i] = e.firstBootAt(a, srv.URL) })
	}
	wg.Wait()
	var batch string
	var certs []*x509.Certificate
	for i, r := range results {
		cert := e.wantEnrolled(r)
		certs = append(certs, cert)
		ent := e.lastOf(r.DeviceID, events.KindDeviceEnrolled)
		if ent.Batch == "" || (i > 0 && ent.Batch != batch) {
			t.Fatalf("device %d's record: batch %q, the first's %q", i, ent.Batch, batch)
		}
		batch = ent.Batch
	}
	g3 := e.secondGate(gate.Policy{})
	for _, c := range certs {
		if err := g3.Revoke(c.SerialNumber, "superseded"); err != nil {
			t.Fatalf("a restarted gate does not know LDevID %s logged in the batch: %v", c.SerialNumber.Text(16), err)
		}
	}
}
