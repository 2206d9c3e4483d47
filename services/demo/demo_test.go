package demo_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/demo"
)

// buildAgent compiles cmd/custody-agent: each simulated device is its own
// process, because the TPM simulator is one per process.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "custody-agent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/custodyledger/custody/cmd/custody-agent")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building custody-agent: %v\n%s", err, out)
	}
	return bin
}

// TestDemoEndToEnd runs the whole chain for both devices through the real
// parts (JetStream, ledger, stations, gate, DPS emulator over mTLS, one
// agent process per simulated TPM) and asserts each decision.
func TestDemoEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end demo")
	}
	agent := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	rep, err := demo.Run(ctx, demo.Config{Env: demo.Env{Dir: t.TempDir(), Agent: agent, Out: &out}})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Check(rep); err != nil {
		t.Fatal(err)
	}
	a, b := rep.Devices[0], rep.Devices[1]

	// Every entry of both timelines was proven against a checkpoint signed by
	// the log key; check the proofs once more here, independently.
	for _, d := range rep.Devices {
		if d.Proven == nil || len(d.Timeline) == 0 {
			t.Fatalf("%s: no verified timeline", d.Name)
		}
		for _, e := range d.Timeline {
			if err := ledger.VerifyInclusion(e.Body, e.Index, d.Proven.Size, e.InclusionProof, d.Proven.Root); err != nil {
				t.Fatalf("%s: entry %d: %v", d.Name, e.Index, err)
			}
		}
	}
	kinds := func(d *demo.DeviceReport) string {
		var k []string
		for _, e := range d.Timeline {
			k = append(k, e.Kind)
		}
		return strings.Join(k, ",")
	}
	wantA := "tpm.manufactured,handoff.offered,handoff.accepted,stage.recorded,shipment.offered,stage.recorded,shipment.accepted," +
		"shipment.offered,shipment.accepted,stage.recorded,stage.recorded,handoff.offered,handoff.accepted,device.enrolled"
	if got := kinds(a); got != wantA {
		t.Errorf("device A timeline:\n got %s\nwant %s", got, wantA)
	}
	if last := a.Timeline[len(a.Timeline)-1]; last.Partner != "blue-gate" || last.Statement.Predicate.Enrolled.Operator != "blue-operator" {
		t.Errorf("device A's enrollment entry: %+v", last)
	}
	if !strings.Contains(a.FirstBoot.Issuer, "LDevID") || !strings.Contains(a.FirstBoot.LDevID, a.ID) {
		t.Errorf("device A's LDevID: subject %q issuer %q", a.FirstBoot.LDevID, a.FirstBoot.Issuer)
	}
	var evidence []ledger.VerifiedEntry
	for _, e := range b.Timeline {
		if e.Status == events.StatusEvidence {
			evidence = append(evidence, e)
		}
		if e.Kind == events.KindDeviceEnrolled {
			t.Error("device B was enrolled")
		}
	}
	if len(evidence) != 1 || evidence[0].Statement.Predicate.Handoff.To != "grey-operator" {
		t.Fatalf("device B: want the offer to grey-operator logged as evidence, have %+v", evidence)
	}
	if !strings.Contains(out.String(), "REFUSED — flagged") {
		t.Errorf("the report does not show device B's refusal")
	}
}

// TestSimAllFaults drives ten devices, each with one fault kind, through
// the chain: every fault must be refused with its own code and every device
// not flagged or re-flashed must still enroll.
func TestSimAllFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end simulation")
	}
	agent := buildAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	events := filepath.Join(t.TempDir(), "events.jsonl")
	rep, err := demo.Sim(ctx, demo.SimConfig{
		Devices: len(demo.AllFaults) + 1, Faults: demo.AllFaults, Rate: 1, Concurrency: 4,
		EventsOut: events, Env: demo.Env{Dir: t.TempDir(), Agent: agent, Out: &out},
	})
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	if m := rep.Mismatches(); m != 0 {
		t.Fatalf("%d mismatches", m)
	}
	seen := map[string]bool{}
	for _, d := range rep.Devices {
		seen[d.Fault] = true
	}
	for _, f := range demo.AllFaults {
		if !seen[f] {
			t.Errorf("fault %s was not injected", f)
		}
	}
	b, err := os.ReadFile(events)
	if err != nil {
		t.Fatal(err)
	}
	if lines := bytes.Count(b, []byte("\n")); uint64(lines) != rep.Events {
		t.Errorf("events file has %d lines, the log %d entries", lines, rep.Events)
	}
}
