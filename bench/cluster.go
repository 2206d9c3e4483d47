package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/types"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/clusterrun"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/trillian"
	"github.com/custodyledger/custody/services/device"
)

// The cluster benchmark (make bench-cluster): the same quoted events
// through the single-process node (the baseline) and through the cluster
// of deploy/cluster/cluster.sh (3 NATS nodes, MariaDB and Trillian, two
// sequencer candidates, two verifiers), all on this machine, in one run.
// Every process's CPU per event is read from /proc, so that each tier's
// capacity on a machine of its own (these cores over its CPU per event) is
// a measurement: the sequencer's with events the verifiers checked, a
// verifier process's, a NATS node's and the database tier's. Trillian's
// own QueueLeaf rate on the same MariaDB is the baseline of the log tier.

// ClusterResult is cluster.json.
type ClusterResult struct {
	Devices int `json:"devices"`
	Events  int `json:"events"`
	Cores   int `json:"cores"`
	// Batch is the members of each station batch (a pallet: one envelope,
	// one signature, one leaf); 0 for one envelope per event. Events are
	// counted as members.
	Batch int `json:"batch"`
	// SingleProcessPerSec is the node's verified ingest (wall), the
	// baseline: broker, ledger and checks in one process on every core.
	SingleProcessPerSec float64 `json:"cluster_single_process_events_per_s"`
	// ClusterWallPerSec is the cluster's ingest with all its processes on
	// this machine's cores.
	ClusterWallPerSec float64 `json:"cluster_wall_events_per_s"`
	// CPU per event, by tier (µs): the sequencers (both candidates; the
	// standby only reads), the verifiers (both), the NATS nodes (all
	// three: each holds a replica), the database tier (mariadbd and
	// Trillian's log server and signer).
	SequencerCPUMicros float64 `json:"cluster_sequencer_cpu_us_per_event"`
	VerifierCPUMicros  float64 `json:"cluster_verifier_cpu_us_per_event"`
	NATSCPUMicros      float64 `json:"cluster_nats_cpu_us_per_event"`
	DBCPUMicros        float64 `json:"cluster_db_cpu_us_per_event"`
	// Capacities on a machine of these cores each.
	SequencerPerSec   float64 `json:"cluster_sequencer_events_per_s"`
	SequencerRatio    float64 `json:"cluster_sequencer_to_single_process_ratio"`
	VerifierPerSec    float64 `json:"cluster_verifier_events_per_s_per_process"`
	NATSNodePerSec    float64 `json:"cluster_nats_node_events_per_s"`
	DBPerSec          float64 `json:"cluster_db_events_per_s"`
	QueueLeafPerSec   float64 `json:"trillian_queueleaf_per_s"`
	QueueLeafLeaves   int     `json:"trillian_queueleaf_leaves"`
	VerifiersToFill   float64 `json:"cluster_verifier_processes_per_sequencer"`
	GenerateSeconds   float64 `json:"generateSeconds"`
	SequencerProfiles string  `json:"sequencerProfiles,omitempty"`
}

