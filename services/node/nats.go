package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/pki"
)

// LedgerUser is the NATS user of the ledger (and the node's own services).
const LedgerUser = "custody-ledger"

// VerifierUser is the NATS user of the verifier pool's processes
// (services/verifier).
const VerifierUser = "custody-verifier"

// VerifierPermissions are what a verifier's NATS user may do: read its
// consumer of the events stream (ledger.VerifierConsumer: its info and
// next messages, nothing else of $JS.API: it cannot ack, delete or create
// anything), ask the ledger's facts service, publish verdicts, and read its
// own reply inbox. It sees every event (the checks need them) but cannot
// publish one, nor read receipts, checkpoints' bucket or any partner's
// answers.
func VerifierPermissions() *server.Permissions {
	cons := events.StreamName + "." + ledger.VerifierConsumer
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.CONSUMER.INFO." + cons,
			"$JS.API.CONSUMER.MSG.NEXT." + cons,
			events.VerdictSubject,
			events.FactsSubject,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{events.InboxPrefix(VerifierUser) + ".>"}},
	}
}

// PartnerPermissions are what a partner's NATS user may do: the NATS
// subjects of every row of the authorisation matrix (events.Permissions)
// that admits its role: publish events under its own subject prefix,
// status and ledger API requests, read checkpoints; subscribe to its own
// receipts, rejections and reply inbox. Nothing else, $JS.API included.
func PartnerPermissions(partner, role string) *server.Permissions {
	pub, sub := events.NATSSubjects(partner, role)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// NATSUsers returns the NKEY users of a deployment: the ledger with every
// permission, the verifier pool's (VerifierPermissions), the consortium, and one user per partner of the PKI. Seeds
// missing from the PKI directory are created.
func NATSUsers(p *pki.Demo) ([]*server.NkeyUser, error) {
	names := append([]string{events.ConsortiumPartner}, p.PartnerNames()...)
	users := []*server.NkeyUser{}
	kp, err := p.NKey(LedgerUser)
	if err != nil {
		return nil, err
	}
	pub, _ := kp.PublicKey()
	users = append(users, &server.NkeyUser{Nkey: pub}) // no Permissions: everything
	if kp, err = p.NKey(VerifierUser); err != nil {
		return nil, err
	}
	pub, _ = kp.PublicKey()
	users = append(users, &server.NkeyUser{Nkey: pub, Permissions: VerifierPermissions()})
	for _, name := range names {
		kp, err := p.NKey(name)
		if err != nil {
			return nil, err
		}
		pub, _ := kp.PublicKey()
		role := events.RoleConsortium
		if p, ok := p.Partners[name]; ok {
			role = p.Role
		}
		users = append(users, &server.NkeyUser{Nkey: pub, Permissions: PartnerPermissions(name, role)})
	}
	return users, nil
}

func (n *Node) startNATS() error {
	users, err := NATSUsers(n.PKI)
	if err != nil {
		return fmt.Errorf("node: NATS users: %w", err)
	}
	opts := &server.Options{
		ServerName: "custody",
		JetStream:  true,
		StoreDir:   filepath.Join(n.cfg.DataDir, "nats"),
		DontListen: n.cfg.NATSAddr == "",
		NoSigs:     true,
		NoLog:      true,
		Nkeys:      users,
	}
	if n.cfg.NATSAddr != "" {
		// Partners connect over TLS with the PKI's server certificate
		// (NATSTLS on their side); in-process connections need none.
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{*n.PKI.TLS}, MinVersion: tls.VersionTLS12}
		opts.TLS = true
		opts.TLSTimeout = 5
	}
	if n.cfg.NATSAddr != "" {
		host, port, err := net.SplitHostPort(n.cfg.NATSAddr)
		if err != nil {
			return fmt.Errorf("node: NATS address: %w", err)
		}
		opts.Host = host
		if _, err := fmt.Sscan(port, &opts.Port); err != nil {
			return fmt.Errorf("node: NATS port: %w", err)
		}
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT // nats-server reads 0 as its default, 4222
		}
		// nats-server tells of a listener it cannot open only in its log:
		// try the address first, for an error that says why.
		ln, err := listen("NATS", n.cfg.NATSAddr)
		if err != nil {
			return err
		}
		_ = ln.Close()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("node: NATS: %w", err)
	}
	log := &natsLog{log: n.cfg.Logger.With("part", "nats")}
	ns.SetLoggerV2(log, false, false, false)
	ns.Start() // returns once its listener is open or could not be
	if msg := log.fatal(); msg != "" {
		ns.Shutdown()
		return fmt.Errorf("node: NATS: %s", msg)
	}
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return errors.New("node: NATS did not become ready")
	}
	n.NATS = ns
	return nil
}

// natsLog is the embedded NATS server's logger: errors and warnings go to
// the node's log, and the first fatal error is kept. nats-server reports
// what stops it from starting (a listener, JetStream) only through its
// logger, and then never becomes ready.
type natsLog struct {
	log *slog.Logger

	mu       sync.Mutex
	fatalMsg string
}

func (l *natsLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalMsg
}

func (l *natsLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.fatalMsg == "" {
		l.fatalMsg = msg
	}
	l.mu.Unlock()
	l.log.Error(msg)
}

func (l *natsLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *natsLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *natsLog) Noticef(format string, v ...any) {}
func (l *natsLog) Debugf(format string, v ...any)  {}
func (l *natsLog) Tracef(format string, v ...any)  {}

// connect opens an in-process connection as a NATS user.
func (n *Node) connect(user string) (*nats.Conn, error) {
	kp, err := n.PKI.NKey(user)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect("", append(UserOptions(user, kp), nats.InProcessServer(n.NATS))...)
	if err != nil {
		return nil, err
	}
	n.connsMu.Lock()
	open := n.conns[:0] // callers may have closed theirs already
	for _, c := range n.conns {
		if !c.IsClosed() {
			open = append(open, c)
		}
	}
	n.conns = append(open, nc)
	n.connsMu.Unlock()
	return nc, nil
}

// Connect opens an in-process NATS connection as user (a partner name,
// "consortium" or LedgerUser), for tests and embedded tools.
func (n *Node) Connect(user string) (*nats.Conn, error) { return n.connect(user) }

// UserOptions are the connection options of a NATS user: its NKEY and its
// own inbox prefix.
func UserOptions(user string, kp nkeys.KeyPair) []nats.Option {
	pub, _ := kp.PublicKey()
	return []nats.Option{
		nats.Name(user),
		nats.Nkey(pub, kp.Sign),
		nats.CustomInboxPrefix(events.InboxPrefix(user)),
		nats.MaxReconnects(-1),
	}
}

// NATSTLS is the TLS option of a NATS client of a deployment on the PKI
// p: it trusts the PKI's TLS CA. custodyd's NATS listener requires TLS.
func NATSTLS(p *pki.Demo) nats.Option {
	return nats.Secure(&tls.Config{RootCAs: p.TLSRoots(), MinVersion: tls.VersionTLS12})
}

// NATSServerConfig renders a nats-server configuration with the same users
// and permissions as the embedded server of a deployment on p, for running
// an external server (deploy/). NKEY public keys only; seeds stay with their
// users.
func NATSServerConfig(p *pki.Demo) (string, error) {
	return NATSNodeConfig(p, NATSNode{})
}

// NATSNode is one server of a deployment's NATS: where it listens and
// keeps JetStream's files, and, in a cluster, its name and routes.
type NATSNode struct {
	// Name is the server's name (server_name; required in a cluster).
	Name string
	// Listen is the client listener, host:port ("": nats-server's
	// default, 0.0.0.0:4222).
	Listen string
	// StoreDir is JetStream's directory (default /var/lib/custody/nats).
	StoreDir string
	// Cluster names the cluster; empty: a single server. ClusterListen is
	// the route listener, Routes every node's route address (host:port,
	// this one's included: nats-server skips itself).
	Cluster, ClusterListen string
	Routes                 []string
	// RouteSecret authenticates the routes between the cluster's nodes
	// (user custody-route), over TLS with the PKI's server certificate.
	RouteSecret string
}

