package gate_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

// The gate's benchmark runs the server and the devices in separate
// processes, so that the gate process's CPU, decision rate and latency are
// the server's alone:
//
//   - this test process runs the node: the gate, the ledger on Pebble,
//     embedded NATS JetStream, the stations and the DPS emulator (which the
//     gate calls over HTTPS for every enrollment);
//   - one device-side process (this test binary again, with
//     CUSTODY_GATE_BENCH_HELPER=devices) runs CUSTODY_BENCH_DEVICES swtpm
//     processes, the devices' factory APIs over them, and the devices'
//     registration clients: it takes the devices through the supply chain
//     via the node's stations, runs each registration's first call and TPM
//     work (activation, quote, LDevID, CSR), and then sends the authorised
//     calls, in which the gate decides;
//   - to fill the ledger to CUSTODY_BENCH_LEDGER_DEVICES devices, bulk
//     processes (CUSTODY_GATE_BENCH_HELPER=bulk, CUSTODY_BENCH_BULK_PROCS of
//     them, default 4) take further devices, each on the in-process TPM
//     simulator (one at a time per process, sim:seed=N), through the same
//     supply chain: the TPM vendor's station manufactures each, and the
//     bulk process records the rest of its chain as the stations would,
//     each event quoted by the device's TPM and signed with the partner's
//     key, on the partner's own NATS connection (see bulkDevices). The
//     ledger verifies every event as any other.
//
// The helpers speak JSON lines on their stdin and stdout.
const (
	envDevices       = "CUSTODY_BENCH_DEVICES"
	envLedgerDevices = "CUSTODY_BENCH_LEDGER_DEVICES"
	envConcurrency   = "CUSTODY_BENCH_CONCURRENCY"
	envBulkProcs     = "CUSTODY_BENCH_BULK_PROCS"
	envCPUProfile    = "CUSTODY_BENCH_CPUPROFILE"
	envHelper        = "CUSTODY_GATE_BENCH_HELPER"
	envGateOut       = "CUSTODY_BENCH_GATE_OUT"
)

// ceilingSlice is how long the crypto ceiling is measured after each round.
const ceilingSlice = 500 * time.Millisecond

// gateFigures are the benchmark's figures as another harness reads them
// (CUSTODY_BENCH_GATE_OUT). A decision here is a whole enrollment: both
// registration calls, the rate over their timed phases.
type gateFigures struct {
	DecisionsPerS    float64  `json:"gate_decisions_per_s"`
	CeilingPerS      float64  `json:"gate_ceiling_per_s"`
	Ratio            float64  `json:"gate_ratio"`
	CryptoOps        []string `json:"gate_crypto_ops_per_decision"`
	CPUMsPerDecision float64  `json:"gate_cpu_ms_per_decision"`
	// The authorised call alone, as decisions/s reports it, and the parts.
	FinishPerS     float64 `json:"gate_finish_per_s"`
	FinishCPUMs    float64 `json:"gate_finish_cpu_ms"`
	ChallengeCPUMs float64 `json:"gate_challenge_cpu_ms"`
	DeviceCPUMs    float64 `json:"gate_device_cpu_ms_per_decision"`
	// CPU per set of the ceiling's ops, and its ratio to an enrollment's
	// CPU (gate process and device side): the ratio without the drift of
	// the other processes' load between the timed phases and the ceiling's.
	CeilingCPUMs  float64 `json:"gate_ceiling_cpu_ms"`
	CPURatio      float64 `json:"gate_cpu_ratio"`
	LedgerDevices int     `json:"gate_ledger_devices"`
	// RecordsPerLeaf is the mean number of the gate's records per logged
	// envelope (group commit batches them).
	RecordsPerLeaf float64 `json:"gate_records_per_leaf"`
	Decisions      int     `json:"gate_decisions"`
}

// writeGateFigures writes f as JSON to file, if file is set.
func writeGateFigures(file string, f gateFigures) error {
	if file == "" {
		return nil
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// benchDevice is one swtpm-backed device, in the device-side process.
type benchDevice struct {
	addr string // swtpm server channel, HOST:PORT
	id   string
	tpm  *tpm.TPM
	dev  *device.Device
	http *httptest.Server
	// first is the body of the registration's first call.
	first []byte
}

// benchEnv is shared by every run of BenchmarkGateDecisions (the testing
// package calls a benchmark more than once) and torn down by TestMain.
var (
	benchOnce     sync.Once
	benchState    *benchSetup
	benchErr      error
	benchTeardown []func()
)

type benchSetup struct {
	n       *node.Node
	devices *helperProc // the device-side process
	gateURL string      // the gate's device API behind a timing middleware
	timing  *timing
	swtpm   int // devices that enroll
	ledger  int // devices in the ledger
	bulk    int // bulk processes
	setup   time.Duration
	bulkCPU time.Duration // the bulk processes' CPU
	fresh   bool          // the device-side process's devices never enrolled
}

// timing records the server-side duration of authorised register calls,
// the calls in which the gate decides.
type timing struct {
	mu  sync.Mutex
	all []time.Duration
}

func (tm *timing) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.Header.Get("Authorization") == "" {
			h.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		h.ServeHTTP(w, r)
		d := time.Since(start)
		tm.mu.Lock()
		tm.all = append(tm.all, d)
		tm.mu.Unlock()
	})
}

