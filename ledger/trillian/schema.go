package trillian

// Custody's own tables, in a database of its own (not Trillian's): one
// row per record, binary keys compared byte by byte. Every integer is
// unsigned; JSON values are those of the ledger's types.
var schema = []string{
	// The head: one row (id 1). tree_id binds the database to its
	// Trillian tree; trillian_size is how many leaves Trillian is known to
	// hold (a lower bound: a commit's own leaves are recorded by the next
	// commit); layout is the layout version of these tables.
	`CREATE TABLE IF NOT EXISTS head (
		id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
		tree_id BIGINT NOT NULL,
		layout INT UNSIGNED NOT NULL,
		size BIGINT UNSIGNED NOT NULL,
		root VARBINARY(64) NOT NULL,
		stream_seq BIGINT UNSIGNED NOT NULL,
		checkpoint MEDIUMBLOB NOT NULL,
		trillian_size BIGINT UNSIGNED NOT NULL
	) ENGINE=InnoDB`,
	// Entries: the metadata (JSON ledger.Entry without body and envelope),
	// the leaf body (also Trillian's leaf value) and the envelope.
	`CREATE TABLE IF NOT EXISTS entries (
		idx BIGINT UNSIGNED NOT NULL PRIMARY KEY,
		leaf_hash BINARY(32) NOT NULL,
		meta MEDIUMBLOB NOT NULL,
		body MEDIUMBLOB NOT NULL,
		envelope MEDIUMBLOB NOT NULL,
		KEY by_leaf_hash (leaf_hash)
	) ENGINE=InnoDB`,
	// The dedup index: every event an entry logs (a batch's members too).
	`CREATE TABLE IF NOT EXISTS digests (
		digest VARBINARY(64) NOT NULL PRIMARY KEY,
		idx BIGINT UNSIGNED NOT NULL
	) ENGINE=InnoDB`,
	// The event-ID index: signer and predicate.eventId → digest.
	`CREATE TABLE IF NOT EXISTS event_ids (
		partner VARBINARY(255) NOT NULL,
		event_id VARBINARY(255) NOT NULL,
		digest VARBINARY(64) NOT NULL,
		PRIMARY KEY (partner, event_id)
	) ENGINE=InnoDB`,
	// A device's history: its own entries (proof NULL) and the shipments
	// and batches holding it (proof: its manifest or member proof).
	`CREATE TABLE IF NOT EXISTS device_entries (
		device VARBINARY(255) NOT NULL,
		idx BIGINT UNSIGNED NOT NULL,
		proof MEDIUMBLOB NULL,
		PRIMARY KEY (device, idx)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS manifests (
		idx BIGINT UNSIGNED NOT NULL PRIMARY KEY,
		manifest MEDIUMBLOB NOT NULL
	) ENGINE=InnoDB`,
	// Perfect-subtree nodes of the Merkle tree (level 0: leaf hashes).
	`CREATE TABLE IF NOT EXISTS nodes (
		level TINYINT UNSIGNED NOT NULL,
		idx BIGINT UNSIGNED NOT NULL,
		hash BINARY(32) NOT NULL,
		PRIMARY KEY (level, idx)
	) ENGINE=InnoDB`,
	// Device states (JSON ledger.Device, whole); pending_to is the
	// recipient of its pending offer, the pending-offer index.
	`CREATE TABLE IF NOT EXISTS devices (
		id VARBINARY(255) NOT NULL PRIMARY KEY,
		pending_to VARBINARY(255) NULL,
		state MEDIUMBLOB NOT NULL,
		KEY by_pending_to (pending_to, id)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS partners (
		name VARBINARY(255) NOT NULL PRIMARY KEY,
		state MEDIUMBLOB NOT NULL
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS rejections (
		digest VARBINARY(64) NOT NULL PRIMARY KEY,
		record MEDIUMBLOB NOT NULL
	) ENGINE=InnoDB`,
}

// layoutVersion is the layout of the tables this code writes.
const layoutVersion = 1

// Column bounds, checked before a commit is written (a longer key would be
// refused by MariaDB half-way through the transaction).
const (
	maxKey    = 255 // device IDs, partner names, event IDs, recipients
	maxDigest = 64
	hashSize  = 32
)
