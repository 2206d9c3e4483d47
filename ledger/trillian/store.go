// Package trillian is the ledger's scale-out Store: the log's leaves in a
// Trillian PREORDERED_LOG tree (google/trillian v1.8.0, on MariaDB), fed
// with AddSequencedLeaves at Custody's own indices, and everything else
// the Store holds in tables of Custody's own in a MariaDB database beside
// Trillian's (schema.go). The design is docs/design/cluster.md, "Storage:
// Trillian on MariaDB"; the contract is ledger.Store's (ledger/store.go).
//
// The commit point is one MariaDB transaction, committed with the server's
// fsync at commit (Open refuses a server that does not): the entries (with
// their leaf bodies), the indexes, the tree nodes, the device and partner
// states, the rejections and the head with its stream sequence. Only
// committed leaves are then sent to Trillian, at their indices, by a
// sender running beside the commits; a leaf is idempotent there (its
// identity hash names its index), so a leaf sent again after a crash is
// recognised, and another leaf at a taken index is ErrDiverged. Trillian
// is never ahead of the commit, and at most Config.MaxLag leaves behind
// it: a Commit that finds it further behind waits for it, and fails,
// writing nothing, if it does not catch up. CheckTrillian compares
// Trillian's signed root with Custody's tree at the same size.
//
// Everything a sequencer needs to go on (head, device index, custody
// state, tree nodes) is in MariaDB, so a standby sequencer opens the same
// database and tree after the active one dies and carries on.
package trillian

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	tpb "github.com/google/trillian"
	"github.com/transparency-dev/merkle/compact"
	"google.golang.org/grpc"

	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/internal/seen"
)

// Config says where a Store keeps the log.
type Config struct {
	// DSN is the go-sql-driver/mysql data source name of Custody's own
	// database, for example "custody:pw@tcp(db:3306)/custody" or
	// "root@unix(/run/mysqld/mysqld.sock)/custody". The database must
	// exist; Open creates its tables. It is not Trillian's database,
	// though both may live in one MariaDB server.
	DSN string
	// Conn is a connection to Trillian's log server
	// (trillian_log_server), which serves the admin API too. The Store
	// does not close it.
	Conn grpc.ClientConnInterface
	// TreeID is the PREORDERED_LOG tree holding the log's leaves
	// (CreateTree makes one). A database is bound to its tree by the
	// first Open.
	TreeID int64
	// Timeout bounds each call a Store method makes to MariaDB or
	// Trillian (default 30 s).
	Timeout time.Duration
	// MaxLag is how many committed leaves Trillian may lack (default
	// 4096): a Commit that finds Trillian further behind waits for it (at
	// most Timeout) and fails, writing nothing, if it does not catch up.
	// Leaves reach Trillian beside the commits, so a commit does not wait
	// for Trillian's writes while it keeps up.
	MaxLag int
	// Logger receives warnings (Trillian unreachable, a sending retried);
	// default slog.Default().
	Logger *slog.Logger
}

// Errors.
var (
	// ErrConflict is returned by Commit when the stored head is not the
	// one the commit appends to: another writer has committed since this
	// one read the head. Nothing of the commit is written.
	ErrConflict = errors.New("trillian store: the stored head moved (another writer committed)")
	// ErrDiverged is returned when Trillian's tree and Custody's differ:
	// another leaf at an index Custody committed, or a root that is not
	// Custody's at the same size.
	ErrDiverged = errors.New("trillian store: Trillian's tree and Custody's differ")
	// ErrNotDurable is returned by Open for a MariaDB server that does
	// not flush its redo log (and binary log, if on) at every commit.
	ErrNotDurable = errors.New("trillian store: the database server does not sync at commit")
	// ErrNewerFormat is returned by Open for tables written in a newer
	// layout than this code reads.
	ErrNewerFormat = errors.New("trillian store: written in a newer layout than this custodyd reads")
	// ErrCorrupt is returned for a stored record that is not what the
	// store writes.
	ErrCorrupt = errors.New("trillian store: corrupt record")
)

