package gate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/gate"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/station"
)

// benchDevice is one swtpm-backed device whose custody chain is in the
// ledger, held by the operator.
type benchDevice struct {
	addr string // swtpm server channel, HOST:PORT
	id   string
	tpm  *attest.TPM
	dev  *device.Device
	http *httptest.Server
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
	e       *env
	devices []*benchDevice
	gateURL string // the gate's device API behind a timing middleware
	timing  *timing
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
	code := m.Run()
	for i := len(benchTeardown) - 1; i >= 0; i-- {
		benchTeardown[i]()
	}
	os.Exit(code)
}

// setupBench starts a node and n devices, each on its own swtpm process
// (an independent TPM: libtpms), and takes each through vendor → ODM → OEM
// → EMS → operator, so the ledger holds n devices with complete custody
// chains, ~12 entries each.
func setupBench(n int) (*benchSetup, error) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		return nil, errors.New("swtpm is not installed")
	}
	dir, err := os.MkdirTemp("", "custody-gate-bench-")
	if err != nil {
		return nil, err
	}
	benchTeardown = append(benchTeardown, func() { os.RemoveAll(dir) })
	ctx, cancel := context.WithCancel(context.Background())
	nd, err := node.New(ctx, node.Config{DataDir: filepath.Join(dir, "node"), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0"})
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
	s := &benchSetup{e: &env{ctx: ctx, n: nd}, timing: &timing{}}
	srv := httptest.NewServer(s.timing.wrap(nd.Gate.Handler()))
	benchTeardown = append(benchTeardown, srv.Close)
	s.gateURL = srv.URL

	s.devices = make([]*benchDevice, n)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range n {
		g.Go(func() error {
			d, err := startSWTPMDevice(filepath.Join(dir, "dev"+strconv.Itoa(i)), func(f func()) { benchTeardown = append(benchTeardown, f) })
			if err != nil {
				return err
			}
			s.devices[i] = d
			if d.id, err = s.e.factory(d.http.URL); err != nil {
				return err
			}
			if _, err := s.e.call(d.http.URL, ems, "offer", &station.Request{To: operator}); err != nil {
				return err
			}
			_, err = s.e.call(d.http.URL, operator, "accept", nil)
			return err
		})
	}
	return s, g.Wait()
}

var benchPortMu sync.Mutex

// startSWTPMDevice starts a swtpm process with its state in dir/tpm, opens
// it, and serves a device's factory API over it. cleanup registers what must
// be undone at the end, in order.
func startSWTPMDevice(dir string, cleanup func(func())) (*benchDevice, error) {
	state := filepath.Join(dir, "tpm")
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, err
	}
	benchPortMu.Lock()
	port, err := freePorts()
	if err != nil {
		benchPortMu.Unlock()
		return nil, err
	}
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
	cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var tpm *attest.TPM
	deadline := time.Now().Add(20 * time.Second)
	for {
		if tpm, err = attest.Open("swtpm://127.0.0.1:" + strconv.Itoa(port)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("swtpm: %v\n%s", err, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cleanup(func() { _ = tpm.Close() })
	d, err := device.New(device.Config{TPM: tpm, StateDir: dir})
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(d.Handler())
	cleanup(srv.Close)
	return &benchDevice{tpm: tpm, dev: d, http: srv, addr: addr}, nil
}

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
			return p, nil
		}
	}
	return 0, errors.New("no two consecutive free ports")
}

// prepared is a device's authorised registration, ready to send: the
// client's TPM work (activation, quote, LDevID, CSR) is done beforehand so
// that the timed phase measures the gate alone.
type prepared struct {
	url, token string
	body       []byte
}

// prepare runs the first registration call and the device's TPM work.
func (s *benchSetup) prepare(ctx context.Context, d *benchDevice) (*prepared, error) {
	tpm := d.tpm
	ek, err := tpm.EK(attest.ECCP256)
	if err != nil {
		return nil, err
	}
	iak, err := tpm.IAK()
	if err != nil {
		return nil, err
	}
	scope := s.e.n.IDScope()
	url := s.gateURL + "/" + scope + "/registrations/" + d.id + "/register?api-version=" + gate.APIVersion
	req := &gate.RegisterRequest{RegistrationID: d.id, TPM: &gate.TPMInfo{EndorsementKey: ek.Public}}
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, err
	}
	var ch gate.Challenge
	err = json.NewDecoder(resp.Body).Decode(&ch)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return nil, fmt.Errorf("challenge: %d %v", resp.StatusCode, err)
	}
	var cred attest.Credential
	if err := json.Unmarshal(ch.AuthenticationKey, &cred); err != nil {
		return nil, err
	}
	secret, err := tpm.ActivateCredential(iak, attest.ECCP256, &cred)
	if err != nil {
		return nil, err
	}
	q, err := tpm.Quote(ch.Nonce, []int{0})
	if err != nil {
		return nil, err
	}
	_, certify, err := tpm.NewLDevID(ch.Nonce)
	if err != nil {
		return nil, err
	}
	req.Payload = &gate.Evidence{Quote: events.NewEvidence(q), LDevID: certify}
	body, _ = json.Marshal(req)
	return &prepared{url: url, token: gate.SASToken(scope, d.id, secret, time.Now().Add(10*time.Minute)), body: body}, nil
}

