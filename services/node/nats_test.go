package node_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

func start(t *testing.T) *node.Node {
	t.Helper()
	n, stop, err := node.Start(context.Background(), node.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", DPSAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// permissionErrors collects the server's permission violations for a
// connection.
type permissionErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *permissionErrors) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, err.Error())
}

func (p *permissionErrors) wait(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		for _, e := range p.errs {
			if strings.Contains(e, substr) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no permission violation mentioning %q; got %v", substr, p.errs)
}

// TestPartnerPermissions: over the network with its NKEY, the ODM can
// publish under its own prefix and read its own answers, but cannot publish
// as the OEM, read the OEM's receipts, or connect without its key.
func TestPartnerPermissions(t *testing.T) {
	n := start(t)
	kp, err := n.PKI.NKey("orbit-odm")
	if err != nil {
		t.Fatal(err)
	}
	var perr permissionErrors
	nc, err := nats.Connect(n.NATSURL(), append(node.UserOptions("orbit-odm", kp), node.NATSTLS(n.PKI), nats.ErrorHandler(perr.handler))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	dev := strings.Repeat("ab", 32)

	// Allowed: its own subject. The ledger answers on its own rejection
	// subject (garbage is malformed, and the subject names the publisher).
	own, err := nc.SubscribeSync(events.RejectionSubject("orbit-odm", ">"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, events.EventSubject("orbit-odm", dev), []byte(`{"not":"an envelope"}`)); err != nil {
		t.Fatalf("publishing under its own prefix: %v", err)
	}
	m, err := own.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no rejection on its own subject: %v", err)
	}
	var r events.Receipt
	_ = json.Unmarshal(m.Data, &r)
	if r.Status != events.StatusRejected || r.Code != "malformed" {
		t.Fatalf("rejection %+v", r)
	}

	// Denied: publishing as the OEM.
	pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer pcancel()
	if _, err := js.Publish(pctx, events.EventSubject("nova-oem", dev), []byte("x")); err == nil {
		t.Fatal("the ODM published on the OEM's subject")
	}
	perr.wait(t, `Permissions Violation for Publish to "custody.v1.events.nova-oem.`)

	// Denied: reading the OEM's receipts.
	if _, err := nc.Subscribe(events.ReceiptsPrefix+".nova-oem.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	perr.wait(t, `Permissions Violation for Subscription to "custody.v1.receipts.nova-oem.>"`)

	// Denied: writing the checkpoint bucket (a partner reads the latest
	// checkpoint; only the ledger writes it), directly or through the KV API.
	kv, err := js.KeyValue(ctx, events.CheckpointBucket)
	if err != nil {
		t.Fatalf("a partner cannot read the checkpoint bucket: %v", err)
	}
	latest, err := kv.Get(ctx, "latest")
	if err != nil {
		t.Fatalf("reading the latest checkpoint: %v", err)
	}
	kctx, kcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer kcancel()
	if _, err := kv.Put(kctx, "latest", []byte("forged checkpoint")); err == nil {
		t.Fatal("a partner wrote the checkpoint bucket")
	}
	perr.wait(t, `Permissions Violation for Publish to "$KV.`+events.CheckpointBucket+`.latest"`)
	if now, err := kv.Get(ctx, "latest"); err != nil || now.Revision() < latest.Revision() || string(now.Value()) == "forged checkpoint" {
		t.Fatalf("the checkpoint bucket after a partner's write: %v %v", now, err)
	}

	// Denied: connecting without a key, or with another partner's name but
	// its own key.
	if c, err := nats.Connect(n.NATSURL(), node.NATSTLS(n.PKI), nats.Timeout(2*time.Second)); err == nil {
		c.Close()
		t.Fatal("connected without credentials")
	}
}

func TestNATSServerConfigNamesEveryUser(t *testing.T) {
	n := start(t)
	conf, err := node.NATSServerConfig(n.PKI)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range n.PKI.PartnerNames() {
		if !strings.Contains(conf, `"custody.v1.events.`+p+`.>"`) {
			t.Errorf("config lacks %s's publish permission", p)
		}
	}
}

// A cluster node's config: routes go over TLS and authenticate with the
// route secret; a cluster node without the secret, its name or routes is
// refused rather than rendered open.
func TestNATSNodeConfigCluster(t *testing.T) {
	p, err := pki.InitDemo(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := node.NATSNode{Name: "nats-1", Listen: "10.0.0.1:4222", StoreDir: "/srv/nats", Cluster: "custody", ClusterListen: "10.0.0.1:6222",
		Routes: []string{"10.0.0.1:6222", "10.0.0.2:6222", "10.0.0.3:6222"}, RouteSecret: "0123456789abcdef0123456789abcdef"}
	conf, err := node.NATSNodeConfig(p, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`server_name: "nats-1"`, `"tls://custody-route:0123456789abcdef0123456789abcdef@10.0.0.2:6222"`,
		`authorization { user: "custody-route", password: "0123456789abcdef0123456789abcdef"`, "ca_file:", `store_dir: "/srv/nats"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("config lacks %s:\n%s", want, conf)
		}
	}
	for _, bad := range []func(*node.NATSNode){
		func(n *node.NATSNode) { n.RouteSecret = "" },
		func(n *node.NATSNode) { n.Name = "" },
		func(n *node.NATSNode) { n.Routes = nil },
		func(n *node.NATSNode) { n.Routes = []string{"no-port"} },
	} {
		m := n
		bad(&m)
		if _, err := node.NATSNodeConfig(p, m); err == nil {
			t.Errorf("%+v rendered", m)
		}
	}
}
