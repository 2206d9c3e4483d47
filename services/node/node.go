// Package node runs a whole Custody deployment in one process, as custodyd
// and `custody demo` do: an embedded NATS server with JetStream, the ledger
// on Pebble, one station per partner of the PKI, the operator's enrollment
// gate with its LDevID CA, and a DPS-compatible emulator. Every part talks
// to the others through its real protocol (JetStream, HTTP, HTTPS with
// client certificates); nothing is short-circuited in process except the
// NATS connections, which use nats.InProcessServer.
package node

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
	"github.com/custodyledger/custody/services/dps"
	"github.com/custodyledger/custody/services/gate"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// GCPercent is the garbage collector setting (GOGC) custodyd runs the node
// with by default. At 100, the Go default, collection took about 9 % of a
// busy gate process's CPU (BenchmarkGateDecisions); the live heap is tens
// of MB, so 400 costs a few hundred MB of peak heap for a quarter of the
// collection work.
const GCPercent = 400

// ApplyGCPercent sets the garbage collector's GOGC to percent for the
// process, unless the GOGC environment variable chose one.
func ApplyGCPercent(percent int) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
}

// DefaultTPMInfo is what the demo's TPM vendor writes into EK
// certificates (Config.TPMInfo's default).
var DefaultTPMInfo = attest.TPMInfo{Manufacturer: "id:41434D45", Model: "ACME-TPM20", Version: "id:00010002"}

// Config configures a node. The zero value plus DataDir runs on a laptop.
type Config struct {
	// DataDir holds the NATS store, the ledger and (by default) the PKI.
	DataDir string
	// PKIDir is the demo PKI (`custody pki init`); created if missing.
	// Default DataDir/pki.
	PKIDir string
	// HTTPAddr serves the ledger (/ledger/), stations (/stations/<name>/)
	// and the gate (/gate/) over TLS with the PKI's server certificate;
	// partners authenticate with their certificate (mTLS). Default
	// 127.0.0.1:8480; port 0 picks one.
	HTTPAddr string
	// InsecureHTTP serves HTTPAddr as plain HTTP, without mTLS identities
	// (read tokens still work): for development only, logged loudly.
	InsecureHTTP bool
	// DeviceNetworks are where the stations may reach device agents
	// (default station.DefaultDeviceNetworks: loopback).
	DeviceNetworks []netip.Prefix
	// DPSAddr serves the DPS emulator over TLS. Default 127.0.0.1:8443.
	DPSAddr string
	// NATSAddr is the embedded NATS server's client listener; "" means no
	// listener (in-process connections only). Default "".
	NATSAddr string
	// IDScope is the operator's DPS ID scope. Default 0ne00C057D1.
	IDScope string
	// Hubs are the IoT hubs DPS allocates devices to.
	Hubs []string
	// Origin is the checkpoint origin's hostname. Default custody.local.
	Origin string
	// Operator and Gate name the operator whose gate this node runs.
	// Defaults blue-operator and blue-gate.
	Operator, Gate string
	// Partners of a new demo PKI. Default pki.DefaultPartners().
	Partners []pki.PartnerSpec
	// GatePolicy is what the gate requires of a device (gate.Policy;
	// zero: the default).
	GatePolicy gate.Policy
	// TPMInfo is what the TPM vendor writes into EK certificates.
	TPMInfo attest.TPMInfo
	// LedgerCacheMiB is the ledger store's block cache (default 256 MiB).
	// Proofs are fastest while the tree's nodes, about 90 bytes per leaf,
	// fit in it.
	LedgerCacheMiB int
	// VerdictWait, when positive, has the ledger take verdicts from a
	// verifier pool (custodyd --role verifier; ledger.Config.VerdictWait).
	VerdictWait time.Duration
	Logger      *slog.Logger
}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		return errors.New("node: DataDir is required")
	}
	if c.PKIDir == "" {
		c.PKIDir = filepath.Join(c.DataDir, "pki")
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:8480"
	}
	if c.DPSAddr == "" {
		c.DPSAddr = "127.0.0.1:8443"
	}
	if c.IDScope == "" {
		c.IDScope = "0ne00C057D1"
	}
	if len(c.Hubs) == 0 {
		c.Hubs = []string{"blue-hub-1.azure-devices.net", "blue-hub-2.azure-devices.net"}
	}
	if c.Origin == "" {
		c.Origin = "custody.local"
	}
	if c.Operator == "" {
		c.Operator = "blue-operator"
	}
	if c.Gate == "" {
		c.Gate = "blue-gate"
	}
	if c.TPMInfo == (attest.TPMInfo{}) {
		c.TPMInfo = DefaultTPMInfo
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.InsecureHTTP {
		WarnInsecureHTTP(c.Logger, c.HTTPAddr)
	}
	return nil
}

