// Command bench measures the ledger's verified ingest end to end (make
// bench).
//
// It starts an all-in-one node (embedded JetStream, the ledger on Pebble),
// starts a few `custody-agent serve` processes, each with its own simulated
// TPM (so each device has its own EK and IAK: no TPM is shared between
// devices), manufactures them through the vendor's station, and then
// pre-generates N fully signed stage.recorded events: each carries a real
// quote by its device's IAK over the event's binding digest, and a DSSE
// signature by the vendor. Many events per device, in quote order.
//
// It then measures, in the same run:
//
//   - raw JetStream: async publish of the same envelopes to a scratch stream
//     with the events stream's settings (the baseline);
//   - verified ingest: async publish of the envelopes to the events stream
//     until every one is verified, applied, committed with Sync and covered
//     by a signed checkpoint (the ledger's head), with CPU (user+system of
//     the whole process: broker, ledger, publisher) per event;
//   - provenance queries (a device's history with an inclusion proof per
//     entry) and single receipts, p50/p99;
//   - inclusion and consistency proof cost at 10k and 1M leaves, on a
//     separate Pebble store filled by appending leaf hashes directly through
//     ledger.Store (tree nodes only: proofs read nothing else);
//   - resident memory and disk bytes per event.
//
// It prints a table and writes JSON to --out (bench-results/ is gitignored).
// `bench summary --dir DIR` then gathers the headline figures of a run,
// this one's and the other benchmarks', into DIR/summary.json (summary.go,
// README.md).
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/clusterrun"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "summary" {
		if err := runSummary(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench summary:", err)
			os.Exit(1)
		}
		return
	}
	var cfg config
	flag.IntVar(&cfg.Events, "events", 20000, "signed, quoted events to ingest")
	flag.IntVar(&cfg.Devices, "devices", 4, "simulated devices (one custody-agent process each)")
	flag.StringVar(&cfg.Agent, "agent", "bin/custody-agent", "the custody-agent binary")
	flag.StringVar(&cfg.Custodyd, "custodyd", "bin/custodyd", `the custodyd binary, for the tiered phase (a verifier process beside the node; "" skips it)`)
	flag.StringVar(&cfg.Out, "out", "bench-results", "directory for the JSON results")
	flag.Uint64Var(&cfg.ProofLeaves, "proof-leaves", 1_000_000, "largest tree for the proof-cost measurement")
	flag.BoolVar(&cfg.OnlyProofs, "only-proofs", false, "measure only the proof cost in large trees")
	flag.StringVar(&cfg.Dir, "dir", "", "data directory (default: a temporary directory, removed afterwards)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the ingest phase to this file")
	onlyTransitions := flag.Int("only-transitions", 0, "measure only device transitions (shipments lifecycle) with this many devices")
	onlyBatched := flag.Int("only-batched", 0, "measure only station batches against single envelopes, with this many devices (the batch size)")
	batchedEvents := flag.Int("batched-events", 100, "events per device per phase of --only-batched")
	onlyCluster := flag.Int("only-cluster", 0, "measure only the cluster of deploy/cluster against the single process, with this many devices (make bench-cluster)")
	clusterEvents := flag.Int("cluster-events", 1000, "events per device through each of the node and the cluster (--only-cluster)")
	clusterBatch := flag.Int("cluster-batch", 0, "--only-cluster: station batches of this many devices' events (one envelope each) instead of one envelope per event")
	bin := flag.String("bin", "bin", "--only-cluster: the directory of custody, custodyd and custody-agent")
	clusterProfile := flag.Bool("cluster-profile", false, "--only-cluster: write the sequencers' CPU profiles to <out>/cluster-profiles")
	flag.Parse()
	if *onlyCluster > 0 {
		if err := clusterOnly(*onlyCluster, *clusterEvents, *clusterBatch, *bin, cfg.Out, *clusterProfile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *onlyBatched > 0 {
		if err := batchedOnly(*onlyBatched, *batchedEvents, cfg.Out, *cpuProfile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *onlyTransitions > 0 {
		if err := transitionsOnly(*onlyTransitions, cfg.Out, *cpuProfile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	cfg.CPUProfile = *cpuProfile
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type config struct {
	Events, Devices             int
	Agent, Out, Dir, CPUProfile string
	Custodyd                    string
	ProofLeaves                 uint64
	OnlyProofs                  bool
}

// Results is the JSON written to --out.
type Results struct {
	Time      time.Time `json:"time"`
	GoMaxProc int       `json:"gomaxprocs"`
	NumCPU    int       `json:"numCPU"`
	Events    int       `json:"events"`
	Devices   int       `json:"devices"`
	Method    string    `json:"method"`

	GenerateSeconds float64 `json:"generateSeconds"`
	EnvelopeBytes   float64 `json:"envelopeBytesAvg"`

	// ECDSAVerifyPerSec is the mean of ECDSAVerifyBefore and
	// ECDSAVerifyAfter: P-256 verifications per second with GOMAXPROCS
	// goroutines, measured immediately before and after the ingest phase.
	ECDSAVerifyPerSec float64 `json:"ecdsaP256VerifyPerSecAllCores"`
	ECDSAVerifyBefore float64 `json:"ecdsaP256VerifyPerSecBeforeIngest"`
	ECDSAVerifyAfter  float64 `json:"ecdsaP256VerifyPerSecAfterIngest"`
	VerifiesPerEvent  int     `json:"verifiesPerEvent"`
	// CPU (this process's user+system) per verification in the two
	// measurements, and their mean: unlike the rates, not moved by other
	// processes taking cores.
	VerifyCPUBefore float64 `json:"verifyCpuMicrosBeforeIngest"`
	VerifyCPUAfter  float64 `json:"verifyCpuMicrosAfterIngest"`
	VerifyCPUMicros float64 `json:"verifyCpuMicros"`
	// CPUBoundRatio is VerifiesPerEvent × VerifyCPUMicros ÷
	// CPUMicrosPerEvent: the share of ingest's CPU that is the two
	// verifications, which is the ratio to the ceiling ingest would reach
	// if it kept every core busy.
	CPUBoundRatio float64 `json:"cpuBoundRatio"`
	// ForeignCPUPct is the share of the machine's CPU time that other
	// processes took during the ingest phase (/proc/stat).
	ForeignCPUPct      float64 `json:"foreignCpuPctDuringIngest"`
	CryptoCeiling      float64 `json:"cryptoCeilingEventsPerSec"`
	CeilingRatio       float64 `json:"verifiedIngestToCryptoCeilingRatio"`
	RawPublishPerSec   float64 `json:"rawJetStreamAsyncPublishPerSec"`
	IngestPerSec       float64 `json:"verifiedIngestPerSec"`
	IngestRatio        float64 `json:"verifiedIngestToRawPublishRatio"`
	PublishPhasePerSec float64 `json:"eventsStreamPublishPerSec"`
	CPUMicrosPerEvent  float64 `json:"cpuMicrosPerEvent"`
	RawCPUMicrosPerMsg float64 `json:"rawPublishCpuMicrosPerMsg"`
	Commits            uint64  `json:"commits"`

	ProvenanceEntries int     `json:"provenanceEntriesPerDevice"`
	ProvenanceP50ms   float64 `json:"provenanceP50ms"`
	ProvenanceP99ms   float64 `json:"provenanceP99ms"`
	ReceiptP50us      float64 `json:"receiptP50us"`
	ReceiptP99us      float64 `json:"receiptP99us"`

	Proofs []ProofCost `json:"proofs"`

	// Tiers is the tiered phase (tiers.go): the same number of new events
	// with a verifier in a process of its own.
	Tiers *TierResult `json:"tiers,omitempty"`

	RSSMiB       float64 `json:"rssMiB"`
	PeakRSSMiB   float64 `json:"peakRssMiB"`
	LedgerBytes  float64 `json:"ledgerDiskBytesPerEvent"`
	StreamBytes  float64 `json:"streamDiskBytesPerEvent"`
	LeafBodyAvg  float64 `json:"leafBodyBytesAvg"`
	TargetPerSec float64 `json:"targetPerSec"`
}

// ProofCost is the cost of proofs in a tree of Leaves leaves.
type ProofCost struct {
	Leaves               uint64  `json:"leaves"`
	InclusionP50us       float64 `json:"inclusionP50us"`
	InclusionP99us       float64 `json:"inclusionP99us"`
	InclusionHashes      int     `json:"inclusionHashes"`
	ConsistencyP50us     float64 `json:"consistencyP50us"`
	ConsistencyP99us     float64 `json:"consistencyP99us"`
	VerifyInclusionUs    float64 `json:"verifyInclusionUs"`
	BuildSeconds         float64 `json:"buildSeconds"`
	NodeBytesPerLeaf     float64 `json:"diskBytesPerLeaf"`
	AppendedLeavesPerSec float64 `json:"appendedLeavesPerSec"`
	// Provenance of a device with a typical history (typicalEntries entries
	// spread over the tree): its entries and an inclusion proof each.
	ProvenanceP50ms float64 `json:"typicalProvenanceP50ms"`
	ProvenanceP99ms float64 `json:"typicalProvenanceP99ms"`
	// The same proofs with a block cache that holds the tree's nodes
	// (WarmCacheMiB), after a warm-up: what proof cost does when it is not
	// a cache-miss measurement.
	WarmCacheMiB         float64 `json:"warmCacheMiB"`
	WarmInclusionP50us   float64 `json:"warmInclusionP50us"`
	WarmInclusionP99us   float64 `json:"warmInclusionP99us"`
	WarmConsistencyP50us float64 `json:"warmConsistencyP50us"`
	WarmConsistencyP99us float64 `json:"warmConsistencyP99us"`
	// RSSMiB is the bench process's resident memory once the provenance
	// queries ran on this tree with the default block cache, the garbage
	// of the bulk load returned to the OS: the node (broker, ledger, its
	// store) and this store open, as a custodyd serving this log would be.
	RSSMiB float64 `json:"rssMiB"`
}

// typicalEntries is a device's history in the demo: manufacture, four
// hand-offs (offer + accept), three stages, enrollment.
const typicalEntries = 13

func run(cfg config) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if cfg.Devices < 1 || cfg.Events < cfg.Devices {
		return errors.New("need at least one device and one event per device")
	}
	if cfg.OnlyProofs {
		dir, err := os.MkdirTemp("", "custody-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		_, err = proofCost(filepath.Join(dir, "tree"), cfg.ProofLeaves)
		return err
	}
	agent, err := filepath.Abs(cfg.Agent)
	if err != nil {
		return err
	}
	if _, err := os.Stat(agent); err != nil {
		return fmt.Errorf("custody-agent binary: %w (run make build, or pass --agent)", err)
	}
	dir := cfg.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "custody-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	res := &Results{
		Time: time.Now().UTC(), GoMaxProc: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
		Events: cfg.Events, Devices: cfg.Devices, TargetPerSec: 10000,
		Method: fmt.Sprintf("%d custody-agent processes, each its own simulated TPM (EK, IAK); %d stage.recorded events per device, each quoted by its device over its binding digest and DSSE-signed by the vendor; all pre-generated, then published async to the embedded JetStream", cfg.Devices, cfg.Events/cfg.Devices),
	}
	logf("node in %s", dir)
	n, stopNode, err := startBenchNode(ctx, dir)
	if err != nil {
		return err
	}
	defer stopNode()

	// Devices: one agent process (one simulated TPM) each, manufactured.
	var agents []*exec.Cmd
	defer func() {
		for _, c := range agents {
			_ = c.Process.Signal(os.Interrupt)
			_ = c.Wait()
		}
	}()
	type dev struct {
		id     string
		client *device.Client
		envs   [][]byte
	}
	devs := make([]*dev, cfg.Devices)
	vendorClient := n.HTTPClient("acme-tpm") // agents answer only partners' certificates
	for i := range devs {
		cmd, url, err := clusterrun.StartAgent(agent, filepath.Join(dir, "agents"), n.PKI.Dir, 7100+i)
		if err != nil {
			return err
		}
		agents = append(agents, cmd)
		r, err := n.Stations["acme-tpm"].Manufacture(ctx, url)
		if err != nil {
			return fmt.Errorf("manufacturing device %d: %w", i, err)
		}
		devs[i] = &dev{id: r.Device, client: device.NewClient(url, vendorClient)}
	}
	logf("%d devices manufactured; generating %d events", len(devs), cfg.Events)

	// Pre-generate every event: a real quote per event.
	key := n.PKI.Partners["acme-tpm"].Key
	per := cfg.Events / cfg.Devices
	res.Events = per * cfg.Devices
	gen := per
	if cfg.Custodyd != "" {
		gen = 2 * per // the second half for the tiered phase
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, len(devs))
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range gen {
				st, err := quotedStage(ctx, d.client, d.id, j)
				if err != nil {
					errc <- err
					return
				}
				env, err := events.Sign(ctx, st, key, "acme-tpm")
				if err != nil {
					errc <- err
					return
				}
				d.envs = append(d.envs, env)
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return fmt.Errorf("generating events: %w", err)
	}
	res.GenerateSeconds = time.Since(t0).Seconds()
	// Publication order: round robin over devices, each device in quote order.
	type msg struct {
		subject string
		data    []byte
		id      string
	}
	var msgs []msg
	var tierMsgs []benchMsg
	var total int
	for j := range gen {
		for _, d := range devs {
			env := d.envs[j]
			s, err := events.Open(env)
			if err != nil {
				return err
			}
			if j >= per {
				tierMsgs = append(tierMsgs, benchMsg{events.EventSubject("acme-tpm", d.id), env, s.DigestHex()})
				continue
			}
			msgs = append(msgs, msg{events.EventSubject("acme-tpm", d.id), env, s.DigestHex()})
			total += len(env)
		}
	}
	res.EnvelopeBytes = float64(total) / float64(len(msgs))
	logf("generated %d events in %.1fs (%.0f B each)", len(msgs), res.GenerateSeconds, res.EnvelopeBytes)

	// Baseline: raw JetStream async publish of the same bytes.
	lnc, err := n.Connect(node.LedgerUser)
	if err != nil {
		return err
	}
	defer lnc.Close()
	ljs, err := jetstream.New(lnc)
	if err != nil {
		return err
	}
	rawCfg := events.StreamConfig(1)
	rawCfg.Name, rawCfg.Subjects, rawCfg.Description = "BENCHRAW", []string{"bench.raw.>"}, "bench baseline"
	if _, err := ljs.CreateOrUpdateStream(ctx, rawCfg); err != nil {
		return err
	}
	cpu0 := cpuTime()
	t0 = time.Now()
	for _, m := range msgs {
		if _, err := ljs.PublishAsync("bench.raw."+m.subject[len(events.EventsPrefix)+1:], m.data, jetstream.WithMsgID(m.id), stallWait); err != nil {
			return err
		}
	}
	if err := waitAsync(ctx, ljs); err != nil {
		return err
	}
	rawDur := time.Since(t0)
	res.RawPublishPerSec = float64(len(msgs)) / rawDur.Seconds()
	res.RawCPUMicrosPerMsg = float64((cpuTime() - cpu0).Microseconds()) / float64(len(msgs))
	_ = ljs.DeleteStream(ctx, "BENCHRAW")
	logf("raw JetStream async publish: %.0f msgs/s", res.RawPublishPerSec)

	// Verified ingest: publish as the partner, wait for the ledger's head.
	pnc, err := n.Connect("acme-tpm")
	if err != nil {
		return err
	}
	defer pnc.Close()
	pjs, err := jetstream.New(pnc)
	if err != nil {
		return err
	}
	start := n.Ledger.Head()
	want := start.Size + uint64(len(msgs))
	runtime.GC()
	res.ECDSAVerifyBefore, res.VerifyCPUBefore = verifyRate(cryptoWindow)
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	cpu0 = cpuTime()
	foreign := startForeignCPU()
	t0 = time.Now()
	for _, m := range msgs {
		if _, err := pjs.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id), stallWait); err != nil {
			return err
		}
	}
	if err := waitAsync(ctx, pjs); err != nil {
		return err
	}
	res.PublishPhasePerSec = float64(len(msgs)) / time.Since(t0).Seconds()
	var commits uint64
	last := start.Checkpoint
	deadline := time.Now().Add(10 * time.Minute)
	for {
		h := n.Ledger.Head()
		if string(h.Checkpoint) != string(last) {
			commits++
			last = h.Checkpoint
		}
		if h.Size >= want {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingest stalled at %d of %d entries (refusals?)", h.Size-start.Size, len(msgs))
		}
		time.Sleep(2 * time.Millisecond)
	}
	dur := time.Since(t0)
	cpuIngest := cpuTime() - cpu0
	if cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	res.ECDSAVerifyAfter, res.VerifyCPUAfter = verifyRate(cryptoWindow)
	res.IngestPerSec = float64(len(msgs)) / dur.Seconds()
	res.IngestRatio = res.IngestPerSec / res.RawPublishPerSec
	res.ECDSAVerifyPerSec = (res.ECDSAVerifyBefore + res.ECDSAVerifyAfter) / 2
	res.VerifiesPerEvent = VerifiesPerEvent
	res.CryptoCeiling = res.ECDSAVerifyPerSec / VerifiesPerEvent
	res.CeilingRatio = res.IngestPerSec / res.CryptoCeiling
	res.CPUMicrosPerEvent = float64(cpuIngest.Microseconds()) / float64(len(msgs))
	res.VerifyCPUMicros = (res.VerifyCPUBefore + res.VerifyCPUAfter) / 2
	res.CPUBoundRatio = VerifiesPerEvent * res.VerifyCPUMicros / res.CPUMicrosPerEvent
	res.ForeignCPUPct = foreign.stop()
	res.Commits = commits
	res.RSSMiB, res.PeakRSSMiB = rss()
	head := n.Ledger.Head()
	if _, err := ledger.VerifyCheckpoint(head.Checkpoint, &n.PKI.LogKey.PublicKey); err != nil {
		return err
	}
	logf("verified ingest: %.0f events/s (%.2f× raw publish), %.0f µs CPU per event", res.IngestPerSec, res.IngestRatio, res.CPUMicrosPerEvent)
	logf("P-256 verifies/s on %d cores: %.0f before ingest, %.0f after; ceiling %.0f events/s, ingest at %.2f× of it",
		res.GoMaxProc, res.ECDSAVerifyBefore, res.ECDSAVerifyAfter, res.CryptoCeiling, res.CeilingRatio)
	lb, err := dirSize(filepath.Join(dir, "ledger"))
	if err != nil {
		return err
	}
	sb, err := dirSize(filepath.Join(dir, "nats"))
	if err != nil {
		return err
	}
	res.LedgerBytes = float64(lb) / float64(head.Size)
	res.StreamBytes = float64(sb) / float64(len(msgs))
	if e, err := n.Ledger.Store().Entry(head.Size - 1); err == nil {
		res.LeafBodyAvg = float64(len(e.Body))
	}

	// The tiered phase: a verifier process beside the node.
	if cfg.Custodyd != "" {
		logf("tiered phase: %d events with a verifier process (%s --role verifier)", len(tierMsgs), cfg.Custodyd)
		if res.Tiers, err = measureTiers(ctx, n, cfg.Custodyd, pjs, tierMsgs, res.CryptoCeiling, cfg.CPUProfile); err != nil {
			return fmt.Errorf("tiered phase: %w", err)
		}
		t := res.Tiers
		logf("tiered: %.0f events/s on this machine; verifier %.0f µs CPU/event (%.0f/s per machine, %.2f× the crypto ceiling), sequencer %.0f µs (%.0f/s per machine); one verifier machine: %.0f events/s; verdicts used for %.0f%%",
			t.WallPerSec, t.VerifierCPUMicros, t.VerifierPerSec, t.VerifierRatio, t.SequencerCPUMicros, t.SequencerPerSec, t.OneVerifierPerSec, 100*t.VerdictsUsed)
	}

	// Provenance and receipts, with proofs.
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile + ".queries")
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	var prov []time.Duration
	for range 5 {
		for _, d := range devs {
			t := time.Now()
			p, err := n.Ledger.Provenance(d.id)
			if err != nil {
				return err
			}
			prov = append(prov, time.Since(t))
			res.ProvenanceEntries = len(p.Entries)
		}
	}
	res.ProvenanceP50ms, res.ProvenanceP99ms = pct(prov, 0.5).Seconds()*1e3, pct(prov, 0.99).Seconds()*1e3
	var rc []time.Duration
	for range 2000 {
		i := mrand.Uint64N(head.Size)
		t := time.Now()
		if _, err := n.Ledger.Receipt(i, head); err != nil {
			return err
		}
		rc = append(rc, time.Since(t))
	}
	res.ReceiptP50us, res.ReceiptP99us = us(pct(rc, 0.5)), us(pct(rc, 0.99))
	if cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}

	// Proof cost in large trees.
	sizes := []uint64{10_000}
	if cfg.ProofLeaves > 1_000_000 {
		sizes = append(sizes, 1_000_000)
	}
	if cfg.ProofLeaves > 10_000 {
		sizes = append(sizes, cfg.ProofLeaves)
	}
	for _, size := range sizes {
		pc, err := proofCost(filepath.Join(dir, fmt.Sprintf("tree-%d", size)), size)
		if err != nil {
			return err
		}
		res.Proofs = append(res.Proofs, *pc)
	}

	printTable(res)
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return err
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	name := filepath.Join(cfg.Out, "ledger-"+res.Time.Format("20060102T150405Z")+".json")
	if err := os.WriteFile(name, append(out, '\n'), 0o644); err != nil {
		return err
	}
	_ = os.WriteFile(filepath.Join(cfg.Out, "ledger-latest.json"), append(out, '\n'), 0o644)
	logf("wrote %s", name)
	return nil
}

// proofCost builds a tree of size leaves in a fresh store by appending
// leaf hashes directly (pre-verified leaves: nodes only, in commits of
// 64k leaves), then times inclusion and consistency proofs.
func proofCost(dir string, size uint64) (*ProofCost, error) {
	st, err := pebble.Open(dir)
	if err != nil {
		return nil, err
	}
	defer func() { _ = st.Close() }()
	pc := &ProofCost{Leaves: size}
	rf := compact.RangeFactory{Hash: ledger.Hasher.HashChildren}
	rng := rf.NewEmptyRange(0)
	t0 := time.Now()
	const chunk = 1 << 16
	var leaf [8]byte
	for done := uint64(0); done < size; {
		nodes := map[compact.NodeID][]byte{}
		end := min(done+chunk, size)
		for i := done; i < end; i++ {
			binary.BigEndian.PutUint64(leaf[:], i)
			if err := rng.Append(ledger.LeafHash(leaf[:]), func(id compact.NodeID, h []byte) { nodes[id] = h }); err != nil {
				return nil, err
			}
		}
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return nil, err
		}
		if err := st.Commit(&ledger.Commit{Head: ledger.Head{Size: end, Root: root}, Nodes: nodes}); err != nil {
			return nil, err
		}
		done = end
	}
	pc.BuildSeconds = time.Since(t0).Seconds()
	if err := st.Settle(time.Minute); err != nil { // the compactions the bulk load started
		return nil, err
	}
	pc.AppendedLeavesPerSec = float64(size) / pc.BuildSeconds
	root, _ := rng.GetRootHash(nil)
	incP, consP, verify, hashes, err := timeProofs(st, size, root, 2000)
	if err != nil {
		return nil, err
	}
	pc.InclusionHashes = hashes
	pc.InclusionP50us, pc.InclusionP99us = us(pct(incP, 0.5)), us(pct(incP, 0.99))
	pc.ConsistencyP50us, pc.ConsistencyP99us = us(pct(consP, 0.5)), us(pct(consP, 0.99))
	pc.VerifyInclusionUs = us(verify)
	if err := typicalProvenance(st, size, root, pc); err != nil {
		return nil, err
	}
	debug.FreeOSMemory()
	pc.RSSMiB, _ = rss()
	if b, err := dirSize(dir); err == nil {
		pc.NodeBytesPerLeaf = float64(b) / float64(size)
	}
	// Again with a cache that holds every node, warmed by proofs.
	if err := st.Close(); err != nil {
		return nil, err
	}
	cache := int64(max(pc.NodeBytesPerLeaf*1.5, 64) * float64(size))
	if st, err = pebble.OpenOptions(dir, pebble.Options{CacheSize: cache}); err != nil {
		return nil, err
	}
	if _, _, _, _, err := timeProofs(st, size, root, 50_000); err != nil {
		return nil, err
	}
	incP, consP, _, _, err = timeProofs(st, size, root, 2000)
	if err != nil {
		return nil, err
	}
	pc.WarmCacheMiB = float64(cache) / (1 << 20)
	pc.WarmInclusionP50us, pc.WarmInclusionP99us = us(pct(incP, 0.5)), us(pct(incP, 0.99))
	pc.WarmConsistencyP50us, pc.WarmConsistencyP99us = us(pct(consP, 0.5)), us(pct(consP, 0.99))
	logf("proofs at %d leaves with a %.0f MiB cache, warm: inclusion p50 %.1f µs, consistency p50 %.1f µs", size, pc.WarmCacheMiB, pc.WarmInclusionP50us, pc.WarmConsistencyP50us)
	logf("proofs at %d leaves: inclusion p50 %.1f µs, consistency p50 %.1f µs (tree built in %.1fs); provenance of a %d-entry device p50 %.2f ms, p99 %.2f ms; resident %.0f MiB",
		size, pc.InclusionP50us, pc.ConsistencyP50us, pc.BuildSeconds, typicalEntries, pc.ProvenanceP50ms, pc.ProvenanceP99ms, pc.RSSMiB)
	return pc, nil
}

