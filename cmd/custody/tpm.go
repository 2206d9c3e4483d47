package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/attest/tpm"
)

func init() {
	register("tpm", command{
		usage:   "tpm ek|quote ...",
		summary: "debug TPM evidence: show and verify EK certificates, verify quotes (tpm2-tools formats)",
		run:     tpmCmd,
	})
}

// openTPM opens a TPM by URI; tests replace it.
var openTPM = tpm.Open

const tpmUsage = `Usage:
  custody tpm ek show --tpm URI [--alg ecc|rsa]
  custody tpm ek verify --bundle PEM [--tpm URI | --cert FILE] [--alg ecc|rsa] [--at TIME]
  custody tpm quote verify --ak FILE --attest FILE --sig FILE [--pcrs FILE] --nonce HEX

These commands help TPM engineers debug the evidence Custody relies on: show
a TPM's endorsement key, device ID and EK certificate, verify an EK
certificate's chain through a vendor bundle, and verify a TPM2_Quote made by
tpm2-tools.

TPM URIs: sim, sim:seed=N, swtpm://HOST:PORT, mssim://HOST:PORT, /dev/tpmrm0.
Run "custody tpm ek show --help" (and so on) for each command's flags.
`

func tpmCmd(_ context.Context, args []string) error {
	if len(args) >= 2 {
		switch args[0] + " " + args[1] {
		case "ek show":
			return tpmEKShow(os.Stdout, args[2:])
		case "ek verify":
			return tpmEKVerify(os.Stdout, args[2:])
		case "quote verify":
			return tpmQuoteVerify(os.Stdout, args[2:])
		}
	}
	// "tpm --help", "tpm ek --help", "tpm quote -h".
	if n := len(args); n > 0 && n <= 2 && isHelp(args[n-1]) && (n == 1 || args[0] == "ek" || args[0] == "quote") {
		fmt.Fprint(os.Stderr, tpmUsage)
		return flag.ErrHelp
	}
	fmt.Fprint(os.Stderr, tpmUsage)
	switch {
	case len(args) == 0:
		return usageErrorf("tpm: missing the subcommand: ek show, ek verify or quote verify")
	case args[0] == "ek" || args[0] == "quote":
		if len(args) == 1 {
			return usageErrorf("tpm %s: missing the subcommand: want ek show, ek verify or quote verify", args[0])
		}
		return usageErrorf("tpm %s: unknown subcommand %q: want ek show, ek verify or quote verify", args[0], args[1])
	}
	return usageErrorf("tpm: unknown subcommand %q: want ek show, ek verify or quote verify", args[0])
}

func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

