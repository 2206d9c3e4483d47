package main

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/demo"
	"github.com/custodyledger/custody/services/pki"
)

func init() {
	register("verify", command{usage: "verify FILE", summary: "verify a provenance bundle offline with the log's public key", run: verifyCmd})
}

// writeBundle writes a device's provenance as an offline bundle (verified
// with the log key before it is written) to path, "-" for stdout. It backs
// `custody provenance DEVICE --bundle FILE`.
func writeBundle(path, device string, p *ledger.Provenance, logKey *ecdsa.PublicKey) error {
	b, err := ledger.NewBundle(device, p, logKey)
	if err != nil {
		return fmt.Errorf("VERIFICATION FAILED, no bundle written: %w", err)
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(data)
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func verifyCmd(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: custody verify [flags] FILE

Verifies a provenance bundle (written by "custody provenance DEVICE --bundle
FILE") offline, with the log's public key read from a file you trust: the
checkpoint's signature, every entry's inclusion proof, that each leaf
commits to its envelope and each envelope's signature, and that every entry
is about the bundle's device. With --tpm-trust and --consortium it also
replays the ledger's checks: partner certificates and roles, the EK and IAK
certificate chains, every TPM quote and its counters, and the custody rules,
entry by entry, against the ledger's verdicts. It then prints the device's
timeline. FILE "-" reads stdin. Exit status 0 only if everything verifies.

A bundle proves what it contains was logged; it cannot prove that nothing
else about the device was logged. Compare its checkpoint with a newer one to
see what came later.

Flags:
`)
		fs.PrintDefaults()
	}
	logKey := fs.String("log-key", ".custody/pki/log/log.pub", "the ledger's checkpoint public key (PEM)")
	asJSON := fs.Bool("json", false, "print the verified entries as JSON")
	tpmTrust := fs.String("tpm-trust", "", "TPM trust bundle (PEM roots, intermediates, cross-certificates); with --consortium, also replay the custody rules offline")
	consortium := fs.String("consortium", "", "consortium CA certificate (PEM) that issues partner certificates; with --tpm-trust, also replay the custody rules offline")
	// Flags may follow the file name.
	file, err := parseInterleaved(fs, args, "FILE")
	if err != nil {
		return err
	}
	if (*tpmTrust == "") != (*consortium == "") {
		return usageErrorf("verify: replaying the custody rules needs both --tpm-trust (the TPM vendors' CA certificates) and --consortium (the consortium CA certificate)")
	}
	pub, err := readLogKey(*logKey)
	if err != nil {
		return err
	}
	var data []byte
	if file == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, ledger.MaxBundleSize+1))
	} else {
		data, err = readFlagFile("FILE", file, `a provenance bundle ("custody provenance DEVICE --bundle FILE")`)
	}
	if err != nil {
		return err
	}
	vb, err := ledger.VerifyBundle(data, pub)
	if err != nil {
		return fmt.Errorf("VERIFICATION FAILED: %w", err)
	}
	var replayed *ledger.Device
	if *tpmTrust != "" || *consortium != "" {
		trust, err := offlineTrust(*tpmTrust, *consortium)
		if err != nil {
			return err
		}
		if replayed, err = vb.Replay(trust); err != nil {
			return fmt.Errorf("VERIFICATION FAILED: %w", err)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"device": vb.Device, "checkpoint": vb.Checkpoint, "entries": vb.Entries})
	}
	fmt.Printf("device %s\n", vb.Device)
	fmt.Printf("checkpoint %s, size %d: signature verified; %d entries verified offline\n", vb.Checkpoint.Origin, vb.Checkpoint.Size, len(vb.Entries))
	for _, e := range vb.Entries {
		mark := "included"
		if e.Status == events.StatusEvidence {
			mark = "ledger: EVIDENCE " + e.Code
		}
		fmt.Printf("  #%-5d %s  %-22s %-14s %-36s %s\n", e.Index, time.Unix(e.IntegratedTime, 0).UTC().Format(time.RFC3339), e.Kind, e.Partner, demo.Describe(e), mark)
	}
	if d := replayed; d != nil {
		fmt.Printf("custody rules replayed offline (certificates, quotes, counters, custody): custodian %s", d.Custodian)
		if d.Flag != nil {
			fmt.Printf(", FLAGGED (%s, entry #%d)", d.Flag.Reason, d.Flag.Index)
		}
		if d.Enrolled {
			fmt.Print(", enrolled")
		}
		fmt.Println()
		return nil
	}
	if d := vb.ClaimedState; d != nil {
		fmt.Printf("ledger's state when bundled (not verifiable offline): custodian %s", d.Custodian)
		if d.Flag != nil {
			fmt.Printf(", FLAGGED (%s)", d.Flag.Reason)
		}
		fmt.Println()
	}
	return nil
}

// offlineTrust reads the PEM files an offline replay trusts.
func offlineTrust(tpmTrustFile, consortiumFile string) (ledger.OfflineTrust, error) {
	var t ledger.OfflineTrust
	const trustWant = "the TPM trust bundle: PEM CERTIFICATEs of the TPM vendors' roots, intermediates and cross-certificates"
	b, err := readFlagFile("--tpm-trust", tpmTrustFile, trustWant)
	if err != nil {
		return t, err
	}
	if t.TPMTrust, err = attest.ParseBundle(b); err != nil {
		return t, &fileError{"--tpm-trust", tpmTrustFile, trustWant, err}
	}
	const consortiumWant = "the consortium CA certificate (one PEM CERTIFICATE; the demo PKI's is <pki>/consortium/ca.pem)"
	if b, err = readFlagFile("--consortium", consortiumFile, consortiumWant); err != nil {
		return t, err
	}
	certs, err := pki.ParseCertsPEM(b)
	if err == nil && len(certs) != 1 {
		err = fmt.Errorf("holds %d certificates", len(certs))
	}
	if err != nil {
		return t, &fileError{"--consortium", consortiumFile, consortiumWant, err}
	}
	t.Consortium = certs[0]
	return t, nil
}