// timeProofs times n random inclusion proofs (and their verification) and
// n consistency proofs to size in st.
func timeProofs(st *pebble.Store, size uint64, root []byte, n int) (inc, cons []time.Duration, verifyAvg time.Duration, hashes int, err error) {
	var leaf [8]byte
	var verify time.Duration
	for range n {
		i := mrand.Uint64N(size)
		t := time.Now()
		proof, err := ledger.ProveInclusion(st, i, size)
		if err != nil {
			return nil, nil, 0, 0, err
		}
		inc = append(inc, time.Since(t))
		hashes = len(proof)
		binary.BigEndian.PutUint64(leaf[:], i)
		t = time.Now()
		if err := ledger.VerifyInclusion(leaf[:], i, size, proof, root); err != nil {
			return nil, nil, 0, 0, err
		}
		verify += time.Since(t)
		s1 := 1 + mrand.Uint64N(size-1)
		t = time.Now()
		if _, err := ledger.ProveConsistency(st, s1, size); err != nil {
			return nil, nil, 0, 0, err
		}
		cons = append(cons, time.Since(t))
	}
	return inc, cons, verify / time.Duration(n), hashes, nil
}

// typicalProvenance gives 1,000 devices (fewer in a small tree: at most
// half its leaves are used) typicalEntries entries each at
// random places in the tree (entries of realistic size: a 1.2 KiB leaf body
// and a 1.4 KiB envelope), then times what Ledger.Provenance does for one
// device: its index, its entries, an inclusion proof for each.
func typicalProvenance(st *pebble.Store, size uint64, root []byte, pc *ProofCost) error {
	// Twice the devices measured: the first half warms the store as a
	// ledger in service is warm (its tables open, the tree's upper levels
	// cached), the second half is measured, each device read for the
	// first time (its entries and lower proof nodes cold).
	devices := 2 * int(min(1000, size/(4*typicalEntries)))
	body, env := make([]byte, 1200), make([]byte, 1400)
	_, _ = rand.Read(body)
	_, _ = rand.Read(env)
	used := map[uint64]bool{}
	ids := make([]string, devices)
	c := &ledger.Commit{Head: ledger.Head{Size: size, Root: root}}
	for d := range ids {
		var b [32]byte
		_, _ = rand.Read(b[:])
		ids[d] = hex.EncodeToString(b[:])
		for range typicalEntries {
			i := mrand.Uint64N(size)
			for used[i] {
				i = mrand.Uint64N(size)
			}
			used[i] = true
			var dg [32]byte
			_, _ = rand.Read(dg[:])
			c.Entries = append(c.Entries, &ledger.Entry{Index: i, Digest: dg[:], Kind: "stage.recorded", Partner: "bench", Target: ids[d], Body: body, Envelope: env})
		}
	}
	if err := st.Commit(c); err != nil {
		return err
	}
	if err := st.Settle(time.Minute); err != nil {
		return err
	}
	var lat []time.Duration
	for k, id := range ids {
		t := time.Now()
		idx, err := st.DeviceEntries(id)
		if err != nil {
			return err
		}
		if _, err := ledger.ProveInclusions(st, idx, size); err != nil {
			return err
		}
		for _, i := range idx {
			if _, err := st.Entry(i); err != nil {
				return err
			}
		}
		if k >= len(ids)/2 {
			lat = append(lat, time.Since(t))
		}
	}
	pc.ProvenanceP50ms, pc.ProvenanceP99ms = ms(pct(lat, 0.5)), ms(pct(lat, 0.99))
	return nil
}