// NATSNodeConfig renders the nats-server configuration of one node of a
// deployment on p (NATSServerConfig for a single server).
func NATSNodeConfig(p *pki.Demo, n NATSNode) (string, error) {
	users, err := NATSUsers(p)
	if err != nil {
		return "", err
	}
	dir, err := filepath.Abs(p.Dir)
	if err != nil {
		return "", err
	}
	if n.StoreDir == "" {
		n.StoreDir = "/var/lib/custody/nats"
	}
	cert, key := filepath.Join(dir, filepath.FromSlash(pki.FileTLSServer)), filepath.Join(dir, filepath.FromSlash(pki.FileTLSServerKey))
	var b strings.Builder
	b.WriteString(renderUsers(users, n.StoreDir))
	// Partners connect over TLS, as to custodyd's embedded server.
	fmt.Fprintf(&b, "tls {\n  cert_file: %q\n  key_file: %q\n  timeout: 5\n}\n", cert, key)
	if n.Name != "" {
		fmt.Fprintf(&b, "server_name: %q\n", n.Name)
	}
	if n.Listen != "" {
		fmt.Fprintf(&b, "listen: %q\n", n.Listen)
	}
	if n.Cluster != "" {
		if n.Name == "" || n.ClusterListen == "" || len(n.Routes) == 0 || n.RouteSecret == "" {
			return "", errors.New("node: a cluster node needs a name, a route listener, the routes and the route secret")
		}
		routes := make([]string, len(n.Routes))
		for i, r := range n.Routes {
			if _, _, err := net.SplitHostPort(r); err != nil {
				return "", fmt.Errorf("node: route %q: %w", r, err)
			}
			routes[i] = fmt.Sprintf("%q", "tls://"+RouteUser+":"+n.RouteSecret+"@"+r)
		}
		ca := filepath.Join(dir, filepath.FromSlash(pki.FileTLSCA))
		fmt.Fprintf(&b, "cluster {\n  name: %q\n  listen: %q\n  routes: [%s]\n", n.Cluster, n.ClusterListen, strings.Join(routes, ", "))
		fmt.Fprintf(&b, "  authorization { user: %q, password: %q, timeout: 5 }\n", RouteUser, n.RouteSecret)
		fmt.Fprintf(&b, "  tls {\n    cert_file: %q\n    key_file: %q\n    ca_file: %q\n    timeout: 5\n  }\n}\n", cert, key, ca)
	}
	return b.String(), nil
}

// RouteUser is the user the nodes of a NATS cluster authenticate their
// routes as (NATSNode.RouteSecret).
const RouteUser = "custody-route"

// RenderNATSConfig renders NKEY users with permissions as nats-server
// configuration (authorization block plus JetStream).
func RenderNATSConfig(users []*server.NkeyUser) string {
	return renderUsers(users, "/var/lib/custody/nats")
}

func renderUsers(users []*server.NkeyUser, storeDir string) string {
	var b strings.Builder
	b.WriteString("# Custody: one NATS user per partner (NKEY), generated by `custody nats-config`.\n")
	fmt.Fprintf(&b, "jetstream {\n  store_dir: %q\n  sync_interval: \"always\"\n}\n", storeDir)
	b.WriteString("authorization {\n  users: [\n")
	for _, u := range users {
		fmt.Fprintf(&b, "    { nkey: %q", u.Nkey)
		if p := u.Permissions; p != nil {
			b.WriteString(",\n      permissions: {\n")
			if p.Publish != nil {
				fmt.Fprintf(&b, "        publish: { allow: %s }\n", quoteList(p.Publish.Allow))
			}
			if p.Subscribe != nil {
				fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", quoteList(p.Subscribe.Allow))
			}
			b.WriteString("      }\n    ")
		}
		b.WriteString("}\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	sorted := append([]string(nil), s...)
	sort.Strings(sorted)
	for i, v := range sorted {
		q[i] = fmt.Sprintf("%q", v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
