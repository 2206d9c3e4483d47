// Package demo runs Custody's walking skeleton end to end: a node (NATS,
// ledger, stations, gate, DPS emulator) in process, and one custody-agent
// process per simulated device. A clean device travels vendor → ODM → OEM →
// EMS → operator (ODM → OEM → EMS on a pallet with the second device: one
// signed shipment per hop, a sampled receiving inspection) and is enrolled
// at first boot; a second device is offered by
// the EMS to two recipients, the second offer is logged as equivocation
// evidence, the device is flagged and the gate refuses it. Each device's
// timeline is read back from the ledger and every inclusion proof is
// verified against the signed checkpoint.
package demo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// Env is what the demo and the simulator share.
type Env struct {
	// Dir holds the node's data and the devices' state. Default: a new
	// temporary directory, removed afterwards.
	Dir string
	// Agent is the custody-agent binary. Default: next to the running
	// executable, then $PATH.
	Agent string
	// Out receives the human-readable report. Default os.Stdout.
	Out io.Writer
	// Logger receives the node's logs. Default: discard.
	Logger *slog.Logger
}

// prepare fills in defaults; cleanup removes a temporary Dir.
func (e *Env) prepare(prefix string) (cleanup func(), err error) {
	cleanup = func() {}
	if e.Out == nil {
		e.Out = os.Stdout
	}
	if e.Logger == nil {
		e.Logger = slog.New(slog.DiscardHandler)
	}
	if e.Agent, err = findAgent(e.Agent); err != nil {
		return cleanup, err
	}
	if e.Dir == "" {
		dir, err := os.MkdirTemp("", prefix)
		if err != nil {
			return cleanup, err
		}
		e.Dir = dir
		cleanup = func() { os.RemoveAll(dir) }
	}
	return cleanup, nil
}

// Config configures a demo run.
type Config struct {
	Env
}

// Step is one event a station published.
type Step struct {
	Partner string
	Op      string
	Status  string // accepted, evidence, rejected
	Code    string
	Reason  string
}

// DeviceReport is what happened to one device.
type DeviceReport struct {
	Name      string
	ID        string
	Steps     []Step
	Timeline  []ledger.VerifiedEntry
	Proven    *ledger.Checkpoint // the checkpoint every entry was proven against
	State     *ledger.Device     // custody state as the ledger holds it
	FirstBoot FirstBoot
}