func printTable(r *Results) {
	fmt.Printf("\nCustody ledger benchmark, %s, GOMAXPROCS %d (%d CPUs)\n", r.Time.Format(time.RFC3339), r.GoMaxProc, r.NumCPU)
	fmt.Printf("%d events from %d devices (%s)\n\n", r.Events, r.Devices, "own simulated TPM per device")
	row := func(k, v string) { fmt.Printf("  %-48s %s\n", k, v) }
	row("raw JetStream async publish (baseline)", fmt.Sprintf("%.0f msgs/s, %.1f µs CPU/msg", r.RawPublishPerSec, r.RawCPUMicrosPerMsg))
	row("verified ingest (durable + checkpointed)", fmt.Sprintf("%.0f events/s = %.2f× raw publish (target %.0f/s: %.2f×)", r.IngestPerSec, r.IngestRatio, r.TargetPerSec, r.IngestPerSec/r.TargetPerSec))
	row(fmt.Sprintf("  crypto ceiling (%d P-256 verifies/event)", r.VerifiesPerEvent), fmt.Sprintf("%.0f events/s (%.0f verifies/s on all cores, mean of %.0f before and %.0f after ingest): ingest at %.2f× of it",
		r.CryptoCeiling, r.ECDSAVerifyPerSec, r.ECDSAVerifyBefore, r.ECDSAVerifyAfter, r.CeilingRatio))
	row("  publish phase into the events stream", fmt.Sprintf("%.0f msgs/s", r.PublishPhasePerSec))
	row("  CPU per event (whole process)", fmt.Sprintf("%.0f µs, of which %d verifies %.0f µs (%.2f of it); other processes took %.0f%% of the machine",
		r.CPUMicrosPerEvent, r.VerifiesPerEvent, float64(r.VerifiesPerEvent)*r.VerifyCPUMicros, r.CPUBoundRatio, r.ForeignCPUPct))
	row("  checkpoints observed", fmt.Sprint(r.Commits))
	row("provenance query with proofs", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms (%d entries/device)", r.ProvenanceP50ms, r.ProvenanceP99ms, r.ProvenanceEntries))
	row("receipt (entry + inclusion proof)", fmt.Sprintf("p50 %.0f µs, p99 %.0f µs", r.ReceiptP50us, r.ReceiptP99us))
	for _, p := range r.Proofs {
		row(fmt.Sprintf("proofs at %d leaves", p.Leaves), fmt.Sprintf("inclusion p50 %.1f / p99 %.1f µs (%d hashes, verify %.1f µs); consistency p50 %.1f / p99 %.1f µs",
			p.InclusionP50us, p.InclusionP99us, p.InclusionHashes, p.VerifyInclusionUs, p.ConsistencyP50us, p.ConsistencyP99us))
		row("", fmt.Sprintf("built by direct append at %.0f leaves/s, %.0f B/leaf on disk", p.AppendedLeavesPerSec, p.NodeBytesPerLeaf))
		row("", fmt.Sprintf("provenance of a %d-entry device with proofs: p50 %.2f ms, p99 %.2f ms", typicalEntries, p.ProvenanceP50ms, p.ProvenanceP99ms))
		row("", fmt.Sprintf("nodes in a %.0f MiB cache, warm: inclusion p50 %.1f / p99 %.1f µs; consistency p50 %.1f / p99 %.1f µs",
			p.WarmCacheMiB, p.WarmInclusionP50us, p.WarmInclusionP99us, p.WarmConsistencyP50us, p.WarmConsistencyP99us))
	}
	if n := len(r.Proofs); n >= 2 {
		a, b := r.Proofs[n-2], r.Proofs[n-1]
		logRatio := math.Log2(float64(b.Leaves)) / math.Log2(float64(a.Leaves))
		row(fmt.Sprintf("proof cost growth %d → %d leaves", a.Leaves, b.Leaves), fmt.Sprintf("log n grows %.2f×; inclusion %.2f× (warm %.2f×), consistency %.2f× (warm %.2f×)",
			logRatio, b.InclusionP50us/a.InclusionP50us, b.WarmInclusionP50us/a.WarmInclusionP50us, b.ConsistencyP50us/a.ConsistencyP50us, b.WarmConsistencyP50us/a.WarmConsistencyP50us))
	}
	row("resident memory", fmt.Sprintf("%.0f MiB (peak %.0f MiB)", r.RSSMiB, r.PeakRSSMiB))
	row("disk per event", fmt.Sprintf("ledger %.0f B, JetStream %.0f B (envelope %.0f B, leaf %.0f B)", r.LedgerBytes, r.StreamBytes, r.EnvelopeBytes, r.LeafBodyAvg))
	row("event generation (quotes over HTTP)", fmt.Sprintf("%.1f s", r.GenerateSeconds))
	fmt.Println()
}

// stallWait lets an async publish wait for the broker's acks as long as a
// loaded machine needs (the client's default gives up after 200 ms).
var stallWait = jetstream.WithStallWait(time.Minute)

// VerifiesPerEvent is the number of P-256 ECDSA verifications the ledger
// makes for one device event: the partner's DSSE signature and the device's
// TPM quote (by its IAK). The crypto ceiling of verified ingest is the
// machine's verifications per second divided by it.
const VerifiesPerEvent = 2

// cryptoWindow is how long each measurement of the verification rate runs.
const cryptoWindow = 2 * time.Second

// verifyRate measures P-256 ECDSA verifications per second on all cores
// (GOMAXPROCS goroutines, each verifying until the window closes), as the
// ledger makes them (ecdsa.VerifyASN1 over a SHA-256 digest). The bench
// runs it immediately before and after the ingest phase, so that the
// ceiling and the ingest it is compared with share the machine's load.
func verifyRate(window time.Duration) (perSec, cpuMicrosPer float64) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	d := make([]byte, 32)
	_, _ = rand.Read(d)
	sig, _ := ecdsa.SignASN1(rand.Reader, key, d)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	cpu0 := cpuTime()
	t0 := time.Now()
	deadline := t0.Add(window)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for time.Now().Before(deadline) {
				for range 16 {
					if !ecdsa.VerifyASN1(&key.PublicKey, d, sig) {
						panic("bench: P-256 verification failed")
					}
				}
				n += 16
			}
			mu.Lock()
			total += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	secs := time.Since(t0).Seconds()
	return float64(total) / secs, float64((cpuTime() - cpu0).Microseconds()) / float64(total)
}

