package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
)

// Station batches against single envelopes, in one run on one node: the
// same devices, the same kind of event (stage.recorded, each quoted by its
// device over its own binding digest, as the quote policy requires), first
// one envelope per event, then station batches of one event per device
// (events.SignBatch: one signature per batch). Each phase is timed from the
// first publish to the ledger's head covering it (durable, checkpointed),
// with the P-256 rate on all cores measured right before and after it:
// its crypto ceiling is verifies/s over the verifications an event needs,
// 2 for a single envelope (signature, quote), 1 + 1/B in a batch of B.

// BatchedConfig sizes the run.
type BatchedConfig struct {
	Devices         int // devices, and so events per batch
	EventsPerDevice int // per phase
	CPUProfile      string
}

// BatchedResult is what the run measured.
type BatchedResult struct {
	Devices         int     `json:"devices"`
	Batch           int     `json:"batch_events"`
	EventsPerPhase  int     `json:"events_per_phase"`
	GenerateSeconds float64 `json:"generate_seconds"`

	VerifiesPerS float64 `json:"crypto_verifies_per_s_batched_run"`

	SingleEventsPerS float64 `json:"ingest_single_events_per_s"`
	SingleCeiling    float64 `json:"single_ceiling_events_per_s"`
	SingleRatio      float64 `json:"ingest_single_ratio"`
	SingleCPUus      float64 `json:"single_cpu_us_per_event"`

	BatchedEventsPerS float64 `json:"ingest_batched_events_per_s"`
	VerifiesPerEvent  float64 `json:"verifies_per_batched_event"`
	BatchedCeiling    float64 `json:"batched_ceiling_events_per_s"`
	BatchedRatio      float64 `json:"ingest_batched_ratio"`
	BatchedCPUus      float64 `json:"batched_cpu_us_per_event"`
	// Speedup is batched events/s over single events/s, same run.
	Speedup float64 `json:"batched_over_single"`

	VerifyCPUus float64 `json:"verify_cpu_us"`
	Method      string  `json:"method"`
}