// Store is a ledger.Store on Trillian and MariaDB.
type Store struct {
	db      *sql.DB
	log     tpb.TrillianLogClient
	admin   tpb.TrillianAdminClient
	treeID  int64
	timeout time.Duration
	logger  *slog.Logger
	base    context.Context
	cancel  context.CancelFunc

	maxLag uint64

	stmts sync.Map // query → *sql.Stmt: reads prepared once

	// mu serialises Commit (one writer per Store; between Stores and
	// processes, the head row's lock in the transaction).
	mu sync.Mutex
	// sendMu serialises the sending of leaves to Trillian (the sender,
	// SyncTrillian).
	sendMu sync.Mutex
	// state guards what the writer and the sender share.
	state sync.Mutex
	// committed is the log size as this writer last knew it committed;
	// pushed is how many leaves Trillian is known to hold (every index
	// below it); recent holds the leaves committed by this Store from
	// index recentFrom that Trillian may lack (read back from MariaDB
	// when they are not here).
	committed, pushed uint64
	recent            []leaf
	recentFrom        uint64
	// sendErr is the sender's last failure (nil after a success);
	// diverged is set for good once Trillian holds another leaf.
	sendErr, diverged error
	// progress is closed and replaced whenever pushed or sendErr
	// changes.
	progress chan struct{}
	// kick wakes the sender; senderDone is closed when it has stopped.
	kick        chan struct{}
	senderOnce  sync.Once
	senderDone  chan struct{}
	senderStart bool

	// seen answers most lookups of digests and event IDs that are not
	// logged from memory (seen.go): it holds the keys of entries
	// [0, seenSize); knownSize is the largest committed size this Store
	// has read or written. catchMu serialises catching up.
	seen                *seen.Filter
	seenMu, catchMu     sync.Mutex
	seenSize, knownSize uint64
	writer              bool
	seenDone            chan struct{}

	faults faults // fault injection for tests (export_test.go)
}

// leaf is a committed leaf body at its index.
type leaf struct {
	index uint64
	body  []byte
}

// faults are the points where tests make a commit fail.
type faults struct {
	beforeHead func() error // inside the transaction, before the head is written
	skipPush   bool         // committed leaves are not sent to Trillian (a crash after COMMIT)
}

var _ ledger.Store = (*Store)(nil)

// Open opens the store: it checks the tree and the database server,
// creates Custody's tables if they are missing, and binds a new database
// to cfg.TreeID (a database bound to another tree is refused).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.DSN == "" || cfg.Conn == nil || cfg.TreeID <= 0 {
		return nil, errors.New("trillian store: DSN, Conn and TreeID are required")
	}
	mc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("trillian store: DSN: %w", err)
	}
	if mc.DBName == "" {
		return nil, errors.New("trillian store: the DSN names no database")
	}
	// Server-side prepared statements: a commit's binary values travel
	// as they are, not quoted into the statement's text.
	mc.InterpolateParams = false
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, fmt.Errorf("trillian store: %w", err)
	}
	s := &Store{
		db: sql.OpenDB(conn), log: tpb.NewTrillianLogClient(cfg.Conn), admin: tpb.NewTrillianAdminClient(cfg.Conn),
		treeID: cfg.TreeID, timeout: cfg.Timeout, logger: cfg.Logger, maxLag: uint64(max(cfg.MaxLag, 0)),
		progress: make(chan struct{}), kick: make(chan struct{}, 1), senderDone: make(chan struct{}),
	}
	if s.timeout <= 0 {
		s.timeout = 30 * time.Second
	}
	if s.maxLag == 0 {
		s.maxLag = 4096
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	s.db.SetConnMaxIdleTime(5 * time.Minute)
	s.base, s.cancel = context.WithCancel(context.Background())
	if err := s.open(ctx); err != nil {
		s.cancel()
		_ = s.db.Close()
		return nil, err
	}
	s.seen, s.seenDone, s.knownSize = seen.New(), make(chan struct{}), s.committed
	go s.fillSeen()
	return s, nil
}