func (tm *timing) reset() []time.Duration {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	out := tm.all
	tm.all = nil
	return out
}

func TestMain(m *testing.M) {
	if role := os.Getenv(envHelper); role != "" {
		// A device-side process of BenchmarkGateDecisions.
		if err := runHelper(role); err != nil {
			fmt.Fprintf(os.Stderr, "gate bench %s helper: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	code := m.Run()
	for i := len(benchTeardown) - 1; i >= 0; i-- {
		benchTeardown[i]()
	}
	os.Exit(code)
}

// setupBench starts a node, the device-side process with n swtpm devices,
// and bulk processes for the other total-n devices, and takes every device
// through vendor → ODM → OEM → EMS → operator, so the ledger holds total
// devices with complete custody chains, 12 entries each.
func setupBench(n, total, bulkProcs int) (*benchSetup, error) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		return nil, errNoSWTPM
	}
	start := time.Now()
	node.ApplyGCPercent(node.GCPercent) // as custodyd runs the node
	dir, err := os.MkdirTemp("", "custody-gate-bench-")
	if err != nil {
		return nil, err
	}
	benchTeardown = append(benchTeardown, func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	nd, err := node.New(ctx, node.Config{DataDir: filepath.Join(dir, "node"), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0"})
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- nd.Run(ctx) }()
	benchTeardown = append(benchTeardown, func() { cancel(); <-done })
	select {
	case <-nd.Ready():
	case err := <-done:
		return nil, fmt.Errorf("node stopped: %v", err)
	}
	s := &benchSetup{n: nd, timing: &timing{}, swtpm: n, ledger: max(total, n)}
	want := nd.Ledger.Head().Size + uint64(s.ledger*(len(factorySteps)+len(toOperator)))
	srv := httptest.NewServer(s.timing.wrap(nd.Gate.Handler()))
	benchTeardown = append(benchTeardown, srv.Close)
	s.gateURL = srv.URL

	if s.devices, err = startHelper("devices", dir, nil); err != nil {
		return nil, err
	}
	benchTeardown = append(benchTeardown, s.devices.stop)
	var g errgroup.Group
	var bulkCPU atomic.Int64
	g.Go(func() error {
		var r helperReply
		if err := s.devices.do(&helperCmd{Op: "setup", N: n, Node: nd.URL(), PKI: nd.PKI.Dir}, &r); err != nil {
			return fmt.Errorf("swtpm devices: %w", err)
		}
		return nil
	})
	if bulk := s.ledger - n; bulk > 0 {
		s.bulk = min(bulkProcs, bulk)
		for i := range s.bulk {
			count := bulk/s.bulk + btoi(i < bulk%s.bulk)
			seed := 1_000_000 + i*10_000_000 // disjoint seed ranges
			g.Go(func() error {
				h, err := startHelper("bulk", dir, []string{
					"CUSTODY_GATE_BENCH_NODE=" + nd.URL(),
					"CUSTODY_GATE_BENCH_NATS=" + nd.NATSURL(),
					"CUSTODY_GATE_BENCH_PKI=" + nd.PKI.Dir,
					"CUSTODY_GATE_BENCH_SEED=" + strconv.Itoa(seed),
					"CUSTODY_GATE_BENCH_COUNT=" + strconv.Itoa(count),
				})
				if err != nil {
					return err
				}
				defer h.stop()
				var r helperReply
				if err := h.read(&r); err != nil {
					return fmt.Errorf("bulk devices: %w", err)
				}
				bulkCPU.Add(r.CPUNanos)
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// The bulk processes did not wait for the ledger: wait until every
	// event is logged (a refused one would leave the log short).
	for last, since := nd.Ledger.Head().Size, time.Now(); last != want; {
		time.Sleep(50 * time.Millisecond)
		if size := nd.Ledger.Head().Size; size != last {
			last, since = size, time.Now()
		} else if time.Since(since) > 30*time.Second || size > want {
			return nil, fmt.Errorf("the ledger holds %d entries, want %d", size, want)
		}
	}
	s.setup = time.Since(start)
	s.fresh = true
	s.bulkCPU = time.Duration(bulkCPU.Load())
	return s, nil
}

var errNoSWTPM = errors.New("swtpm is not installed (Debian: swtpm)")

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkGateDecisions measures the gate's enrollment decisions on the
// server side, with CUSTODY_BENCH_LEDGER_DEVICES devices (default: as many
// as enroll) in the ledger with complete custody chains. The devices that
// enroll, CUSTODY_BENCH_DEVICES (default 50) swtpm TPMs at a time, run in a
// separate process (see above); every decision is a device's first
// enrollment, so each round of CUSTODY_BENCH_DEVICES decisions takes new
// devices through the supply chain first (untimed). In each round:
//
//  1. timed apart: every device's first call, the gate's challenge
//     (ledger lookup, credential made for the EK and the recorded IAK),
//     CUSTODY_BENCH_CONCURRENCY (default 32) at once;
//  2. untimed: the first call again and the device's TPM work (activation,
//     quote, LDevID key and its certification, CSR), as device.Enroll does;
//  3. timed: the authorised register calls, CUSTODY_BENCH_CONCURRENCY at
//     once. Each is a complete decision: ledger lookup, EK chain,
//     activation, quote, counters, custody, PCRs, TPM2_Certify, the CSR,
//     LDevID issuance, DPS enrollment over HTTPS, device.enrolled published
//     and its receipt awaited (the ledger verified and committed it).
//
// Reported, over the timed phases:
//
//   - decisions/s, and p50/p99 of the server-side time of one decision;
//   - cpu-ms/decision: the gate process's CPU (user+system) per decision,
//     and challenge-cpu-ms: its CPU per challenge, at challenges/s;
//   - device-cpu-ms/decision: the device-side process's CPU while it sends
//     the authorised calls (it shares the machine's cores with the server);
//   - cpu-bound-decisions/s: what the cores would do for the gate process
//     and the device side alone (GOMAXPROCS over their CPU per decision),
//     and foreign-cpu-%: the share of the cores other processes took during
//     the timed phases (from /proc/stat); decisions/s is the server's
//     ceiling only when that is near 0;
//   - alloc-kB/decision: the gate process's heap allocation per decision;
//   - the baseline, measured in the same run in this process: ECDSA P-256
//     verifies per second on all cores, decisions/s as a ratio to it, and
//     verify-equiv: the CPU of a decision in units of one verify's CPU.
//   - the gate against its crypto ceiling, both from this run:
//     enrollments/s (whole enrollments: the rounds' decisions over the
//     timed challenge and decision phases together), ceiling/s (sets of the
//     cryptographic operations one enrollment strictly needs, ceilingOps,
//     run on GOMAXPROCS goroutines for ceilingSlice after every round) and
//     ratio, enrollments/s over ceiling/s; ceiling-cpu-ms, the CPU of one
//     set, and cpu-ratio, that over the CPU of an enrollment (gate process
//     and device side), which the load of other processes does not skew.
//     CUSTODY_BENCH_GATE_OUT=file also writes them as JSON (gateFigures).
//
// CUSTODY_BENCH_CPUPROFILE=file profiles the gate process over each timed
// phase of decisions, into file.0, file.1, …
//
//	CUSTODY_BENCH_DEVICES=200 CUSTODY_BENCH_LEDGER_DEVICES=10000 \
//	  go test -run '^$' -bench GateDecisions -benchtime 1000x ./services/gate/
func BenchmarkGateDecisions(b *testing.B) {
	n := envInt(envDevices, 50)
	total := envInt(envLedgerDevices, n)
	conc := envInt(envConcurrency, 32)
	bulkProcs := envInt(envBulkProcs, 4)
	benchOnce.Do(func() {
		benchState, benchErr = setupBench(n, total, bulkProcs)
		if benchErr == nil {
			s := benchState
			fmt.Fprintf(os.Stderr, "gate bench: %d devices in the ledger, %d entries, in %s: %d on swtpm (they enroll) through the stations; "+
				"%d on the in-process TPM simulator in %d bulk processes, manufactured by the vendor's station, the rest of each chain quoted and signed "+
				"as the stations do and published on the partners' NATS connections; all verified by the ledger's ingest\n",
				s.ledger, s.n.Ledger.Head().Size, s.setup.Round(time.Second), s.swtpm, s.ledger-s.swtpm, s.bulk)
		}
	})
	if errors.Is(benchErr, errNoSWTPM) && os.Getenv("CI") != "true" {
		b.Skip(benchErr)
	}
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	s := benchState
	var wall, cpu, busy, beginWall, beginCPU, deviceCPU time.Duration
	var lat []time.Duration
	challenges, rounds := 0, 0
	var alloc uint64
	var ceil *ceiling
	var ceilSets int64
	var ceilWall, ceilCPU time.Duration
	b.StopTimer()
	for done := 0; done < b.N; {
		k := min(s.swtpm, b.N-done)
		var r helperReply
		if !s.fresh {
			// Untimed: new devices through the supply chain, so that every
			// decision is a device's first enrollment.
			if err := s.devices.do(&helperCmd{Op: "setup", N: k, Node: s.n.URL(), PKI: s.n.PKI.Dir}, &r); err != nil {
				b.Fatal(err)
			}
			s.ledger += k
		}
		s.fresh = false
		// Timed apart: the first calls alone (the gate's challenges).
		start, cpu0 := time.Now(), processCPU()
		if err := s.devices.do(&helperCmd{Op: "challenge", N: k, Conc: conc, Gate: s.gateURL, IDScope: s.n.IDScope()}, &r); err != nil {
			b.Fatal(err)
		}
		beginWall += time.Since(start)
		beginCPU += processCPU() - cpu0
		challenges += k
		// Untimed: the first calls again, and the devices' TPM work.
		if err := s.devices.do(&helperCmd{Op: "prepare", N: k, Gate: s.gateURL, IDScope: s.n.IDScope()}, &r); err != nil {
			b.Fatal(err)
		}
		s.timing.reset()
		// Timed: the authorised calls.
		stopProfile := startProfile(b, rounds)
		rounds++
		b.StartTimer()
		busy0, alloc0 := machineBusy(), allocated()
		start, cpu0 = time.Now(), processCPU()
		if err := s.devices.do(&helperCmd{Op: "submit", Conc: conc}, &r); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
		cpu += processCPU() - cpu0
		busy += machineBusy() - busy0
		alloc += allocated() - alloc0
		b.StopTimer()
		stopProfile()
		deviceCPU += time.Duration(r.CPUNanos)
		lat = append(lat, s.timing.reset()...)
		done += k
		// Untimed: the crypto ceiling, after every round, so that it sees
		// the machine as the round did.
		if ceil == nil {
			var err error
			if ceil, err = newCeiling(s.n); err != nil {
				b.Fatal(err)
			}
		}
		sets, w, c := ceil.measure(ceilingSlice)
		ceilSets += sets
		ceilWall += w
		ceilCPU += c
	}
	// Every decision must have been an enrollment.
	var refused []string
	for _, d := range s.n.Gate.Decisions() {
		if !d.Allowed {
			refused = append(refused, d.Rule+": "+d.Message)
		}
	}
	if len(refused) > 0 {
		b.Fatalf("%d decisions refused, e.g. %s", len(refused), refused[0])
	}
	if len(lat) != b.N {
		b.Fatalf("%d decisions timed, want %d", len(lat), b.N)
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	ms := func(d time.Duration, n int) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	rate := float64(len(lat)) / wall.Seconds()
	verifies, verifyCPU := ecdsaVerifyRate()
	b.ReportMetric(rate, "decisions/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(ms(cpu, len(lat)), "cpu-ms/decision")
	b.ReportMetric(ms(beginCPU, challenges), "challenge-cpu-ms")
	b.ReportMetric(float64(challenges)/beginWall.Seconds(), "challenges/s")
	b.ReportMetric(ms(deviceCPU, len(lat)), "device-cpu-ms/decision")
	b.ReportMetric(float64(alloc)/1024/float64(len(lat)), "alloc-kB/decision")
	// What the machine's cores could do if the gate process and the device
	// side had them to themselves, and how much of them other processes
	// took during the timed phases (busy CPU not ours): decisions/s is only
	// the server's ceiling when that is near 0.
	procs := runtime.GOMAXPROCS(0)
	b.ReportMetric(float64(procs)*float64(time.Second)/(float64(cpu+deviceCPU)/float64(len(lat))), "cpu-bound-decisions/s")
	if busy > 0 {
		b.ReportMetric(max(0, 100*float64(busy-cpu-deviceCPU)/(float64(procs)*float64(wall))), "foreign-cpu-%")
	}
	b.ReportMetric(verifies, "ecdsa-verify/s")
	b.ReportMetric(rate/verifies, "ratio-to-verify/s")
	b.ReportMetric(float64(cpu)/float64(len(lat))/float64(verifyCPU), "verify-equiv")
	b.ReportMetric(float64(s.ledger), "ledger-devices")
	// The gate against its own crypto ceiling: whole enrollments (the
	// first call, whose MakeCredential the ceiling counts, and the
	// decision) per second, against the ceiling's sets of ops per second.
	gateRate := float64(len(lat)) / (beginWall + wall).Seconds()
	ceilRate := float64(ceilSets) / ceilWall.Seconds()
	b.ReportMetric(gateRate, "enrollments/s")
	b.ReportMetric(ceilRate, "ceiling/s")
	b.ReportMetric(gateRate/ceilRate, "ratio")
	// The same in CPU, which other processes' load on the machine does not
	// skew: the ceiling's CPU per set against the CPU of an enrollment in
	// the gate process and the device side.
	ceilCPUms := ms(ceilCPU, int(ceilSets))
	enrollCPUms := ms(cpu+beginCPU+deviceCPU, len(lat))
	b.ReportMetric(ceilCPUms, "ceiling-cpu-ms")
	b.ReportMetric(ceilCPUms/enrollCPUms, "cpu-ratio")
	b.ReportMetric(ceil.recordsPerLeaf, "records/leaf")
	if err := writeGateFigures(os.Getenv(envGateOut), gateFigures{
		DecisionsPerS: gateRate, CeilingPerS: ceilRate, Ratio: gateRate / ceilRate,
		CryptoOps: ceilingOps, CPUMsPerDecision: ms(cpu+beginCPU, len(lat)),
		FinishPerS: rate, FinishCPUMs: ms(cpu, len(lat)), ChallengeCPUMs: ms(beginCPU, challenges),
		DeviceCPUMs: ms(deviceCPU, len(lat)), LedgerDevices: s.ledger, Decisions: len(lat),
		CeilingCPUMs: ceilCPUms, CPURatio: ceilCPUms / enrollCPUms, RecordsPerLeaf: ceil.recordsPerLeaf,
	}); err != nil {
		b.Fatal(err)
	}
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/gc/gogc:percent"}}
	metrics.Read(live)
	b.ReportMetric(float64(live[0].Value.Uint64())/(1<<20), "heap-live-MiB")
	b.ReportMetric(float64(live[1].Value.Uint64()), "gogc")
}

// startProfile starts a CPU profile of this process into
// $CUSTODY_BENCH_CPUPROFILE.<round>, if set, and returns what stops it. The
// timed phases alone are profiled; merge the rounds' profiles with
// go tool pprof gate.test $CUSTODY_BENCH_CPUPROFILE.*.
func startProfile(b *testing.B, round int) (stop func()) {
	f := os.Getenv(envCPUProfile)
	if f == "" {
		return func() {}
	}
	out, err := os.Create(f + "." + strconv.Itoa(round))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(out); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = out.Close()
	}
}

// ecdsaVerifyRate measures ECDSA P-256 verifications per second with one
// verifier per core (the baseline), and the CPU time of one.
func ecdsaVerifyRate() (perSec float64, cpu time.Duration) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("custody gate benchmark baseline"))
	sig, _ := ecdsa.SignASN1(rand.Reader, key, digest[:])
	var total atomic.Int64
	var wg sync.WaitGroup
	const d = time.Second
	start, cpu0 := time.Now(), processCPU()
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for time.Since(start) < d {
				if !ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) {
					panic("ECDSA verification failed")
				}
				n++
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	elapsed, used := time.Since(start), processCPU()-cpu0
	return float64(total.Load()) / elapsed.Seconds(), used / time.Duration(total.Load())
}

// machineBusy is the CPU time all cores have spent busy (not idle or
// waiting for I/O) since boot, from /proc/stat (0 where there is none).
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal …
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0
		}
		if i != 3 && i != 4 { // idle, iowait
			ticks += n
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// allocated is the bytes this process has allocated on the heap so far.
func allocated() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// processCPU is the user+system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// helperCmd is a command to the device-side process.
//
//	setup     N new swtpm devices through the supply chain at the node Node
//	challenge the first N devices' first calls at Gate, Conc at once
//	prepare   the first N devices: first call at Gate, TPM work
//	submit    the prepared authorised calls, Conc at once
type helperCmd struct {
	Op      string `json:"op"`
	N       int    `json:"n"`
	Conc    int    `json:"conc,omitempty"`
	Node    string `json:"node,omitempty"`
	PKI     string `json:"pki,omitempty"` // the node's PKI: TLS CA, partner certificates
	Gate    string `json:"gate,omitempty"`
	IDScope string `json:"idScope,omitempty"`
}

// helperReply answers a command (and ends a bulk process).
type helperReply struct {
	Error    string `json:"error,omitempty"`
	Devices  int    `json:"devices,omitempty"`
	CPUNanos int64  `json:"cpuNanos,omitempty"` // the helper's CPU during the command
}

// helperProc is a running helper process.
type helperProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	mu  sync.Mutex
}

// startHelper re-runs this test binary as a helper of role, with env added.
func startHelper(role, dir string, env []string) (*helperProc, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, envHelper+"="+role, "CUSTODY_GATE_BENCH_DIR="+dir)...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &helperProc{cmd: cmd, in: in, out: bufio.NewReader(out)}, nil
}

// do sends a command and reads its reply.
func (h *helperProc) do(c *helperCmd, r *helperReply) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := json.NewEncoder(h.in).Encode(c); err != nil {
		return err
	}
	return h.read(r)
}

func (h *helperProc) read(r *helperReply) error {
	line, err := h.out.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("helper: %w", err)
	}
	if err := json.Unmarshal(line, r); err != nil {
		return fmt.Errorf("helper: %q: %w", line, err)
	}
	if r.Error != "" {
		return errors.New(r.Error)
	}
	return nil
}

// stop closes the helper's stdin (it cleans up and exits) and waits for it
// (Wait closes stdout: it must come after the last read).
func (h *helperProc) stop() {
	_ = h.in.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}

// runHelper is the main of a device-side process.
func runHelper(role string) error {
	dir := os.Getenv("CUSTODY_GATE_BENCH_DIR")
	switch role {
	case "devices":
		h := &deviceHelper{dir: filepath.Join(dir, "devices")}
		defer h.close()
		return serveCommands(h.do)
	case "bulk":
		n, err := bulkDevices(dir)
		return json.NewEncoder(os.Stdout).Encode(replyOf(&helperReply{Devices: n, CPUNanos: int64(processCPU())}, err))
	}
	return fmt.Errorf("unknown role %q", role)
}

func replyOf(r *helperReply, err error) *helperReply {
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// serveCommands answers the commands on stdin until it closes.
func serveCommands(do func(*helperCmd) (*helperReply, error)) error {
	dec := json.NewDecoder(os.Stdin)
	enc := json.NewEncoder(os.Stdout)
	for {
		var c helperCmd
		if err := dec.Decode(&c); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		cpu0 := processCPU()
		r, err := do(&c)
		if r == nil {
			r = &helperReply{}
		}
		r.CPUNanos = int64(processCPU() - cpu0)
		if err := enc.Encode(replyOf(r, err)); err != nil {
			return err
		}
	}
}

// stationClients returns the HTTP clients of helpers for the node's
// stations and gate, one per partner ("" for anonymous), from the node's
// PKI in pkiDir.
func stationClients(pkiDir string) (func(partner string) *http.Client, error) {
	d, err := pki.LoadDemo(pkiDir)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	clients := map[string]*http.Client{}
	return func(partner string) *http.Client {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := clients[partner]; ok {
			return c
		}
		c, err := d.HTTPClient(partner)
		if err != nil {
			panic(err)
		}
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 1024
		clients[partner] = c
		return c
	}, nil
}

// deviceHelper is the state of the device-side process.
type deviceHelper struct {
	dir      string
	batch    int
	devices  []*benchDevice
	cleanups []func()
	clients  func(partner string) *http.Client // from the node's PKI (setup)
	regs     []*device.Registration
}

// gateClient is the devices' HTTP client for the gate, which keeps a
// connection per concurrent call alive from one round to the next.
func (h *deviceHelper) gateClient() *http.Client { return h.clients("") }

func (h *deviceHelper) close() {
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
}

func (h *deviceHelper) do(c *helperCmd) (*helperReply, error) {
	ctx := context.Background()
	switch c.Op {
	case "setup":
		// New devices replace the previous ones.
		h.close()
		h.cleanups = nil
		h.batch++
		h.devices = make([]*benchDevice, c.N)
		var mu sync.Mutex
		cleanup := func(f func()) { mu.Lock(); h.cleanups = append(h.cleanups, f); mu.Unlock() }
		var err error
		if h.clients, err = stationClients(c.PKI); err != nil {
			return nil, err
		}
		var g errgroup.Group
		g.SetLimit(8)
		for i := range c.N {
			g.Go(func() error {
				d, err := startSWTPMDevice(filepath.Join(h.dir, fmt.Sprintf("b%d-dev%d", h.batch, i)), cleanup)
				if err != nil {
					return err
				}
				h.devices[i] = d
				if d.id, err = runSteps(ctx, h.clients, c.Node, d.http.URL, factorySteps, toOperator); err != nil {
					return err
				}
				ek, err := d.tpm.EK(tpm.ECCP256)
				if err != nil {
					return err
				}
				iak, err := d.tpm.IAK()
				if err != nil {
					return err
				}
				d.first, err = json.Marshal(&gatewire.RegisterRequest{RegistrationID: d.id, TPM: &gatewire.TPMAttestation{EndorsementKey: ek.Public, StorageRootKey: iak.Public}})
				return err
			})
		}
		return &helperReply{Devices: c.N}, g.Wait()
	case "challenge":
		// Every device's first call, N at once; the challenges are
		// dropped (prepare asks for new ones).
		var g errgroup.Group
		g.SetLimit(c.Conc)
		for _, d := range h.devices[:c.N] {
			g.Go(func() error {
				u := c.Gate + "/" + c.IDScope + "/registrations/" + d.id + "/register?api-version=" + gatewire.APIVersion2025
				req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(d.first))
				if err != nil {
					return err
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := h.gateClient().Do(req)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					return fmt.Errorf("first call: %s", resp.Status)
				}
				return nil
			})
		}
		return nil, g.Wait()
	case "prepare":
		if c.N > len(h.devices) {
			return nil, fmt.Errorf("prepare %d of %d devices", c.N, len(h.devices))
		}
		cfg := device.EnrollConfig{GateURL: c.Gate, IDScope: c.IDScope, HTTPClient: h.gateClient()}
		h.regs = make([]*device.Registration, c.N)
		var g errgroup.Group
		g.SetLimit(8)
		for i, d := range h.devices[:c.N] {
			g.Go(func() (err error) {
				h.regs[i], err = d.dev.PrepareRegistration(ctx, cfg)
				return err
			})
		}
		return nil, g.Wait()
	case "submit":
		var g errgroup.Group
		g.SetLimit(c.Conc)
		for _, r := range h.regs {
			g.Go(func() error {
				out, err := r.Submit(ctx, h.gateClient())
				if err == nil && out.Status != gatewire.StatusAssigning {
					err = fmt.Errorf("register: status %q", out.Status)
				}
				return err
			})
		}
		err := g.Wait()
		h.regs = nil
		return nil, err
	}
	return nil, fmt.Errorf("unknown command %q", c.Op)
}

// bulkDevices takes CUSTODY_GATE_BENCH_COUNT devices on the in-process
// simulator (seeds from CUSTODY_GATE_BENCH_SEED on), one after the other,
// through the supply chain of the node at CUSTODY_GATE_BENCH_NODE. The TPM
// vendor's station manufactures each (credential activation, EK and IAK
// certificates, tpm.manufactured). The eleven events that follow are those
// the stations record (factorySteps, toOperator), each quoted by the
// device's TPM over its binding digest and signed with the partner's key,
// published here on the partner's own NATS connection
// (CUSTODY_GATE_BENCH_NATS, NKEYs and keys from the PKI directory
// CUSTODY_GATE_BENCH_PKI) without waiting for the ledger's receipt, which
// verifies them as any other. Each event waits for JetStream's
// acknowledgement before the next is published, so that a device's events
// keep their order in the stream across partners.
func bulkDevices(dir string) (int, error) {
	nodeURL, natsURL, pkiDir := os.Getenv("CUSTODY_GATE_BENCH_NODE"), os.Getenv("CUSTODY_GATE_BENCH_NATS"), os.Getenv("CUSTODY_GATE_BENCH_PKI")
	seed, err1 := strconv.Atoi(os.Getenv("CUSTODY_GATE_BENCH_SEED"))
	count, err2 := strconv.Atoi(os.Getenv("CUSTODY_GATE_BENCH_COUNT"))
	if nodeURL == "" || natsURL == "" || pkiDir == "" || err1 != nil || err2 != nil {
		return 0, errors.New("bulk: CUSTODY_GATE_BENCH_NODE, _NATS, _PKI, _SEED and _COUNT are required")
	}
	ctx := context.Background()
	ps, err := pki.LoadDemo(pkiDir)
	if err != nil {
		return 0, err
	}
	rec := &recorder{keys: map[string]crypto.Signer{}, js: map[string]jetstream.JetStream{}}
	for _, name := range []string{vendor, odm, oem, ems, operator} {
		kp, err := ps.NKey(name)
		if err != nil {
			return 0, err
		}
		nc, err := nats.Connect(natsURL, append(node.UserOptions(name, kp), node.NATSTLS(ps))...)
		if err != nil {
			return 0, fmt.Errorf("NATS as %s: %w", name, err)
		}
		defer nc.Close()
		if rec.js[name], err = jetstream.New(nc); err != nil {
			return 0, err
		}
		rec.keys[name] = ps.Partners[name].Key
	}
	state, err := os.MkdirTemp(dir, "bulk-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(state)
	// One factory API, for the device of the moment.
	var cur atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*cur.Load()).ServeHTTP(w, r) }))
	defer srv.Close()
	clients, err := stationClients(pkiDir)
	if err != nil {
		return 0, err
	}
	for i := range count {
		tp, err := tpm.Open("sim:seed=" + strconv.Itoa(seed+i))
		if err != nil {
			return i, err
		}
		err = func() error {
			defer tp.Close()
			d, err := device.New(device.Config{TPM: tp, StateDir: filepath.Join(state, strconv.Itoa(i))})
			if err != nil {
				return err
			}
			h := d.Handler()
			cur.Store(&h)
			if rec.id, err = runSteps(ctx, clients, nodeURL, srv.URL, factorySteps[:1]); err != nil {
				return err
			}
			rec.tpm, rec.dev = tp, device.NewClient(srv.URL, nil)
			return rec.chain(ctx)
		}()
		if err != nil {
			return i, fmt.Errorf("device %d (sim:seed=%d): %w", i, seed+i, err)
		}
		_ = os.RemoveAll(filepath.Join(state, strconv.Itoa(i)))
	}
	return count, nil
}

