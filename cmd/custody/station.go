package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/logging"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

func init() {
	register("station", command{usage: "station run|call|pending", summary: "run a partner's station, call one (manufacture, stage, firmware, offer, withdraw, accept, flag, clear, ship, accept-shipment, withdraw-shipment), list its pending offers", run: stationCmd})
}

const stationUsage = `Usage:
  custody station run --partner NAME [flags]      serve a partner's station (HTTP API for the factory floor)
  custody station call OP --agent URL [flags]     call a station: manufacture, stage, firmware, offer, withdraw, accept, flag, clear
  custody station unconfirmed [--station URL]     list events published and not yet answered by the ledger
  custody station pending [--station URL]         list offers waiting for this partner to accept

A station is a partner's custody service on its factory floor: for every
event it gets a fresh quote from the device's TPM through the device agent,
signs the event with the partner's key, publishes it to the ledger and waits
for the ledger's receipt. custodyd serves one station per partner under
/stations/<partner>; "custody station run" runs one on its own.

Run "custody station <subcommand> --help" for what a subcommand does and its flags.
`

func stationCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, stationUsage)
		return usageErrorf("station: missing the subcommand: run, call, unconfirmed or pending")
	}
	switch args[0] {
	case "run":
		return stationRun(ctx, args[1:])
	case "call":
		return stationCall(ctx, args[1:])
	case "unconfirmed":
		return stationList(ctx, "unconfirmed", args[1:])
	case "pending":
		return stationList(ctx, "pending", args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stderr, stationUsage)
		return flag.ErrHelp
	}
	return usageErrorf("station: unknown subcommand %q: want run, call, unconfirmed or pending; run \"custody station --help\" for what each does", args[0])
}

func stationRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("station run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody station run --partner NAME | --role ROLE [flags]

Runs one partner's station apart from custodyd: it connects to NATS as the
partner's own user (NKEY from <pki>/nats/<partner>.nk), reads custody state
from the ledger's HTTP API, keeps every event in an outbox until the ledger
answers, re-sends what was unconfirmed at start-up, and serves the station API
(see "custody station call"). Every receipt is checked before an event counts
as logged: its digest, its inclusion proof of the event's leaf, and its
checkpoint, which must be signed by the log's key (--log-key). An answer that
fails the check is refused and the event stays in the outbox.

Flags:
`)
		fs.PrintDefaults()
	}
	partner := fs.String("partner", "", "the partner's name (its certificate and key are in --pki)")
	role := fs.String("role", "", "instead of --partner: the role (tpm-vendor, odm, oem, ems, operator) of the PKI's only partner with it")
	pkiDir := fs.String("pki", ".custody/pki", "PKI directory (partner key, NKEY seed, vendor manufacturing CA)")
	logKeyFile := fs.String("log-key", "", "the ledger's checkpoint public key (PEM) every receipt is checked with (default <pki>/"+pki.FileLogPub+")")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server")
	ledgerURL := fs.String("ledger", "https://127.0.0.1:8480/ledger", "the ledger's HTTP API")
	listen := fs.String("listen", "127.0.0.1:8490", "listen address of the station API (TLS with the PKI's server certificate; it answers only the partner's own certificate)")
	deviceNets := fs.String("device-networks", "127.0.0.0/8,::1/128", "comma-separated CIDR prefixes device agents may be reached on; any other agent address is refused without being contacted")
	outbox := fs.String("outbox", "", "outbox directory (default .custody/station-<partner>/outbox; custodyd's own stations use <data>/outbox/<partner>)")
	logFormat := logging.Flag(fs)
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if (*partner == "") == (*role == "") {
		fmt.Fprintln(fs.Output(), "custody station run: give exactly one of --partner and --role")
		return errUsage
	}
	d, err := pki.LoadDemo(*pkiDir)
	if err != nil {
		return err
	}
	if *role != "" {
		var names []string
		for _, name := range d.PartnerNames() {
			if d.Partners[name].Role == *role {
				names = append(names, name)
			}
		}
		if len(names) != 1 {
			return fmt.Errorf("%d partners in %s have role %q (%v): name one with --partner", len(names), *pkiDir, *role, names)
		}
		*partner = names[0]
	}
	p, ok := d.Partners[*partner]
	if !ok {
		return fmt.Errorf("no partner %q in %s", *partner, *pkiDir)
	}
	if *logKeyFile == "" {
		*logKeyFile = filepath.Join(*pkiDir, pki.FileLogPub)
	}
	logKey, err := readLogKey(*logKeyFile)
	if err != nil {
		return err
	}
	rv, err := ledger.NewReceiptVerifier(logKey, p.Cert.Raw)
	if err != nil {
		return err
	}
	kp, err := d.NKey(*partner)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, append(node.UserOptions(*partner, kp), node.NATSTLS(d))...)
	if err != nil {
		return fmt.Errorf("NATS %s as %s: %w", *natsURL, *partner, err)
	}
	defer nc.Close()
	if *outbox == "" {
		*outbox = ".custody/station-" + *partner + "/outbox"
	}
	logger := logging.New(os.Stderr, *logFormat, nil).With("partner", *partner)
	nets, err := station.ParseDeviceNetworks(strings.Split(*deviceNets, ","))
	if err != nil {
		return usageErrorf("station run: --device-networks: %v", err)
	}
	hc, err := d.HTTPClient(p.Name)
	if err != nil {
		return err
	}
	cfg := station.Config{
		Name: p.Name, Role: p.Role, Key: p.Key, NATS: nc, DeviceNetworks: nets, ReceiptVerifier: rv,
		Ledger: station.NewLedgerClient(*ledgerURL, hc), OutboxDir: *outbox, Logger: logger,
		HTTPClient: hc, // device agents answer only partners' certificates (custody-agent serve --pki)
	}
	if p.Role == events.RoleTPMVendor {
		cfg.ManufacturingCA = d.VendorMfgCA
		cfg.TPMInfo.Manufacturer, cfg.TPMInfo.Model, cfg.TPMInfo.Version = "id:41434D45", "ACME-TPM20", "id:00010002"
	}
	s, err := station.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	// Events published before a crash or stop and never answered are
	// re-sent while the station serves; a pending event never stops a start.
	go func() {
		if err := s.Recover(ctx); err != nil && ctx.Err() == nil {
			logger.Error("outbox recovery stopped", "err", err)
		}
	}()
	logger.Info("station listening", "url", "https://"+ln.Addr().String(), "role", p.Role)
	srv := &http.Server{
		Handler:           station.RequirePartner(s.Handler(), p.Name, d.ConsortiumPool()),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         node.ServerTLS(d),
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func stationCall(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("station call", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: custody station call OP (--agent URL | --agents URL,… | --manifest FILE) [flags]

Asks a partner's station to record one event about the device behind --agent
(the device agent's factory API, as "custody-agent serve" prints it): the
station quotes the device's TPM, signs the event with the partner's key and
waits for the ledger's answer. OP is one of:

  manufacture                     the TPM vendor's birth record (EK and IAK certificates)
  stage --stage assembly|test-passed|receiving-inspection [--note TEXT]
  firmware --image FILE           program the firmware and record its digest and PCRs (EMS)
  offer --to PARTNER              offer the device to the next partner
  withdraw                        withdraw this partner's pending offer before it is accepted
  accept                          accept the offer pending to this station's partner
  flag --reason R [--note TEXT]   flag the device (lost, stolen, rma, compromised, …)
  clear --reason R [--note TEXT]  clear a flag (operators)

A production line records many powered devices at once with one signature
(a station batch): each device quotes its own event, the ledger answers per
device ("members" in the receipt), and a device refused does not stop the
others:

  stages --agents URL,URL,… --stage assembly|test-passed|receiving-inspection [--note TEXT]
                                  up to 500 devices, each once
  firmware --agents URL,URL,… --image FILE
                                  a programming line: program each device and record them all

Shipments move boxed devices (not powered: no agent, no quote), one signed
event for a whole manifest (a JSON file: {"containers": [{"path": "P-1/C-1",
"devices": ["<device id>", …]}, …]}, up to 10,000 devices):

  ship --shipment ID --to PARTNER --manifest FILE    offer a shipment
  accept-shipment --offer DIGEST [--manifest FILE]   take its devices (all, or part: a split);
                                                     without --manifest, the whole shipment
  withdraw-shipment --offer DIGEST [--manifest FILE] take back devices still pending

A receiving station quotes a sample of a shipment with
"stage --stage receiving-inspection --agent URL": the quote must show the PCRs
recorded when the device was programmed.

An offer is idempotent: while the device has this partner's offer to the same
recipient pending (a retry), the station answers with that offer ("existing")
and signs nothing. An offer to another recipient while one is pending (a typo
in --to) would be logged by the ledger as equivocation evidence and flag the
device: the station refuses it unsigned unless --equivocate asks for it;
withdraw the pending offer first to offer the device elsewhere.

Prints the station's answer (the ledger's receipt) as JSON. Exit status: 0
logged, 1 error, 2 usage, 3 refused (the rule broken is printed; for stages,
when any device of the batch was refused, each is named).

Flags:
`)
		fs.PrintDefaults()
	}
	stationURL := fs.String("station", "https://127.0.0.1:8480/stations/acme-tpm", "the station's API")
	as := fs.String("as", "", "call as this partner, with its certificate from --pki (default: the partner the --station URL ends in); a station answers only its own partner")
	pkiDir := fs.String("pki", ".custody/pki", "PKI directory: the TLS CA and the partner's certificate and key")
	agent := fs.String("agent", "", "the device agent's factory API URL (required, except for shipments and stages)")
	agents := fs.String("agents", "", "the device agents' factory API URLs, comma-separated: one station batch (stages, firmware)")
	to := fs.String("to", "", "recipient partner (offer, ship)")
	stage := fs.String("stage", "", "stage name: assembly, test-passed or receiving-inspection (stage)")
	shipment := fs.String("shipment", "", "shipment ID (ship)")
	offerDigest := fs.String("offer", "", "the shipment offer's digest (accept-shipment, withdraw-shipment)")
	manifestFile := fs.String("manifest", "", "the shipment's manifest, a JSON file (ship, accept-shipment, withdraw-shipment)")
	note := fs.String("note", "", "free text (stage, flag, clear)")
	image := fs.String("image", "", "firmware image file (firmware)")
	reason := fs.String("reason", "", "lost, stolen, rma, compromised, … (flag, clear)")
	equivocate := fs.Bool("equivocate", false, "offer even while the device (for ship: the manifest's first device) has an offer from this partner pending elsewhere: the ledger logs it as equivocation evidence and flags the device(s) (offer, ship; for tests of the ledger)")
	if len(args) == 0 {
		fs.Usage()
		return usageErrorf("station call: missing the operation: one of %s", strings.Join(station.Operations, ", "))
	}
	op := args[0]
	switch op {
	case "-h", "-help", "--help", "help":
		fs.Usage()
		return flag.ErrHelp
	}
	if !slices.Contains(station.Operations, op) {
		return usageErrorf("station call: unknown operation %q: want one of %s (the operation comes first); nothing was sent", op, strings.Join(station.Operations, ", "))
	}
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	var agentList []string
	if *agents != "" {
		agentList = strings.Split(*agents, ",")
	}
	req := &station.Request{Agent: *agent, Agents: agentList, To: *to, Stage: *stage, Note: *note, Reason: *reason, Equivocate: *equivocate, Shipment: *shipment, Offer: *offerDigest}
	if *manifestFile != "" {
		b, err := readFlagFile("--manifest", *manifestFile, "the shipment's manifest")
		if err != nil {
			return err
		}
		var m events.Manifest
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&m); err != nil {
			return usageErrorf("station call %s: --manifest %s: not a manifest: %v", op, *manifestFile, err)
		}
		req.Manifest = &m
	}
	if *image != "" {
		b, err := readFlagFile("--image", *image, "the firmware image to program")
		if err != nil {
			return err
		}
		req.Image = b
	}
	if field, rule := req.Check(op); rule != "" {
		return usageErrorf("station call %s: --%s: %s; run \"custody station call --help\" for each operation's flags", op, field, rule)
	}
	hc, err := stationClient(*pkiDir, *as, *stationURL)
	if err != nil {
		return err
	}
	resp, err := station.NewClient(*stationURL, hc).Call(ctx, op, req)
	if resp != nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp)
	}
	var rej *station.RejectedError
	switch {
	case errors.As(err, &rej):
		return refusedError{err}
	case err == nil && resp != nil && resp.Receipt != nil:
		// A batch logged with some devices refused: the others are logged;
		// the exit status says not all were.
		var refused []string
		for _, m := range resp.Receipt.Members {
			if !m.Logged() {
				refused = append(refused, fmt.Sprintf("device %s: %s: %s", m.Target, m.Code, m.Reason))
			}
		}
		if len(refused) > 0 {
			return refusedError{fmt.Errorf("the ledger logged %d of the batch's %d events and refused:\n  %s", len(resp.Receipt.Members)-len(refused), len(resp.Receipt.Members), strings.Join(refused, "\n  "))}
		}
	case err != nil && resp != nil && resp.Code == station.CodeWouldEquivocate:
		return refusedError{errors.New(resp.Error)}
	}
	return err
}

