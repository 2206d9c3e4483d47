package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func writeJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The summary takes each figure from its part, and names the reason for
// every figure it does not have, as null.
func TestSummary(t *testing.T) {
	dir := t.TempDir()
	writeJSON(t, filepath.Join(dir, ledgerFile), &Results{
		ECDSAVerifyBefore: 30000, ECDSAVerifyAfter: 20000, ECDSAVerifyPerSec: 25000, VerifiesPerEvent: 2, CryptoCeiling: 12500,
		IngestPerSec: 10000, RSSMiB: 300, Proofs: []ProofCost{{Leaves: 10_000, ProvenanceP99ms: 1}, {Leaves: 1_000_000, ProvenanceP99ms: 3}},
		Tiers: &TierResult{VerifierPerSec: 10500, SequencerPerSec: 21000, OneVerifierPerSec: 10500, VerifierRatio: 0.84},
	})
	writeJSON(t, filepath.Join(dir, tesseraFile), map[string]any{"tessera": map[string]any{"leavesPerSecond": 19000.0, "leaves": 20000}, "custody": map[string]any{"leavesPerSecond": 21000.0}})
	writeJSON(t, filepath.Join(dir, gateFile), map[string]any{"gate_decisions_per_s": 700.0, "gate_ratio": 0.5, "other": 1})
	writeJSON(t, filepath.Join(dir, batchedFile), &BatchedResult{Batch: 64, BatchedEventsPerS: 12000, VerifiesPerEvent: 1.015625, BatchedCeiling: 34000, BatchedRatio: 0.35})
	writeJSON(t, filepath.Join(dir, clusterFile), &ClusterResult{SingleProcessPerSec: 9000, SequencerPerSec: 30000, SequencerRatio: 3.33, VerifierPerSec: 11000,
		NATSNodePerSec: 50000, DBPerSec: 20000, QueueLeafPerSec: 3000, ClusterWallPerSec: 2500})
	writeJSON(t, filepath.Join(dir, clusterBatchedFile), &ClusterResult{Batch: 64, SingleProcessPerSec: 7000, SequencerPerSec: 40000, SequencerRatio: 5.7, VerifierPerSec: 15000,
		NATSNodePerSec: 90000, DBPerSec: 30000, QueueLeafPerSec: 3100, ClusterWallPerSec: 5000})
	s, err := summarize(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := marshalSummary(s)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	want := map[string]any{
		"crypto_verifies_per_s": 25000.0, "verifies_per_event": 2.0, "crypto_ceiling_events_per_s": 12500.0,
		"ingest_events_per_s": 10000.0, "ingest_ratio": 0.8, "proof_query_p99_ms": 3.0, "proof_leaves": 1e6, "rss_mib": 300.0,
		"tessera_entries_per_s": 19000.0, "gate_decisions_per_s": 700.0, "gate_ratio": 0.5,
		"gate_ceiling_per_s": nil, "device_transitions_per_s": nil,
		"ingest_batched_events_per_s": 12000.0, "verifies_per_batched_event": 1.015625, "batched_ceiling_events_per_s": 34000.0,
		"ingest_batched_ratio": 0.35, "batch_events": 64.0,
		"tiered_one_verifier_events_per_s": 10500.0, "verifier_events_per_s": 10500.0, "verifier_ratio": 0.84, "sequencer_events_per_s": 21000.0,
		"cluster_single_process_events_per_s": 9000.0, "cluster_sequencer_events_per_s": 30000.0, "cluster_sequencer_to_single_process_ratio": 3.33,
		"cluster_verifier_events_per_s_per_process": 11000.0, "cluster_nats_node_events_per_s": 50000.0, "cluster_db_events_per_s": 20000.0,
		"trillian_queueleaf_per_s": 3000.0, "cluster_wall_events_per_s": 2500.0,
		"cluster_single_process_events_per_s_batched": 7000.0, "cluster_sequencer_events_per_s_batched": 40000.0, "cluster_sequencer_to_single_process_ratio_batched": 5.7,
		"cluster_verifier_events_per_s_per_process_batched": 15000.0, "cluster_nats_node_events_per_s_batched": 90000.0, "cluster_db_events_per_s_batched": 30000.0,
		"trillian_queueleaf_per_s_batched": 3100.0, "cluster_wall_events_per_s_batched": 5000.0,
	}
	for _, k := range summaryFields {
		if got[k] != want[k] {
			t.Errorf("%s = %v, want %v", k, got[k], want[k])
		}
	}
	if _, ok := got["other"]; ok {
		t.Error("a figure the summary does not document was taken")
	}
	missing := got["missing"].(map[string]any)
	for _, k := range []string{"gate_ceiling_per_s", "device_transitions_per_s"} {
		if r, _ := missing[k].(string); r == "" {
			t.Errorf("%s is null without a reason", k)
		}
	}
	if len(missing) != 2 {
		t.Errorf("missing = %v, want two", missing)
	}

	// Nothing measured: every figure null, each with its reason.
	s, err = summarize(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range summaryFields {
		if s.figures[k] != nil || s.missing[k] == "" {
			t.Errorf("empty run: %s = %v, reason %q", k, s.figures[k], s.missing[k])
		}
	}
}