// recorder records a manufactured device's custody chain as the stations
// would: factorySteps after the manufacture, then toOperator.
type recorder struct {
	keys  map[string]crypto.Signer
	js    map[string]jetstream.JetStream
	id    string
	tpm   *tpm.TPM
	dev   *device.Client
	offer *events.Handoff // the pending offer, for the acceptance
}

func (r *recorder) chain(ctx context.Context) error {
	for _, s := range slices.Concat(factorySteps[1:], toOperator) {
		var err error
		switch s.op {
		case "offer":
			var digest string
			if digest, err = r.record(ctx, s.partner, events.KindHandoffOffered, func(p *events.Predicate) {
				p.Handoff = &events.Handoff{From: s.partner, To: s.req.To}
			}); err == nil {
				r.offer = &events.Handoff{From: s.partner, To: s.req.To, Offer: digest}
			}
		case "accept":
			_, err = r.record(ctx, s.partner, events.KindHandoffAccepted, func(p *events.Predicate) { p.Handoff = r.offer })
		case "stage":
			_, err = r.record(ctx, s.partner, events.KindStageRecorded, func(p *events.Predicate) {
				p.Stage = &events.Stage{Name: s.req.Stage, Note: s.req.Note}
			})
		case "firmware":
			err = r.firmware(ctx, s.partner, s.req.Image)
		default:
			err = fmt.Errorf("no recording of %s", s.op)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", s.partner, s.op, err)
		}
	}
	return nil
}

