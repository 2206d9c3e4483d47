// Package testservers starts the external servers of Custody's
// integration tests, for real, on one machine: a private MariaDB server
// (Debian's mariadb-server: mariadb-install-db into a temporary data
// directory, mariadbd on a unix socket), and on it Trillian's log server
// and log signer (google/trillian v1.8.0, trillian_log_server and
// trillian_log_signer on loopback ports) with Trillian's schema. Each
// test database and tree is new; everything stops at the test's cleanup.
//
// When a program is missing the test is skipped on a laptop, and fails
// when CI=true (.ci/run installs them: a skipped interop test proves
// nothing). Under -short the tests that need these servers are skipped.
package testservers

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	tpb "github.com/google/trillian"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/custodyledger/custody/ledger/trillian"
)

// TrillianVersion is the Trillian release whose binaries and schema the
// tests run (the one in go.mod).
const TrillianVersion = "v1.8.0"

// startTimeout bounds each server's start.
const startTimeout = 90 * time.Second

// Need fails the test under CI=true and skips it otherwise: a program the
// test needs is missing (why says which, and how to get it).
func Need(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI installs it: .ci/run)", why)
	}
	t.Skip(why)
}

// find looks for a program on PATH, then in dirs.
func find(name string, dirs ...string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

// goBinDirs are where `go install` puts programs.
func goBinDirs() []string {
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	return dirs
}

// proc is a server process with its log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set when done is closed
}

func start(name, logPath, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The server dies with the test process, even when the test panics.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process with SIGKILL, as a crash.
func (p *proc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
	}
	<-p.done
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return fmt.Sprintf("%s (%s) log:\n%s", p.name, p.log, b)
}

// MariaDB is a private MariaDB server listening on a unix socket only.
type MariaDB struct {
	Dir    string // data directory (and socket, logs)
	Socket string
	proc   *proc
	root   *sql.DB
	n      atomic.Int64
}