// FirstBoot is the agent's account of enrollment.
type FirstBoot struct {
	DeviceID string `json:"deviceId"`
	Enrolled bool   `json:"enrolled"`
	// Rule is the rule the gate refused the device by, as its operator
	// reads it in the gate's decisions (DeviceRule is what the device was
	// told: one answer for every refusal decided from the log, so that a
	// caller learns nothing of the custody record).
	Rule        string `json:"rule,omitempty"`
	DeviceRule  string `json:"deviceRule,omitempty"`
	Message     string `json:"message,omitempty"`
	AssignedHub string `json:"assignedHub,omitempty"`
	LDevID      string `json:"ldevidSubject,omitempty"`
	Issuer      string `json:"ldevidIssuer,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Report is a demo run's outcome.
type Report struct {
	Devices []*DeviceReport
	LogKey  *ecdsa.PublicKey
	URL     string
}

const (
	vendor, odm, oem, ems = "acme-tpm", "orbit-odm", "nova-oem", "delta-ems"
	operator, grey        = "blue-operator", "grey-operator"
)

// Run runs the demo.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cleanup, err := cfg.prepare("custody-demo-")
	defer cleanup()
	if err != nil {
		return nil, err
	}
	out := cfg.Out
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fmt.Fprintf(out, "Custody demo in %s\n", cfg.Dir)
	n, stop, err := node.Start(ctx, node.Config{
		DataDir: filepath.Join(cfg.Dir, "node"), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = stop() }()
	fmt.Fprintf(out, "node ready: %s (ledger, stations, gate), DPS emulator %s, %d partners registered\n\n",
		n.URL(), n.DPSURL(), len(n.PKI.Partners))

	rep := &Report{LogKey: &n.PKI.LogKey.PublicKey, URL: n.URL()}
	run := &runner{ctx: ctx, n: n, out: out, agentBin: cfg.Agent, dir: cfg.Dir}
	defer run.stopAgents()

	clean, err := run.device("device-a (clean)", 1001)
	if err != nil {
		return nil, err
	}
	double, err := run.device("device-b (double-sold)", 2002)
	if err != nil {
		return nil, err
	}
	rep.Devices = []*DeviceReport{clean, double}
	run.factory(rep.Devices)
	run.step(clean, ems, "offer", &station.Request{To: operator})
	run.step(clean, operator, "accept", nil)
	run.step(double, ems, "offer", &station.Request{To: operator})
	run.step(double, ems, "offer", &station.Request{To: grey, Equivocate: true}) // the double sale, on purpose
	run.step(double, operator, "accept", nil)
	if run.err != nil {
		return nil, run.err
	}
	for _, d := range rep.Devices {
		if err := run.firstBoot(d); err != nil {
			return nil, err
		}
	}
	for _, d := range rep.Devices {
		if err := run.timeline(d); err != nil {
			return nil, err
		}
	}
	for _, d := range rep.Devices {
		printDevice(out, d)
	}
	return rep, nil
}

type runner struct {
	ctx      context.Context
	n        *node.Node
	out      io.Writer
	agentBin string
	dir      string
	agents   []*exec.Cmd
	urls     map[*DeviceReport]string
	err      error
}

// device starts one custody-agent process around a simulated TPM.
func (r *runner) device(name string, seed int) (*DeviceReport, error) {
	a, err := startAgent(r.ctx, r.agentBin, filepath.Join(r.dir, "devices"), r.n.PKI.Dir, seed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	r.agents = append(r.agents, a.cmd)
	if r.urls == nil {
		r.urls = map[*DeviceReport]string{}
	}
	d := &DeviceReport{Name: name}
	r.urls[d] = a.url
	fmt.Fprintf(r.out, "%s: custody-agent with a simulated TPM (seed %d) at %s\n", name, seed, a.url)
	return d, nil
}

// agentProc is a running `custody-agent serve` process.
type agentProc struct {
	cmd *exec.Cmd
	url string
}

// startAgent starts `custody-agent serve` with the simulator seeded by seed,
// its state under dir/<seed>, serving over TLS to the partners of the demo
// PKI in pkiDir, and waits for its factory API.
func startAgent(ctx context.Context, bin, dir, pkiDir string, seed int) (*agentProc, error) {
	state := filepath.Join(dir, fmt.Sprint(seed))
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	addrFile := filepath.Join(state, "addr")
	_ = os.Remove(addrFile)
	cmd := exec.CommandContext(ctx, bin, "serve", "--tpm", fmt.Sprintf("sim:seed=%d", seed),
		"--state", state, "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--pki", pkiDir)
	logf, err := os.Create(filepath.Join(state, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.After(60 * time.Second)
	for {
		if b, err := os.ReadFile(addrFile); err == nil {
			return &agentProc{cmd: cmd, url: strings.TrimSpace(string(b))}, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("custody-agent exited; see %s", filepath.Join(state, "agent.log"))
		case <-deadline:
			_ = cmd.Process.Kill()
			return nil, errors.New("custody-agent did not start within 60s")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (r *runner) stopAgents() {
	for _, c := range r.agents {
		if c.Process != nil {
			_ = c.Process.Signal(os.Interrupt)
		}
	}
}

// factory runs the supply chain up to the EMS: manufacture, assembly,
// hand-offs vendor → ODM → OEM → EMS, firmware and test.
// factory takes the devices from the TPM vendor to the EMS's end-of-line
// test: each is manufactured, handed to the ODM and assembled (quoted);
// the ODM ships them to the OEM on one pallet (one signed shipment, a
// carton each: boxed devices are not powered, so no quote), the OEM
// quotes a sample at receiving inspection and accepts the pallet, and
// ships it on to the EMS, which programs them and tests them (quoted, each
// step one station batch).
func (r *runner) factory(ds []*DeviceReport) {
	for _, d := range ds {
		r.step(d, vendor, "manufacture", nil)
		r.step(d, vendor, "offer", &station.Request{To: odm})
		r.step(d, odm, "accept", nil)
		r.step(d, odm, "stage", &station.Request{Stage: events.StageAssembly, Note: "module assembly, line 3"})
	}
	offer := r.ship(ds, odm, "ship", &station.Request{Shipment: "PO-4471-P1", To: oem})
	r.step(ds[0], oem, "stage", &station.Request{Stage: events.StageReceivingInspection, Note: "sample 1 of 2"})
	r.ship(ds, oem, "accept-shipment", &station.Request{Offer: offer})
	offer = r.ship(ds, oem, "ship", &station.Request{Shipment: "PO-5120-P1", To: ems})
	r.ship(ds, ems, "accept-shipment", &station.Request{Offer: offer})
	// The programming line and the end-of-line tester record every device
	// at once: station batches, each device quoting its own event, one
	// signature each.
	r.batch(ds, ems, "firmware", &station.Request{Image: []byte("custody demo firmware 1.4.2\n")})
	r.batch(ds, ems, "stages", &station.Request{Stage: events.StageTestPassed, Note: "end-of-line test"})
}

// batch calls a station batch operation (stages, firmware) for the powered
// devices and records each device's verdict (the receipt's member for it).
func (r *runner) batch(ds []*DeviceReport, partner, op string, req *station.Request) {
	if r.err != nil {
		return
	}
	for _, d := range ds {
		req.Agents = append(req.Agents, r.urls[d])
	}
	_, rc, err := r.call(partner, op, req)
	if err != nil {
		r.err = fmt.Errorf("batch: %s %s: %w", partner, op, err)
		return
	}
	verdicts := map[string]events.MemberVerdict{}
	for _, m := range rc.Members {
		verdicts[m.Target] = m
	}
	stepOp := op
	if op == "stages" {
		stepOp = "stage"
	}
	for _, d := range ds {
		s := Step{Partner: partner, Op: stepOp, Status: rc.Status, Code: rc.Code, Reason: rc.Reason}
		if v, ok := verdicts[d.ID]; ok {
			s.Status, s.Code, s.Reason = v.Status, v.Code, v.Reason
		}
		d.Steps = append(d.Steps, s)
	}
	fmt.Fprintf(r.out, "%-9s  %-14s %-12s %s, one signature for %d devices%s\n", "batch", partner, op+describe(req), rc.Status, len(ds), why(rc))
}

// ship calls a shipment operation for the devices (pallet P1, one carton
// each) and records the answer for each; it returns the shipment event's
// digest (an offer's, for the acceptance).
func (r *runner) ship(ds []*DeviceReport, partner, op string, req *station.Request) string {
	if r.err != nil {
		return ""
	}
	req.Manifest = &events.Manifest{}
	for i, d := range ds {
		req.Manifest.Containers = append(req.Manifest.Containers, events.Container{Path: fmt.Sprintf("P1/C%d", i+1), Devices: []string{d.ID}})
	}
	_, rc, err := r.call(partner, op, req)
	if err != nil {
		r.err = fmt.Errorf("pallet: %s %s: %w", partner, op, err)
		return ""
	}
	s := Step{Partner: partner, Op: op, Status: rc.Status, Code: rc.Code, Reason: rc.Reason}
	for _, d := range ds {
		d.Steps = append(d.Steps, s)
	}
	what := "pallet of " + fmt.Sprint(len(ds))
	if req.To != "" {
		what += " → " + req.To
	}
	fmt.Fprintf(r.out, "%-9s  %-14s %-12s %s%s\n", "pallet", partner, op+" "+what, rc.Status, why(rc))
	return rc.Digest
}

// step calls one station operation over its HTTP API and records the answer.
func (r *runner) step(d *DeviceReport, partner, op string, req *station.Request) {
	if r.err != nil {
		return
	}
	if req == nil {
		req = &station.Request{}
	}
	req.Agent = r.urls[d]
	resp, rc, err := r.call(partner, op, req)
	if err != nil {
		r.err = fmt.Errorf("%s: %s %s: %w", d.Name, partner, op, err)
		return
	}
	if resp != nil && d.ID == "" {
		d.ID = resp.Device
	}
	d.Steps = append(d.Steps, Step{Partner: partner, Op: op, Status: rc.Status, Code: rc.Code, Reason: rc.Reason})
	fmt.Fprintf(r.out, "%s  %-14s %-12s %s%s\n", short(d), partner, op+describe(req), rc.Status, why(rc))
}

// call calls one station operation over its HTTP API and returns the
// ledger's receipt, whether the event was logged or refused, and the
// station's answer when it was not refused (nil otherwise); err is any
// other failure.
func (r *runner) call(partner, op string, req *station.Request) (*station.Response, *events.Receipt, error) {
	c := station.NewClient(r.n.URL()+"/stations/"+partner, r.n.HTTPClient(partner))
	resp, err := c.Call(r.ctx, op, req)
	var rej *station.RejectedError
	switch {
	case errors.As(err, &rej):
		return nil, rej.Receipt, nil
	case err != nil:
		return nil, nil, err
	}
	return resp, resp.Receipt, nil
}

// why is a refused receipt's code and reason, for an output line.
func why(rc *events.Receipt) string {
	if rc.Code == "" {
		return ""
	}
	return " (" + rc.Code + ": " + rc.Reason + ")"
}

func describe(req *station.Request) string {
	switch {
	case req.To != "":
		return " → " + req.To
	case req.Stage != "":
		return " " + req.Stage
	}
	return ""
}

func short(d *DeviceReport) string {
	name, _, _ := strings.Cut(d.Name, " ")
	return fmt.Sprintf("%-9s", name)
}

// firstBoot asks the device's agent to power-cycle and enroll at the gate.
func (r *runner) firstBoot(d *DeviceReport) error {
	fb, err := firstBoot(r.ctx, r.n, r.urls[d])
	if err != nil {
		return fmt.Errorf("%s: %w", d.Name, err)
	}
	d.FirstBoot = *fb
	return nil
}

// firstBoot asks the agent at agentURL to power-cycle its TPM and enroll at
// the node's gate, as the operator that holds the device (the agent
// answers only partners); a refusal is an answer, not an error.
func firstBoot(ctx context.Context, n *node.Node, agentURL string) (*FirstBoot, error) {
	body, _ := json.Marshal(map[string]any{
		"gate": n.URL() + "/gate", "idScope": n.IDScope(),
		"dpsCa": pki.EncodeCertsPEM(n.PKI.TLSCA),
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, agentURL+"/v1/firstboot", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := n.HTTPClient(operator).Do(req)
	if err != nil {
		return nil, fmt.Errorf("first boot: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("first boot: the agent refused the operator: %s %s", resp.Status, bytes.TrimSpace(msg))
	}
	var fb FirstBoot
	if err := json.NewDecoder(resp.Body).Decode(&fb); err != nil {
		return nil, fmt.Errorf("first boot answer: %w", err)
	}
	if fb.Error != "" {
		return nil, fmt.Errorf("first boot failed: %s", fb.Error)
	}
	if !fb.Enrolled && fb.DeviceID != "" {
		fb.DeviceRule = fb.Rule
		if fb.Rule, err = decisionRule(ctx, n, fb.DeviceID); err != nil {
			return nil, err
		}
	}
	return &fb, nil
}

// decisionRule is the rule of the gate's latest decision about device, as
// the operator reads it (GET /gate/v1/decisions, the operator's identity).
func decisionRule(ctx context.Context, n *node.Node, device string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/gate/v1/decisions?device="+device, nil)
	if err != nil {
		return "", err
	}
	resp, err := n.HTTPClient(operator).Do(req)
	if err != nil {
		return "", fmt.Errorf("the gate's decisions: %w", err)
	}
	defer resp.Body.Close()
	var ds []*gatewire.Decision
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("the gate's decisions: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ds); err != nil {
		return "", fmt.Errorf("the gate's decisions: %w", err)
	}
	if len(ds) == 0 {
		return "", fmt.Errorf("the gate has no decision about device %s", device)
	}
	return ds[len(ds)-1].Rule, nil
}

// timeline reads the device's provenance over HTTP, as the operator that
// holds it (histories are private to their parties), and verifies it
// offline against the log key from the PKI.
func (r *runner) timeline(d *DeviceReport) error {
	p, err := station.NewLedgerClient(r.n.URL()+"/ledger", r.n.HTTPClient(operator)).Provenance(d.ID)
	if err != nil {
		return fmt.Errorf("%s: provenance: %w", d.Name, err)
	}
	entries, cp, err := ledger.VerifyProvenance(p, &r.n.PKI.LogKey.PublicKey)
	if err != nil {
		return fmt.Errorf("%s: provenance does not verify: %w", d.Name, err)
	}
	d.Timeline, d.Proven, d.State = entries, cp, p.Device
	return nil
}

func printDevice(out io.Writer, d *DeviceReport) {
	fmt.Fprintf(out, "\n%s  %s\n", d.Name, d.ID)
	fmt.Fprintf(out, "  timeline (every entry's inclusion proof verified against checkpoint %q, size %d):\n", d.Proven.Origin, d.Proven.Size)
	for _, e := range d.Timeline {
		fmt.Fprintf(out, "    #%-4d %-22s %-14s %s%s\n", e.Index, e.Kind, e.Partner, Describe(e), status(e))
	}
	if st := d.State; st != nil {
		fmt.Fprintf(out, "  custodian: %s", st.Custodian)
		if st.Flag != nil {
			fmt.Fprintf(out, "; FLAGGED %s by entry #%d", st.Flag.Reason, st.Flag.Index)
		}
		fmt.Fprintln(out)
	}
	fb := d.FirstBoot
	if fb.Enrolled {
		fmt.Fprintf(out, "  first boot: ENROLLED — hub %s, LDevID %s issued by %s\n", fb.AssignedHub, fb.LDevID, fb.Issuer)
	} else {
		fmt.Fprintf(out, "  first boot: REFUSED — %s (the gate's decision, as the operator reads it; the device is told only %q)\n", fb.Rule, fb.Message)
	}
}

func status(e ledger.VerifiedEntry) string {
	if e.Status == events.StatusEvidence {
		return "  ⚠ EVIDENCE " + e.Code
	}
	return ""
}

// Describe is a one-line description of a verified entry: its statement's
// Summary, and for a member of a station batch, the batch it was signed in.
func Describe(e ledger.VerifiedEntry) string {
	if e.Batch != "" {
		return Summary(e.Statement) + " (station batch " + e.Batch[:12] + "…)"
	}
	return Summary(e.Statement)
}

// Summary is a one-line description of a custody statement.
func Summary(st *events.Statement) string {
	p := st.Predicate
	switch {
	case p.Shipment != nil && p.Kind == events.KindShipmentOffered:
		return fmt.Sprintf("shipment %s of %d device(s) to %s", p.Shipment.ID, p.Shipment.Devices, p.Shipment.To)
	case p.Shipment != nil && p.Kind == events.KindShipmentAccepted:
		return fmt.Sprintf("shipment %s of %d device(s) accepted from %s", p.Shipment.ID, p.Shipment.Devices, p.Shipment.From)
	case p.Shipment != nil:
		return fmt.Sprintf("shipment %s: %d device(s) withdrawn", p.Shipment.ID, p.Shipment.Devices)
	case p.Handoff != nil && p.Kind == events.KindHandoffOffered:
		return "offer to " + p.Handoff.To
	case p.Handoff != nil:
		return "accepted from " + p.Handoff.From
	case p.Stage != nil && p.Stage.FirmwareDigest != "":
		return fmt.Sprintf("%s (sha256 %s…)", p.Stage.Name, p.Stage.FirmwareDigest[:12])
	case p.Stage != nil:
		return p.Stage.Name
	case p.Manufactured != nil:
		return "EK certificate + IAK (" + p.Manufactured.TPM.Manufacturer + ")"
	case p.Enrolled != nil:
		return "enrolled for " + p.Enrolled.Operator
	case p.Refused != nil:
		return "refused: " + p.Refused.Rule + ": " + p.Refused.Message
	case p.Flag != nil:
		return p.Flag.Reason
	}
	return ""
}

func findAgent(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "custody-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("custody-agent")
	if err != nil {
		return "", errors.New("custody-agent not found next to this binary or in $PATH (run `make build`)")
	}
	return p, nil
}

// Check asserts the demo's expected decisions: device A enrolled with an
// LDevID and a hub; device B's second offer logged as equivocation
// evidence, the device flagged, and the gate refusing it for that flag.
func Check(rep *Report) error {
	if len(rep.Devices) != 2 {
		return fmt.Errorf("want 2 devices, have %d", len(rep.Devices))
	}
	a, b := rep.Devices[0], rep.Devices[1]
	for _, d := range rep.Devices {
		for _, s := range d.Steps {
			if s.Status == events.StatusRejected {
				return fmt.Errorf("%s: %s %s was rejected: %s: %s", d.Name, s.Partner, s.Op, s.Code, s.Reason)
			}
		}
	}
	if !a.FirstBoot.Enrolled || a.FirstBoot.AssignedHub == "" {
		return fmt.Errorf("device A was not enrolled: %s: %s", a.FirstBoot.Rule, a.FirstBoot.Message)
	}
	if a.State == nil || !a.State.Enrolled || a.State.Custodian != operator {
		return errors.New("device A's ledger state does not show it enrolled by the operator")
	}
	evidence := 0
	for _, s := range b.Steps {
		if s.Status == events.StatusEvidence {
			if s.Code != string(events.CodeEquivocation) {
				return fmt.Errorf("device B's evidence has code %s", s.Code)
			}
			evidence++
		}
	}
	if evidence != 1 {
		return fmt.Errorf("device B: want one equivocation, have %d", evidence)
	}
	if b.State == nil || b.State.Flag == nil || b.State.Flag.Reason != "equivocation" {
		return errors.New("device B is not flagged for equivocation")
	}
	if b.FirstBoot.Enrolled || b.FirstBoot.Rule != "flagged" {
		return fmt.Errorf("device B: want the gate to refuse it as flagged, got enrolled=%v rule=%q", b.FirstBoot.Enrolled, b.FirstBoot.Rule)
	}
	return nil
}
