package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

func init() {
	register("station", command{usage: "station run|call|pending", summary: "run a partner's station, call one (manufacture, stage, firmware, offer, accept, flag, clear), list its pending offers", run: stationCmd})
}

func stationCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, `Usage:
  custody station run --partner NAME [flags]      serve a partner's station (HTTP API for the factory floor)
  custody station call OP --agent URL [flags]     call a station: manufacture, stage, firmware, offer, accept, flag, clear
  custody station unconfirmed [--station URL]     list events published and not yet answered by the ledger
  custody station pending [--station URL]         list offers waiting for this partner to accept
`)
		return errUsage
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
	}
	fmt.Fprintf(os.Stderr, "custody station: unknown subcommand %q\n", args[0])
	return errUsage
}

func stationRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("station run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody station run --partner NAME | --role ROLE [flags]

Runs one partner's station apart from custodyd: it connects to NATS as the
partner's own user (NKEY from <pki>/nats/<partner>.nk), reads custody state
from the ledger's HTTP API, keeps every event in an outbox until the ledger
answers, re-sends what was unconfirmed at start-up, and serves the station API
(see "custody station call").

Flags:
`)
		fs.PrintDefaults()
	}
	partner := fs.String("partner", "", "the partner's name (its certificate and key are in --pki)")
	role := fs.String("role", "", "instead of --partner: the role (tpm-vendor, odm, oem, ems, operator) of the PKI's only partner with it")
	pkiDir := fs.String("pki", ".custody/pki", "PKI directory (partner key, NKEY seed, vendor manufacturing CA)")
	natsURL := fs.String("nats", "nats://127.0.0.1:4222", "NATS server")
	ledgerURL := fs.String("ledger", "http://127.0.0.1:8480/ledger", "the ledger's HTTP API")
	listen := fs.String("listen", "127.0.0.1:8490", "listen address of the station API")
	outbox := fs.String("outbox", "", "outbox directory (default .custody/outbox/<partner>)")
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
	kp, err := d.NKey(*partner)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, node.UserOptions(*partner, kp)...)
	if err != nil {
		return fmt.Errorf("NATS %s as %s: %w", *natsURL, *partner, err)
	}
	defer nc.Close()
	if *outbox == "" {
		*outbox = ".custody/outbox/" + *partner
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("partner", *partner)
	cfg := station.Config{
		Name: p.Name, Role: p.Role, Key: p.Key, NATS: nc,
		Ledger: station.NewLedgerClient(*ledgerURL, nil).WithIdentity(p.Name, p.Key), OutboxDir: *outbox, Logger: logger,
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
	logger.Info("station listening", "url", "http://"+ln.Addr().String(), "role", p.Role)
	// Events published before a crash and never answered are re-sent while
	// the station serves: a ledger that is slow to answer must not keep it
	// from starting (GET /v1/unconfirmed lists them meanwhile).
	go func() {
		if err := s.Recover(ctx); err != nil && ctx.Err() == nil {
			logger.Error("re-sending the outbox", "err", err)
		}
	}()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func stationCall(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("station call", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody station call OP --agent URL [flags]

Operations: manufacture (TPM vendor), stage --stage assembly|test-passed,
firmware --image FILE (EMS), offer --to PARTNER, accept, flag --reason R,
clear --reason R. Prints the ledger's receipt; a refusal prints the rule broken
and exits 3.

Flags:
`)
		fs.PrintDefaults()
	}
	stationURL := fs.String("station", "http://127.0.0.1:8480/stations/acme-tpm", "the station's API")
	agent := fs.String("agent", "", "the device agent's factory API URL")
	to := fs.String("to", "", "recipient (offer)")
	stage := fs.String("stage", "", "stage name (stage)")
	note := fs.String("note", "", "free text (stage, flag, clear)")
	image := fs.String("image", "", "firmware image file (firmware)")
	reason := fs.String("reason", "", "lost, stolen, rma, compromised, … (flag, clear)")
	if len(args) == 0 {
		fs.Usage()
		return errUsage
	}
	op := args[0]
	if err := parse(fs, args[1:], 0); err != nil {
		return err
	}
	req := &station.Request{Agent: *agent, To: *to, Stage: *stage, Note: *note, Reason: *reason}
	if *image != "" {
		b, err := os.ReadFile(*image)
		if err != nil {
			return err
		}
		req.Image = b
	}
	resp, err := station.NewClient(*stationURL, nil).Call(ctx, op, req)
	if resp != nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(resp)
	}
	var rej *station.RejectedError
	if errors.As(err, &rej) {
		if r, ok := events.LookupRejection(events.ByLedger, rej.Receipt.Code); ok {
			fmt.Fprintf(os.Stderr, "custody: code %s: %s\n", r.Code, r.Meaning)
		}
		return refusedError{err}
	}
	return err
}

type refusedError struct{ error }

func (refusedError) ExitCode() int { return 3 }

// stationList prints a station's list (unconfirmed events or pending offers).
func stationList(ctx context.Context, what string, args []string) error {
	fs := flag.NewFlagSet("station "+what, flag.ContinueOnError)
	stationURL := fs.String("station", "http://127.0.0.1:8480/stations/acme-tpm", "the station's API")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *stationURL+"/v1/"+what, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out map[string][]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
	}
	for _, d := range out[what] {
		fmt.Println(string(d))
	}
	return nil
}
