// Command custody-agent is the device side of Custody. It opens the
// device's TPM and either serves the factory API that partner stations use
// while the device moves through the supply chain (serve), or runs first-boot
// enrollment with the operator's gate and DPS (enroll).
//
// The in-process TPM simulator (--tpm sim:seed=N) keeps its state in memory
// and allows one simulator per process, so each simulated device is its own
// `custody-agent serve` process for its whole life; its first boot is
// triggered through POST /v1/firstboot, which reboots the TPM and enrolls.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/custodyledger/custody/attest/tpm"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/logging"
	"github.com/custodyledger/custody/services/device"
	"github.com/custodyledger/custody/services/gate/gatewire"
	"github.com/custodyledger/custody/services/pki"
)

// Exit codes of enroll.
const (
	exitOK      = 0
	exitError   = 1
	exitUsage   = 2
	exitRefused = 3
	exitUnavail = 4
)

func usage() {
	fmt.Fprint(os.Stderr, `Usage: custody-agent <command> [flags]

custody-agent is the device side of Custody: it opens the device's TPM and
either serves the factory API partner stations use while the device moves
through the supply chain, or enrolls the device at first boot.

Commands:
  serve    serve the device's factory API to partners' stations over mTLS
           (stations get quotes, program firmware)
  enroll   first boot: enroll with the operator's gate and register at DPS

TPM URIs (--tpm): sim, sim:seed=N (in-process simulator), swtpm://HOST:PORT,
/dev/tpmrm0.

Run "custody-agent <command> --help" for what a command does and its flags.
Exit codes of enroll: 0 enrolled (device, hub and the LDevID chain as PEM on
stdout), 1 error, 2 usage, 3 refused by the gate (the rule on stderr),
4 gate or DPS unavailable after --retries. Enrolling again with the same TPM
is safe: it renews the LDevID and the gate revokes the previous one.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		fmt.Fprintln(os.Stderr, "custody-agent: missing the command: serve or enroll")
		os.Exit(exitUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(ctx, os.Args[2:])
	case "enroll":
		err = enrollCmd(ctx, os.Args[2:])
	case "-h", "-help", "--help", "help":
		usage()
		return
	default:
		usage()
		fmt.Fprintf(os.Stderr, "custody-agent: unknown command %q: want serve or enroll\n", os.Args[1])
		os.Exit(exitUsage)
	}
	var refused *device.RefusedError
	var unavailable *unavailableError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, &refused):
		fmt.Fprintf(os.Stderr, "custody-agent: %v (errorCode %d)\n", err, refused.Code)
		if r, ok := events.LookupRejection(events.ByGate, refused.Rule); ok {
			fmt.Fprintf(os.Stderr, "custody-agent: rule %s: refused when %s\n", r.Code, r.Meaning)
		}
		os.Exit(exitRefused)
	case errors.As(err, &unavailable):
		fmt.Fprintln(os.Stderr, "custody-agent:", err)
		os.Exit(exitUnavail)
	case errors.Is(err, errUsage):
		os.Exit(exitUsage)
	default:
		fmt.Fprintln(os.Stderr, "custody-agent:", err)
		os.Exit(exitError)
	}
}

var errUsage = errors.New("usage")

type tpmFlags struct {
	uri, state string
}

func (t *tpmFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.uri, "tpm", "sim", "TPM URI: sim, sim:seed=N, swtpm://HOST:PORT or /dev/tpmrm0")
	fs.StringVar(&t.state, "state", "", "device state directory (firmware image); default a temporary directory")
}

func (t *tpmFlags) open() (*device.Device, func(), error) {
	tp, err := tpm.Open(t.uri)
	if err != nil {
		return nil, nil, err
	}
	state := t.state
	if state == "" {
		if state, err = os.MkdirTemp("", "custody-agent-"); err != nil {
			tp.Close()
			return nil, nil, err
		}
	}
	if err := os.MkdirAll(state, 0o700); err != nil {
		tp.Close()
		return nil, nil, err
	}
	d, err := device.New(device.Config{TPM: tp, StateDir: state})
	if err != nil {
		tp.Close()
		return nil, nil, err
	}
	return d, func() { _ = tp.Close() }, nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "custody-agent %s: unexpected argument %q: it takes flags only; run \"custody-agent %s --help\" for its usage\n", fs.Name(), fs.Arg(0), fs.Name())
		return errUsage
	}
	return nil
}

// FirstBootRequest is the body of POST /v1/firstboot.
type FirstBootRequest struct {
	Gate    string `json:"gate"`
	IDScope string `json:"idScope"`
	DPSCA   []byte `json:"dpsCa,omitempty"` // PEM roots for the DPS endpoint
}

// FirstBootResult is its answer.
type FirstBootResult struct {
	DeviceID    string      `json:"deviceId"`
	Enrolled    bool        `json:"enrolled"`
	Rule        string      `json:"rule,omitempty"`
	Message     string      `json:"message,omitempty"`
	AssignedHub string      `json:"assignedHub,omitempty"`
	LDevID      string      `json:"ldevidSubject,omitempty"`
	Issuer      string      `json:"ldevidIssuer,omitempty"`
	Decision    interface{} `json:"decision,omitempty"`
	Error       string      `json:"error,omitempty"`
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody-agent serve (--pki DIR | --tls-cert FILE --tls-key FILE --client-ca FILE | --insecure-http) [--tpm URI] [--state DIR] [--listen ADDR] [--addr-file FILE]

Opens the device's TPM and serves its factory API over TLS: partner
stations call it to read the device's identity (EK, IAK), get quotes over
their nonces, write the EK certificate into NV and program firmware while
the device moves through the supply chain; POST /v1/firstboot reboots the
TPM and enrolls the device at the gate (for simulated devices). It logs the
API's URL ("device factory API listening url=https://...") and, with
--addr-file, writes it to a file once it listens; it serves until
interrupted.

The API answers only partners' stations: every caller presents its
consortium partner certificate as its TLS client certificate, which must
chain to --client-ca and carry the role of a station (tpm-vendor, odm, oem,
ems or operator). A caller without one, or with a certificate that does not
verify, gets 401; a gate's or the consortium's certificate gets 403. The
agent does not read the log, so a partner revoked there but whose
certificate is still valid is admitted (the ledger refuses its events).
--pki DIR takes the consortium CA from the demo PKI in DIR and issues the
agent a server certificate for its --listen host from the PKI's TLS CA
(<pki>/tls/ca.pem is then the CA callers trust). Without TLS it refuses to
start, unless --insecure-http (development only: plain HTTP that answers
anyone who reaches it, with a warning in the log).

Exit status: 0 after SIGINT or SIGTERM, 1 error (TPM, certificates or
listener), 2 usage (including no TLS configuration).

Flags:
`)
		fs.PrintDefaults()
	}
	var t tpmFlags
	t.register(fs)
	listen := fs.String("listen", "127.0.0.1:0", "listen address of the factory API")
	addrFile := fs.String("addr-file", "", "write the API's base URL to this file once listening")
	pkiDir := fs.String("pki", "", "demo PKI directory: the consortium CA for client certificates, and a server certificate for the --listen host issued from its TLS CA")
	tlsCert := fs.String("tls-cert", "", "PEM file of the API's TLS server certificate (chain)")
	tlsKey := fs.String("tls-key", "", "PEM file of its private key")
	clientCA := fs.String("client-ca", "", "PEM file of the consortium CA that callers' partner certificates must chain to")
	insecureHTTP := fs.Bool("insecure-http", false, "serve plain HTTP to anyone who reaches it, with no partner check (development only; logged as a warning)")
	logFormat := logging.Flag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	tlsFiles := *tlsCert != "" || *tlsKey != "" || *clientCA != ""
	switch {
	case *insecureHTTP && (*pkiDir != "" || tlsFiles):
		return usageError(fs, "--insecure-http serves plain HTTP: give it without --pki, --tls-cert, --tls-key and --client-ca")
	case *pkiDir != "" && tlsFiles:
		return usageError(fs, "give either --pki or --tls-cert, --tls-key and --client-ca, not both")
	case tlsFiles && (*tlsCert == "" || *tlsKey == "" || *clientCA == ""):
		return usageError(fs, "--tls-cert, --tls-key and --client-ca go together: give all three")
	case !*insecureHTTP && *pkiDir == "" && !tlsFiles:
		return usageError(fs, "the factory API is served over TLS to partners' stations only: give --pki DIR (the demo PKI), or --tls-cert, --tls-key and --client-ca (--insecure-http serves plain HTTP to anyone, for development only)")
	}
	log := logging.New(os.Stderr, *logFormat, nil)
	var (
		cert       tls.Certificate
		consortium *x509.CertPool
		err        error
	)
	switch {
	case *pkiDir != "":
		cert, consortium, err = fromPKI(*pkiDir, *listen)
	case tlsFiles:
		cert, consortium, err = fromFiles(*tlsCert, *tlsKey, *clientCA)
	}
	if err != nil {
		return err
	}
	d, closeTPM, err := t.open()
	if err != nil {
		return err
	}
	defer closeTPM()
	mux := http.NewServeMux()
	mux.Handle("/", d.Handler())
	mux.HandleFunc("POST /v1/firstboot", func(w http.ResponseWriter, r *http.Request) {
		var req FirstBootRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Gate == "" || req.IDScope == "" {
			http.Error(w, `{"error":"firstboot needs gate and idScope"}`, http.StatusBadRequest)
			return
		}
		// Shipping and power-on: the TPM resets and the boot ROM measures
		// the firmware again.
		res := FirstBootResult{}
		if err := d.Reboot(); err != nil {
			res.Error = err.Error()
			writeJSON(w, http.StatusInternalServerError, res)
			return
		}
		cfg := device.EnrollConfig{GateURL: req.Gate, IDScope: req.IDScope, PollInterval: 100 * time.Millisecond}
		if len(req.DPSCA) > 0 {
			cfg.DPSRoots = x509.NewCertPool()
			cfg.DPSRoots.AppendCertsFromPEM(req.DPSCA)
		}
		er, err := d.Enroll(r.Context(), cfg)
		writeJSON(w, http.StatusOK, result(er, err))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if *insecureHTTP {
		log.Warn("--insecure-http: the device factory API is plain HTTP and answers anyone who reaches it, with no partner check; for development only")
	} else {
		scheme = "https"
		srv.Handler = device.RequirePartner(mux, consortium)
		srv.TLSConfig = device.ServerTLS(cert)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	url := scheme + "://" + ln.Addr().String()
	if *addrFile != "" {
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(url+"\n"), 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			return err
		}
	}
	log.Info("device factory API listening", "url", url, "tpm", t.uri, "partners-only", !*insecureHTTP)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if *insecureHTTP {
		err = srv.Serve(ln)
	} else {
		err = srv.ServeTLS(ln, "", "")
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// usageError prints msg as serve's usage error and returns errUsage.
func usageError(fs *flag.FlagSet, msg string) error {
	fmt.Fprintf(fs.Output(), "custody-agent %s: %s\n", fs.Name(), msg)
	return errUsage
}

// agentCertValidity is how long a server certificate issued with --pki is
// valid: longer than any simulated device lives.
const agentCertValidity = 365 * 24 * time.Hour

// fromPKI loads the demo PKI in dir and issues the agent a server
// certificate for the host of listen from its TLS CA (for an unspecified
// host, for localhost, the loopback addresses and the machine's name).
func fromPKI(dir, listen string) (tls.Certificate, *x509.CertPool, error) {
	d, err := pki.LoadDemo(dir)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--pki %s: %w", dir, err)
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--listen %s: %w", listen, err)
	}
	hosts := []string{host}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		hosts = []string{"localhost", "127.0.0.1", "::1"}
		if name, err := os.Hostname(); err == nil && name != "" {
			hosts = append(hosts, name)
		}
	}
	cert, err := d.TLSAuthority().IssueTLSServer(agentCertValidity, hosts...)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return *cert, d.ConsortiumPool(), nil
}

// fromFiles reads the server certificate and key and the consortium CA.
func fromFiles(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w; want a PEM certificate (chain) and its PEM private key", certFile, keyFile, err)
	}
	const want = "PEM CERTIFICATEs of the consortium CA (the demo's is <pki>/" + pki.FileConsortiumCA + ")"
	pemBytes, err := os.ReadFile(filepath.Clean(caFile))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return tls.Certificate{}, nil, fmt.Errorf("--client-ca %s: %w; want %s", caFile, err, want)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return tls.Certificate{}, nil, fmt.Errorf("--client-ca %s: holds no PEM certificate; want %s", caFile, want)
	}
	return cert, pool, nil
}

