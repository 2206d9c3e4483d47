package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The summary (bench/README.md) is the one file a reader of `make bench`
// or `make bench-quick` needs: the headline figures of one run, gathered
// from the files the run's parts wrote into the results directory:
//
//   - ledger-latest.json, this command's own results (ingest, crypto
//     ceiling, proofs, memory);
//   - tessera.json, written by bench/tessera (its own module);
//   - gate.json, written by the gate's benchmark to the file named by
//     CUSTODY_BENCH_GATE_OUT (services/gate);
//   - shipments.json, written by the shipments' benchmark to the file
//     named by CUSTODY_BENCH_SHIPMENTS_OUT;
//   - batched.json, written by `bench --only-batched` (station batches
//     against single envelopes, batched.go);
//   - cluster.json, written by `bench --only-cluster` (make bench-cluster:
//     the cluster's tiers against the single process, cluster.go).
//
// A figure whose part did not run, or did not write it, is null in the
// summary, and "missing" names the reason: no figure is ever made up.

// Part files, in the results directory.
const (
	ledgerFile    = "ledger-latest.json"
	tesseraFile   = "tessera.json"
	gateFile      = "gate.json"
	shipmentsFile = "shipments.json"
	batchedFile   = "batched.json"
	clusterFile   = "cluster.json"
	// clusterBatchedFile is cluster.json's figures for station batches;
	// the summary names them with the suffix _batched.
	clusterBatchedFile = "cluster-batched.json"
	summaryFile        = "summary.json"
)

// partFields are the figures the summary takes from a part's flat JSON
// object, by file.
var partFields = map[string][]string{
	gateFile:      {"gate_decisions_per_s", "gate_ceiling_per_s", "gate_ratio"},
	shipmentsFile: {"device_transitions_per_s"},
	batchedFile:   {"ingest_batched_events_per_s", "verifies_per_batched_event", "batched_ceiling_events_per_s", "ingest_batched_ratio", "batch_events"},
	clusterFile: {"cluster_single_process_events_per_s", "cluster_sequencer_events_per_s", "cluster_sequencer_to_single_process_ratio",
		"cluster_verifier_events_per_s_per_process", "cluster_nats_node_events_per_s", "cluster_db_events_per_s", "trillian_queueleaf_per_s", "cluster_wall_events_per_s"},
}

// summaryFields is every field a summary has, in the order written; each
// is a number, or null with its reason under "missing".
var summaryFields = []string{
	"crypto_verifies_per_s", "verifies_per_event", "crypto_ceiling_events_per_s",
	"ingest_events_per_s", "ingest_ratio",
	"tiered_one_verifier_events_per_s", "verifier_events_per_s", "verifier_ratio", "sequencer_events_per_s",
	"ingest_batched_events_per_s", "verifies_per_batched_event", "batched_ceiling_events_per_s", "ingest_batched_ratio", "batch_events",
	"proof_query_p99_ms", "proof_leaves", "rss_mib",
	"tessera_entries_per_s",
	"device_transitions_per_s",
	"gate_decisions_per_s", "gate_ceiling_per_s", "gate_ratio",
	"cluster_single_process_events_per_s", "cluster_sequencer_events_per_s", "cluster_sequencer_to_single_process_ratio",
	"cluster_verifier_events_per_s_per_process", "cluster_nats_node_events_per_s", "cluster_db_events_per_s", "trillian_queueleaf_per_s", "cluster_wall_events_per_s",
	"cluster_single_process_events_per_s_batched", "cluster_sequencer_events_per_s_batched", "cluster_sequencer_to_single_process_ratio_batched",
	"cluster_verifier_events_per_s_per_process_batched", "cluster_nats_node_events_per_s_batched", "cluster_db_events_per_s_batched", "trillian_queueleaf_per_s_batched", "cluster_wall_events_per_s_batched",
}

