package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/demo"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

func init() {
	register("demo", command{usage: "demo", summary: "run the whole chain for two devices (one clean, one double-sold)", run: demoCmd})
	register("pki", command{usage: "pki init", summary: "create a demo PKI (roots, cross-certificate, vendor, consortium, partners, LDevID CA, log key, TLS)", run: pkiCmd})
	register("provenance", command{usage: "provenance DEVICE", summary: "print a device's custody timeline, every entry verified against the signed checkpoint", run: provenanceCmd})
}

const pkiUsage = `Usage:
  custody pki init [--dir DIR]    create the demo PKI (kept if it exists and is complete)

The demo PKI holds every key and certificate a Custody deployment on a laptop
needs: the roots and cross-certificate the TPM trust bundle is built from,
the TPM vendor's manufacturing CA, the consortium CA and one certificate and
key per partner, the operator's LDevID CA, the ledger's checkpoint key
(log/log.pub is what "custody provenance" and "custody verify" take as
--log-key) and a TLS certificate for localhost. custodyd creates it too.

Run "custody pki init --help" for its flags.
`

func pkiCmd(_ context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, pkiUsage)
		return usageErrorf("pki: missing the subcommand: init")
	}
	switch args[0] {
	case "init":
		return pkiInit(args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stderr, pkiUsage)
		return flag.ErrHelp
	}
	return usageErrorf("pki: unknown subcommand %q: the only one is init; run \"custody pki --help\" for what it does", args[0])
}

func demoCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody demo [flags]

Runs the whole chain on embedded defaults: NATS JetStream, the ledger, five
partner stations, the enrollment gate and a DPS emulator in this process, and
one custody-agent process (simulated TPM) per device. Device A travels
vendor → ODM → OEM → EMS → operator and is enrolled at first boot. Device B is
offered by the EMS to two operators: the second offer is logged as
equivocation evidence, the device is flagged, and the gate refuses it.

Flags:
`)
		fs.PrintDefaults()
	}
	dir := fs.String("dir", "", "keep the demo's data (PKI, NATS, ledger, devices) here instead of a temporary directory")
	agent := fs.String("agent", "", "custody-agent binary (default: next to this binary, then $PATH)")
	verbose := fs.Bool("v", false, "log the node's activity to stderr")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	start := time.Now()
	rep, err := demo.Run(ctx, demo.Config{Env: demo.Env{Dir: *dir, Agent: *agent, Logger: logger}})
	if err != nil {
		return err
	}
	if err := demo.Check(rep); err != nil {
		return fmt.Errorf("demo outcome is wrong: %w", err)
	}
	fmt.Printf("\nDemo complete in %.1fs: device A enrolled, device B refused for equivocation; all proofs verified.\n", time.Since(start).Seconds())
	return nil
}

func pkiInit(args []string) error {
	fs := flag.NewFlagSet("pki init", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody pki init [--dir DIR]

Creates the demo PKI custodyd loads: a WebTrust-style root, a TPM vendor root
cross-certified by it, the vendor's manufacturing CA, the consortium CA with one
certificate per partner (acme-tpm, orbit-odm, nova-oem, delta-ems,
blue-operator, grey-operator, blue-gate), the operator's LDevID CA, the
ledger's checkpoint key and a TLS certificate for localhost. An existing
complete PKI is kept. DIR/README.txt describes the files.

Flags:
`)
		fs.PrintDefaults()
	}
	dir := fs.String("dir", ".custody/pki", "where to write the PKI")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	d, err := pki.InitDemo(*dir, nil)
	if err != nil {
		return err
	}
	fmt.Printf("demo PKI in %s: %d partners; log key %s\n", d.Dir, len(d.Partners), filepath.Join(d.Dir, pki.FileLogPub))
	return nil
}

