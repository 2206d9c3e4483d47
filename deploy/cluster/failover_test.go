// Package cluster_test is the cluster's failover test (make test-cluster):
// the cluster of deploy/cluster/cluster.sh on loopback, sustained ingest
// from three partners' stations, and SIGKILLs of the active sequencer, a
// NATS node and a verifier over several rounds; then every event a
// station got a receipt for must be in the log exactly once, and every
// checkpoint consistent with the final one.
package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/clusterrun"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/trillian"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// Knobs (environment): CUSTODY_CLUSTER_ROUNDS (default 3),
// CUSTODY_CLUSTER_DEVICES per station (default 2).
func knob(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// got is a receipt a station got, and when.
type got struct {
	r  *events.Receipt
	at time.Time
}

func TestClusterFailover(t *testing.T) {
	if os.Getenv("CUSTODY_TEST_CLUSTER") == "" {
		t.Skip("the cluster failover test runs with make test-cluster (CUSTODY_TEST_CLUSTER=1)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin")
	for _, b := range []string{"custody", "custodyd", "custody-agent"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Fatalf("%s: run make build first (make test-cluster does)", err)
		}
	}
	// A short path: MariaDB's socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "custody-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	c, out, err := clusterrun.Up(root, dir, bin, "LEASE=2s")
	t.Cleanup(func() {
		out, _ := c.Sh("down")
		if t.Failed() {
			t.Logf("cluster.sh down:\n%s", out)
			for _, n := range []string{"sequencer-1", "sequencer-2", "verifier-1", "verifier-2", "nats-1"} {
				b, _ := os.ReadFile(filepath.Join(dir, "log", n+".log"))
				if len(b) > 2500 {
					b = b[len(b)-2500:]
				}
				t.Logf("%s:\n%s", n, b)
			}
			t.Logf("the cluster's state and logs are kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Log(out)
	t.Logf("cluster up in %s", time.Since(began).Round(time.Millisecond))
	p := c.PKI
	t.Run("RogueRoute", func(t *testing.T) { rogueRoute(t, c) })
	must := func(args ...string) {
		t.Helper()
		if _, err := c.Sh(args...); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ledgerURLs := c.LedgerURLs()

	// Three partners' stations, each with devices of its own: manufactured
	// by the TPM vendor, two handed to the ODM and the OEM.
	partners := []string{"acme-tpm", "orbit-odm", "nova-oem"}
	stations := map[string]*station.Station{}
	for _, name := range partners {
		s, nc, err := c.Station(name, filepath.Join(dir, "outbox", name))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		stations[name] = s
	}
	perStation := knob("CUSTODY_CLUSTER_DEVICES", 2)
	agents := map[string][]string{} // partner → agent URLs
	for i, name := range partners {
		for j := range perStation {
			cmd, url, err := clusterrun.StartAgent(filepath.Join(bin, "custody-agent"), filepath.Join(dir, "agents"), p.Dir, 7300+i*perStation+j)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Signal(os.Interrupt)
				_ = cmd.Wait()
			})
			if _, err := stations["acme-tpm"].Manufacture(ctx, url); err != nil {
				t.Fatalf("manufacturing: %v", err)
			}
			if name != "acme-tpm" {
				if _, err := stations["acme-tpm"].Offer(ctx, url, name); err != nil {
					t.Fatalf("offer to %s: %v", name, err)
				}
				if _, err := stations[name].Accept(ctx, url); err != nil {
					t.Fatalf("%s accepting: %v", name, err)
				}
			}
			agents[name] = append(agents[name], url)
		}
	}
	t.Logf("%d devices manufactured and handed over", len(partners)*perStation)

	// Sustained ingest: one worker per device records stages until stop.
	var (
		mu       sync.Mutex
		receipts []got
		failures atomic.Int64
		lastErr  atomic.Value
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, name := range partners {
		for k, url := range agents[name] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := 0; ; n++ {
					select {
					case <-stop:
						return
					default:
					}
					res, err := stations[name].RecordStage(ctx, url, events.StageTestPassed, fmt.Sprintf("%s device %d event %d", name, k, n))
					if err != nil {
						failures.Add(1)
						lastErr.Store(err.Error())
						time.Sleep(100 * time.Millisecond)
						continue
					}
					mu.Lock()
					receipts = append(receipts, got{res.Receipt, time.Now()})
					mu.Unlock()
				}
			}()
		}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(receipts)
	}
	receiptsSince := func(t0 time.Time) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, g := range receipts {
			if g.at.After(t0) {
				n++
			}
		}
		return n
	}

	// The lease's holder, from the KV bucket, as the ledger's user.
	lnc, err := c.Connect(node.LedgerUser)
	if err != nil {
		t.Fatal(err)
	}
	defer lnc.Close()
	ljs, err := jetstream.New(lnc)
	if err != nil {
		t.Fatal(err)
	}
	holder := func() string {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		kv, err := ljs.KeyValue(ctx, ledger.LeaseBucket)
		if err != nil {
			return ""
		}
		e, err := kv.Get(ctx, ledger.LeaseKey)
		if err != nil {
			return ""
		}
		return string(e.Value())
	}
	pause := func(lo, hi time.Duration) { time.Sleep(lo + rand.N(hi-lo)) }
	waitProgress := func(what string, since time.Time) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for receiptsSince(since) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no receipt in 60 s after %s (%d failed calls; last: %v)", what, failures.Load(), lastErr.Load())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitProgress("starting the load", began)

	rounds := knob("CUSTODY_CLUSTER_ROUNDS", 3)
	failovers := 0
	var maxTakeover time.Duration
	natsOrder := rand.Perm(3) // each node in turn, the stream's leader among them
	for round := 1; round <= rounds; round++ {
		pause(time.Second, 4*time.Second)
		// The active sequencer.
		lead := holder()
		if lead == "" {
			t.Fatalf("round %d: no sequencer holds the lease", round)
		}
		killed := time.Now()
		must("kill", lead)
		var moved time.Time
		for deadline := killed.Add(60 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if h := holder(); h != "" && h != lead {
				moved = time.Now()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no candidate took the lease over from %s in 60 s", round, lead)
			}
		}
		waitProgress("the sequencer's failover", moved)
		mu.Lock()
		var first time.Time
		for _, g := range receipts {
			if g.at.After(moved) && (first.IsZero() || g.at.Before(first)) {
				first = g.at
			}
		}
		mu.Unlock()
		takeover := first.Sub(killed)
		maxTakeover = max(maxTakeover, takeover)
		failovers++
		t.Logf("round %d: killed sequencer %s; %s took over, first receipt %.2f s after the kill", round, lead, holder(), takeover.Seconds())
		pause(500*time.Millisecond, 2*time.Second)
		must("start", lead)

		// A NATS node.
		pause(time.Second, 3*time.Second)
		nn := fmt.Sprintf("nats-%d", 1+natsOrder[(round-1)%3])
		must("kill", nn)
		killed = time.Now()
		pause(time.Second, 3*time.Second)
		must("start", nn)
		waitProgress("killing "+nn, killed)
		t.Logf("round %d: killed %s and started it again", round, nn)

		// A verifier.
		pause(500*time.Millisecond, 2*time.Second)
		vn := fmt.Sprintf("verifier-%d", 1+rand.IntN(2))
		must("kill", vn)
		killed = time.Now()
		pause(500*time.Millisecond, 2*time.Second)
		must("start", vn)
		waitProgress("killing "+vn, killed)
		t.Logf("round %d: killed %s and started it again (%d receipts so far)", round, vn, count())
	}
	pause(time.Second, 2*time.Second)
	close(stop)
	wg.Wait()

	// Events published and never answered (a publish cut by a kill) are
	// re-sent from the stations' outboxes, as a station does after a
	// restart: then nothing is left unanswered.
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer rcancel()
	unconfirmed := 0
	for _, name := range partners {
		left, err := stations[name].Unconfirmed()
		if err != nil {
			t.Fatal(err)
		}
		unconfirmed += len(left)
		if err := stations[name].Recover(rctx); err != nil {
			t.Fatalf("station %s: recovering %d events: %v", name, len(left), err)
		}
		if left, _ := stations[name].Unconfirmed(); len(left) > 0 {
			t.Fatalf("station %s: %d events still unanswered after recovery", name, len(left))
		}
	}

	// The log, read from the shared store (MariaDB and Trillian) as any
	// sequencer reads it.
	conn, err := trillian.Dial(c.Vars["TRILLIAN"], p.TLSRoots())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	treeID, err := strconv.ParseInt(c.Vars["TREE_ID"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	store, err := trillian.Open(ctx, trillian.Config{DSN: c.Vars["DB"], Conn: conn, TreeID: treeID})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	head, err := store.Head()
	if err != nil {
		t.Fatal(err)
	}
	logged := map[string][]uint64{} // digest → indices
	for i := range head.Size {
		e, err := store.Entry(i)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		logged[e.DigestHex()] = append(logged[e.DigestHex()], i)
	}
	duplicated := 0
	for d, at := range logged {
		if len(at) > 1 {
			duplicated++
			t.Errorf("event %s is logged %d times, at %v", d, len(at), at)
		}
	}
	lost := 0
	sizes := map[uint64][]byte{} // checkpoints the receipts carry
	for _, g := range receipts {
		at, ok := logged[g.r.Digest]
		if !ok || at[0] != g.r.LogIndex {
			lost++
			t.Errorf("event %s: its receipt names entry %d; the log has it at %v", g.r.Digest, g.r.LogIndex, at)
		}
		sizes[g.r.TreeSize] = g.r.RootHash
	}
	// Every checkpoint a station saw is consistent with the final head,
	// by a proof the current sequencer serves; old entries' inclusion
	// proofs, made now, verify against the checkpoints of their receipts.
	final := fetchHead(t, ledgerURLs, p)
	if final.Size < head.Size {
		t.Fatalf("the sequencers' head %d is behind the store's %d", final.Size, head.Size)
	}
	checked := 0
	for _, size := range slices.Sorted(func(yield func(uint64) bool) {
		for s := range sizes {
			if !yield(s) {
				return
			}
		}
	}) {
		hashes := fetchConsistency(t, ledgerURLs, p, size, final.Size)
		if err := ledger.VerifyConsistency(size, final.Size, hashes, sizes[size], final.Root); err != nil {
			t.Errorf("the checkpoint of size %d is not consistent with the final one (%d): %v", size, final.Size, err)
		}
		checked++
	}
	for i, g := range receipts {
		if i%25 != 0 {
			continue
		}
		e, err := store.Entry(g.r.LogIndex)
		if err != nil {
			t.Fatal(err)
		}
		proof, err := ledger.ProveInclusion(store, g.r.LogIndex, g.r.TreeSize)
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.VerifyInclusion(e.Body, g.r.LogIndex, g.r.TreeSize, proof, g.r.RootHash); err != nil {
			t.Errorf("entry %d: a proof made now does not verify against its receipt's checkpoint (size %d): %v", g.r.LogIndex, g.r.TreeSize, err)
		}
	}
	if n, err := store.CheckTrillian(ctx); err != nil {
		t.Errorf("Trillian's tree: %v", err)
	} else {
		t.Logf("Trillian's tree holds %d leaves, equal to Custody's", n)
	}
	t.Logf("%d checkpoints checked consistent with the final head (size %d); %d events re-sent from outboxes; %d station calls failed during the kills (last: %v)",
		checked, final.Size, unconfirmed, failures.Load(), lastErr.Load())
	line := fmt.Sprintf("cluster: %d events, %d lost, %d duplicated, %d failovers, max takeover %.1f s", len(receipts), lost, duplicated, failovers, maxTakeover.Seconds())
	t.Log(line)
	fmt.Println(line)
}

// fetchHead is the current sequencer's checkpoint, verified.
func fetchHead(t *testing.T, urls []string, p *pki.Demo) *ledger.Checkpoint {
	t.Helper()
	hc, err := p.HTTPClient("") // anonymous: proofs are public
	if err != nil {
		t.Fatal(err)
	}
	var best *ledger.Checkpoint
	for _, u := range urls {
		resp, err := hc.Get(u + "/ledger/v1/log/checkpoint")
		if err != nil {
			continue
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		cp, err := ledger.VerifyCheckpoint(b.Bytes(), &p.LogKey.PublicKey)
		if err != nil {
			t.Fatalf("%s's checkpoint: %v", u, err)
		}
		if best == nil || cp.Size > best.Size {
			best = cp
		}
	}
	if best == nil {
		t.Fatal("no sequencer answers")
	}
	return best
}

// fetchConsistency asks the sequencers' read API for a consistency proof.
func fetchConsistency(t *testing.T, urls []string, p *pki.Demo, first, second uint64) [][]byte {
	t.Helper()
	hc, err := p.HTTPClient("") // anonymous: proofs are public
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	for _, u := range urls {
		q := url.Values{"first": {strconv.FormatUint(first, 10)}, "second": {strconv.FormatUint(second, 10)}}
		resp, err := hc.Get(u + "/ledger/v1/log/consistency?" + q.Encode())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var out struct{ Hashes [][]byte }
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			return out.Hashes
		}
		errs = append(errs, fmt.Errorf("%s: %s %v", u, resp.Status, err))
	}
	t.Fatalf("consistency proof %d→%d: %v", first, second, errors.Join(errs...))
	return nil
}

// rogueRoute: a server that holds the deployment's TLS certificate (a
// leaked one) but not the route secret cannot join the cluster: every
// node refuses its routes, so it relays nothing. The same server with the
// secret does join (without JetStream, so that the cluster's JetStream
// peers stay the three): the check can fail.
func rogueRoute(t *testing.T, c *clusterrun.Cluster) {
	secret, err := os.ReadFile(filepath.Join(c.PKI.Dir, "nats", "route.secret"))
	if err != nil {
		t.Fatal(err)
	}
	join := func(password string) int {
		var routes []*url.URL
		for _, r := range strings.Split(c.Vars["ROUTES"], ",") {
			routes = append(routes, &url.URL{Scheme: "tls", User: url.UserPassword(node.RouteUser, password), Host: r})
		}
		ns, err := server.NewServer(&server.Options{
			ServerName: "rogue", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{
				Name: "custody", Host: "127.0.0.1", Port: server.RANDOM_PORT, TLSTimeout: 5,
				TLSConfig: &tls.Config{Certificates: []tls.Certificate{*c.PKI.TLS}, RootCAs: c.PKI.TLSRoots(), ClientCAs: c.PKI.TLSRoots(),
					ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
			},
			Routes: routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		defer ns.Shutdown()
		for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && ns.NumRoutes() < 3; {
			time.Sleep(50 * time.Millisecond)
		}
		return ns.NumRoutes()
	}
	if n := join("not-the-route-secret-0123456789abcdef"); n != 0 {
		t.Fatalf("a server without the route secret holds %d routes to the cluster", n)
	}
	if n := join(strings.TrimSpace(string(secret))); n == 0 {
		t.Fatal("a server with the route secret could not join either: the check proves nothing")
	}
}
