package main

// Tests of the built custody binary as a user runs it: every command and
// subcommand explains itself with --help, command lines it cannot run are
// refused before anything is done with a sentence and exit status 2,
// errors about files name the flag, the file and what was expected, and
// hashes print in hex.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/clitest"
	"github.com/custodyledger/custody/internal/eventtest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// subcommands are the command lines below a command's name, as the help
// texts and the dispatch in station.go, tpm.go and commands.go name them.
var subcommands = [][]string{
	{"pki", "init"},
	{"station", "run"},
	{"station", "call"},
	{"station", "call", "offer"},
	{"station", "unconfirmed"},
	{"station", "pending"},
	{"tpm", "ek"},
	{"tpm", "quote"},
	{"tpm", "ek", "show"},
	{"tpm", "ek", "verify"},
	{"tpm", "quote", "verify"},
	{"trillian", "create-tree"},
}

// flagLines are the lines flag.PrintDefaults writes.
var flagLines = regexp.MustCompile(`(?m)^(  -\S.*|    \t.*)\n?`)

// sentence is prose: eight or more words ending with a full stop.
var sentence = regexp.MustCompile(`[A-Za-z]\S*(\s+\S+){7,}?\.(\s|$)`)

// explains checks that a --help output is a usage that explains: a
// "Usage:" line and, apart from the flag list, a sentence.
func explains(t *testing.T, what, out string) {
	t.Helper()
	if !strings.Contains(out, "Usage:") {
		t.Errorf("%s: no \"Usage:\" line:\n%s", what, out)
	}
	prose := flagLines.ReplaceAllString(out, "")
	if !sentence.MatchString(prose) {
		t.Errorf("%s: the usage explains nothing beyond its flags:\n%s", what, out)
	}
}

// TestCLIHelp: "--help" on the command and every command and subcommand
// exits 0 with a usage that explains.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	lines := [][]string{{"--help"}, {"-h"}, {"help"}}
	for name, c := range commands {
		lines = append(lines, []string{name})
		// Every subcommand a command's usage names ("station run|call|pending")
		// must be in subcommands.
		for _, w := range strings.Fields(c.usage)[1:] {
			if strings.HasPrefix(w, "-") || strings.ToLower(w) != w || w == "..." {
				break
			}
			for _, sub := range strings.Split(w, "|") {
				if !slices.ContainsFunc(subcommands, func(l []string) bool { return l[0] == name && l[1] == sub }) {
					t.Errorf("%q names subcommand %q, which this test does not cover", c.usage, sub)
				}
			}
		}
	}
	lines = append(lines, subcommands...)
	for _, l := range lines {
		args := l
		if l[0] != "--help" && l[0] != "-h" && l[0] != "help" {
			args = append(slices.Clip(l), "--help")
		}
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			r := clitest.Run(t, "", "custody", args...)
			if r.Code != 0 {
				t.Errorf("exit %d, want 0:\n%s", r.Code, r.Output())
			}
			explains(t, strings.Join(args, " "), r.Output())
		})
	}
}

// refused checks a command line refused before anything was done: exit 2
// and a line of at least six words saying why, holding each of want.
func refused(t *testing.T, r clitest.Result, want ...string) {
	t.Helper()
	if r.Code != 2 {
		t.Errorf("exit %d, want 2:\n%s", r.Code, r.Output())
	}
	said := false
	for _, l := range strings.Split(r.Stderr, "\n") {
		if strings.HasPrefix(l, "custody") && len(strings.Fields(l)) >= 6 || strings.HasPrefix(l, "flag provided but not defined") {
			said = true
		}
	}
	if !said {
		t.Errorf("no sentence says what is wrong:\n%s", r.Output())
	}
	for _, w := range want {
		if !strings.Contains(r.Output(), w) {
			t.Errorf("output does not say %q:\n%s", w, r.Output())
		}
	}
}

const testDevice = "1b4f0e9851971998e732078544c96b36c3d01cedf7caa332359d6f1d83567014"