func result(er *device.EnrollResult, err error) FirstBootResult {
	var res FirstBootResult
	if er != nil {
		res.DeviceID, res.AssignedHub = er.DeviceID, er.AssignedHub
		if er.Decision != nil {
			res.Decision = er.Decision
		}
		if len(er.Certificates) > 0 {
			res.LDevID = er.Certificates[0].Subject.String()
			res.Issuer = er.Certificates[0].Issuer.String()
		}
	}
	var refused *device.RefusedError
	switch {
	case errors.As(err, &refused):
		res.Rule, res.Message = refused.Rule, refused.Message
	case err != nil:
		res.Error = err.Error()
	default:
		res.Enrolled = true
	}
	return res
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func enrollCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody-agent enroll [--tpm URI] [--gate URL] [--id-scope SCOPE] [--dps-ca FILE] [flags]

First boot: proves the device's identity to the operator's enrollment gate
(EK certificate, credential activation, a fresh quote of the firmware PCRs),
which checks its custody history in the ledger and issues an LDevID for a
TPM-resident key, then registers at DPS over mTLS and gets an IoT hub.
Enrolling again with the same TPM is safe: the LDevID is renewed and the
gate revokes the previous one.

Prints the device ID, the assigned hub, the LDevID's subject, serial, expiry
and issuer, the log index of device.enrolled, then the LDevID chain as PEM.

Exit status: 0 enrolled, 1 error, 2 usage, 3 refused by the gate (the rule
broken is printed), 4 gate or DPS unavailable after --retries.

Flags:
`)
		fs.PrintDefaults()
	}
	var t tpmFlags
	t.register(fs)
	gateURL := fs.String("gate", "https://127.0.0.1:8480/gate", "the operator's enrollment gate")
	idScope := fs.String("id-scope", "0ne00C057D1", "the operator's DPS ID scope")
	dpsCA := fs.String("dps-ca", "", "PEM file of roots for the gate's and the DPS endpoint's TLS certificates (default: system roots; the demo's is <pki>/tls/ca.pem)")
	apiVersion := fs.String("api-version", gatewire.APIVersion2025, "DPS api-version spoken to the gate (2025-07-01-preview also sends a CSR)")
	poll := fs.Duration("poll", 2*time.Second, "interval between registration operation polls (gate and DPS)")
	retries := fs.Int("retries", 3, "retries after a transport or server error (each retry is a complete enrollment; a refusal is never retried)")
	certOut := fs.String("cert-out", "", "also write the LDevID chain (PEM) to this file")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := device.EnrollConfig{GateURL: *gateURL, IDScope: *idScope, APIVersion: *apiVersion, PollInterval: *poll}
	if *dpsCA != "" {
		const want = "PEM CERTIFICATEs of the roots for the DPS endpoint (the demo's is <pki>/tls/ca.pem)"
		pemBytes, err := os.ReadFile(filepath.Clean(*dpsCA))
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err // the path is in the message already
			}
			return fmt.Errorf("--dps-ca %s: %w; want %s", *dpsCA, err, want)
		}
		cfg.DPSRoots = x509.NewCertPool()
		if !cfg.DPSRoots.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("--dps-ca %s: holds no PEM certificate; want %s", *dpsCA, want)
		}
	}
	d, closeTPM, err := t.open()
	if err != nil {
		return err
	}
	defer closeTPM()
	var er *device.EnrollResult
	for attempt := 0; ; attempt++ {
		er, err = d.Enroll(ctx, cfg)
		var refused *device.RefusedError
		if err == nil || errors.As(err, &refused) || ctx.Err() != nil || attempt >= *retries {
			break
		}
		wait := time.Duration(1<<attempt) * time.Second
		fmt.Fprintf(os.Stderr, "custody-agent: %v; retrying in %s\n", err, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		var refused *device.RefusedError
		if errors.As(err, &refused) || ctx.Err() != nil {
			return err
		}
		return &unavailableError{err}
	}
	leaf := er.Certificates[0]
	chain := pki.EncodeCertsPEM(er.Certificates...)
	fmt.Printf("device      %s\nenrolled    yes\nhub         %s\ndps device  %s\nLDevID      %s\nserial      %s\nvalid until %s\nissuer      %s\n",
		er.DeviceID, er.AssignedHub, er.DPSDeviceID, leaf.Subject, leaf.SerialNumber.Text(16),
		leaf.NotAfter.UTC().Format(time.RFC3339), leaf.Issuer)
	if er.Decision != nil && er.Decision.Logged {
		fmt.Printf("log index   %d (device.enrolled)\n", er.Decision.LogIndex)
	}
	if *certOut != "" {
		if err := os.WriteFile(*certOut, chain, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("%s", chain)
	return nil
}

// unavailableError is an enrollment that failed for a reason other than a
// refusal (gate or DPS unreachable, server error) after every retry.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }
