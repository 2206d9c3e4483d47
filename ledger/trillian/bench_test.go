package trillian_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tpb "github.com/google/trillian"
	"github.com/google/trillian/types"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/custodyledger/custody/internal/testservers"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/storetest"
)

// commitBatch is the entries of one benchmarked commit: the ledger's
// default batch (Config.BatchSize).
const commitBatch = 256

// BenchmarkTrillianCommit measures the backend's Commit of pre-verified
// entries (storetest.Log: hashedrekord bodies and envelopes of about the
// size of real ones, device states, a rejection per commit), one commit of
// 256 entries per iteration: entries/s committed (durable in MariaDB and
// sent to Trillian), entries/s until Trillian's signer has integrated
// them all and its root is checked, and the bytes on disk per entry of
// Custody's tables and of Trillian's. For the sizing figures run enough
// entries that InnoDB's file growth is small beside them:
//
//	go test ./ledger/trillian -run '^$' -bench TrillianCommit -benchtime 100x
func BenchmarkTrillianCommit(b *testing.B) {
	tr := testservers.StartTrillian(b)
	cfg, db := newConfigDB(b, tr)
	s := open(b, cfg)
	defer s.Close()
	log := storetest.NewLog(b)
	entries := 0
	start := time.Now()
	for b.Loop() {
		b.StopTimer()
		c := log.Build(b, commitBatch)
		b.StartTimer()
		if err := s.Commit(c); err != nil {
			b.Fatal(err)
		}
		log.Committed(c)
		entries += len(c.Entries)
	}
	committed := b.Elapsed()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.WaitTrillian(ctx, log.Head().Size); err != nil {
		b.Fatal(err)
	}
	integrated := time.Since(start)
	b.ReportMetric(float64(entries)/committed.Seconds(), "entries/s")
	b.ReportMetric(float64(entries)/integrated.Seconds(), "integrated-entries/s")
	b.ReportMetric(0, "ns/op")
	custody, err := tr.DB.DatabaseBytes(db)
	if err != nil {
		b.Fatal(err)
	}
	trill, err := tr.DB.DatabaseBytes(tr.Database)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(custody)/float64(entries), "custody-B/entry")
	b.ReportMetric(float64(trill)/float64(entries), "trillian-B/entry")
}

// BenchmarkTrillianQueueLeaf is Trillian's own baseline on the same
// servers: a LOG tree (Trillian orders the leaves) fed with QueueLeaf, one
// leaf per call as Rekor does, 64 calls in flight; leaves/s from the first
// call until the signer has integrated the last leaf.
func BenchmarkTrillianQueueLeaf(b *testing.B) {
	tr := testservers.StartTrillian(b)
	ctx := context.Background()
	tree, err := tpb.NewTrillianAdminClient(tr.Conn).CreateTree(ctx, &tpb.CreateTreeRequest{Tree: &tpb.Tree{
		TreeState: tpb.TreeState_ACTIVE, TreeType: tpb.TreeType_LOG, DisplayName: "queueleaf-bench", MaxRootDuration: durationpb.New(0),
	}})
	if err != nil {
		b.Fatal(err)
	}
	client := tpb.NewTrillianLogClient(tr.Conn)
	if _, err := client.InitLog(ctx, &tpb.InitLogRequest{LogId: tree.TreeId}); err != nil {
		b.Fatal(err)
	}
	cert := make([]byte, 420) // a partner certificate's size
	var n atomic.Uint64
	leaf := func() []byte {
		d := sha256.Sum256(binary.BigEndian.AppendUint64(nil, n.Add(1)))
		body, err := ledger.HashedRekordBody(d[:], append(d[:], d[:]...), cert)
		if err != nil {
			b.Fatal(err)
		}
		return body
	}
	const inFlight = 64
	start := time.Now()
	for b.Loop() { // one iteration: commitBatch leaves
		var wg sync.WaitGroup
		var failed atomic.Value
		next := atomic.Int64{}
		for range inFlight {
			wg.Go(func() {
				for next.Add(1) <= commitBatch {
					_, err := client.QueueLeaf(ctx, &tpb.QueueLeafRequest{LogId: tree.TreeId, Leaf: &tpb.LogLeaf{LeafValue: leaf()}})
					if err != nil {
						failed.Store(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err, ok := failed.Load().(error); ok {
			b.Fatal(err)
		}
	}
	total := n.Load()
	queued := b.Elapsed()
	for {
		resp, err := client.GetLatestSignedLogRoot(ctx, &tpb.GetLatestSignedLogRootRequest{LogId: tree.TreeId})
		if err != nil {
			b.Fatal(err)
		}
		size, err := logRootSize(resp.GetSignedLogRoot().GetLogRoot())
		if err != nil {
			b.Fatal(err)
		}
		if size >= total {
			break
		}
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("the signer integrated %d of %d leaves in 5 minutes", size, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	integrated := time.Since(start)
	b.ReportMetric(float64(total)/queued.Seconds(), "queued-leaves/s")
	b.ReportMetric(float64(total)/integrated.Seconds(), "leaves/s")
	b.ReportMetric(0, "ns/op")
}

// logRootSize is the tree size of a Trillian log root.
func logRootSize(b []byte) (uint64, error) {
	var lr types.LogRootV1
	if err := lr.UnmarshalBinary(b); err != nil {
		return 0, err
	}
	return lr.TreeSize, nil
}