// clusterOnly is `bench --only-cluster DEVICES`: perDevice quoted events
// per device through each of the node and the cluster, one envelope each,
// or with batch > 0 in station batches of one event of each of batch
// devices; writes cluster.json (cluster-batched.json) in out. bin holds
// custody, custodyd and custody-agent.
func clusterOnly(devices, perDevice, batch int, bin, out string, profile bool) error {
	if batch > 0 {
		devices = batch
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "custody-bcl-")
	if err != nil {
		return err
	}
	if os.Getenv("CUSTODY_BENCH_KEEP") == "" {
		defer os.RemoveAll(dir)
	} else {
		logf("keeping %s", dir)
	}
	res := &ClusterResult{Devices: devices, Events: devices * perDevice, Cores: runtime.GOMAXPROCS(0), Batch: batch}

	// The baseline node; its PKI is the cluster's too.
	n, stopNode, err := startBenchNode(ctx, filepath.Join(dir, "node"))
	if err != nil {
		return err
	}
	defer func() {
		if stopNode != nil {
			stopNode()
		}
	}()
	vendor, vtr, err := captureStation(n, "acme-tpm")
	if err != nil {
		return err
	}
	key := n.PKI.Partners["acme-tpm"].Key
	t0 := time.Now()
	var mfg, single, clustered []benchMsg
	quoted := make([][]*events.Statement, devices)
	for d := range devices {
		if err := powered(700000+d, filepath.Join(dir, "devices", fmt.Sprint(d)), func(url string) error {
			r, err := vendor.Manufacture(ctx, url)
			if err != nil {
				return fmt.Errorf("manufacture: %w", err)
			}
			mfg = append(mfg, benchMsg{events.EventSubject("acme-tpm", r.Device), vtr.take(), r.Receipt.Digest})
			dc := device.NewClient(url, http.DefaultClient)
			for j := range 2 * perDevice {
				st, err := quotedStage(ctx, dc, r.Device, j)
				if err != nil {
					return err
				}
				if batch > 0 {
					quoted[d] = append(quoted[d], st)
					continue
				}
				s, err := events.SignStatement(ctx, st, key, "acme-tpm")
				if err != nil {
					return err
				}
				m := benchMsg{events.EventSubject("acme-tpm", r.Device), s.Raw, s.DigestHex()}
				if j < perDevice {
					single = append(single, m)
				} else {
					clustered = append(clustered, m)
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("device %d: %w", d, err)
		}
	}
	// Station batches: the j-th event of every device in one envelope.
	for j := range 2 * perDevice {
		if batch == 0 {
			break
		}
		members := make([]*events.Statement, devices)
		for d := range devices {
			members[d] = quoted[d][j]
		}
		b, err := events.SignBatch(ctx, fmt.Sprintf("bench-%d", j), members, key, "acme-tpm")
		if err != nil {
			return err
		}
		m := benchMsg{events.EventSubject("acme-tpm", b.Statement.Target()), b.Parcel, b.DigestHex()}
		if j < perDevice {
			single = append(single, m)
		} else {
			clustered = append(clustered, m)
		}
	}
	res.GenerateSeconds = time.Since(t0).Seconds()
	logf("cluster bench: %d devices, %d quoted events for each of the node and the cluster, generated in %.1fs", devices, len(single), res.GenerateSeconds)

	// Baseline: the single-process node's verified ingest of its half.
	pnc, err := n.Connect("acme-tpm")
	if err != nil {
		return err
	}
	pjs, err := jetstream.New(pnc)
	if err != nil {
		return err
	}
	if _, _, err := ingestPhase(ctx, n, pjs, mfg, uint64(len(mfg)), ""); err != nil {
		return fmt.Errorf("baseline births: %w", err)
	}
	wall, _, err := ingestPhase(ctx, n, pjs, single, uint64(len(single)), "")
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	res.SingleProcessPerSec = float64(res.Events) / wall.Seconds()
	logf("single-process verified ingest: %.0f events/s", res.SingleProcessPerSec)
	pnc.Close()
	pkiDir := n.PKI.Dir
	stopNode()
	stopNode = nil

	// The cluster, on the same PKI.
	cdir := filepath.Join(dir, "cluster")
	if err := os.CopyFS(filepath.Join(cdir, "pki"), os.DirFS(pkiDir)); err != nil {
		return err
	}
	// The sequencer waits for the verifiers' verdicts rather than check an
	// event itself: its CPU is that of sequencing pre-verified events.
	env := []string{"VERDICT_WAIT=10s", "SEQUENCER_ARGS=" + os.Getenv("CUSTODY_BENCH_SEQUENCER_ARGS")}
	if profile {
		env = append(env, "CPUPROFILE=1")
	}
	c, upOut, err := clusterrun.Up(root, cdir, bin, env...)
	defer func() {
		if c != nil {
			_, _ = c.Sh("down")
		}
	}()
	if err != nil {
		return fmt.Errorf("%w\n%s", err, upOut)
	}
	cnc, err := c.Connect("acme-tpm")
	if err != nil {
		return err
	}
	defer cnc.Close()
	cjs, err := jetstream.New(cnc)
	if err != nil {
		return err
	}
	// One kept-alive connection to each sequencer, asked every 100ms: the
	// polling costs the sequencers next to nothing.
	hc, err := c.PKI.HTTPClient("")
	if err != nil {
		return err
	}
	head := func() uint64 {
		var best uint64
		for _, u := range c.LedgerURLs() {
			if cp, err := fetchCheckpoint(hc, c, u); err == nil && cp.Size > best {
				best = cp.Size
			}
		}
		return best
	}
	publish := func(msgs []benchMsg) (time.Duration, error) {
		want := head() + uint64(len(msgs))
		t0 := time.Now()
		for _, m := range msgs {
			if _, err := cjs.PublishAsync(m.subject, m.data, jetstream.WithMsgID(m.id), stallWait); err != nil {
				return 0, err
			}
		}
		if err := waitAsync(ctx, cjs); err != nil {
			return 0, err
		}
		for deadline := time.Now().Add(15 * time.Minute); head() < want; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("the cluster's ingest stalled at %d of %d entries", head(), want)
			}
		}
		return time.Since(t0), nil
	}
	if _, err := publish(mfg); err != nil {
		return fmt.Errorf("cluster births: %w", err)
	}
	// The verifiers idle for a moment: the ledger hears from them, and
	// waits for their verdicts on the burst that follows.
	time.Sleep(3 * time.Second)
	tiers := map[string][]string{
		"sequencer": {"sequencer-1", "sequencer-2"},
		"verifier":  {"verifier-1", "verifier-2"},
		"nats":      {"nats-1", "nats-2", "nats-3"},
		"db":        {"mariadb", "trillian-server", "trillian-signer"},
	}
	cpu := func() map[string]time.Duration {
		m := map[string]time.Duration{}
		for tier, names := range tiers {
			for _, name := range names {
				m[tier] += procCPU(c.Pid(name))
			}
		}
		return m
	}
	before := cpu()
	wall, err = publish(clustered)
	if err != nil {
		return err
	}
	after := cpu()
	k := float64(res.Events)
	per := func(tier string) float64 { return float64((after[tier] - before[tier]).Microseconds()) / k }
	cores := float64(res.Cores)
	res.ClusterWallPerSec = k / wall.Seconds()
	res.SequencerCPUMicros, res.VerifierCPUMicros, res.NATSCPUMicros, res.DBCPUMicros = per("sequencer"), per("verifier"), per("nats"), per("db")
	res.SequencerPerSec = cores * 1e6 / res.SequencerCPUMicros
	res.SequencerRatio = res.SequencerPerSec / res.SingleProcessPerSec
	res.VerifierPerSec = cores * 1e6 / res.VerifierCPUMicros
	res.NATSNodePerSec = cores * 1e6 / (res.NATSCPUMicros / 3)
	res.DBPerSec = cores * 1e6 / res.DBCPUMicros
	res.VerifiersToFill = res.SequencerPerSec / res.VerifierPerSec
	logf("cluster: %.0f events/s on this machine; CPU µs/event: sequencer %.0f, verifiers %.0f, NATS %.0f (3 nodes), database %.0f",
		res.ClusterWallPerSec, res.SequencerCPUMicros, res.VerifierCPUMicros, res.NATSCPUMicros, res.DBCPUMicros)
	logf("capacity on a %d-core machine each: sequencer %.0f events/s (%.2f× the single process), verifier %.0f, NATS node %.0f, database %.0f",
		res.Cores, res.SequencerPerSec, res.SequencerRatio, res.VerifierPerSec, res.NATSNodePerSec, res.DBPerSec)

	// Trillian's own write path on the same MariaDB: QueueLeaf into a
	// LOG tree, until its signer has integrated every leaf.
	res.QueueLeafLeaves = min(res.Events, 4000)
	if res.QueueLeafPerSec, err = queueLeafRate(ctx, c, res.QueueLeafLeaves); err != nil {
		return fmt.Errorf("QueueLeaf baseline: %w", err)
	}
	logf("Trillian QueueLeaf: %.0f leaves/s integrated", res.QueueLeafPerSec)
	if profile {
		if _, err := c.Sh("down"); err != nil {
			return err
		}
		c = nil
		dst := filepath.Join(out, "cluster-profiles", fmt.Sprintf("batch-%d", batch))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		for _, n := range []string{"sequencer-1", "sequencer-2"} {
			if b, err := os.ReadFile(filepath.Join(cdir, "log", n+".pprof")); err == nil {
				_ = os.WriteFile(filepath.Join(dst, n+".pprof"), b, 0o644)
			}
			b, _ := os.ReadFile(filepath.Join(cdir, "log", n+".log"))
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, "sequencer stopped") {
					logf("%s: %s", n, line)
				}
			}
		}
		res.SequencerProfiles = dst
	}
	name := clusterFile
	if batch > 0 {
		name = clusterBatchedFile
	}
	return writeResult(filepath.Join(out, name), res)
}

