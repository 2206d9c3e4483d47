package node_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	lpebble "github.com/custodyledger/custody/ledger/pebble"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// crashNodeEnv makes the test binary a custody node (the whole of custodyd:
// NATS, ledger, stations, gate) on the data directory it names, for the
// crash test to kill.
const crashNodeEnv = "CUSTODY_CRASH_NODE"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashNodeEnv); dir != "" {
		os.Exit(runCrashNode(dir))
	}
	if dir := os.Getenv(crashAgentEnv); dir != "" {
		os.Exit(runCrashAgent(dir))
	}
	os.Exit(m.Run())
}

func runCrashNode(dir string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := node.New(ctx, node.Config{
		DataDir: dir, HTTPAddr: os.Getenv("CUSTODY_CRASH_HTTP"),
		NATSAddr: os.Getenv("CUSTODY_CRASH_NATS"), DPSAddr: "127.0.0.1:0",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash node:", err)
		return 1
	}
	if err := n.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "crash node:", err)
		return 1
	}
	return 0
}

// crashAgentEnv makes the test binary a device: a simulated TPM (one per
// process, as the simulator is a process-wide singleton) behind the device
// API, on the state directory it names. It writes its address to
// <dir>/addr and serves until killed.
const crashAgentEnv = "CUSTODY_CRASH_AGENT"

func runCrashAgent(dir string) int {
	seed, _ := strconv.Atoi(os.Getenv("CUSTODY_CRASH_SEED"))
	tp, err := tpm.Open(fmt.Sprintf("sim:seed=%d", seed))
	if err == nil {
		var d *device.Device
		if d, err = device.New(device.Config{TPM: tp, StateDir: dir}); err == nil {
			var ln net.Listener
			if ln, err = net.Listen("tcp", "127.0.0.1:0"); err == nil {
				if err = os.WriteFile(filepath.Join(dir, "addr"), []byte(ln.Addr().String()), 0o600); err == nil {
					err = http.Serve(ln, d.Handler())
				}
			}
		}
	}
	fmt.Fprintln(os.Stderr, "crash agent:", err)
	return 1
}

// startCrashAgent starts a device process and returns its API's URL.
func startCrashAgent(t *testing.T, seed int) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashAgentEnv+"="+dir, "CUSTODY_CRASH_SEED="+strconv.Itoa(seed))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(filepath.Join(dir, "addr")); err == nil && len(b) > 0 {
			return "http://" + string(b)
		}
	}
	t.Fatal("device process did not start")
	return ""
}

// crashNode is a custody node in a child process that the test kills with
// SIGKILL and restarts on the same data directory and ports.
type crashNode struct {
	t               *testing.T
	dir             string
	httpAddr, nAddr string
	cmd             *exec.Cmd
	log             *bytes.Buffer
	kills           int
	exited          chan struct{}
	hc              *http.Client // anonymous, trusting the node's TLS CA (once its PKI exists)
}

// client is an anonymous client of the node's API, or nil before the node
// has written its PKI.
func (c *crashNode) client() *http.Client {
	if c.hc == nil {
		if d, err := pki.LoadDemo(filepath.Join(c.dir, "pki")); err == nil {
			c.hc, _ = d.HTTPClient("")
		}
	}
	return c.hc
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (c *crashNode) start() {
	c.t.Helper()
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(os.Environ(), crashNodeEnv+"="+c.dir, "CUSTODY_CRASH_HTTP="+c.httpAddr, "CUSTODY_CRASH_NATS="+c.nAddr)
	c.log = new(bytes.Buffer)
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	exited := make(chan struct{})
	go func(cmd *exec.Cmd) { _ = cmd.Wait(); close(exited) }(c.cmd)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			c.t.Fatalf("node exited during start: %s", c.log)
		default:
		}
		if hc := c.client(); hc == nil {
			// no PKI yet
		} else if resp, err := hc.Get(c.url() + "/ledger/v1/log/checkpoint"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				c.exited = exited
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("node not ready after 2 minutes: %s", c.log)
}

func (c *crashNode) url() string { return "https://" + c.httpAddr }

// kill ends the node with SIGKILL: no deferred close, no flush, no
// goodbye to NATS clients.
func (c *crashNode) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
	c.kills++
}

// stop ends the node gracefully and expects a clean exit.
func (c *crashNode) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(time.Minute):
		c.t.Fatalf("node did not stop: %s", c.log)
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		c.t.Fatalf("node exit code %d: %s", code, c.log)
	}
}

