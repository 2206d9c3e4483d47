package events

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// NATS layout. Events flow on the stream; receipts and rejections are core
// NATS messages addressed to one partner and one event digest.
const (
	StreamName     = "CUSTODY_EVENTS"
	EventsPrefix   = "custody.v1.events"
	ReceiptsPrefix = "custody.v1.receipts"
	RejectPrefix   = "custody.v1.rejections"
	// CheckpointTopic carries the ledger's latest signed checkpoint (a C2SP
	// signed note), published at a bounded interval while the log grows.
	CheckpointTopic = "custody.v1.checkpoints"
	// StatusSubject is a request/reply service of the ledger: the request
	// body is an event digest (hex), the reply its Receipt, or a Receipt
	// with status "unknown" if the ledger has not seen the event yet.
	StatusSubject = "custody.v1.status"
	// LedgerAPIPrefix is the ledger's NATS request API (NATS micro):
	// provenance and pending offers, with a read token.
	LedgerAPIPrefix = "custody.v1.ledger"
	// CheckpointBucket is the JetStream KV bucket holding the latest
	// checkpoint (key "latest"): partners read it, only the ledger writes.
	CheckpointBucket = "CUSTODY_CHECKPOINTS"
	// InternalPrefix is the deployment's own traffic between its processes
	// (the ledger and the verifier pool): no partner may publish or
	// subscribe under it.
	InternalPrefix = "custody.v1.internal"
	// VerdictSubject carries the verifier pool's verdicts to the ledger
	// (ledger.EncodeVerdicts); only verifiers publish on it.
	VerdictSubject = InternalPrefix + ".verdicts"
	// FactsSubject is the ledger's request service for verifiers: a
	// partner's registry record or a device's IAK (ledger.FactsRequest).
	FactsSubject = InternalPrefix + ".facts"
)

// EventSubject is where partner publishes an event about target (a device ID,
// or a partner name for registry events).
func EventSubject(partner, target string) string {
	return EventsPrefix + "." + partner + "." + target
}

// ReceiptSubject is where the ledger answers partner about the event with
// the given hex digest when it was logged.
func ReceiptSubject(partner, digestHex string) string {
	return ReceiptsPrefix + "." + partner + "." + digestHex
}

// RejectionSubject is where the ledger answers partner about a rejected event.
func RejectionSubject(partner, digestHex string) string {
	return RejectPrefix + "." + partner + "." + digestHex
}

// StreamConfig is the JetStream stream holding custody events in flight.
// File storage, because partners' events must survive a broker restart until
// the ledger has them; the duplicate window catches quick retries (the ledger
// keeps its own permanent dedup by digest); the stream is a buffer, not the
// record: the Merkle log is.
func StreamConfig(replicas int) jetstream.StreamConfig {
	if replicas < 1 {
		replicas = 1
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "Custody events from partners, waiting for the ledger",
		Subjects:    []string{EventsPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      30 * 24 * time.Hour,
		MaxMsgSize:  MaxMessageSize,
		Duplicates:  2 * time.Minute,
		Replicas:    replicas,
		Discard:     jetstream.DiscardOld,
	}
}

// InboxPrefix is the reply-inbox prefix of a NATS user: "_INBOX_<user>".
// Each partner has its own, which only it may subscribe to, so no partner
// reads another's JetStream acks or answers.
func InboxPrefix(user string) string { return "_INBOX_" + user }

// InboxOwner is the user whose own reply inbox (InboxPrefix) subject is
// under, or "" for any other subject (NATS's default "_INBOX.", which no
// partner may subscribe to). NATS permissions let a user read only its own
// inbox, so an answer sent there reaches that user only.
func InboxOwner(subject string) string {
	rest, ok := strings.CutPrefix(subject, "_INBOX_")
	if !ok {
		return ""
	}
	user, tail, ok := strings.Cut(rest, ".")
	if !ok || tail == "" || !ValidPartnerName(user) {
		return ""
	}
	return user
}

// IsInbox reports whether subject is a reply inbox: under a user's own
// prefix (InboxPrefix) or NATS's default "_INBOX.". The ledger answers
// requests only there: a reply subject is chosen by the requester, and an
// answer published by the ledger's own connection anywhere else (an event
// subject, a KV key, the checkpoint topic) would be a write in the ledger's
// name.
func IsInbox(subject string) bool {
	rest, ok := strings.CutPrefix(subject, "_INBOX")
	if !ok || len(rest) < 2 || strings.ContainsAny(subject, " \t\r\n*>") {
		return false
	}
	if rest[0] == '.' {
		return true
	}
	user, tail, ok := strings.Cut(rest[1:], ".")
	return rest[0] == '_' && ok && tail != "" && ValidPartnerName(user)
}