// BenchmarkGateDecisions measures the gate's enrollment decisions on the
// server side: every device's client work (first call, activation, quote,
// LDevID certification) is done first, then the authorised register calls
// (each a complete decision: ledger lookups, EK chain, activation, quote,
// counters, custody, PCRs, TPM2_Certify, LDevID issuance, DPS enrollment
// over HTTPS, device.enrolled published and its receipt awaited) are sent
// by CUSTODY_BENCH_CONCURRENCY clients at once (default 32). Reported:
// decisions/s over the timed phase, and p50/p99 of the server-side time of
// one decision. Devices: CUSTODY_BENCH_DEVICES (default 50) swtpm
// processes, each with a full custody chain in the ledger; b.N decisions
// are spread over rounds of one decision per device (rounds after the
// first are re-enrollments: the same checks plus superseding the LDevID).
//
//	go test -run '^$' -bench GateDecisions -benchtime 200x ./services/gate/
func BenchmarkGateDecisions(b *testing.B) {
	n := envInt("CUSTODY_BENCH_DEVICES", 50)
	conc := envInt("CUSTODY_BENCH_CONCURRENCY", 32)
	benchOnce.Do(func() {
		start := time.Now()
		benchState, benchErr = setupBench(n)
		if benchErr == nil {
			fmt.Fprintf(os.Stderr, "gate bench: %d swtpm devices through the supply chain in %s, ledger size %d\n",
				n, time.Since(start).Round(time.Millisecond), benchState.e.n.Ledger.Head().Size)
		}
	})
	if benchErr != nil {
		if os.Getenv("CI") == "true" {
			b.Fatal(benchErr)
		}
		b.Skip(benchErr)
	}
	s := benchState
	ctx := context.Background()
	// CUSTODY_BENCH_CPUPROFILE=file profiles the rounds (not the set-up).
	if f := os.Getenv("CUSTODY_BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		if err := pprof.StartCPUProfile(out); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	var wall, cpu time.Duration
	var lat []time.Duration
	for done := 0; done < b.N; {
		batch := s.devices[:min(len(s.devices), b.N-done)]
		b.StopTimer()
		reqs := make([]*prepared, len(batch))
		var g errgroup.Group
		g.SetLimit(8)
		for i, d := range batch {
			g.Go(func() (err error) { reqs[i], err = s.prepare(ctx, d); return err })
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		s.timing.reset()
		b.StartTimer()
		start, cpu0 := time.Now(), processCPU()
		g = errgroup.Group{}
		g.SetLimit(conc)
		for _, p := range reqs {
			g.Go(func() error {
				hreq, _ := http.NewRequestWithContext(ctx, http.MethodPut, p.url, bytes.NewReader(p.body))
				hreq.Header.Set("Content-Type", "application/json")
				hreq.Header.Set("Authorization", p.token)
				resp, err := http.DefaultClient.Do(hreq)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				var out gate.Outcome
				if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted {
					return fmt.Errorf("register: %d %v", resp.StatusCode, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		wall += time.Since(start)
		cpu += processCPU() - cpu0
		b.StopTimer()
		lat = append(lat, s.timing.reset()...)
		done += len(batch)
	}
	// Every decision must have been an enrollment.
	var refused []string
	for _, d := range s.e.n.Gate.Decisions() {
		if !d.Allowed {
			refused = append(refused, d.Rule+": "+d.Message)
		}
	}
	if len(refused) > 0 {
		b.Fatalf("%d decisions refused, e.g. %s", len(refused), refused[0])
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(lat))/wall.Seconds(), "decisions/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(s.devices)), "devices")
	// CPU of the whole process (gate, ledger, NATS, DPS emulator and the
	// HTTP clients) per decision: GOMAXPROCS / this is the ceiling of this
	// all-in-one process on an idle machine.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(len(lat)), "cpu-ms/decision")
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
