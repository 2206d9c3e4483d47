// Package clusterrun drives the cluster of deploy/cluster/cluster.sh on
// loopback for the failover test (deploy/cluster) and the cluster
// benchmark (bench cluster): it starts and stops the cluster and its
// processes through the script, and connects partners' stations to it as
// a station on another machine would (NATS with the partner's NKEY, the
// sequencers' read API with its certificate).
package clusterrun

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
	"github.com/custodyledger/custody/services/station"
)

// Cluster is a cluster started by cluster.sh.
type Cluster struct {
	// Dir holds its state, logs and pid files (CLUSTER_DIR).
	Dir string
	// Vars are the script's "env" output: PKI, NATS_URLS, LEDGER_URLS,
	// TRILLIAN, DB, TREE_ID.
	Vars   map[string]string
	PKI    *pki.Demo
	script string
	env    []string
}

// Up starts a cluster in dir with the binaries in bin (custody,
// custodyd) and the module's cluster.sh under root, on free loopback
// ports; env adds settings (LEASE=2s, SEQUENCER_ARGS=...). A PKI already
// in dir/pki is used as it is.
func Up(root, dir, bin string, env ...string) (*Cluster, string, error) {
	base, err := freeBase()
	if err != nil {
		return nil, "", err
	}
	c := &Cluster{
		Dir: dir, script: filepath.Join(root, "deploy", "cluster", "cluster.sh"),
		env: append([]string{"CLUSTER_DIR=" + dir, "BIN=" + bin, fmt.Sprintf("PORT_BASE=%d", base)}, env...),
	}
	out, err := c.Sh("up")
	if err != nil {
		return c, out, err
	}
	envOut, err := c.Sh("env")
	if err != nil {
		return c, out, err
	}
	c.Vars = map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(envOut))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			c.Vars[k] = v
		}
	}
	if c.PKI, err = pki.LoadDemo(c.Vars["PKI"]); err != nil {
		return c, out, err
	}
	return c, out, nil
}

// Sh runs cluster.sh with args (up, down, start NAME, kill NAME, ...).
func (c *Cluster) Sh(args ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{c.script}, args...)...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("cluster.sh %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), err
}

// Pid is the pid of a process of the cluster (0 if it is not running).
func (c *Cluster) Pid(name string) int {
	b, err := os.ReadFile(filepath.Join(c.Dir, "run", name+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// LedgerURLs are the sequencers' read API base URLs (https://host:port).
func (c *Cluster) LedgerURLs() []string { return strings.Split(c.Vars["LEDGER_URLS"], ",") }

// Connect opens a NATS connection to the cluster as user (a partner,
// node.LedgerUser, ...), reconnecting to any node.
func (c *Cluster) Connect(user string, opts ...nats.Option) (*nats.Conn, error) {
	kp, err := c.PKI.NKey(user)
	if err != nil {
		return nil, err
	}
	return nats.Connect(c.Vars["NATS_URLS"], append(append(node.UserOptions(user, kp), node.NATSTLS(c.PKI), nats.ReconnectWait(100*time.Millisecond)), opts...)...)
}

// Station is a partner's station connected to the cluster: its NATS
// user, and the sequencers' read API (each in turn: one may be down) for
// custody state. Its outbox is in outbox; close nc when done.
func (c *Cluster) Station(partner, outbox string) (*station.Station, *nats.Conn, error) {
	pt, ok := c.PKI.Partners[partner]
	if !ok {
		return nil, nil, fmt.Errorf("clusterrun: no partner %q in the PKI", partner)
	}
	nc, err := c.Connect(partner)
	if err != nil {
		return nil, nil, err
	}
	hc, err := c.PKI.HTTPClient(partner)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	var ml MultiLedger
	for _, u := range c.LedgerURLs() {
		ml = append(ml, station.NewLedgerClient(u+"/ledger", hc))
	}
	rv, err := node.ReceiptVerifier(c.PKI, partner)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	cfg := station.Config{
		Name: partner, Role: pt.Role, Key: pt.Key, NATS: nc, ReceiptVerifier: rv, Ledger: ml, HTTPClient: hc,
		OutboxDir: outbox, ReceiptTimeout: 15 * time.Second, TPMInfo: node.DefaultTPMInfo,
	}
	if pt.Role == events.RoleTPMVendor {
		cfg.ManufacturingCA = c.PKI.VendorMfgCA
	}
	s, err := station.New(cfg)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return s, nc, nil
}

// MultiLedger asks each sequencer's read API in turn.
type MultiLedger []*station.LedgerClient

// Device is the first answer of a sequencer that answers.
func (m MultiLedger) Device(id string) (*ledger.Device, error) {
	var errs []error
	for _, c := range m {
		d, err := c.Device(id)
		if err == nil || errors.Is(err, ledger.ErrNotFound) {
			return d, err
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// PendingOffers is the first answer of a sequencer that answers.
func (m MultiLedger) PendingOffers(to string) ([]string, error) {
	var errs []error
	for _, c := range m {
		ids, err := c.PendingOffers(to)
		if err == nil {
			return ids, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// StartAgent starts a custody-agent (bin) with a simulated TPM of its own
// (seed) under dir and returns it with its URL; stop it with SIGINT.
func StartAgent(bin, dir, pkiDir string, seed int) (*exec.Cmd, string, error) {
	state := filepath.Join(dir, strconv.Itoa(seed))
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, "", err
	}
	addr := filepath.Join(state, "addr")
	cmd := exec.Command(bin, "serve", "--tpm", fmt.Sprintf("sim:seed=%d", seed), "--state", state, "--listen", "127.0.0.1:0", "--addr-file", addr, "--pki", pkiDir)
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(addr); err == nil && len(b) > 0 {
			return cmd, strings.TrimSpace(string(b)), nil
		}
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, "", errors.New("custody-agent did not start")
}

// freeBase is a port base with 32 free loopback ports above it (the
// script's PORT_BASE).
func freeBase() (int, error) {
	for range 50 {
		base := 20000 + rand.IntN(400)*100
		free := true
		for p := base; p < base+32 && free; p++ {
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return base, nil
		}
	}
	return 0, errors.New("clusterrun: no 32 free loopback ports in a row")
}