// mariaDirs are where Debian installs MariaDB's programs.
var mariaDirs = []string{"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}

// StartMariaDB starts a MariaDB server with a new data directory; it stops
// at t's cleanup.
func StartMariaDB(t testing.TB) *MariaDB {
	t.Helper()
	if testing.Short() {
		t.Skip("starts MariaDB; run without -short")
	}
	mariadbd, ok := find("mariadbd", mariaDirs...)
	if !ok {
		Need(t, "mariadbd not found (Debian package mariadb-server)")
	}
	install, ok := find("mariadb-install-db", mariaDirs...)
	if !ok {
		Need(t, "mariadb-install-db not found (Debian package mariadb-server)")
	}
	// A short path: a unix socket's path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "custody-mariadb-")
	if err != nil {
		t.Fatal(err)
	}
	m := &MariaDB{Dir: dir, Socket: filepath.Join(dir, "mysqld.sock")}
	t.Cleanup(func() {
		m.Stop()
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("MariaDB's data directory is kept: %s", dir)
		}
	})
	began := time.Now()
	data := filepath.Join(dir, "data")
	user := []string{}
	if os.Geteuid() == 0 {
		user = []string{"--user=root"} // mariadbd refuses to run as root without it
	}
	args := append([]string{"--no-defaults", "--datadir=" + data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve"}, user...)
	out, err := exec.Command(install, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	m.proc, err = start("mariadbd", filepath.Join(dir, "mariadbd.log"), mariadbd, append([]string{
		"--no-defaults", "--datadir=" + data, "--socket=" + m.Socket, "--skip-networking",
		"--pid-file=" + filepath.Join(dir, "mariadbd.pid"), "--log-error=" + filepath.Join(dir, "error.log"),
		"--skip-name-resolve", "--innodb-buffer-pool-size=128M", "--innodb-log-file-size=64M",
		"--max-connections=500", "--innodb-flush-log-at-trx-commit=1",
	}, user...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.proc.log = filepath.Join(dir, "error.log")
	cfg := m.config("")
	cfg.MultiStatements = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.root = sql.OpenDB(conn)
	deadline := time.Now().Add(startTimeout)
	for {
		err := m.root.Ping()
		if err == nil {
			break
		}
		if m.proc.exited() || time.Now().After(deadline) {
			t.Fatalf("MariaDB did not start: %v\n%s", err, m.proc.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("MariaDB up in %s (%s)", time.Since(began).Round(time.Millisecond), dir)
	return m
}

// Stop stops the server (and closes the root connection).
func (m *MariaDB) Stop() {
	if m.root != nil {
		m.root.Close()
	}
	if m.proc != nil {
		m.proc.stop(30 * time.Second)
	}
}

// DSN is the go-sql-driver/mysql DSN of database db, as root.
func (m *MariaDB) DSN(db string) string { return m.config(db).FormatDSN() }

func (m *MariaDB) config(db string) *mysql.Config {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "unix", m.Socket, db
	return cfg
}

// Root is a connection to the server as root (no database chosen).
func (m *MariaDB) Root() *sql.DB { return m.root }

// Exec runs statements as root.
func (m *MariaDB) Exec(t testing.TB, query string, args ...any) {
	t.Helper()
	if _, err := m.root.Exec(query, args...); err != nil {
		t.Fatalf("MariaDB: %s: %v", query, err)
	}
}

// NewDatabase creates a database with a new name beginning with prefix
// and returns its name.
func (m *MariaDB) NewDatabase(t testing.TB, prefix string) string {
	t.Helper()
	name := prefix + "_" + strconv.FormatInt(m.n.Add(1), 10)
	m.Exec(t, "CREATE DATABASE `"+name+"`")
	return name
}

// DatabaseBytes is the space a database's tables take: the InnoDB pages
// of their data and indexes, counted after ANALYZE TABLE (the files hold
// some more, allocated ahead).
func (m *MariaDB) DatabaseBytes(db string) (int64, error) {
	rows, err := m.root.Query("SELECT table_name FROM information_schema.TABLES WHERE table_schema = ?", db)
	if err != nil {
		return 0, err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return 0, err
		}
		tables = append(tables, t)
	}
	rows.Close()
	for _, t := range tables {
		if _, err := m.root.Exec("ANALYZE TABLE `" + db + "`.`" + t + "`"); err != nil {
			return 0, err
		}
	}
	var n int64
	err = m.root.QueryRow("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.TABLES WHERE table_schema = ?", db).Scan(&n)
	return n, err
}

// Trillian is Trillian's log server and log signer on a MariaDB server.
type Trillian struct {
	DB       *MariaDB
	Database string // Trillian's database
	Addr     string // the log server's gRPC endpoint
	Conn     *grpc.ClientConn

	mu             sync.Mutex
	server, signer *proc
	serverBin      string
	signerBin      string
	signerArgs     []string
	dir            string
	n              int
}

// SignerInterval is the signer's pass interval in the tests: leaves
// committed are in Trillian's signed root within a few of these.
const SignerInterval = 10 * time.Millisecond

// StartTrillian starts MariaDB with Trillian's schema, then
// trillian_log_server and trillian_log_signer on it; all stop at t's
// cleanup.
func StartTrillian(t testing.TB) *Trillian {
	t.Helper()
	if testing.Short() {
		t.Skip("starts MariaDB and Trillian; run without -short")
	}
	dirs := append(goBinDirs(), "/usr/local/bin")
	serverBin, ok := find("trillian_log_server", dirs...)
	if !ok {
		Need(t, "trillian_log_server not found (go install github.com/google/trillian/cmd/trillian_log_server@"+TrillianVersion+")")
	}
	signerBin, ok := find("trillian_log_signer", dirs...)
	if !ok {
		Need(t, "trillian_log_signer not found (go install github.com/google/trillian/cmd/trillian_log_signer@"+TrillianVersion+")")
	}
	schema, err := trillianSchema()
	if err != nil {
		Need(t, "Trillian's MySQL schema: "+err.Error())
	}
	db := StartMariaDB(t)
	began := time.Now()
	tr := &Trillian{DB: db, serverBin: serverBin, signerBin: signerBin, dir: db.Dir}
	tr.Database = db.NewDatabase(t, "trillian")
	cfg := db.config(tr.Database)
	cfg.MultiStatements = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sch := sql.OpenDB(conn)
	_, err = sch.Exec(string(schema))
	sch.Close()
	if err != nil {
		t.Fatalf("loading Trillian's schema: %v", err)
	}
	t.Cleanup(tr.stop) // before MariaDB stops (cleanups run last first)
	uri := db.DSN(tr.Database)
	tr.Addr = tr.startServer(t, uri)
	tr.signerArgs = []string{
		"--storage_system=mysql", "--mysql_uri=" + uri, "--quota_system=noop", "--force_master",
		"--sequencer_interval=" + SignerInterval.String(), "--batch_size=1000", "--num_sequencers=2",
		"--http_endpoint=", "--logtostderr",
	}
	tr.StartSigner(t)
	tr.Conn, err = grpc.NewClient(tr.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	admin := tpb.NewTrillianAdminClient(tr.Conn)
	for {
		_, err := admin.ListTrees(ctx, &tpb.ListTreesRequest{})
		if err == nil {
			break
		}
		tr.mu.Lock()
		srv := tr.server
		tr.mu.Unlock()
		if srv.exited() || ctx.Err() != nil {
			t.Fatalf("trillian_log_server did not start: %v\n%s", err, srv.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("Trillian up in %s (log server %s)", time.Since(began).Round(time.Millisecond), tr.Addr)
	return tr
}

// startServer starts trillian_log_server and returns its gRPC endpoint.
func (tr *Trillian) startServer(t testing.TB, uri string) string {
	t.Helper()
	p, addr := tr.onFreePort(t, "trillian_log_server", tr.serverBin, func(addr string) []string { return serverArgs(uri, addr) })
	tr.mu.Lock()
	tr.server = p
	tr.mu.Unlock()
	return addr
}

// serverArgs are trillian_log_server's flags: the database at uri, gRPC
// on addr.
func serverArgs(uri, addr string) []string {
	return []string{"--storage_system=mysql", "--mysql_uri=" + uri, "--quota_system=noop",
		"--rpc_endpoint=" + addr, "--http_endpoint=", "--tree_gc=false", "--logtostderr"}
}

// StartSigner starts trillian_log_signer (again after KillSigner).
func (tr *Trillian) StartSigner(t testing.TB) {
	t.Helper()
	p, _ := tr.onFreePort(t, "trillian_log_signer", tr.signerBin, func(addr string) []string {
		return append(slices.Clone(tr.signerArgs), "--rpc_endpoint="+addr)
	})
	tr.mu.Lock()
	tr.signer = p
	tr.mu.Unlock()
}

// onFreePort starts a Trillian binary with args for a free loopback port
// and waits until it listens there, on another port if another process
// took that one first.
func (tr *Trillian) onFreePort(t testing.TB, name, bin string, args func(addr string) []string) (*proc, string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		addr := freePort(t)
		p, err := tr.launch(name, bin, args(addr), addr)
		if err == nil {
			return p, addr
		}
		if attempt < 3 && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		t.Fatal(err)
	}
}

// launch starts a Trillian binary and waits until it listens on addr;
// an error carries the end of its log.
func (tr *Trillian) launch(name, bin string, args []string, addr string) (*proc, error) {
	p, err := start(name, tr.logPath(strings.TrimPrefix(name, "trillian_")), bin, args...)
	if err != nil {
		return nil, err
	}
	if err := waitListening(p, addr); err != nil {
		p.stop(5 * time.Second)
		return nil, fmt.Errorf("%s: %v\n%s", name, err, p.tail())
	}
	return p, nil
}

// KillSigner kills the signer: leaves added meanwhile wait in Trillian's
// tables, unintegrated, until StartSigner.
func (tr *Trillian) KillSigner() {
	tr.mu.Lock()
	p := tr.signer
	tr.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// KillServer kills the log server with SIGKILL; RestartServer starts it
// again on the same endpoint.
func (tr *Trillian) KillServer() {
	tr.mu.Lock()
	p := tr.server
	tr.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// RestartServer starts the log server again on its endpoint, after
// KillServer, and waits until it answers.
func (tr *Trillian) RestartServer(t testing.TB) {
	t.Helper()
	uri := tr.DB.DSN(tr.Database)
	p, err := tr.launch("trillian_log_server", tr.serverBin, serverArgs(uri, tr.Addr), tr.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tr.mu.Lock()
	tr.server = p
	tr.mu.Unlock()
	// The connection retries with a growing backoff while the server is
	// down: connect now, and wait until it answers.
	tr.Conn.ResetConnectBackoff()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if _, err := tpb.NewTrillianAdminClient(tr.Conn).ListTrees(ctx, &tpb.ListTreesRequest{}, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("trillian_log_server after a restart: %v\n%s", err, p.tail())
	}
}

// stop kills the signer and the log server: they take seconds to stop
// on SIGTERM, and every write of theirs is a MariaDB transaction.
func (tr *Trillian) stop() {
	tr.mu.Lock()
	server, signer := tr.server, tr.signer
	tr.mu.Unlock()
	if signer != nil {
		signer.kill()
	}
	if server != nil {
		server.kill()
	}
}

func (tr *Trillian) logPath(name string) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.n++
	return filepath.Join(tr.dir, fmt.Sprintf("%s.%d.log", name, tr.n))
}

// NewTree creates a PREORDERED_LOG tree (ledger/trillian.CreateTree).
func (tr *Trillian) NewTree(t testing.TB) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id, err := trillian.CreateTree(ctx, tr.Conn, "custody-test")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// freePort is a loopback address with a port nobody listened on a moment
// ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitListening waits until the process accepts connections on addr.
func waitListening(p *proc, addr string) error {
	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("exited: %v", p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after %s", addr, startTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var schemaOnce struct {
	sync.Once
	b   []byte
	err error
}

// trillianSchema is storage/mysql/schema/storage.sql of the Trillian
// module in go.mod, from the module cache (downloaded if need be).
func trillianSchema() ([]byte, error) {
	schemaOnce.Do(func() {
		goBin, err := exec.LookPath("go")
		if err != nil {
			schemaOnce.err = errors.New("the go command is not on PATH")
			return
		}
		cmd := exec.Command(goBin, "mod", "download", "-json", "github.com/google/trillian@"+TrillianVersion)
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		if err := cmd.Run(); err != nil {
			schemaOnce.err = fmt.Errorf("go mod download: %v: %s", err, stderr.String())
			return
		}
		var mod struct{ Dir, Error string }
		if err := json.Unmarshal(out.Bytes(), &mod); err != nil || mod.Dir == "" {
			schemaOnce.err = fmt.Errorf("go mod download named no directory (%v): %s", err, out.String())
			return
		}
		schemaOnce.b, schemaOnce.err = os.ReadFile(filepath.Join(mod.Dir, "storage", "mysql", "schema", "storage.sql"))
	})
	return schemaOnce.b, schemaOnce.err
}