// record quotes, signs and publishes one event of kind by partner about
// the device, and returns its digest (hex).
func (r *recorder) record(ctx context.Context, partner, kind string, fill func(*events.Predicate)) (string, error) {
	st := events.NewStatement(kind, partner, r.id, time.Now(), events.NewEventID())
	fill(&st.Predicate)
	return r.publish(ctx, partner, st)
}

// publish quotes st on the device over its binding digest, signs it and
// publishes it, waiting for JetStream's acknowledgement only.
func (r *recorder) publish(ctx context.Context, partner string, st *events.Statement) (string, error) {
	nonce, err := events.StatementBindingDigest(st)
	if err != nil {
		return "", err
	}
	q, err := r.tpm.Quote(nonce, []int{0})
	if err != nil {
		return "", err
	}
	st.Predicate.Evidence = events.NewEvidence(q)
	env, err := events.Sign(ctx, st, r.keys[partner], partner)
	if err != nil {
		return "", err
	}
	signed, err := events.Open(env)
	if err != nil {
		return "", err
	}
	if _, err := r.js[partner].Publish(ctx, events.EventSubject(partner, st.Target()), env); err != nil {
		return "", err
	}
	return signed.DigestHex(), nil
}

// firmware programs image into the device through its factory API and
// records firmware-programmed with the PCR values the TPM then holds, as
// the EMS's station does (which reads them through a first quote).
func (r *recorder) firmware(ctx context.Context, partner string, image []byte) error {
	digest, err := r.dev.ProgramFirmware(ctx, image)
	if err != nil {
		return err
	}
	st := events.NewStatement(events.KindStageRecorded, partner, r.id, time.Now(), events.NewEventID())
	st.Predicate.Stage = &events.Stage{Name: events.StageFirmwareProgrammed, FirmwareDigest: digest, PCRs: map[string]string{}}
	pcrs, err := r.tpm.ReadPCRs([]int{0})
	if err != nil {
		return err
	}
	for i, v := range pcrs {
		st.Predicate.Stage.PCRs[strconv.Itoa(i)] = hex.EncodeToString(v)
	}
	_, err = r.publish(ctx, partner, st)
	return err
}