func tpmFlags(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func parseKeyAlg(s string) (tpm.KeyAlg, error) {
	switch strings.ToLower(s) {
	case "ecc", "ecc256", "p256":
		return tpm.ECCP256, nil
	case "rsa", "rsa2048":
		return tpm.RSA2048, nil
	}
	return 0, usageErrorf("--alg %q: want ecc (P-256) or rsa (2048)", s)
}

func tpmEKShow(w io.Writer, args []string) error {
	fs := tpmFlags("tpm ek show", `Usage: custody tpm ek show --tpm URI [--alg ecc|rsa]

Prints the TPM's endorsement key (from the TCG default template), the Custody
device ID derived from it, and the EK certificate stored in the TPM's NV
index (0x01C0000A for ECC, 0x01C00002 for RSA), parsed but NOT verified: use
"custody tpm ek verify" for that.
`)
	uri := fs.String("tpm", "", "the TPM (sim, sim:seed=N, swtpm://HOST:PORT, mssim://HOST:PORT, /dev/tpmrm0)")
	algName := fs.String("alg", "ecc", "EK algorithm: ecc (P-256) or rsa (2048)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *uri == "" {
		return usageErrorf("tpm ek show: --tpm URI is required: the TPM to read (sim, sim:seed=N, swtpm://HOST:PORT, mssim://HOST:PORT or /dev/tpmrm0)")
	}
	alg, err := parseKeyAlg(*algName)
	if err != nil {
		return err
	}
	dev, err := openTPM(*uri)
	if err != nil {
		return err
	}
	defer dev.Close()
	ek, err := dev.EK(alg)
	if err != nil {
		return err
	}
	id, err := attest.DeviceID(ek.PublicKey)
	if err != nil {
		return err
	}
	spki, err := x509.MarshalPKIXPublicKey(ek.PublicKey)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "TPM        %s\n", *uri)
	fmt.Fprintf(w, "EK         %v (TCG default template), Name %x\n", alg, ek.Name)
	fmt.Fprintf(w, "device ID  %s\n", id)
	if info, err := dev.Info(); err == nil {
		fmt.Fprintf(w, "TPM says   manufacturer %s, model %q, firmware %s (self-reported)\n", manufacturerName(info.Manufacturer), info.Model, info.Version)
	}
	fmt.Fprint(w, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})))
	raw, err := dev.ReadEKCertificate(alg)
	if errors.Is(err, tpm.ErrNoEKCertificate) {
		fmt.Fprintf(w, "EK certificate: none (%v)\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	c, err := attest.ParseEKCertificate(raw)
	if err != nil {
		return fmt.Errorf("EK certificate in NV (%d bytes) does not parse: %w", len(raw), err)
	}
	fmt.Fprintf(w, "EK certificate (%d bytes in NV, %d bytes DER; parsed, NOT verified):\n", len(raw), len(c.Raw))
	printEKCertificate(w, c)
	if attest.SamePublicKey(c.Cert.PublicKey, ek.PublicKey) {
		fmt.Fprintln(w, "  key          matches the TPM's EK")
	} else {
		fmt.Fprintln(w, "  key          DOES NOT match the TPM's EK")
	}
	return nil
}

func tpmEKVerify(w io.Writer, args []string) error {
	fs := tpmFlags("tpm ek verify", `Usage: custody tpm ek verify --bundle PEM [--tpm URI | --cert FILE] [--alg ecc|rsa] [--at TIME]

Verifies an EK certificate, read from the TPM's NV index (--tpm) or from a
file (--cert: DER, PEM, or a raw NV read with its header or padding), through
the CA certificates of --bundle (self-signed ones are the trust anchors; the
others, including cross-certificates, only help build chains). Prints every
chain found, leaf first. With --tpm it also checks that the certificate is
for the TPM's EK. Exits non-zero, with the reason, if anything fails.
`)
	bundlePath := fs.String("bundle", "", "PEM file of trusted roots and intermediates (required)")
	uri := fs.String("tpm", "", "read the EK certificate from this TPM's NV")
	certPath := fs.String("cert", "", "read the EK certificate from this file")
	algName := fs.String("alg", "ecc", "EK algorithm (which NV index, with --tpm): ecc or rsa")
	at := fs.String("at", "", "verify at this time (RFC 3339) instead of now")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *bundlePath == "" {
		return usageErrorf("tpm ek verify: --bundle PEM is required: the TPM vendors' CA certificates to verify the EK certificate with")
	}
	if (*uri == "") == (*certPath == "") {
		return usageErrorf("tpm ek verify: give exactly one of --tpm URI (read the EK certificate from the TPM) and --cert FILE (read it from a file)")
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return usageErrorf("tpm ek verify: --at %q: want a time in RFC 3339, such as 2025-01-31T12:00:00Z", *at)
		}
		now = t
	}
	const bundleWant = "PEM CERTIFICATEs: the TPM vendors' roots, intermediates and cross-certificates"
	pemBytes, err := readFlagFile("--bundle", *bundlePath, bundleWant)
	if err != nil {
		return err
	}
	bundle, err := attest.ParseBundle(pemBytes)
	if err != nil {
		return &fileError{"--bundle", *bundlePath, bundleWant, err}
	}
	var (
		raw []byte
		ek  *tpm.Key
	)
	if *uri != "" {
		alg, err := parseKeyAlg(*algName)
		if err != nil {
			return err
		}
		dev, err := openTPM(*uri)
		if err != nil {
			return err
		}
		defer dev.Close()
		if ek, err = dev.EK(alg); err != nil {
			return err
		}
		if raw, err = dev.ReadEKCertificate(alg); err != nil {
			return err
		}
	} else {
		const certWant = "an EK certificate: DER, PEM, or a raw NV read"
		if raw, err = readFlagFile("--cert", *certPath, certWant); err != nil {
			return err
		}
		if blk, _ := pem.Decode(raw); blk != nil {
			if blk.Type != "CERTIFICATE" {
				return &fileError{"--cert", *certPath, certWant, fmt.Errorf("holds a PEM %q", blk.Type)}
			}
			raw = blk.Bytes
		}
	}
	c, err := attest.ParseEKCertificate(raw)
	if err != nil {
		return fmt.Errorf("EK certificate does not parse: %w", err)
	}
	printEKCertificate(w, c)
	chains, err := c.Verify(bundle, now)
	if err != nil {
		return fmt.Errorf("EK certificate NOT verified at %s: %w", now.UTC().Format(time.RFC3339), err)
	}
	for i, chain := range chains {
		fmt.Fprintf(w, "chain %d:\n", i+1)
		for j, cert := range chain {
			name := cert.Subject.String()
			if j == 0 && name == "" {
				name = fmt.Sprintf("EK certificate of %s %s", c.TPM.Model, manufacturerName(c.TPM.Manufacturer))
			}
			fmt.Fprintf(w, "  %d %s\n      valid %s .. %s\n", j, name, cert.NotBefore.UTC().Format(time.DateOnly), cert.NotAfter.UTC().Format(time.DateOnly))
		}
	}
	if ek != nil && !attest.SamePublicKey(c.Cert.PublicKey, ek.PublicKey) {
		return fmt.Errorf("the EK certificate verifies but is NOT for this TPM's %v EK", ek)
	}
	id, err := attest.DeviceID(c.Cert.PublicKey)
	if err != nil {
		return err
	}
	if ek != nil {
		fmt.Fprintln(w, "certificate key matches the TPM's EK")
	}
	fmt.Fprintf(w, "VERIFIED at %s: EK of device %s\n", now.UTC().Format(time.RFC3339), id)
	return nil
}

