package ledger

import (
	"errors"

	"github.com/transparency-dev/merkle/compact"
)

// ErrNotFound is returned by Store reads for a missing record.
var ErrNotFound = errors.New("not found")

// Store is what the ledger needs of durable storage. The ledger is the only
// writer; any number of readers may call the read methods concurrently with
// Commit and with each other.
//
// Durability contract: when Commit returns nil, everything in the Commit is
// on stable storage (fsynced) and visible to every read that starts after
// it; if it returns an error or the process dies during it, none of it is
// visible after a restart. Reads never observe half a Commit.
type Store interface {
	// Head returns the last committed head, or a zero Head for a new store.
	Head() (Head, error)
	// Commit applies c atomically and durably (see the contract above).
	Commit(c *Commit) error

	// Entry returns the entry at a log index.
	Entry(index uint64) (*Entry, error)
	// EntryIndexByDigest returns the log index of the event with that digest.
	EntryIndexByDigest(digest []byte) (uint64, error)
	// EventDigestByID returns the digest of the logged event that partner
	// signed with that event ID (predicate.eventId), or ErrNotFound. Every
	// entry of a Commit with an EventID is indexed by (Partner, EventID)
	// durably with the Commit, in the same atomic write. Entries committed
	// before the index existed may be missing from it: a miss is not an
	// error.
	EventDigestByID(partner, eventID string) ([]byte, error)
	// EntryIndexByLeafHash returns the log index of the leaf with that
	// RFC 6962 leaf hash (Rekor's entry UUID).
	EntryIndexByLeafHash(leafHash []byte) (uint64, error)
	// DeviceEntries returns the log indices of a device's entries, ascending.
	DeviceEntries(device string) ([]uint64, error)
	// ManifestProof returns the device's manifest proof (JSON
	// events.ManifestProof) in the shipment logged at index, or ErrNotFound
	// when that entry is not a shipment holding the device.
	ManifestProof(device string, index uint64) ([]byte, error)
	// Manifest returns the manifest (JSON events.Manifest) of the shipment
	// logged at index, or ErrNotFound.
	Manifest(index uint64) ([]byte, error)
	// Device returns a device's custody state.
	Device(id string) (*Device, error)
	// Partner returns a partner's registry state.
	Partner(name string) (*Partner, error)
	// Rejection returns a refused event's record by digest.
	Rejection(digest []byte) (*Rejection, error)
	// PendingOffers returns the IDs of devices with a pending offer to the
	// named recipient, sorted.
	PendingOffers(to string) ([]string, error)
	// Nodes returns the hashes of perfect-subtree nodes of the Merkle tree
	// (level 0 = leaf hashes), in the order asked.
	Nodes(ids []compact.NodeID) ([][]byte, error)

	Close() error
}

// Head is the committed state of the log.
type Head struct {
	Size       uint64 // number of leaves
	Root       []byte // RFC 6962 root hash at Size
	StreamSeq  uint64 // last JetStream stream sequence applied
	Checkpoint []byte // signed checkpoint note for Size
}

// Commit is one atomic, durable write: a group of appended entries, the tree
// nodes they create, the custody state they change, refused events' records,
// and the stream position that produced them.
type Commit struct {
	Head       Head                      // the new head
	Entries    []*Entry                  // appended at indices oldSize..Head.Size-1, in order
	Nodes      map[compact.NodeID][]byte // new perfect-subtree node hashes
	Devices    []*Device                 // new device states (whole records)
	Partners   []*Partner                // new partner states
	Rejections []*Rejection              // refused events, kept for the publisher's queries
}