// Node is a running all-in-one deployment.
type Node struct {
	cfg      Config
	PKI      *pki.Demo
	NATS     *server.Server
	Ledger   *ledger.Ledger
	Stations map[string]*station.Station
	Gate     *gate.Gate
	DPS      *dps.Emulator

	lock      *os.File // the data folder's (lockData)
	store     *pebble.Store
	connsMu   sync.Mutex // Connect is called from any goroutine
	conns     []*nats.Conn
	httpLn    net.Listener
	dpsLn     net.Listener
	httpSrv   *http.Server
	dpsSrv    *http.Server
	ready     chan struct{}
	dpsKey    []byte
	dpsKeyNam string
}

// New builds a node: PKI, NATS, ledger, stations, gate and DPS emulator,
// and binds its listeners. Run starts serving.
func New(ctx context.Context, cfg Config) (n *Node, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	built := &Node{cfg: cfg, Stations: map[string]*station.Station{}, ready: make(chan struct{})}
	n = built
	defer func() {
		if err != nil {
			built.close() // n is nil on the error returns
		}
	}()
	// The data folder's lock comes before anything touches the folder, and
	// the listeners before anything slow: a node started twice fails at
	// once and says why.
	if n.lock, err = lockData(cfg.DataDir); err != nil {
		return nil, err
	}
	if n.httpLn, err = listen("HTTP", cfg.HTTPAddr); err != nil {
		return nil, err
	}
	if n.dpsLn, err = listen("DPS", cfg.DPSAddr); err != nil {
		return nil, err
	}
	if n.PKI, err = pki.InitDemo(cfg.PKIDir, cfg.Partners); err != nil {
		return nil, fmt.Errorf("node: PKI: %w", err)
	}
	if err := n.startNATS(); err != nil {
		return nil, err
	}
	if n.store, err = pebble.OpenOptions(filepath.Join(cfg.DataDir, "ledger"), pebble.Options{CacheSize: int64(cfg.LedgerCacheMiB) << 20}); err != nil {
		return nil, err
	}
	logKey, err := ledger.NewLogKey(cfg.Origin, n.PKI.LogKey)
	if err != nil {
		return nil, err
	}
	trust, err := attest.ParseBundle(n.PKI.EKTrustBundle())
	if err != nil {
		return nil, fmt.Errorf("node: TPM trust bundle: %w", err)
	}
	lnc, err := n.connect(LedgerUser)
	if err != nil {
		return nil, err
	}
	n.Ledger, err = ledger.New(ctx, ledger.Config{
		Store: n.store, NATS: lnc, LogKey: logKey, Consortium: n.PKI.ConsortiumCA.Cert,
		TPMTrust: trust, VerdictWait: cfg.VerdictWait, Logger: cfg.Logger.With("part", "ledger"),
	})
	if err != nil {
		return nil, err
	}
	for _, name := range n.PKI.PartnerNames() {
		p := n.PKI.Partners[name]
		if p.Role == events.RoleGate {
			continue
		}
		nc, err := n.connect(name)
		if err != nil {
			return nil, err
		}
		rv, err := n.ReceiptVerifier(name)
		if err != nil {
			return nil, err
		}
		// The station calls device agents as its partner: the agents
		// (custody-agent serve) answer only partners' certificates, and
		// their server certificates are the PKI's TLS CA's.
		hc, err := n.PKI.HTTPClient(name)
		if err != nil {
			return nil, err
		}
		sc := station.Config{
			Name: name, Role: p.Role, Key: p.Key, NATS: nc, ReceiptVerifier: rv, Ledger: station.StoreState{Store: n.store}, HTTPClient: hc,
			TPMInfo: cfg.TPMInfo, Logger: cfg.Logger.With("part", "station", "partner", name),
			OutboxDir: filepath.Join(cfg.DataDir, "outbox", name), DeviceNetworks: cfg.DeviceNetworks,
		}
		if p.Role == events.RoleTPMVendor {
			sc.ManufacturingCA = n.PKI.VendorMfgCA
		}
		if n.Stations[name], err = station.New(sc); err != nil {
			return nil, err
		}
	}
	n.dpsKey = make([]byte, 32)
	_, _ = rand.Read(n.dpsKey)
	n.dpsKeyNam = "provisioningserviceowner"
	n.DPS, err = dps.NewEmulator(dps.EmulatorConfig{
		IDScope: cfg.IDScope, Hubs: cfg.Hubs,
		SASKeyName: n.dpsKeyNam, SASKey: n.dpsKey, Logger: cfg.Logger.With("part", "dps"),
	})
	if err != nil {
		return nil, err
	}
	gp, ok := n.PKI.Partners[cfg.Gate]
	if !ok || gp.Role != events.RoleGate {
		return nil, fmt.Errorf("node: the PKI has no gate partner %q", cfg.Gate)
	}
	gnc, err := n.connect(cfg.Gate)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(n.PKI.TLSCA)
	// The gate enrolls devices concurrently: keep enough TLS connections to
	// DPS alive that concurrent decisions do not each pay a handshake.
	svc := dps.NewServiceClient(n.DPSURL(), n.dpsKeyNam, n.dpsKey, &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		},
		Timeout: 30 * time.Second,
	})
	grv, err := n.ReceiptVerifier(cfg.Gate)
	if err != nil {
		return nil, err
	}
	n.Gate, err = gate.New(gate.Config{
		Name: cfg.Gate, Operator: cfg.Operator, IDScope: cfg.IDScope, Key: gp.Key, NATS: gnc, ReceiptVerifier: grv,
		Ledger: n.store, TPMTrust: trust, LDevIDCA: n.PKI.LDevIDCA,
		Registry: svc, Log: n.store, DPSEndpoint: n.DPSURL(), Policy: cfg.GatePolicy, Logger: cfg.Logger.With("part", "gate"),
		RevocationFile: filepath.Join(cfg.DataDir, "gate-revocations.jsonl"),
	})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	n.mount(mux, "/ledger/", false, n.Ledger.Handler(), LedgerRoutes)
	n.mount(mux, "/api/v1/", true, n.Ledger.RekorHandler(), RekorRoutes) // Rekor v1 read API (rekor-cli --rekor_server <node URL>)
	n.mount(mux, "/gate/", false, n.Gate.Handler(), GateRoutes, cfg.Gate, cfg.Operator)
	for name, s := range n.Stations {
		n.mount(mux, "/stations/"+name+"/", false, s.Handler(), StationRoutes(), name)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-n.ready:
			_, _ = w.Write([]byte("ok\n"))
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	n.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if !cfg.InsecureHTTP {
		// Partners present their consortium certificate; the guard checks
		// it against the registry (ledger.IdentifyCertificate), so the
		// handshake only asks for it.
		n.httpSrv.TLSConfig = ServerTLS(n.PKI)
	}
	n.dpsSrv = &http.Server{Handler: n.DPS.Handler(), TLSConfig: n.DPS.TLSConfig(*n.PKI.TLS), ReadHeaderTimeout: 10 * time.Second}
	return n, nil
}