// checkpoint is the node's latest checkpoint note, or nil if it does not
// answer.
func (c *crashNode) checkpoint() []byte {
	hc := c.client()
	if hc == nil {
		return nil
	}
	resp, err := hc.Get(c.url() + "/ledger/v1/log/checkpoint")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil
	}
	return b
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestCrashExactlyOnce kills the node (NATS, ledger and all) with SIGKILL
// at random moments while a partner publishes quoted events through its
// outbox, restarting it each time on the same data. At the end, every event
// that got a receipt is in the log exactly once at the receipt's index, no
// event is in the log twice, the tree's nodes hash up from its leaves to
// the final root, and every checkpoint ever seen, before any kill or in a
// receipt, is consistent with the final one.
//
// CUSTODY_CRASH_EVENTS and CUSTODY_CRASH_KILLS size the run (default 1,600
// events and 20 kills: the trust boundary's adversary suite,
// docs/design/threat-model.md).
func TestCrashExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a node several times")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const devices = 8
	total, kills := envInt("CUSTODY_CRASH_EVENTS", 1600), envInt("CUSTODY_CRASH_KILLS", 20)

	dataDir := t.TempDir()
	c := &crashNode{t: t, dir: dataDir, httpAddr: freeAddr(t), nAddr: freeAddr(t)}
	c.start()
	defer func() {
		if c.cmd.ProcessState == nil {
			c.kill()
		}
	}()
	demo, err := pki.LoadDemo(filepath.Join(dataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	logKey := &demo.LogKey.PublicKey
	const partner = "acme-tpm"
	p := demo.Partners[partner]
	kp, err := demo.NKey(partner)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(node.UserOptions(partner, kp), node.NATSTLS(demo), nats.RetryOnFailedConnect(true), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	nc, err := nats.Connect("nats://"+c.nAddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// Setup, before any kill: devices made by the TPM vendor's station
	// over the network, like an external partner's.
	rv, err := ledger.NewReceiptVerifier(logKey, p.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	st, err := station.New(station.Config{
		Name: partner, Role: p.Role, Key: p.Key, NATS: nc, ReceiptVerifier: rv,
		Ledger: station.NewLedgerClient(c.url()+"/ledger", must(demo.HTTPClient(partner))), ManufacturingCA: demo.VendorMfgCA,
		TPMInfo:   attest.TPMInfo{Manufacturer: "id:41434D45", Model: "ACME-TPM20", Version: "id:00010002"},
		OutboxDir: filepath.Join(t.TempDir(), "station-outbox"),
	})
	if err != nil {
		t.Fatal(err)
	}
	type dev struct {
		id     string
		client *device.Client
	}
	devs := make([]dev, devices)
	for i := range devs {
		url := startCrashAgent(t, 9100+i)
		r, err := st.Manufacture(ctx, url)
		if err != nil {
			t.Fatalf("manufacture device %d: %v", i, err)
		}
		devs[i] = dev{r.Device, device.NewClient(url, nil)}
	}

	// Every event, quoted by its device and signed, before the kills start.
	per := total / devices
	envs := make([][][]byte, devices)
	var wg sync.WaitGroup
	errs := make(chan error, devices)
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				s := events.NewStatement(events.KindStageRecorded, partner, d.id, time.Now(), events.NewEventID())
				s.Predicate.Stage = &events.Stage{Name: events.StageTestPassed, Note: fmt.Sprintf("crash test %d", j)}
				nonce, err := events.StatementBindingDigest(s)
				if err != nil {
					errs <- err
					return
				}
				q, err := d.client.Quote(ctx, nonce, []int{0})
				if err != nil {
					errs <- err
					return
				}
				s.Predicate.Evidence = events.NewEvidence(q)
				env, err := events.Sign(ctx, s, p.Key, partner)
				if err != nil {
					errs <- err
					return
				}
				envs[i] = append(envs[i], env)
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	before := c.checkpoint()

	// Publish, one worker per device (a device's events in order), through
	// an outbox, until each has a receipt; kill the node meanwhile.
	ob, err := events.OpenOutbox(filepath.Join(t.TempDir(), "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(nc, partner, rv)
	if err != nil {
		t.Fatal(err)
	}
	pub.WithOutbox(ob)
	var (
		mu       sync.Mutex
		receipts = map[string]*events.Receipt{}
		retries  int
		seen     = [][]byte{before} // checkpoints to check against the final one
	)
	done := make(chan struct{})
	var workers sync.WaitGroup
	for i := range devs {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for _, env := range envs[i] {
				for {
					pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
					r, err := pub.Publish(pctx, env)
					pcancel()
					if err == nil {
						mu.Lock()
						if old := receipts[r.Digest]; old != nil && old.LogIndex != r.LogIndex {
							t.Errorf("event %s answered with two entries: #%d and #%d", r.Digest, old.LogIndex, r.LogIndex)
						}
						receipts[r.Digest] = r
						seen = append(seen, []byte(r.Checkpoint))
						mu.Unlock()
						if r.Status != events.StatusAccepted {
							t.Errorf("event %s: %s %s: %s", r.Digest, r.Status, r.Code, r.Reason)
						}
						break
					}
					if ctx.Err() != nil {
						t.Errorf("publishing: %v", err)
						return
					}
					mu.Lock()
					retries++
					mu.Unlock()
					time.Sleep(25 * time.Millisecond)
				}
			}
		}()
	}
	go func() { workers.Wait(); close(done) }()

	// Each kill comes while the ledger is ingesting: after a random number
	// of new receipts since the last start, plus a random few milliseconds.
	answered := func() int { mu.Lock(); defer mu.Unlock(); return len(receipts) }
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for range kills {
		want := answered() + 1 + rng.IntN(per*devices/(2*kills))
		progress := time.Now()
		for answered() < want && time.Since(progress) < time.Minute {
			select {
			case <-done:
			case <-time.After(time.Millisecond):
				continue
			}
			break
		}
		if answered() < want {
			break // all answered, or no progress: checked below
		}
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		if cp := c.checkpoint(); cp != nil {
			mu.Lock()
			seen = append(seen, cp)
			mu.Unlock()
		}
		got := answered()
		c.kill()
		t.Logf("kill %d: %d of %d events answered", c.kills, got, per*devices)
		c.start()
	}
	<-done
	if t.Failed() {
		return
	}
	if c.kills != kills {
		t.Fatalf("only %d of %d kills came while events were being answered", c.kills, kills)
	}
	if left, _ := ob.Digests(); len(left) != 0 {
		t.Fatalf("%d events still in the outbox after their receipts", len(left))
	}
	final := c.checkpoint()
	c.stop()
	t.Logf("%d kills, %d publish retries, %d events answered", c.kills, retries, len(receipts))

	// The log, read from disk.
	store, err := lpebble.Open(filepath.Join(dataDir, "ledger"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	head, err := store.Head()
	if err != nil {
		t.Fatal(err)
	}
	fcp, err := ledger.VerifyCheckpoint(final, logKey)
	if err != nil {
		t.Fatal(err)
	}
	if fcp.Size != head.Size || !bytes.Equal(fcp.Root, head.Root) {
		t.Fatalf("final checkpoint (%d, %x) is not the store's head (%d, %x)", fcp.Size, fcp.Root, head.Size, head.Root)
	}
	// Every leaf once; the tree recomputed from the leaves is the head.
	at := map[string]uint64{}
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	cr := rf.NewEmptyRange(0)
	for i := range head.Size {
		e, err := store.Entry(i)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if j, dup := at[e.DigestHex()]; dup {
			t.Errorf("event %s logged twice: #%d and #%d", e.DigestHex(), j, i)
		}
		at[e.DigestHex()] = i
		if err := cr.Append(ledger.LeafHash(e.Body), nil); err != nil {
			t.Fatal(err)
		}
	}
	root, err := cr.GetRootHash(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(root, head.Root) {
		t.Fatalf("leaves hash to %x, the head says %x", root, head.Root)
	}
	// Every receipt: its event, once, at its index, with a valid proof.
	if len(receipts) != per*devices {
		t.Fatalf("%d receipts for %d events", len(receipts), per*devices)
	}
	for d, r := range receipts {
		if i, ok := at[d]; !ok || i != r.LogIndex {
			t.Errorf("receipt for %s says #%d; the log has it at %d (present %v)", d, r.LogIndex, i, ok)
			continue
		}
		e, _ := store.Entry(r.LogIndex)
		if err := ledger.VerifyInclusion(e.Body, r.LogIndex, r.TreeSize, r.Hashes, r.RootHash); err != nil {
			t.Errorf("receipt for #%d: %v", r.LogIndex, err)
		}
	}
	// Every checkpoint ever seen: signed by the log, consistent with the end.
	checked := map[string]bool{}
	for _, note := range seen {
		if checked[string(note)] {
			continue
		}
		checked[string(note)] = true
		cp, err := ledger.VerifyCheckpoint(note, logKey)
		if err != nil {
			t.Fatalf("checkpoint %q: %v", note, err)
		}
		proof, err := ledger.ProveConsistency(store, cp.Size, head.Size)
		if err != nil {
			t.Fatal(err)
		}
		if err := ledger.VerifyConsistency(cp.Size, head.Size, proof, cp.Root, head.Root); err != nil {
			t.Errorf("checkpoint at size %d is not consistent with the final one at %d: %v", cp.Size, head.Size, err)
		}
	}
	t.Logf("log of %d entries; %d distinct checkpoints consistent with the final one", head.Size, len(checked))
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