type refusedError struct{ error }

func (refusedError) ExitCode() int { return 3 }

var stationListHelp = map[string]string{
	"unconfirmed": `Lists the digests of the events the station published that the ledger has
not answered yet, one JSON string a line. They stay in the station's outbox
and are re-sent until the ledger answers.`,
	"pending": `Lists the offers waiting for the station's partner to accept them, one JSON
object a line: the device, who offered it, the offer's digest and log index.
Accept one with "custody station call accept --agent URL", or, for a
shipment (its "shipment" field), all of its devices at once with
"custody station call accept-shipment --offer DIGEST --manifest FILE".`,
}

// stationList prints a station's list (unconfirmed events or pending offers).
func stationList(ctx context.Context, what string, args []string) error {
	fs := flag.NewFlagSet("station "+what, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: custody station %s [--station URL] [--as PARTNER] [--pki DIR]\n\n%s\n\nFlags:\n", what, stationListHelp[what])
		fs.PrintDefaults()
	}
	stationURL := fs.String("station", "https://127.0.0.1:8480/stations/acme-tpm", "the station's API")
	as := fs.String("as", "", "call as this partner, with its certificate from --pki (default: the partner the --station URL ends in)")
	pkiDir := fs.String("pki", ".custody/pki", "PKI directory: the TLS CA and the partner's certificate and key")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	hc, err := stationClient(*pkiDir, *as, *stationURL)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *stationURL+"/v1/"+what, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var sr station.Response
		_ = json.NewDecoder(resp.Body).Decode(&sr)
		return fmt.Errorf("station %s: %s %s", *stationURL, resp.Status, sr.Error)
	}
	var out map[string][]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("station %s: %w", *stationURL, err)
	}
	for _, d := range out[what] {
		fmt.Println(string(d))
	}
	return nil
}

// stationClient is the HTTP client a station call uses: as partner as (or
// the partner the station URL ends in), from the PKI in pkiDir.
func stationClient(pkiDir, as, stationURL string) (*http.Client, error) {
	if as == "" {
		as = stationPartner(stationURL)
	}
	if as == "" {
		return nil, usageErrorf("--station %s names no partner: say whose station it is with --as PARTNER", stationURL)
	}
	return apiClient(pkiDir, as)
}