// URL is the node's API base URL (https://, or http:// with InsecureHTTP).
func (n *Node) URL() string {
	if n.cfg.InsecureHTTP {
		return "http://" + n.httpLn.Addr().String()
	}
	return "https://" + n.httpLn.Addr().String()
}

// HTTPClient is a client of the node's API acting as partner ("" for
// anonymous), trusting the node's TLS CA.
func (n *Node) HTTPClient(partner string) *http.Client {
	hc, err := n.PKI.HTTPClient(partner)
	if err != nil {
		panic(err) // a partner not in the node's PKI: a bug in the caller
	}
	return hc
}

// DPSURL is the DPS emulator's base URL.
func (n *Node) DPSURL() string { return "https://" + n.dpsLn.Addr().String() }

// DPSService returns a client for the DPS emulator's service API
// (enrollments, registration states), trusting the node's TLS CA.
func (n *Node) DPSService() *dps.ServiceClient {
	roots := x509.NewCertPool()
	roots.AddCert(n.PKI.TLSCA)
	return dps.NewServiceClient(n.DPSURL(), n.dpsKeyNam, n.dpsKey, &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
		Timeout:   30 * time.Second,
	})
}

// NATSURL is the embedded NATS server's client URL ("" without a listener).
func (n *Node) NATSURL() string {
	if n.cfg.NATSAddr == "" {
		return ""
	}
	return n.NATS.ClientURL()
}

// IDScope is the operator's DPS ID scope.
func (n *Node) IDScope() string { return n.cfg.IDScope }

// Ready is closed once the node serves and the partner registry is logged.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// Run serves until ctx ends, then shuts everything down.
func (n *Node) Run(ctx context.Context) error {
	defer n.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.Ledger.Run(gctx) })
	g.Go(func() error { return n.Gate.Run(gctx) })
	g.Go(func() error { return Serve(gctx, n.httpSrv, n.httpLn, !n.cfg.InsecureHTTP) })
	g.Go(func() error { return Serve(gctx, n.dpsSrv, n.dpsLn, true) })
	g.Go(func() error {
		if err := n.registerPartners(gctx); err != nil {
			return err
		}
		close(n.ready)
		n.cfg.Logger.Info("custody node ready", "http", n.URL(), "dps", n.DPSURL(), "nats", n.NATSURL(), "log_size", n.Ledger.Head().Size)
		// Events a station published before a crash or stop and never saw
		// answered are re-sent beside serving (after the registry, which
		// they may need): a pending event never stops a start, and
		// recovery keeps trying while the ledger catches up.
		for name, s := range n.Stations {
			g.Go(func() error {
				if err := s.Recover(gctx); err != nil && gctx.Err() == nil {
					n.cfg.Logger.Error("station recovery stopped", "station", name, "err", err)
				}
				return nil
			})
		}
		return nil
	})
	return g.Wait()
}

// Serve serves s on ln (over TLS with s.TLSConfig when useTLS) until ctx
// ends, then shuts it down, giving requests 5 seconds.
func Serve(ctx context.Context, s *http.Server, ln net.Listener, useTLS bool) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if useTLS {
			err = s.ServeTLS(ln, "", "")
		} else {
			err = s.Serve(ln)
		}
		errc <- err
	}()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// ReceiptVerifier is what proves the receipts of partner's events (the
// consortium's registry events: events.ConsortiumPartner): the log's public
// key and the certificate the ledger puts in the partner's leaves, as the
// node's PKI holds them.
func (n *Node) ReceiptVerifier(partner string) (*ledger.ReceiptVerifier, error) {
	return ReceiptVerifier(n.PKI, partner)
}

// ReceiptVerifier is what proves the receipts of partner's events on a
// deployment on p: the log's public key and the certificate the ledger
// puts in the partner's leaves (the consortium CA's for
// events.ConsortiumPartner).
func ReceiptVerifier(p *pki.Demo, partner string) (*ledger.ReceiptVerifier, error) {
	cert := p.ConsortiumCA.Cert
	if partner != events.ConsortiumPartner {
		pt, ok := p.Partners[partner]
		if !ok {
			return nil, fmt.Errorf("node: no partner %q in the PKI", partner)
		}
		cert = pt.Cert
	}
	return ledger.NewReceiptVerifier(&p.LogKey.PublicKey, cert.Raw)
}

