package events

// Receipt statuses.
const (
	// StatusAccepted: the event is in the log and changed the device's state.
	StatusAccepted = "accepted"
	// StatusEvidence: the event broke a custody rule in a way that is itself
	// evidence; it is in the log with its code. Equivocation changed nothing
	// but the device's flag; a flag report (CodeFlagReport, a flag from a
	// partner outside the device's custody) changed nothing at all.
	StatusEvidence = "evidence"
	// StatusRejected: the event is not in the log.
	StatusRejected = "rejected"
	// StatusUnknown: the ledger has not processed the event (yet).
	StatusUnknown = "unknown"
)

// Receipt is the ledger's answer to one event. For accepted and evidence
// events it carries an RFC 6962 inclusion proof of the entry and the signed
// checkpoint (C2SP tlog-checkpoint note) it verifies against.
type Receipt struct {
	Digest  string `json:"digest"`
	Status  string `json:"status"`
	Code    string `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Partner string `json:"partner,omitempty"`
	Target  string `json:"target,omitempty"`

	LogIndex   uint64   `json:"logIndex,omitempty"`
	TreeSize   uint64   `json:"treeSize,omitempty"`
	RootHash   []byte   `json:"rootHash,omitempty"`
	Hashes     [][]byte `json:"hashes,omitempty"`
	Checkpoint string   `json:"checkpoint,omitempty"`
}

// Logged reports whether the event entered the log.
func (r *Receipt) Logged() bool { return r.Status == StatusAccepted || r.Status == StatusEvidence }