// foreignCPU measures the CPU time other processes take over a span: the
// machine's busy time (/proc/stat) less this process's.
type foreignCPU struct {
	busy0, total0 uint64
	self0         time.Duration
}

func startForeignCPU() *foreignCPU {
	f := &foreignCPU{self0: cpuTime()}
	f.busy0, f.total0 = procStat()
	return f
}

// stop returns the other processes' share of the machine's CPU time since
// start, in percent (0 when /proc/stat is not readable).
func (f *foreignCPU) stop() float64 {
	busy, total := procStat()
	self := cpuTime() - f.self0
	if total <= f.total0 {
		return 0
	}
	tick := 1e9 / 100.0 // USER_HZ
	foreign := float64(busy-f.busy0) - float64(self.Nanoseconds())/tick
	return max(0, 100*foreign/float64(total-f.total0))
}

// procStat returns the machine's busy and total CPU time in ticks.
func procStat() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:] {
		var v uint64
		_, _ = fmt.Sscan(f, &v)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

func waitAsync(ctx context.Context, js jetstream.JetStream) error {
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return errors.New("async publish did not complete")
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rss returns the current and peak resident set size in MiB.
func rss() (float64, float64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	var cur, peak float64
	for _, line := range strings.Split(string(b), "\n") {
		var v float64
		if _, err := fmt.Sscanf(line, "VmRSS: %f kB", &v); err == nil {
			cur = v / 1024
		}
		if _, err := fmt.Sscanf(line, "VmHWM: %f kB", &v); err == nil {
			peak = v / 1024
		}
	}
	return cur, peak
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n, err
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// startBenchNode starts an all-in-one node on dir as custodyd runs it (its
// GC setting) and returns it once ready, with the function that stops it.
func startBenchNode(ctx context.Context, dir string) (*node.Node, func(), error) {
	node.ApplyGCPercent(node.GCPercent)
	ctx, cancel := context.WithCancel(ctx)
	// A NATS listener and verdicts for the tiered phase (tiers.go); until a
	// verifier sends any, the ledger checks everything itself.
	n, err := node.New(ctx, node.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0", VerdictWait: 2 * time.Second})
	if err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	select {
	case <-n.Ready():
	case err := <-done:
		cancel()
		return nil, nil, fmt.Errorf("node: %w", err)
	}
	return n, func() { cancel(); <-done }, nil
}