// registerPartners logs partner.registered, signed by the consortium CA
// key, for every partner of the PKI the ledger does not know yet.
func (n *Node) registerPartners(ctx context.Context) error {
	nc, err := n.connect("consortium")
	if err != nil {
		return err
	}
	return RegisterPartners(ctx, nc, n.PKI, n.cfg.Operator, func(name string) bool {
		_, err := n.store.Partner(name)
		return err == nil
	})
}

// RegisterPartners publishes partner.registered, signed by the consortium
// CA key of p, over nc (connected as the consortium's NATS user) for every
// partner of p that known does not name (nil: every one), and waits for
// each receipt. A partner the ledger already holds (CodeAlreadyExists)
// counts as registered, so that running it again is harmless. operator is
// the operator whose gate the PKI's gate partners serve.
func RegisterPartners(ctx context.Context, nc *nats.Conn, p *pki.Demo, operator string, known func(name string) bool) error {
	rv, err := ReceiptVerifier(p, events.ConsortiumPartner)
	if err != nil {
		return err
	}
	pub, err := events.NewPublisher(nc, events.ConsortiumPartner, rv)
	if err != nil {
		return err
	}
	names := p.PartnerNames()
	sort.Strings(names)
	for _, name := range names {
		if known != nil && known(name) {
			continue
		}
		pt := p.Partners[name]
		info := events.PartnerInfo{Name: name, Role: pt.Role, Certificate: pt.Cert.Raw}
		if pt.Role == events.RoleGate {
			info.Operator = operator
		}
		st := events.NewPartnerStatement(events.KindPartnerRegistered, info, certDigest(pt.Cert), time.Now(), events.NewEventID())
		env, err := events.Sign(ctx, st, p.ConsortiumCA.Key, events.ConsortiumPartner)
		if err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := pub.Publish(rctx, env)
		cancel()
		if err != nil {
			return fmt.Errorf("node: registering partner %s: %w", name, err)
		}
		if r.Status != events.StatusAccepted && r.Code != string(events.CodeAlreadyExists) {
			return fmt.Errorf("node: registering partner %s: %s: %s", name, r.Code, r.Reason)
		}
	}
	return nil
}

func (n *Node) close() {
	n.connsMu.Lock()
	conns := n.conns
	n.conns = nil
	n.connsMu.Unlock()
	for _, nc := range conns {
		nc.Close()
	}
	if n.httpLn != nil {
		_ = n.httpLn.Close()
	}
	if n.dpsLn != nil {
		_ = n.dpsLn.Close()
	}
	if n.NATS != nil {
		n.NATS.Shutdown()
		n.NATS.WaitForShutdown()
	}
	if n.store != nil {
		_ = n.store.Close()
		n.store = nil
	}
	if n.lock != nil {
		_ = n.lock.Close() // releases the lock
		n.lock = nil
	}
}

// Start builds a node and runs it in the background until stop is called
// or ctx ends, returning once the node is ready (at most 60 seconds).
// stop shuts the node down and returns Run's error.
func Start(ctx context.Context, cfg Config) (n *Node, stop func() error, err error) {
	ctx, cancel := context.WithCancel(ctx)
	n, err = New(ctx, cfg)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	stop = func() error {
		cancel()
		return <-done
	}
	select {
	case <-n.Ready():
		return n, stop, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before it was ready")
		}
		return nil, nil, fmt.Errorf("node: %w", err)
	case <-time.After(60 * time.Second):
		_ = stop()
		return nil, nil, errors.New("node: not ready after 60s")
	}
}

func certDigest(c *x509.Certificate) string {
	s := sha256.Sum256(c.Raw)
	return hex.EncodeToString(s[:])
}
