// Command tessera compares Custody's log engine with Tessera v1.0.4's POSIX
// storage on the same disk in the same run: each appends the same 200,000
// pre-verified 1 KiB leaves until all are durable and covered by a
// published, signed checkpoint. It lives in its own module so that Custody
// itself does not depend on Tessera.
//
//	cd bench/tessera && go run . [-n 200000] [-dir DIR] [-out FILE]
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
)

// Result is one engine's figures.
type Result struct {
	Engine      string  `json:"engine"`
	Leaves      int     `json:"leaves"`
	Seconds     float64 `json:"seconds"`
	LeavesPerS  float64 `json:"leavesPerSecond"`
	Checkpoints string  `json:"lastCheckpoint"`
}

func main() {
	n := flag.Int("n", 200000, "leaves")
	size := flag.Int("size", 1024, "leaf size in bytes")
	dir := flag.String("dir", "", "work directory on the disk to measure (default: a temporary directory)")
	out := flag.String("out", "", "write the results as JSON here")
	batch := flag.Int("batch", 4096, "leaves per Custody commit (the ledger's BatchSize is at most 4096)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the Custody run here")
	flag.Parse()
	profile = *cpuprofile
	if *dir == "" {
		d, err := os.MkdirTemp("", "custody-vs-tessera-")
		if err != nil {
			fail(err)
		}
		defer os.RemoveAll(d)
		*dir = d
	}
	leaves := make([][]byte, *n)
	for i := range leaves {
		leaves[i] = make([]byte, *size)
		_, _ = rand.Read(leaves[i])
	}
	ctx := context.Background()
	custody, err := runCustody(ctx, filepath.Join(*dir, "custody"), leaves, *batch)
	if err != nil {
		fail(err)
	}
	tess, err := runTessera(ctx, filepath.Join(*dir, "tessera"), leaves)
	if err != nil {
		fail(err)
	}
	fmt.Printf("\nLog engines, %d leaves of %d B, same disk, same run\n", *n, *size)
	for _, r := range []*Result{custody, tess} {
		fmt.Printf("  %-28s %9.0f leaves/s  (%.2f s)\n", r.Engine, r.LeavesPerS, r.Seconds)
	}
	fmt.Printf("  Custody / Tessera           %9.2f×\n", custody.LeavesPerS/tess.LeavesPerS)
	if *out != "" {
		b, _ := json.MarshalIndent(map[string]any{"custody": custody, "tessera": tess, "ratio": custody.LeavesPerS / tess.LeavesPerS}, "", "  ")
		if err := os.WriteFile(*out, b, 0o644); err != nil {
			fail(err)
		}
	}
}

var profile string

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tessera bench:", err)
	os.Exit(1)
}

// runCustody appends the leaves as log entries through the ledger's Store
// (Pebble, one synced batch per commit, as the ledger commits), with the
// tree nodes and a signed checkpoint in every commit.
func runCustody(ctx context.Context, dir string, leaves [][]byte, batch int) (*Result, error) {
	st, err := pebble.Open(dir)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lk, err := ledger.NewLogKey("bench.custody", key)
	if err != nil {
		return nil, err
	}
	rng := (&compact.RangeFactory{Hash: ledger.Hasher.HashChildren}).NewEmptyRange(0)
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return nil, err
		}
		_ = pprof.StartCPUProfile(f)
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	t0 := time.Now()
	var cp []byte
	for done := 0; done < len(leaves); {
		end := min(done+batch, len(leaves))
		c := &ledger.Commit{Nodes: map[compact.NodeID][]byte{}}
		for i := done; i < end; i++ {
			d := sha256.Sum256(leaves[i])
			c.Entries = append(c.Entries, &ledger.Entry{Index: uint64(i), Digest: d[:], Kind: "bench", Body: leaves[i], IntegratedTime: t0.Unix()})
			if err := rng.Append(ledger.LeafHash(leaves[i]), func(id compact.NodeID, h []byte) { c.Nodes[id] = h }); err != nil {
				return nil, err
			}
		}
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return nil, err
		}
		if cp, err = lk.SignCheckpoint(ctx, uint64(end), root); err != nil {
			return nil, err
		}
		c.Head = ledger.Head{Size: uint64(end), Root: root, Checkpoint: cp}
		if err := st.Commit(c); err != nil {
			return nil, err
		}
		done = end
	}
	secs := time.Since(t0).Seconds()
	return &Result{Engine: "Custody (Pebble, Sync)", Leaves: len(leaves), Seconds: secs, LeavesPerS: float64(len(leaves)) / secs, Checkpoints: string(cp)}, nil
}

// runTessera appends the same leaves to Tessera's POSIX storage with many
// concurrent writers and waits until a published checkpoint covers the
// last one.
func runTessera(ctx context.Context, dir string, leaves [][]byte) (*Result, error) {
	skey, _, err := note.GenerateKey(rand.Reader, "bench.tessera")
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		return nil, err
	}
	appender, shutdown, reader, err := tessera.NewAppender(ctx, driver, tessera.NewAppendOptions().
		WithCheckpointSigner(signer).
		WithCheckpointInterval(time.Second).
		WithBatching(4096, 100*time.Millisecond).
		WithPushback(uint(len(leaves))))
	if err != nil {
		return nil, err
	}
	defer func() { _ = shutdown(ctx) }()
	awaiter := tessera.NewPublicationAwaiter(ctx, reader.ReadCheckpoint, 50*time.Millisecond)
	t0 := time.Now()
	futures := make([]tessera.IndexFuture, len(leaves))
	var wg sync.WaitGroup
	const writers = 64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(leaves); i += writers {
				futures[i] = appender.Add(ctx, tessera.NewEntry(leaves[i]))
			}
		}()
	}
	wg.Wait()
	var last []byte
	for _, f := range futures {
		_, cp, err := awaiter.Await(ctx, f)
		if err != nil {
			return nil, err
		}
		last = cp
	}
	secs := time.Since(t0).Seconds()
	return &Result{Engine: "Tessera v1.0.4 POSIX", Leaves: len(leaves), Seconds: secs, LeavesPerS: float64(len(leaves)) / secs, Checkpoints: string(last)}, nil
}