// runSummary is `bench summary --dir DIR`: it writes DIR/summary.json from
// the part files in DIR.
func runSummary(args []string) error {
	fl := flag.NewFlagSet("summary", flag.ExitOnError)
	dir := fl.String("dir", "bench-results", "the results directory: reads its part files, writes summary.json")
	_ = fl.Parse(args)
	s, err := summarize(*dir)
	if err != nil {
		return err
	}
	b, err := marshalSummary(s)
	if err != nil {
		return err
	}
	name := filepath.Join(*dir, summaryFile)
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return err
	}
	os.Stdout.Write(b)
	logf("wrote %s", name)
	return nil
}

// summary is the summary's figures (nil: missing) and why each missing one
// is.
type summary struct {
	figures map[string]*float64
	missing map[string]string
	context map[string]any
}

func (s *summary) set(k string, v float64) { s.figures[k] = &v }

func (s *summary) absent(reason string, keys ...string) {
	for _, k := range keys {
		if s.figures[k] == nil {
			s.missing[k] = reason
		}
	}
}

func summarize(dir string) (*summary, error) {
	s := &summary{figures: map[string]*float64{}, missing: map[string]string{}, context: map[string]any{}}
	ledgerKeys := []string{"crypto_verifies_per_s", "verifies_per_event", "crypto_ceiling_events_per_s",
		"ingest_events_per_s", "ingest_ratio", "proof_query_p99_ms", "proof_leaves", "rss_mib",
		"tiered_one_verifier_events_per_s", "verifier_events_per_s", "verifier_ratio", "sequencer_events_per_s"}
	var r Results
	switch err := readJSON(filepath.Join(dir, ledgerFile), &r); {
	case errors.Is(err, fs.ErrNotExist):
		s.absent("the ledger benchmark (go run ./bench) wrote no "+ledgerFile, ledgerKeys...)
	case err != nil:
		return nil, err
	default:
		s.context["time"] = r.Time.Format(time.RFC3339)
		s.context["gomaxprocs"] = r.GoMaxProc
		s.context["events"] = r.Events
		s.context["devices"] = r.Devices
		s.context["cpu_us_per_event"] = r.CPUMicrosPerEvent
		if r.VerifyCPUMicros > 0 {
			s.context["verify_cpu_us"] = r.VerifyCPUMicros
			s.context["cpu_bound_ratio"] = r.CPUBoundRatio
			s.context["foreign_cpu_pct_during_ingest"] = r.ForeignCPUPct
		}
		if r.ECDSAVerifyBefore > 0 && r.ECDSAVerifyAfter > 0 && r.VerifiesPerEvent > 0 {
			s.context["crypto_verifies_per_s_before_ingest"] = r.ECDSAVerifyBefore
			s.context["crypto_verifies_per_s_after_ingest"] = r.ECDSAVerifyAfter
			s.set("crypto_verifies_per_s", r.ECDSAVerifyPerSec)
			s.set("verifies_per_event", float64(r.VerifiesPerEvent))
			s.set("crypto_ceiling_events_per_s", r.CryptoCeiling)
		}
		s.absent(ledgerFile+" has no verification rate measured around its ingest phase (an older bench)",
			"crypto_verifies_per_s", "verifies_per_event", "crypto_ceiling_events_per_s")
		if r.IngestPerSec > 0 {
			s.set("ingest_events_per_s", r.IngestPerSec)
			if c := s.figures["crypto_ceiling_events_per_s"]; c != nil {
				s.set("ingest_ratio", r.IngestPerSec / *c)
			}
		}
		s.absent("no ingest figure in "+ledgerFile, "ingest_events_per_s")
		if t := r.Tiers; t != nil && t.VerifierPerSec > 0 && t.SequencerPerSec > 0 {
			// The verifier pool (tiers.go): each tier's capacity on a
			// machine of these cores, from its CPU per event in this run.
			s.set("tiered_one_verifier_events_per_s", t.OneVerifierPerSec)
			s.set("verifier_events_per_s", t.VerifierPerSec)
			s.set("verifier_ratio", t.VerifierRatio)
			s.set("sequencer_events_per_s", t.SequencerPerSec)
			s.context["tiered_wall_events_per_s_one_machine"] = t.WallPerSec
			s.context["verifier_cpu_us_per_event"] = t.VerifierCPUMicros
			s.context["sequencer_cpu_us_per_event"] = t.SequencerCPUMicros
			s.context["verdicts_used_share"] = t.VerdictsUsed
			s.context["verifier_machines_per_sequencer"] = t.VerifiersToFill
		}
		s.absent("the ledger benchmark ran no tiered phase (--custodyd \"\")", "tiered_one_verifier_events_per_s", "verifier_events_per_s", "verifier_ratio", "sequencer_events_per_s")
		s.absent("no crypto ceiling to compare ingest with", "ingest_ratio")
		if n := len(r.Proofs); n > 0 {
			p := r.Proofs[n-1]
			s.set("proof_query_p99_ms", p.ProvenanceP99ms)
			s.set("proof_leaves", float64(p.Leaves))
			if p.RSSMiB > 0 {
				s.context["rss_mib_at_proof_leaves"] = p.RSSMiB
			}
		}
		s.absent("the ledger benchmark measured no tree (--only-proofs or no proof sizes)", "proof_query_p99_ms", "proof_leaves")
		if r.RSSMiB > 0 {
			s.set("rss_mib", r.RSSMiB)
		}
		s.absent("resident memory was not readable (/proc/self/status)", "rss_mib")
	}

	var t struct {
		Tessera *struct {
			LeavesPerS float64 `json:"leavesPerSecond"`
			Leaves     int     `json:"leaves"`
		} `json:"tessera"`
		Custody *struct {
			LeavesPerS float64 `json:"leavesPerSecond"`
		} `json:"custody"`
	}
	switch err := readJSON(filepath.Join(dir, tesseraFile), &t); {
	case errors.Is(err, fs.ErrNotExist):
		s.absent("bench/tessera wrote no "+tesseraFile, "tessera_entries_per_s")
	case err != nil:
		return nil, err
	default:
		if t.Tessera != nil && t.Tessera.LeavesPerS > 0 {
			s.set("tessera_entries_per_s", t.Tessera.LeavesPerS)
			s.context["tessera_leaves"] = t.Tessera.Leaves
		}
		if t.Custody != nil && t.Custody.LeavesPerS > 0 {
			s.context["custody_log_entries_per_s"] = t.Custody.LeavesPerS
		}
		s.absent(tesseraFile+" has no Tessera figure", "tessera_entries_per_s")
	}

	for _, file := range []string{gateFile, shipmentsFile, batchedFile, clusterFile, clusterBatchedFile} {
		keys, suffix := partFields[file], ""
		if file == clusterBatchedFile {
			keys, suffix = partFields[clusterFile], "_batched"
		}
		named := make([]string, len(keys))
		for i, k := range keys {
			named[i] = k + suffix
		}
		var part map[string]any
		switch err := readJSON(filepath.Join(dir, file), &part); {
		case errors.Is(err, fs.ErrNotExist):
			s.absent("no "+file+" in this run (its benchmark did not run or did not write it)", named...)
			continue
		case err != nil:
			return nil, err
		}
		for i, k := range keys {
			if v, ok := part[k].(float64); ok {
				s.set(named[i], v)
			}
		}
		s.absent(file+" does not have this figure", named...)
	}
	return s, nil
}

// marshalSummary writes the figures in summaryFields' order, then
// "missing" (field → reason) and "context".
func marshalSummary(s *summary) ([]byte, error) {
	b := []byte("{\n")
	add := func(k string, v any) error {
		vb, err := json.MarshalIndent(v, "  ", "  ")
		if err != nil {
			return err
		}
		b = fmt.Appendf(b, "  %q: %s,\n", k, vb)
		return nil
	}
	for _, k := range summaryFields {
		var v any
		if f := s.figures[k]; f != nil {
			v = *f
		}
		if err := add(k, v); err != nil {
			return nil, err
		}
	}
	// Figures a part wrote beyond the known ones are not taken: the summary
	// holds what it documents. (Maps are written in key order.)
	if err := add("missing", s.missing); err != nil {
		return nil, err
	}
	vb, err := json.MarshalIndent(s.context, "  ", "  ")
	if err != nil {
		return nil, err
	}
	b = fmt.Appendf(b, "  %q: %s\n}\n", "context", vb)
	return b, nil
}

func readJSON(name string, v any) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