// TestCLIUsageErrors: unknown commands and subcommands, missing arguments
// and missing or bad required flags are refused locally with a sentence
// and exit 2; station calls are refused before any request is sent.
func TestCLIUsageErrors(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.NotFound(w, r)
	}))
	// Subtests run in parallel after this function returns: the server
	// closes, and the count is checked, when they are done.
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if n := requests.Load(); n != 0 {
			t.Errorf("refused station calls sent %d requests", n)
		}
	})
	agent := "http://127.0.0.1:1"
	call := func(op string, flags ...string) []string {
		return append([]string{"station", "call", op, "--station", srv.URL}, flags...)
	}
	ops := "manufacture, stage, stages, firmware, offer, withdraw, accept, flag, clear"
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"missing the command"}},
		{[]string{"bogus"}, []string{`unknown command "bogus"`}},
		{[]string{"demo", "extra"}, []string{`unexpected argument "extra"`}},
		{[]string{"nats-config", "--bogus"}, []string{"-bogus"}},
		{[]string{"pki"}, []string{"missing the subcommand", "init"}},
		{[]string{"pki", "bogus"}, []string{`unknown subcommand "bogus"`, "init"}},
		{[]string{"station"}, []string{"missing the subcommand", "run, call, unconfirmed or pending"}},
		{[]string{"station", "bogus"}, []string{`unknown subcommand "bogus"`, "run, call, unconfirmed or pending"}},
		{[]string{"station", "run"}, []string{"--partner", "--role"}},
		{[]string{"station", "call"}, []string{"missing the operation", ops}},
		{call("ofer", "--agent", agent, "--to", "blue-operator"), []string{`unknown operation "ofer"`, ops, "nothing was sent"}},
		{[]string{"station", "call", "--agent", agent, "offer"}, []string{`unknown operation "--agent"`, ops}},
		{call("offer", "--agent", agent), []string{"--to", "partner"}},
		{call("offer", "--to", "blue-operator"), []string{"--agent", "URL"}},
		{call("stage", "--agent", agent), []string{"--stage", "assembly, test-passed or receiving-inspection"}},
		{call("flag", "--agent", agent), []string{"--reason"}},
		{call("accept", "--agent", agent, "--equivocate"), []string{"--equivocate", "offer"}},
		{call("ship", "--shipment", "PO-1", "--to", "nova-oem"), []string{"--manifest", "needs its manifest"}},
		{call("ship", "--agent", agent, "--shipment", "PO-1", "--to", "nova-oem"), []string{"--agent", "contacts no device"}},
		{call("offer", "--agent", agent, "--to", "blue-operator", "--shipment", "PO-1"), []string{"--manifest", "only the shipment operations"}},
		{[]string{"tpm"}, []string{"missing the subcommand", "ek show, ek verify or quote verify"}},
		{[]string{"tpm", "ek"}, []string{"missing the subcommand", "ek show"}},
		{[]string{"tpm", "ek", "bogus"}, []string{`unknown subcommand "bogus"`, "ek show"}},
		{[]string{"tpm", "nonsense", "show"}, []string{`unknown subcommand "nonsense"`}},
		{[]string{"tpm", "ek", "show"}, []string{"--tpm URI is required", "sim:seed=N"}},
		{[]string{"tpm", "ek", "show", "--tpm", "sim", "--alg", "dsa"}, []string{`--alg "dsa"`, "ecc", "rsa"}},
		{[]string{"tpm", "ek", "verify"}, []string{"--bundle PEM is required"}},
		{[]string{"tpm", "ek", "verify", "--bundle", "b.pem"}, []string{"exactly one of --tpm URI", "--cert FILE"}},
		{[]string{"tpm", "quote", "verify"}, []string{"--ak is required", "public area"}},
		{[]string{"tpm", "quote", "verify", "--ak", "a", "--attest", "m", "--sig", "s", "--nonce", "zz"}, []string{`--nonce "zz"`, "hex"}},
		{[]string{"provenance"}, []string{"missing the DEVICE argument"}},
		{[]string{"provenance", "a", "b", "--as", "blue-operator"}, []string{"want one DEVICE argument, have 2"}},
		{[]string{"provenance", "not-a-device", "--as", "blue-operator"}, []string{"not a device ID", "64 lowercase hex digits"}},
		// The report from the issue tracker: nothing was printed.
		{[]string{"provenance", testDevice}, []string{"--as PARTNER is required", "partner you read as"}},
		{[]string{"verify"}, []string{"missing the FILE argument"}},
		{[]string{"verify", "dev.bundle", "--tpm-trust", "trust.pem"}, []string{"--tpm-trust", "--consortium"}},
		{[]string{"sim", "--devices", "0"}, []string{"--devices 0", "positive"}},
		{[]string{"sim", "--faults", "double-handof"}, []string{`unknown fault kind "double-handof"`}},
	} {
		t.Run(strings.ReplaceAll(strings.Join(append([]string{"custody"}, c.args...), " "), srv.URL, "URL"), func(t *testing.T) {
			t.Parallel()
			refused(t, clitest.Run(t, "", "custody", c.args...), c.want...)
		})
	}
}