func tpmQuoteVerify(w io.Writer, args []string) error {
	fs := tpmFlags("tpm quote verify", `Usage: custody tpm quote verify --ak FILE --attest FILE --sig FILE [--pcrs FILE] --nonce HEX

Verifies a TPM2_Quote, in the formats tpm2-tools writes and Custody uses:
  --ak      the attestation key's public area: TPM2B_PUBLIC (tpm2_createak -u,
            tpm2_readpublic -o) or TPMT_PUBLIC (-f tpmt). A PEM key is refused:
            it does not say whether the key is a restricted TPM key, and only
            a restricted key proves the TPM made the quote.
  --attest  the signed TPMS_ATTEST (tpm2_quote -m)
  --sig     the TPMT_SIGNATURE (tpm2_quote -s, default tss format)
  --pcrs    the PCR values (tpm2_quote -o, serialized or values format);
            without it only the signed PCR digest is shown
  --nonce   the qualifying data the verifier chose (tpm2_quote -q), in hex
The key must be a restricted signing key; whether it belongs to a genuine TPM
is for credential activation against a verified EK to show.
`)
	akPath := fs.String("ak", "", "attestation key public area (required)")
	attestPath := fs.String("attest", "", "quote message, TPMS_ATTEST (required)")
	sigPath := fs.String("sig", "", "signature, TPMT_SIGNATURE (required)")
	pcrsPath := fs.String("pcrs", "", "PCR values file")
	nonceHex := fs.String("nonce", "", "qualifying data in hex (required)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	for _, f := range []struct{ name, v, want string }{
		{"ak", *akPath, "the attestation key's public area (tpm2_createak -u)"},
		{"attest", *attestPath, "the quote message, TPMS_ATTEST (tpm2_quote -m)"},
		{"sig", *sigPath, "the quote's signature, TPMT_SIGNATURE (tpm2_quote -s)"},
		{"nonce", *nonceHex, "the qualifying data in hex (tpm2_quote -q)"},
	} {
		if f.v == "" {
			return usageErrorf("tpm quote verify: --%s is required: %s", f.name, f.want)
		}
	}
	nonce, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(*nonceHex), "0x"))
	if err != nil {
		return usageErrorf("tpm quote verify: --nonce %q: %v; want the qualifying data in hex", *nonceHex, err)
	}
	akBytes, err := readFlagFile("--ak", *akPath, "the attestation key's public area, TPM2B_PUBLIC or TPMT_PUBLIC")
	if err != nil {
		return err
	}
	area, err := attest.PublicArea(akBytes)
	if err != nil {
		return fmt.Errorf("--ak %s: %w", *akPath, err)
	}
	ak, err := attest.ParseAttestationKey(area)
	if err != nil {
		return fmt.Errorf("--ak %s: %w", *akPath, err)
	}
	msg, err := readFlagFile("--attest", *attestPath, "the quote message, TPMS_ATTEST (tpm2_quote -m)")
	if err != nil {
		return err
	}
	sig, err := readFlagFile("--sig", *sigPath, "the quote's signature, TPMT_SIGNATURE (tpm2_quote -s)")
	if err != nil {
		return err
	}
	var info *attest.QuoteInfo
	if *pcrsPath != "" {
		pcrFile, err := readFlagFile("--pcrs", *pcrsPath, "the PCR values (tpm2_quote -o)")
		if err != nil {
			return err
		}
		q, err := attest.QuoteFromTPM2Tools(msg, sig, pcrFile)
		if err != nil {
			return fmt.Errorf("quote NOT verified: %w", err)
		}
		if info, err = ak.VerifyQuote(q, nonce); err != nil {
			return fmt.Errorf("quote NOT verified: %w", err)
		}
	} else if info, err = ak.VerifyQuoteDigest(msg, sig, nonce); err != nil {
		return fmt.Errorf("quote NOT verified: %w", err)
	}
	fmt.Fprintf(w, "AK         Name %x (restricted signing key)\n", ak.Name())
	fmt.Fprintf(w, "nonce      %x\n", info.Nonce)
	fmt.Fprintf(w, "clock      %d ms, resetCount %d, restartCount %d, safe %v\n", info.Clock, info.ResetCount, info.RestartCount, info.Safe)
	fmt.Fprintf(w, "firmware   %#016x\n", info.FirmwareVersion)
	fmt.Fprintf(w, "PCR digest %x\n", info.PCRDigest)
	if info.PCRs == nil {
		fmt.Fprintln(w, "PCR values not given (--pcrs): the digest is signed, the values behind it are unknown")
	} else {
		for i := range attest.NumPCRs {
			if v, ok := info.PCRs[i]; ok {
				fmt.Fprintf(w, "  sha256:%-2d %x\n", i, v)
			}
		}
	}
	fmt.Fprintln(w, "VERIFIED: signed by the AK over this nonce")
	return nil
}