// fetchCheckpoint is a sequencer's checkpoint, verified with the log key.
func fetchCheckpoint(hc *http.Client, c *clusterrun.Cluster, base string) (*ledger.Checkpoint, error) {
	resp, err := hc.Get(base + "/ledger/v1/log/checkpoint")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return nil, err
	}
	return ledger.VerifyCheckpoint(b, &c.PKI.LogKey.PublicKey)
}

// queueLeafRate queues n leaves of about an entry's size into a new LOG
// tree on the cluster's Trillian, 64 at a time, and returns leaves/s until
// the signer's root holds them all.
func queueLeafRate(ctx context.Context, c *clusterrun.Cluster, n int) (float64, error) {
	conn, err := trillian.Dial(c.Vars["TRILLIAN"], c.PKI.TLSRoots())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	tree, err := tpb.NewTrillianAdminClient(conn).CreateTree(ctx, &tpb.CreateTreeRequest{Tree: &tpb.Tree{
		TreeState: tpb.TreeState_ACTIVE, TreeType: tpb.TreeType_LOG, DisplayName: "bench-queueleaf", MaxRootDuration: durationpb.New(0),
	}})
	if err != nil {
		return 0, err
	}
	log := tpb.NewTrillianLogClient(conn)
	if _, err := log.InitLog(ctx, &tpb.InitLogRequest{LogId: tree.TreeId}); err != nil {
		return 0, err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	t0 := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				v := make([]byte, 1200) // about a hashedrekord entry with its certificate
				_, _ = rand.Read(v)
				if _, err := log.QueueLeaf(ctx, &tpb.QueueLeafRequest{LogId: tree.TreeId, Leaf: &tpb.LogLeaf{LeafValue: v}}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		r, err := log.GetLatestSignedLogRoot(ctx, &tpb.GetLatestSignedLogRootRequest{LogId: tree.TreeId})
		if err == nil && r.SignedLogRoot != nil {
			var root types.LogRootV1
			if root.UnmarshalBinary(r.SignedLogRoot.LogRoot) == nil && root.TreeSize >= uint64(n) {
				break
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("Trillian integrated fewer than %d leaves in 10 minutes", n)
		}
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}