func provenanceCmd(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("provenance", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody provenance [flags] DEVICE

Prints a device's custody timeline from the ledger, and with --bundle writes
it as an offline bundle. Histories are private: you read as a partner
(--as), proven by its certificate from the PKI in --pki (mTLS) or, with
--key, by a short-lived read token signed by that key. The device's custodian and the recipient of its pending offer see
its whole history; a partner that handled it before sees its own entries.
Every entry's inclusion proof, leaf and partner signature is verified
against the ledger's signed checkpoint with the log's public key, which is
read from a file you trust (--log-key), never from the server.

Flags:
`)
		fs.PrintDefaults()
	}
	server := fs.String("server", "https://127.0.0.1:8480", "custodyd's API address")
	logKey := fs.String("log-key", ".custody/pki/log/log.pub", "the ledger's checkpoint public key (PEM)")
	asJSON := fs.Bool("json", false, "print the verified provenance as JSON")
	as := fs.String("as", "", "read as this partner (required), e.g. blue-operator")
	keyFile := fs.String("key", "", "the partner's private key (PEM); default: from the demo PKI in --pki")
	pkiDir := fs.String("pki", ".custody/pki", "PKI directory: the TLS CA and, for --as without --key, the partner's certificate and key")
	bundle := fs.String("bundle", "", `also write the verified provenance as a self-contained offline bundle ("-": stdout); check it anywhere with "custody verify FILE --log-key KEY"`)
	// Flags may follow the device ID.
	device, err := parseInterleaved(fs, args, "DEVICE")
	if err != nil {
		return err
	}
	if !events.ValidDeviceID(device) {
		return usageErrorf("provenance: %q is not a device ID (64 lowercase hex digits: SHA-256 of the EK public key)", device)
	}
	if *as == "" {
		return usageErrorf("provenance: --as PARTNER is required: the name of the partner you read as (e.g. blue-operator), " +
			"whose key signs the read token; a device's history is private to its parties")
	}
	pub, err := readLogKey(*logKey)
	if err != nil {
		return err
	}
	var lc *station.LedgerClient
	if *keyFile != "" {
		key, err := partnerKey(*as, *keyFile, *pkiDir)
		if err != nil {
			return err
		}
		hc, err := apiClient(*pkiDir, "")
		if err != nil {
			return err
		}
		lc = station.NewLedgerClient(strings.TrimRight(*server, "/")+"/ledger", hc).WithIdentity(*as, key)
	} else {
		hc, err := apiClient(*pkiDir, *as)
		if err != nil {
			return err
		}
		lc = station.NewLedgerClient(strings.TrimRight(*server, "/")+"/ledger", hc)
	}
	p, err := lc.Provenance(device)
	if errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("the ledger has no record of device %s", device)
	}
	if err != nil {
		return err
	}
	entries, cp, err := ledger.VerifyProvenance(p, pub)
	if err != nil {
		return fmt.Errorf("VERIFICATION FAILED: %w", err)
	}
	if *bundle != "" {
		if err := writeBundle(*bundle, device, p, pub); err != nil {
			return err
		}
		if *bundle == "-" {
			return nil
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"device": p.Device, "checkpoint": p.Checkpoint, "entries": entries})
	}
	fmt.Printf("device %s\n", device)
	fmt.Printf("checkpoint %s, size %d: signature verified\n", cp.Origin, cp.Size)
	for _, e := range entries {
		mark := "verified"
		if e.Status == events.StatusEvidence {
			mark = "EVIDENCE " + e.Code + ": " + e.Reason
		}
		fmt.Printf("  #%-5d %s  %-22s %-14s %-36s %s\n", e.Index, time.Unix(e.IntegratedTime, 0).UTC().Format(time.RFC3339), e.Kind, e.Partner, demo.Describe(e), mark)
	}
	if d := p.Device; d != nil {
		fmt.Printf("custodian %s", d.Custodian)
		if d.Pending != nil {
			fmt.Printf(", offer to %s pending", d.Pending.To)
		}
		if d.Flag != nil {
			fmt.Printf(", FLAGGED (%s, entry #%d)", d.Flag.Reason, d.Flag.Index)
		}
		if d.Enrolled {
			fmt.Print(", enrolled")
		}
		fmt.Println()
	}
	return nil
}

// partnerKey is a partner's signing key: from keyFile (PEM), or from the
// demo PKI in pkiDir.
func partnerKey(name, keyFile, pkiDir string) (crypto.Signer, error) {
	const keyWant = "the partner's private key (PEM PRIVATE KEY)"
	if keyFile != "" {
		b, err := readFlagFile("--key", keyFile, keyWant)
		if err != nil {
			return nil, err
		}
		k, err := pki.ParseKeyPEM(b)
		if err != nil {
			return nil, &fileError{"--key", keyFile, keyWant, err}
		}
		return k, nil
	}
	d, err := pki.LoadDemo(pkiDir)
	if err != nil {
		return nil, &fileError{"--pki", pkiDir, `a demo PKI ("custody pki init"), or the partner's key in --key`, err}
	}
	p, ok := d.Partners[name]
	if !ok {
		return nil, fmt.Errorf("the PKI in %s has no partner %q (partners: %s)", pkiDir, name, strings.Join(d.PartnerNames(), ", "))
	}
	return p.Key, nil
}

// logKeyWant is what --log-key names.
var logKeyWant = `the ledger's checkpoint public key, a PEM "PUBLIC KEY" (the demo PKI's is ` + filepath.Join("<pki>", pki.FileLogPub) + `)`

// readLogKey reads the log's checkpoint public key named by --log-key.
func readLogKey(path string) (*ecdsa.PublicKey, error) {
	b, err := readFlagFile("--log-key", path, logKeyWant)
	if err != nil {
		return nil, err
	}
	bad := func(err error) error { return &fileError{"--log-key", path, logKeyWant, err} }
	blk, _ := pem.Decode(b)
	switch {
	case blk == nil:
		return nil, bad(errors.New("not PEM"))
	case blk.Type == "CERTIFICATE":
		return nil, bad(errors.New(`holds a PEM "CERTIFICATE", not the log's public key`))
	case blk.Type != "PUBLIC KEY":
		return nil, bad(fmt.Errorf("holds a PEM %q", blk.Type))
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, bad(errors.New(`its "PUBLIC KEY" block is not a PKIX public key`))
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, bad(fmt.Errorf("holds a %T, not an ECDSA P-256 key", k))
	}
	return ek, nil
}