// printEKCertificate prints what an EK certificate says (unverified).
func printEKCertificate(w io.Writer, c *attest.EKCertificate) {
	fmt.Fprintf(w, "  TPM          manufacturer %s, model %q, version %s\n", manufacturerName(c.TPM.Manufacturer), c.TPM.Model, c.TPM.Version)
	fmt.Fprintf(w, "  issuer       %s\n", c.Cert.Issuer)
	fmt.Fprintf(w, "  serial       %x\n", c.Cert.SerialNumber)
	fmt.Fprintf(w, "  valid        %s .. %s\n", c.Cert.NotBefore.UTC().Format(time.RFC3339), c.Cert.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  signature    %v\n", c.Cert.SignatureAlgorithm)
}

// manufacturerName adds the ASCII vendor ID to a TCG manufacturer
// ("id:49465800" → "id:49465800 (IFX)").
func manufacturerName(id string) string {
	b, err := hex.DecodeString(strings.TrimPrefix(id, "id:"))
	if err != nil || len(b) != 4 {
		return id
	}
	name := strings.TrimRight(string(b), "\x00 ")
	for _, r := range name {
		if r < 0x20 || r > 0x7e {
			return id
		}
	}
	if name == "" {
		return id
	}
	return id + " (" + name + ")"
}
