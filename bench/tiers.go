package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/services/node"
)

// Tiers: the same kind of events through the verifier pool, with a
// verifier in a process of its own (custodyd --role verifier) beside the
// node (broker and ledger), on this machine. The CPU each process spends
// per event is measured; a tier's capacity on a machine of its own is the
// cores over its CPU per event (what cpuBoundRatio assumes for the whole
// node), so that ingest with V verifier machines and one sequencer machine
// is min(V × verifier capacity, sequencer capacity), from measurements of
// this run (docs/design/verifiers.md).

// TierResult is what the tiered phase measured.
type TierResult struct {
	Events int `json:"events"`
	// WallPerSec is the events/s of this phase with both processes on
	// this machine's cores (the broker and the ledger in the bench's).
	WallPerSec float64 `json:"wallEventsPerSec"`
	// VerifierCPUMicros is the verifier process's CPU per event;
	// SequencerCPUMicros the bench process's (broker, ledger, publisher).
	VerifierCPUMicros  float64 `json:"verifierCpuMicrosPerEvent"`
	SequencerCPUMicros float64 `json:"sequencerCpuMicrosPerEvent"`
	// Capacities on a machine of this one's cores each.
	VerifierPerSec  float64 `json:"verifierEventsPerSecPerMachine"`
	SequencerPerSec float64 `json:"sequencerEventsPerSecPerMachine"`
	// VerifierRatio is VerifierPerSec over the crypto ceiling of a
	// machine (the same run's): the verifier tier's ratio to it.
	VerifierRatio float64 `json:"verifierToCryptoCeilingRatio"`
	// OneVerifierPerSec is min(VerifierPerSec, SequencerPerSec): ingest
	// with one verifier machine and one sequencer machine; VerifiersToFill
	// is how many verifier machines the sequencer keeps busy.
	OneVerifierPerSec float64 `json:"oneVerifierMachineEventsPerSec"`
	VerifiersToFill   float64 `json:"verifierMachinesPerSequencer"`
	// VerdictsUsed is the share of events whose verdict the ledger used.
	VerdictsUsed float64 `json:"verdictsUsedShare"`
}

// measureTiers publishes msgs (new events, on their subjects) with a
// verifier process running against node n, and waits until the ledger
// holds them all.
func measureTiers(ctx context.Context, n *node.Node, custodyd string, pjs jetstream.JetStream, msgs []benchMsg, ceiling float64, profile string) (*TierResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"--role", "verifier", "--pki", n.PKI.Dir, "--nats-url", n.NATSURL(), "--log-format", "text"}
	if profile != "" {
		args = append(args, "--cpuprofile", profile+".verifier")
		f, err := os.Create(profile + ".sequencer")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, err
		}
		defer pprof.StopCPUProfile()
	}
	cmd := exec.CommandContext(ctx, custodyd, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("custodyd --role verifier: %w (run make build, or pass --custodyd)", err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "verifier running") {
				once = true
				close(running)
			}
		}
	}()
	select {
	case <-running:
	case <-time.After(30 * time.Second):
		return nil, errors.New("the verifier process did not start")
	}
	pid := cmd.Process.Pid
	before := n.Ledger.VerdictStats()
	start := n.Ledger.Head()
	want := start.Size + uint64(len(msgs))
	v0, b0, t0 := procCPU(pid), cpuTime(), time.Now()
	for _, m := range msgs {
		if _, err := pjs.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id), stallWait); err != nil {
			return nil, err
		}
	}
	if err := waitAsync(ctx, pjs); err != nil {
		return nil, err
	}
	for deadline := time.Now().Add(10 * time.Minute); n.Ledger.Head().Size < want; time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("tiered ingest stalled at %d of %d", n.Ledger.Head().Size-start.Size, len(msgs))
		}
	}
	dur := time.Since(t0)
	vcpu, bcpu := procCPU(pid)-v0, cpuTime()-b0
	after := n.Ledger.VerdictStats()
	k := float64(len(msgs))
	cores := float64(runtime.GOMAXPROCS(0))
	r := &TierResult{
		Events:             len(msgs),
		WallPerSec:         k / dur.Seconds(),
		VerifierCPUMicros:  float64(vcpu.Microseconds()) / k,
		SequencerCPUMicros: float64(bcpu.Microseconds()) / k,
		VerdictsUsed:       float64(after.Used+after.Waited-before.Used-before.Waited) / k,
	}
	r.VerifierPerSec = cores * 1e6 / r.VerifierCPUMicros
	r.SequencerPerSec = cores * 1e6 / r.SequencerCPUMicros
	r.VerifierRatio = r.VerifierPerSec / ceiling
	r.OneVerifierPerSec = min(r.VerifierPerSec, r.SequencerPerSec)
	r.VerifiersToFill = r.SequencerPerSec / r.VerifierPerSec
	return r, nil
}

// procCPU is a process's user+system CPU time (/proc/<pid>/stat, in clock
// ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command may hold spaces
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