// writePEM writes one PEM block to dir/name and returns its path.
func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func selfSigned(t *testing.T, name string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// testBundle writes a verifiable bundle about testDevice (one logged event,
// a one-leaf tree) and its log's public key into dir.
func testBundle(t *testing.T, dir string) (bundlePath, logPub string, root []byte) {
	t.Helper()
	ctx := context.Background()
	cert, partnerKey := selfSigned(t, "orbit-odm")
	logPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := ledger.NewLogKey("custody.test", logPriv)
	if err != nil {
		t.Fatal(err)
	}
	s := eventtest.UnquotedStage("orbit-odm", testDevice, events.StageAssembly, events.NewEventID())
	env, signed, body := eventtest.Leaf(t, s, partnerKey, "orbit-odm", cert)
	root = ledger.LeafHash(body) // the root of a one-leaf tree
	cp, err := logKey.SignCheckpoint(ctx, 1, root)
	if err != nil {
		t.Fatal(err)
	}
	p := &ledger.Provenance{Device: &ledger.Device{ID: testDevice, Custodian: "orbit-odm"}, TreeSize: 1, RootHash: root, Checkpoint: string(cp),
		Entries: []ledger.ProvenEntry{{Index: 0, Digest: fmt.Sprintf("%x", signed.Digest[:]), Kind: events.KindStageRecorded, Partner: "orbit-odm",
			Status: events.StatusAccepted, IntegratedTime: time.Now().Unix(), Body: body, Envelope: env}}}
	b, err := ledger.NewBundle(testDevice, p, &logPriv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	bundlePath = filepath.Join(dir, "dev.bundle")
	if err := os.WriteFile(bundlePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	logPub = filepath.Join(dir, "log.pub")
	if err := pki.WritePublicKeyPEM(logPub, &logPriv.PublicKey); err != nil {
		t.Fatal(err)
	}
	return bundlePath, logPub, root
}

// TestCLIFileErrors: a file given to a flag that cannot be read or holds
// the wrong thing is reported with the flag, the file and what was
// expected, never as a raw ASN.1 parse error.
func TestCLIFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bundle, logPub, _ := testBundle(t, dir)
	der, key := selfSigned(t, "Custody Demo TLS CA")
	cert := writePEM(t, dir, "ca.pem", "CERTIFICATE", der)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	privKey := writePEM(t, dir, "log.key", "PRIVATE KEY", keyDER)
	notPEM := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notPEM, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	wantLogKey := []string{`"PUBLIC KEY"`, "log/log.pub"}
	demoPKI := filepath.Join(dir, "pki")
	if _, err := pki.InitDemo(demoPKI, pki.DefaultPartners()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		flag string
		file string
		want []string
	}{
		// The reports from the issue tracker: a certificate as --log-key.
		{[]string{"provenance", testDevice, "--as", "blue-operator", "--log-key", cert}, "--log-key", cert, append([]string{`holds a PEM "CERTIFICATE"`}, wantLogKey...)},
		{[]string{"verify", bundle, "--log-key", cert}, "--log-key", cert, append([]string{`holds a PEM "CERTIFICATE"`}, wantLogKey...)},
		{[]string{"verify", bundle, "--log-key", privKey}, "--log-key", privKey, append([]string{`holds a PEM "PRIVATE KEY"`}, wantLogKey...)},
		{[]string{"verify", bundle, "--log-key", notPEM}, "--log-key", notPEM, append([]string{"not PEM"}, wantLogKey...)},
		{[]string{"verify", bundle, "--log-key", missing}, "--log-key", missing, append([]string{"no such file"}, wantLogKey...)},
		{[]string{"verify", missing, "--log-key", logPub}, "FILE", missing, []string{"provenance bundle"}},
		{[]string{"verify", bundle, "--log-key", logPub, "--tpm-trust", notPEM, "--consortium", cert}, "--tpm-trust", notPEM, []string{"PEM CERTIFICATEs"}},
		{[]string{"verify", bundle, "--log-key", logPub, "--tpm-trust", cert, "--consortium", privKey}, "--consortium", privKey, []string{"consortium CA certificate"}},
		{[]string{"provenance", testDevice, "--as", "blue-operator", "--log-key", logPub, "--key", cert}, "--key", cert, []string{"private key"}},
		{[]string{"provenance", testDevice, "--as", "blue-operator", "--log-key", logPub, "--pki", missing}, "--pki", missing, []string{"custody pki init"}},
		{[]string{"nats-config", "--pki", missing}, "--pki", missing, []string{"PKI directory"}},
		{[]string{"tpm", "ek", "verify", "--bundle", missing, "--cert", cert}, "--bundle", missing, []string{"PEM CERTIFICATEs"}},
		{[]string{"tpm", "ek", "verify", "--bundle", cert, "--cert", privKey}, "--cert", privKey, []string{`"PRIVATE KEY"`, "EK certificate"}},
		{[]string{"tpm", "quote", "verify", "--ak", missing, "--attest", "m", "--sig", "s", "--nonce", "00"}, "--ak", missing, []string{"public area"}},
		// A station checks every receipt with the log's key: a certificate
		// there is refused before it connects.
		{[]string{"station", "run", "--partner", "delta-ems", "--pki", demoPKI, "--log-key", cert}, "--log-key", cert, append([]string{`holds a PEM "CERTIFICATE"`}, wantLogKey...)},
		{[]string{"station", "call", "firmware", "--agent", "http://127.0.0.1:1", "--image", missing}, "--image", missing, []string{"firmware image"}},
	} {
		t.Run(c.args[0]+" "+c.flag+" "+filepath.Base(c.file), func(t *testing.T) {
			t.Parallel()
			r := clitest.Run(t, dir, "custody", c.args...)
			if r.Code != 1 {
				t.Errorf("exit %d, want 1:\n%s", r.Code, r.Output())
			}
			for _, w := range append([]string{c.flag + " " + c.file, "want "}, c.want...) {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("the error does not say %q:\n%s", w, r.Stderr)
				}
			}
			if strings.Contains(r.Stderr, "asn1") || strings.Contains(r.Stderr, "x509:") {
				t.Errorf("the error is a raw parse error:\n%s", r.Stderr)
			}
		})
	}
}

// decimalBytes is a byte slice printed with %v: "[12 250 3 ...]".
var decimalBytes = regexp.MustCompile(`\[\d+( \d+){7,}\]`)

// TestCLIVerifyTamperedBundle: a bundle verifies offline; one whose entry
// was altered fails, and the error prints the Merkle roots in hex.
func TestCLIVerifyTamperedBundle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bundle, logPub, root := testBundle(t, dir)
	r := clitest.Run(t, dir, "custody", "verify", bundle, "--log-key", logPub)
	if r.Code != 0 || !strings.Contains(r.Stdout, "device "+testDevice) {
		t.Fatalf("the genuine bundle: exit %d:\n%s", r.Code, r.Output())
	}

	data, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	var b ledger.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	e := &b.Provenance.Entries[0]
	e.Body = []byte(strings.Replace(string(e.Body), "hashedrekord", "hashedrekorD", 1))
	data, _ = json.Marshal(&b)
	tampered := filepath.Join(dir, "tampered.bundle")
	if err := os.WriteFile(tampered, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r = clitest.Run(t, dir, "custody", "verify", tampered, "--log-key", logPub)
	if r.Code != 1 || !strings.Contains(r.Stderr, "VERIFICATION FAILED") || !strings.Contains(r.Stderr, "inclusion proof") {
		t.Fatalf("the tampered bundle: exit %d:\n%s", r.Code, r.Output())
	}
	if !strings.Contains(r.Stderr, fmt.Sprintf("%x", root)) || decimalBytes.MatchString(r.Stderr) {
		t.Errorf("the Merkle roots are not printed in hex (want the checkpoint's root %x):\n%s", root, r.Stderr)
	}
}

// TestCLIStationOfferEquivocation: a retried offer (same recipient, still
// pending) succeeds with the pending offer and signs nothing; an offer to
// another recipient while one is pending (a typo) is refused by the
// station before it is signed, with a sentence saying it would be logged
// as equivocation and flag the device, and the ledger logs nothing;
// --equivocate makes it on purpose, and the device is flagged; withdraw
// takes the pending offer back.
func TestCLIStationOfferEquivocation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts custodyd")
	}
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	d := clitest.StartCustodyd(t, data)
	agent := clitest.StartAgent(t, dir, filepath.Join(data, "pki"), 4242)

	stationCall := func(partner, op string, flags ...string) clitest.Result {
		args := append([]string{"station", "call", op, "--station", d.HTTP + "/stations/" + partner, "--pki", filepath.Join(data, "pki"), "--agent", agent}, flags...)
		return clitest.Run(t, dir, "custody", args...)
	}
	var device string
	ok := func(r clitest.Result) {
		t.Helper()
		var resp struct{ Device string }
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &resp) != nil {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output())
		}
		device = resp.Device
	}
	ok(stationCall("acme-tpm", "manufacture"))
	ok(stationCall("acme-tpm", "offer", "--to", "orbit-odm"))
	provenance := func() string {
		t.Helper()
		pkiDir := filepath.Join(data, "pki")
		r := clitest.Run(t, dir, "custody", "provenance", device, "--server", d.HTTP, "--as", "acme-tpm",
			"--pki", pkiDir, "--log-key", filepath.Join(pkiDir, pki.FileLogPub))
		if r.Code != 0 {
			t.Fatalf("provenance: exit %d:\n%s", r.Code, r.Output())
		}
		return r.Stdout
	}
	before := provenance()

	if r := stationCall("acme-tpm", "offer", "--to", "orbit-odm"); r.Code != 0 || !strings.Contains(r.Stdout, `"existing"`) || strings.Contains(r.Stdout, `"receipt"`) {
		t.Errorf("a retried offer: exit %d, want 0 with the existing offer:\n%s", r.Code, r.Output())
	}
	for _, to := range []string{"nova-oem"} { // a typo
		r := stationCall("acme-tpm", "offer", "--to", to)
		if r.Code != 3 {
			t.Errorf("offer to %s again: exit %d, want 3:\n%s", to, r.Code, r.Output())
		}
		for _, w := range []string{"pending from acme-tpm to orbit-odm", "logged by the ledger as equivocation", "flag the device", "not signed", "--equivocate"} {
			if !strings.Contains(r.Stderr, w) {
				t.Errorf("offer to %s again: the refusal does not say %q:\n%s", to, w, r.Stderr)
			}
		}
	}
	if after := provenance(); after != before || strings.Contains(after, "FLAGGED") {
		t.Fatalf("the refused offers changed the device's history:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	r := stationCall("acme-tpm", "offer", "--to", "nova-oem", "--equivocate")
	if r.Code != 3 || !strings.Contains(r.Stdout, `"code": "equivocation"`) || !strings.Contains(r.Stderr, "evidence") {
		t.Fatalf("a deliberate double offer: exit %d, want 3 and the ledger's equivocation receipt:\n%s", r.Code, r.Output())
	}
	if after := provenance(); !strings.Contains(after, "FLAGGED (equivocation") {
		t.Fatalf("the deliberate double offer did not flag the device:\n%s", after)
	}
	ok(stationCall("acme-tpm", "withdraw"))
	if after := provenance(); strings.Contains(after, "offer to orbit-odm pending") || !strings.Contains(after, "handoff.withdrawn") {
		t.Fatalf("the withdrawn offer is still pending:\n%s", after)
	}
}

// TestCLIStationBatch records a stage for four powered devices (four
// custody-agent processes, each its own TPM) in one station batch: one
// signature, each device quoting its own event. The device the TPM vendor
// never manufactured is refused by name and the command exits 3; the
// others are logged in one leaf. Then a programming line flashes the three
// and records them in one batch; each one's history (verified by the CLI
// against the log key) shows its members of both batches.
func TestCLIStationBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts custodyd and device agents")
	}
	t.Parallel()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	pkiDir := filepath.Join(data, "pki")
	d := clitest.StartCustodyd(t, data)
	var agents []string
	for i := range 4 {
		adir := filepath.Join(dir, fmt.Sprintf("agent%d", i))
		if err := os.MkdirAll(adir, 0o700); err != nil {
			t.Fatal(err)
		}
		agents = append(agents, clitest.StartAgent(t, adir, pkiDir, 4300+i))
	}
	call := func(op string, flags ...string) clitest.Result {
		args := append([]string{"station", "call", op, "--station", d.HTTP + "/stations/acme-tpm", "--pki", pkiDir}, flags...)
		return clitest.Run(t, dir, "custody", args...)
	}
	var devices []string
	for _, a := range agents[:3] {
		r := call("manufacture", "--agent", a)
		var resp struct{ Device string }
		if r.Code != 0 || json.Unmarshal([]byte(r.Stdout), &resp) != nil {
			t.Fatalf("manufacture: exit %d:\n%s", r.Code, r.Output())
		}
		devices = append(devices, resp.Device)
	}
	r := call("stages", "--agents", strings.Join(agents, ","), "--stage", "test-passed", "--note", "end of line")
	var resp station.Response
	if err := json.Unmarshal([]byte(r.Stdout), &resp); err != nil || resp.Receipt == nil {
		t.Fatalf("stages: exit %d, no receipt:\n%s", r.Code, r.Output())
	}
	if r.Code != 3 || !strings.Contains(r.Stderr, "logged 3 of the batch's 4 events") || !strings.Contains(r.Stderr, "unknown-device") {
		t.Fatalf("stages with an unmanufactured device: exit %d, want 3 naming it:\n%s", r.Code, r.Output())
	}
	if resp.Receipt.Kind != events.KindBatchSigned || len(resp.Receipt.Members) != 4 {
		t.Fatalf("stages: receipt %+v", resp.Receipt)
	}
	for i, m := range resp.Receipt.Members[:3] {
		if m.Status != events.StatusAccepted || m.Target != devices[i] {
			t.Fatalf("member %d: %+v", i, m)
		}
	}
	// A programming line: the three devices flashed and recorded in one
	// batch, each with its own PCRs and quote.
	image := filepath.Join(dir, "fw.bin")
	if err := os.WriteFile(image, []byte("line firmware 3.1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := call("firmware", "--agents", strings.Join(agents[:3], ","), "--image", image); r.Code != 0 || !strings.Contains(r.Stdout, `"kind": "batch.signed"`) {
		t.Fatalf("firmware for a line of three: exit %d:\n%s", r.Code, r.Output())
	}
	for _, dev := range devices {
		p := clitest.Run(t, dir, "custody", "provenance", dev, "--server", d.HTTP, "--as", "acme-tpm",
			"--pki", pkiDir, "--log-key", filepath.Join(pkiDir, pki.FileLogPub))
		if p.Code != 0 || !strings.Contains(p.Stdout, "test-passed (station batch") || !strings.Contains(p.Stdout, "firmware-programmed (sha256") {
			t.Fatalf("provenance of %s: exit %d:\n%s", dev, p.Code, p.Output())
		}
	}
}