func (s *Store) open(ctx context.Context) error {
	if err := s.checkDurable(ctx); err != nil {
		return err
	}
	tree, err := s.admin.GetTree(ctx, &tpb.GetTreeRequest{TreeId: s.treeID})
	if err != nil {
		return fmt.Errorf("trillian store: tree %d: %w", s.treeID, err)
	}
	if tree.TreeType != tpb.TreeType_PREORDERED_LOG || tree.TreeState != tpb.TreeState_ACTIVE {
		return fmt.Errorf("trillian store: tree %d is a %s tree, %s; Custody writes an ACTIVE PREORDERED_LOG tree", s.treeID, tree.TreeType, tree.TreeState)
	}
	for _, q := range schema {
		if _, err := s.db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("trillian store: creating tables: %w", err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `INSERT IGNORE INTO head (id, tree_id, layout, size, root, stream_seq, checkpoint, trillian_size)
		VALUES (1, ?, ?, 0, '', 0, '', 0)`, s.treeID, layoutVersion); err != nil {
		return fmt.Errorf("trillian store: %w", err)
	}
	var treeID int64
	var layout uint64
	if err := s.db.QueryRowContext(ctx, `SELECT tree_id, layout, size, trillian_size FROM head WHERE id = 1`).
		Scan(&treeID, &layout, &s.committed, &s.pushed); err != nil {
		return fmt.Errorf("trillian store: reading the head: %w", err)
	}
	switch {
	case treeID != s.treeID:
		return fmt.Errorf("trillian store: the database holds the log of Trillian tree %d, not %d", treeID, s.treeID)
	case layout > layoutVersion:
		return fmt.Errorf("trillian store: layout version %d, this custodyd reads up to %d: %w (upgrade custodyd)", layout, layoutVersion, ErrNewerFormat)
	case s.pushed > s.committed:
		return fmt.Errorf("trillian store: the head says Trillian holds %d leaves of %d committed: %w", s.pushed, s.committed, ErrCorrupt)
	}
	return nil
}

// checkDurable refuses a server that does not sync its logs at commit:
// then a commit would not be durable when Commit returns.
func (s *Store) checkDurable(ctx context.Context) error {
	var flush, logBin, syncBinlog int64
	err := s.db.QueryRowContext(ctx, `SELECT @@innodb_flush_log_at_trx_commit, @@log_bin, @@sync_binlog`).Scan(&flush, &logBin, &syncBinlog)
	if err != nil {
		return fmt.Errorf("trillian store: %w", err)
	}
	if flush != 1 {
		return fmt.Errorf("%w: innodb_flush_log_at_trx_commit is %d, must be 1", ErrNotDurable, flush)
	}
	if logBin == 1 && syncBinlog != 1 {
		return fmt.Errorf("%w: the binary log is on and sync_binlog is %d, must be 1", ErrNotDurable, syncBinlog)
	}
	return nil
}

// Close sends Trillian the committed leaves it lacks (waiting at most
// Timeout), stops sending, and closes the database connections (not the
// Trillian connection). Leaves it could not send are sent by the next
// writer to open the store.
func (s *Store) Close() error {
	s.state.Lock()
	started := s.senderStart
	s.state.Unlock()
	if started {
		ctx, cancel := s.ctx()
		if err := s.sendCommitted(ctx); err != nil {
			s.logger.Warn("trillian store: closing with committed leaves Trillian lacks; the next writer sends them", "tree", s.treeID, "err", err)
		}
		cancel()
	}
	s.cancel()
	if started {
		<-s.senderDone
	}
	<-s.seenDone
	s.stmts.Range(func(_, v any) bool {
		_ = v.(*sql.Stmt).Close()
		return true
	})
	return s.db.Close()
}

// prepared is the statement of a read query, prepared once: a read is one
// round trip.
func (s *Store) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.stmts.Load(q); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("trillian store: %w", err)
	}
	if prev, loaded := s.stmts.LoadOrStore(q, st); loaded {
		_ = st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// queryRow runs a one-row read through its prepared statement and scans
// it into dest.
func (s *Store) queryRow(ctx context.Context, q string, args []any, dest ...any) error {
	st, err := s.prepared(ctx, q)
	if err != nil {
		return err
	}
	return st.QueryRowContext(ctx, args...).Scan(dest...)
}

// query runs a read of many rows through its prepared statement.
func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// ctx is the context of one Store call.
func (s *Store) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.base, s.timeout)
}

// TreeID is the Trillian tree holding the leaves.
func (s *Store) TreeID() int64 { return s.treeID }

// Head implements ledger.Store.
func (s *Store) Head() (ledger.Head, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	h, _, err := s.readHead(ctx, s.db)
	if err == nil {
		s.headRead(ctx, h.Size)
	}
	return h, err
}

// queryer is a *sql.DB or a *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// readHead reads the head and how many leaves Trillian is known to hold.
func (s *Store) readHead(ctx context.Context, q queryer, suffix ...string) (ledger.Head, uint64, error) {
	var h ledger.Head
	var pushed uint64
	err := q.QueryRowContext(ctx, `SELECT size, root, stream_seq, checkpoint, trillian_size FROM head WHERE id = 1`+strings.Join(suffix, "")).
		Scan(&h.Size, &h.Root, &h.StreamSeq, &h.Checkpoint, &pushed)
	if err != nil {
		return ledger.Head{}, 0, fmt.Errorf("trillian store: reading the head: %w", err)
	}
	switch {
	case h.Size == 0 && h.StreamSeq == 0 && len(h.Root) == 0 && len(h.Checkpoint) == 0:
		return ledger.Head{}, pushed, nil // a new store: the zero Head
	case h.Size > 0 && len(h.Root) != hashSize:
		return ledger.Head{}, 0, fmt.Errorf("%w: a head of size %d with a root of %d bytes", ErrCorrupt, h.Size, len(h.Root))
	}
	if len(h.Root) == 0 {
		h.Root = nil
	}
	if len(h.Checkpoint) == 0 {
		h.Checkpoint = nil
	}
	return h, pushed, nil
}

// Entry implements ledger.Store. The leaf body is checked against the
// leaf hash stored with it.
func (s *Store) Entry(index uint64) (*ledger.Entry, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var leafHash, meta, body, envelope []byte
	err := s.queryRow(ctx, `SELECT leaf_hash, meta, body, envelope FROM entries WHERE idx = ?`, []any{index}, &leafHash, &meta, &body, &envelope)
	if err != nil {
		return nil, notFound(err, "entry %d", index)
	}
	var e ledger.Entry
	if err := json.Unmarshal(meta, &e); err != nil {
		return nil, fmt.Errorf("%w: entry %d: %v", ErrCorrupt, index, err)
	}
	if e.Index != index {
		return nil, fmt.Errorf("%w: the entry stored at %d says index %d", ErrCorrupt, index, e.Index)
	}
	if !equalHash(ledger.LeafHash(body), leafHash) {
		return nil, fmt.Errorf("%w: entry %d: its leaf body does not hash to its leaf hash", ErrCorrupt, index)
	}
	e.Body, e.Envelope = body, envelope
	return &e, nil
}

// EntryIndexByDigest implements ledger.Store.
func (s *Store) EntryIndexByDigest(digest []byte) (uint64, error) {
	if s.absent(digestKey(digest)) {
		return 0, notFound(sql.ErrNoRows, "digest %x", digest)
	}
	return s.index(`SELECT idx FROM digests WHERE digest = ?`, digest)
}

// EntryIndexByLeafHash implements ledger.Store (of two entries with one
// leaf, the later, as on Pebble).
func (s *Store) EntryIndexByLeafHash(leafHash []byte) (uint64, error) {
	return s.index(`SELECT idx FROM entries WHERE leaf_hash = ? ORDER BY idx DESC LIMIT 1`, leafHash)
}

func (s *Store) index(q string, key []byte) (uint64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var i uint64
	if err := s.queryRow(ctx, q, []any{key}, &i); err != nil {
		return 0, notFound(err, "%x", key)
	}
	return i, nil
}

// EventDigestByID implements ledger.Store.
func (s *Store) EventDigestByID(partner, eventID string) ([]byte, error) {
	if s.absent(eventIDKey(partner, eventID)) {
		return nil, notFound(sql.ErrNoRows, "event ID %s/%s", partner, eventID)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	var d []byte
	err := s.queryRow(ctx, `SELECT digest FROM event_ids WHERE partner = ? AND event_id = ?`, []any{partner, eventID}, &d)
	if err != nil {
		return nil, notFound(err, "event ID %s/%s", partner, eventID)
	}
	return d, nil
}

// DeviceEntries implements ledger.Store.
func (s *Store) DeviceEntries(device string) ([]uint64, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.query(ctx, `SELECT idx FROM device_entries WHERE device = ? ORDER BY idx`, device)
	if err != nil {
		return nil, fmt.Errorf("trillian store: %w", err)
	}
	defer rows.Close()
	var out []uint64
	for rows.Next() {
		var i uint64
		if err := rows.Scan(&i); err != nil {
			return nil, fmt.Errorf("trillian store: %w", err)
		}
		out = append(out, i)
	}
	return out, rows.Err()
}

// ManifestProof implements ledger.Store: the proof stored with the
// device's history at index.
func (s *Store) ManifestProof(device string, index uint64) ([]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var p []byte
	err := s.queryRow(ctx, `SELECT proof FROM device_entries WHERE device = ? AND idx = ?`, []any{device, index}, &p)
	if err != nil {
		return nil, notFound(err, "device %s at %d", device, index)
	}
	if len(p) == 0 { // the device's own entry
		return nil, ledger.ErrNotFound
	}
	return p, nil
}

// Manifest implements ledger.Store.
func (s *Store) Manifest(index uint64) ([]byte, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var m []byte
	if err := s.queryRow(ctx, `SELECT manifest FROM manifests WHERE idx = ?`, []any{index}, &m); err != nil {
		return nil, notFound(err, "manifest %d", index)
	}
	return m, nil
}

// Device implements ledger.Store.
func (s *Store) Device(id string) (*ledger.Device, error) {
	var d ledger.Device
	if err := s.record(`SELECT state FROM devices WHERE id = ?`, id, &d); err != nil {
		return nil, err
	}
	if d.ID != id {
		return nil, fmt.Errorf("%w: the state stored for device %s is device %q's", ErrCorrupt, id, d.ID)
	}
	return &d, nil
}

// Partner implements ledger.Store.
func (s *Store) Partner(name string) (*ledger.Partner, error) {
	var p ledger.Partner
	if err := s.record(`SELECT state FROM partners WHERE name = ?`, name, &p); err != nil {
		return nil, err
	}
	if p.Name != name {
		return nil, fmt.Errorf("%w: the state stored for partner %s is partner %q's", ErrCorrupt, name, p.Name)
	}
	return &p, nil
}

// Rejection implements ledger.Store.
func (s *Store) Rejection(digest []byte) (*ledger.Rejection, error) {
	var r ledger.Rejection
	if err := s.record(`SELECT record FROM rejections WHERE digest = ?`, digest, &r); err != nil {
		return nil, err
	}
	if !equalHash(r.Digest, digest) {
		return nil, fmt.Errorf("%w: the rejection stored for %x is %x's", ErrCorrupt, digest, r.Digest)
	}
	return &r, nil
}

// record reads one JSON value by key.
func (s *Store) record(q string, key any, v any) error {
	ctx, cancel := s.ctx()
	defer cancel()
	var b []byte
	if err := s.queryRow(ctx, q, []any{key}, &b); err != nil {
		return notFound(err, "%v", key)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return nil
}

// PendingOffers implements ledger.Store.
func (s *Store) PendingOffers(to string) ([]string, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.query(ctx, `SELECT id FROM devices WHERE pending_to = ? ORDER BY id`, to)
	if err != nil {
		return nil, fmt.Errorf("trillian store: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("trillian store: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// maxNodesPerQuery bounds the node IDs of one query.
const maxNodesPerQuery = 256

// Nodes implements ledger.Store: from Custody's nodes table, which the
// commit that appends a leaf writes (Trillian's nodes are not read: its
// API serves proofs for the sizes its signer has integrated, not node
// hashes, and integration follows the commit).
func (s *Store) Nodes(ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	ctx, cancel := s.ctx()
	defer cancel()
	at := make(map[compact.NodeID][]int, len(ids))
	var ask []compact.NodeID
	for i, id := range ids {
		if id.Level > 255 {
			return nil, fmt.Errorf("tree node (level %d, index %d): %w", id.Level, id.Index, ledger.ErrNotFound)
		}
		if _, ok := at[id]; !ok {
			ask = append(ask, id)
		}
		at[id] = append(at[id], i)
	}
	for len(ask) > 0 {
		n := min(len(ask), maxNodesPerQuery)
		chunk := ask[:n]
		ask = ask[n:]
		// Integers only: written into the query, which then is one
		// round trip.
		q := []byte(`SELECT level, idx, hash FROM nodes WHERE (level, idx) IN (`)
		for i, id := range chunk {
			if i > 0 {
				q = append(q, ',')
			}
			q = append(q, '(')
			q = strconv.AppendUint(q, uint64(id.Level), 10)
			q = append(q, ',')
			q = strconv.AppendUint(q, id.Index, 10)
			q = append(q, ')')
		}
		q = append(q, ')')
		rows, err := s.db.QueryContext(ctx, string(q))
		if err != nil {
			return nil, fmt.Errorf("trillian store: reading tree nodes: %w", err)
		}
		for rows.Next() {
			var level uint
			var index uint64
			var h []byte
			if err := rows.Scan(&level, &index, &h); err != nil {
				rows.Close()
				return nil, fmt.Errorf("trillian store: reading tree nodes: %w", err)
			}
			if len(h) != hashSize {
				rows.Close()
				return nil, fmt.Errorf("%w: tree node (level %d, index %d) of %d bytes", ErrCorrupt, level, index, len(h))
			}
			for _, i := range at[compact.NewNodeID(level, index)] {
				out[i] = h
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("trillian store: reading tree nodes: %w", err)
		}
	}
	for i, h := range out {
		if h == nil {
			return nil, fmt.Errorf("tree node (level %d, index %d): %w", ids[i].Level, ids[i].Index, ledger.ErrNotFound)
		}
	}
	return out, nil
}

// notFound maps a missing row to ledger.ErrNotFound.
func notFound(err error, format string, args ...any) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ledger.ErrNotFound)
	}
	return fmt.Errorf("trillian store: %s: %w", fmt.Sprintf(format, args...), err)
}

func equalHash(a, b []byte) bool { return string(a) == string(b) }