// measureBatched runs both phases on a running node.
func measureBatched(ctx context.Context, n *node.Node, dir string, cfg BatchedConfig) (*BatchedResult, error) {
	res := &BatchedResult{Devices: cfg.Devices, Batch: cfg.Devices, EventsPerPhase: cfg.Devices * cfg.EventsPerDevice}
	vendor, vtr, err := captureStation(n, "acme-tpm")
	if err != nil {
		return nil, err
	}
	key := n.PKI.Partners["acme-tpm"].Key
	t0 := time.Now()
	// Per device, with its TPM open: its birth record, then 2×K quoted
	// stage events in counter order (the first K go out as envelopes, the
	// rest in batches).
	var mfg []benchMsg
	quoted := make([][]*events.Statement, cfg.Devices)
	for d := range cfg.Devices {
		if err := powered(500000+d, filepath.Join(dir, "batched", fmt.Sprint(d)), func(url string) error {
			r, err := vendor.Manufacture(ctx, url)
			if err != nil {
				return fmt.Errorf("manufacture: %w", err)
			}
			env := vtr.take()
			mfg = append(mfg, benchMsg{events.EventSubject("acme-tpm", r.Device), env, r.Receipt.Digest})
			dc := device.NewClient(url, http.DefaultClient)
			for j := range 2 * cfg.EventsPerDevice {
				st, err := quotedStage(ctx, dc, r.Device, j)
				if err != nil {
					return err
				}
				quoted[d] = append(quoted[d], st)
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("device %d: %w", d, err)
		}
	}
	var single, batched []benchMsg
	for j := range cfg.EventsPerDevice {
		for d := range cfg.Devices {
			s, err := events.SignStatement(ctx, quoted[d][j], key, "acme-tpm")
			if err != nil {
				return nil, err
			}
			single = append(single, benchMsg{events.EventSubject("acme-tpm", s.Statement.Target()), s.Raw, s.DigestHex()})
		}
	}
	for j := cfg.EventsPerDevice; j < 2*cfg.EventsPerDevice; j++ {
		members := make([]*events.Statement, cfg.Devices)
		for d := range cfg.Devices {
			members[d] = quoted[d][j]
		}
		b, err := events.SignBatch(ctx, fmt.Sprintf("bench-%d", j), members, key, "acme-tpm")
		if err != nil {
			return nil, err
		}
		batched = append(batched, benchMsg{events.EventSubject("acme-tpm", b.Statement.Target()), b.Parcel, b.DigestHex()})
	}
	res.GenerateSeconds = time.Since(t0).Seconds()
	logf("batched: %d devices, %d quoted events per phase generated in %.1fs", cfg.Devices, res.EventsPerPhase, res.GenerateSeconds)

	pnc, err := n.Connect("acme-tpm")
	if err != nil {
		return nil, err
	}
	defer pnc.Close()
	js, err := jetstream.New(pnc)
	if err != nil {
		return nil, err
	}
	if _, _, err := ingestPhase(ctx, n, js, mfg, uint64(len(mfg)), ""); err != nil {
		return nil, fmt.Errorf("birth records: %w", err)
	}
	var rates [4]float64
	var vcpu [4]float64
	rates[0], vcpu[0] = verifyRate(cryptoWindow)
	sdur, scpu, err := ingestPhase(ctx, n, js, single, uint64(len(single)), "")
	if err != nil {
		return nil, fmt.Errorf("single envelopes: %w", err)
	}
	rates[1], vcpu[1] = verifyRate(cryptoWindow)
	start := n.Ledger.Head().Size
	rates[2], vcpu[2] = verifyRate(cryptoWindow)
	bdur, bcpu, err := ingestPhase(ctx, n, js, batched, uint64(len(batched)), cfg.CPUProfile)
	if err != nil {
		return nil, fmt.Errorf("batches: %w", err)
	}
	rates[3], vcpu[3] = verifyRate(cryptoWindow)
	// Every member of every batch logged.
	for i := start; i < start+uint64(len(batched)); i++ {
		e, err := n.Ledger.Store().Entry(i)
		if err != nil {
			return nil, err
		}
		for _, m := range e.Members {
			if m.Status != events.StatusAccepted || m.Existing {
				return nil, fmt.Errorf("batched: entry %d: member %s is %s: %s %s", i, m.Target, m.Status, m.Code, m.Reason)
			}
		}
		if len(e.Members) != cfg.Devices {
			return nil, fmt.Errorf("batched: entry %d logs %d members, want %d", i, len(e.Members), cfg.Devices)
		}
	}
	events := float64(res.EventsPerPhase)
	res.VerifiesPerS = (rates[0] + rates[1] + rates[2] + rates[3]) / 4
	res.VerifyCPUus = (vcpu[0] + vcpu[1] + vcpu[2] + vcpu[3]) / 4
	res.SingleEventsPerS = events / sdur.Seconds()
	res.SingleCeiling = (rates[0] + rates[1]) / 2 / VerifiesPerEvent
	res.SingleRatio = res.SingleEventsPerS / res.SingleCeiling
	res.SingleCPUus = float64(scpu.Microseconds()) / events
	res.VerifiesPerEvent = 1 + 1/float64(cfg.Devices)
	res.BatchedEventsPerS = events / bdur.Seconds()
	res.BatchedCeiling = (rates[2] + rates[3]) / 2 / res.VerifiesPerEvent
	res.BatchedRatio = res.BatchedEventsPerS / res.BatchedCeiling
	res.BatchedCPUus = float64(bcpu.Microseconds()) / events
	res.Speedup = res.BatchedEventsPerS / res.SingleEventsPerS
	res.Method = fmt.Sprintf("%d devices, each its own simulated TPM, manufactured; %d stage.recorded events per device per phase, each quoted by its device over its binding digest; phase 1 one envelope per event (2 verifies), phase 2 station batches of one event per device (1 + 1/%d verifies per event); pre-generated, published async by the partner, timed to the ledger's head; P-256 rate on all cores before and after each phase", cfg.Devices, cfg.EventsPerDevice, cfg.Devices)
	logf("single envelopes: %.0f events/s, %.0f µs CPU/event, %.2f× of their ceiling %.0f/s", res.SingleEventsPerS, res.SingleCPUus, res.SingleRatio, res.SingleCeiling)
	logf("station batches of %d: %.0f events/s, %.0f µs CPU/event, %.2f× of their ceiling %.0f/s; %.2f× the single envelopes' rate", cfg.Devices, res.BatchedEventsPerS, res.BatchedCPUus, res.BatchedRatio, res.BatchedCeiling, res.Speedup)
	return res, nil
}

// ingestPhase publishes msgs async on js and waits until the ledger has
// consumed them and its head has grown by leaves; it returns the time and
// this process's CPU it took (and writes a CPU profile of it to profile,
// if set).
func ingestPhase(ctx context.Context, n *node.Node, js jetstream.JetStream, msgs []benchMsg, leaves uint64, profile string) (time.Duration, time.Duration, error) {
	start := n.Ledger.Head()
	runtime.GC()
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return 0, 0, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 0, 0, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuTime()
	t0 := time.Now()
	for _, m := range msgs {
		if _, err := js.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id), stallWait); err != nil {
			return 0, 0, err
		}
	}
	if err := waitAsync(ctx, js); err != nil {
		return 0, 0, err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		h := n.Ledger.Head()
		if h.Size >= start.Size+leaves && h.StreamSeq >= start.StreamSeq+uint64(len(msgs)) {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("ingest stalled at %d of %d entries (refusals?)", h.Size-start.Size, leaves)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(t0), cpuTime() - cpu0, nil
}

// batchedOnly starts a node and measures station batches against single
// envelopes (go run ./bench --only-batched DEVICES), writing batched.json
// in out.
func batchedOnly(devices, perDevice int, out, cpuProfile string) error {
	return onFreshNode(filepath.Join(out, batchedFile), func(ctx context.Context, n *node.Node, dir string) (any, error) {
		return measureBatched(ctx, n, dir, BatchedConfig{Devices: devices, EventsPerDevice: perDevice, CPUProfile: cpuProfile})
	})
}

// quotedStage is the bench's j-th stage.recorded of device by acme-tpm,
// quoted by the device (through dc) over its binding digest, unsigned.
func quotedStage(ctx context.Context, dc *device.Client, dev string, j int) (*events.Statement, error) {
	st := events.NewStatement(events.KindStageRecorded, "acme-tpm", dev, time.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: fmt.Sprintf("bench %d", j)}
	nonce, err := events.StatementBindingDigest(st)
	if err != nil {
		return nil, err
	}
	q, err := dc.Quote(ctx, nonce, []int{0})
	if err != nil {
		return nil, err
	}
	st.Predicate.Evidence = events.NewEvidence(q)
	return st, nil
}