// benchPorts are the ports handed to swtpm processes: swtpm binds after
// exec returns, so a port freePorts found free may be one just handed out.
var (
	benchPortMu sync.Mutex
	benchPorts  = map[int]bool{}
)

// startSWTPMDevice starts a swtpm process with its state in dir/tpm, opens
// it, and serves a device's factory API over it. cleanup registers what must
// be undone at the end, in order.
func startSWTPMDevice(dir string, cleanup func(func())) (*benchDevice, error) {
	state := filepath.Join(dir, "tpm")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	// Another process may take the ports between freePorts and swtpm's
	// bind: then swtpm exits, and it starts again on other ports.
	var tp *tpm.TPM
	var port int
	for attempt := 0; tp == nil; attempt++ {
		benchPortMu.Lock()
		p, err := freePorts()
		if err != nil {
			benchPortMu.Unlock()
			return nil, err
		}
		port = p
		cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+state,
			"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
			"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port+1),
			"--flags", "not-need-init,startup-clear")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err = cmd.Start()
		benchPortMu.Unlock()
		if err != nil {
			return nil, err
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		cleanup(func() { _ = cmd.Process.Kill(); <-exited })
		deadline := time.Now().Add(20 * time.Second)
		for {
			if tp, err = tpm.Open("swtpm://127.0.0.1:" + strconv.Itoa(port)); err == nil {
				break
			}
			if isExited(exited) {
				if attempt < 5 && strings.Contains(stderr.String(), "Address already in use") {
					break // try other ports
				}
				return nil, fmt.Errorf("swtpm exited: %v\n%s", err, strings.TrimSpace(stderr.String()))
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("swtpm: %v\n%s", err, strings.TrimSpace(stderr.String()))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cleanup(func() { _ = tp.Close() })
	d, err := device.New(device.Config{TPM: tp, StateDir: dir})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(d.Handler())
	cleanup(srv.Close)
	return &benchDevice{tpm: tp, dev: d, http: srv, addr: addr}, nil
}

func isExited(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// freePorts returns a port p such that p and p+1 are free and were not
// handed out before; the caller holds benchPortMu.
func freePorts() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			if !benchPorts[p] && !benchPorts[p+1] {
				benchPorts[p], benchPorts[p+1] = true, true
				return p, nil
			}
		}
	}
	return 0, errors.New("no two consecutive free ports")
}
