package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/events"
)

// batch is the state overlay of one group of events: reads see the batch's
// own writes first, then the store.
type batch struct {
	l          *Ledger
	devices    map[string]*Device
	partners   map[string]*Partner // partners changed by the batch
	read       map[string]*Partner // partners read from the store (nil: absent)
	digests    map[[32]byte]uint64
	eventIDs   map[string][]byte // the batch's logged events: signer/event ID → digest
	entries    []*Entry
	nodes      map[compact.NodeID][]byte
	rejections []*Rejection
	answers    []answer
}

// answer is what goes back to a publisher after the commit.
type answer struct {
	partner  string
	digest   string
	index    uint64 // entry index when logged
	logged   bool
	receipt  *events.Receipt // for rejections, complete; for logged, filled after commit
	existing bool            // a duplicate of an entry logged earlier
	entry    *Entry          // the entry, when logged by this batch
}

func (b *batch) device(id string) (*Device, error) {
	if d, ok := b.devices[id]; ok {
		return d, nil
	}
	d, err := b.l.cfg.Store.Device(id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

func (b *batch) partner(name string) (*Partner, error) {
	if p, ok := b.partners[name]; ok {
		return p, nil
	}
	if p, ok := b.read[name]; ok {
		return p, nil
	}
	p, err := b.l.cfg.Store.Partner(name)
	if errors.Is(err, ErrNotFound) {
		p, err = nil, nil
	}
	if err == nil {
		b.read[name] = p
	}
	return p, err
}

// apply applies prepared messages in stream order, commits them durably in
// one batch, then answers publishers and acks. It returns an error only when
// nothing was committed (the batch will be redelivered).
func (l *Ledger) apply(ctx context.Context, msgs []*prepared) error {
	l.mu.RLock()
	head := l.head
	l.mu.RUnlock()
	b := &batch{
		l: l, devices: map[string]*Device{}, partners: map[string]*Partner{}, read: map[string]*Partner{},
		digests: map[[32]byte]uint64{}, eventIDs: map[string][]byte{}, nodes: map[compact.NodeID][]byte{},
	}
	committed := false
	defer func() {
		if !committed {
			l.resync(head)
		}
	}()
	lastSeq := head.StreamSeq
	size := head.Size
	// The tree's right edge before the batch: with the batch's new nodes,
	// it holds every node of the inclusion proofs of the batch's entries
	// (a left sibling of a new leaf's path lies wholly in the old tree and
	// its parent does not, so it is one of these), so receipts need no reads.
	edge := compact.RangeNodes(0, head.Size, nil)
	edgeHashes := slices.Clone(l.rng.Hashes())
	for _, pr := range msgs {
		<-pr.done // verified in parallel (prepare.go)
		if pr.seq == 0 {
			return errors.New("ledger: a message without stream metadata")
		}
		if pr.seq <= lastSeq {
			// Committed before a crash (or earlier in this batch), not
			// acked: answer again from the log.
			if a, ok := l.answerExisting(pr.data); ok {
				b.answers = append(b.answers, a)
			}
			continue
		}
		lastSeq = pr.seq
		if err := b.process(pr, &size); err != nil {
			return err
		}
	}
	newHead := Head{Size: size, StreamSeq: lastSeq, Root: head.Root, Checkpoint: head.Checkpoint}
	if len(b.entries) > 0 {
		root, err := l.rng.GetRootHash(nil)
		if err != nil {
			return err
		}
		cp, err := l.cfg.LogKey.SignCheckpoint(ctx, size, root)
		if err != nil {
			return err
		}
		newHead.Root, newHead.Checkpoint = root, cp
	}
	c := &Commit{Head: newHead, Entries: b.entries, Nodes: b.nodes, Rejections: b.rejections}
	for _, d := range b.devices {
		c.Devices = append(c.Devices, d)
	}
	for _, p := range b.partners {
		c.Partners = append(c.Partners, p)
	}
	if err := l.cfg.Store.Commit(c); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	committed = true
	l.mu.Lock()
	l.head = newHead
	l.mu.Unlock()
	if len(b.partners) > 0 {
		l.forgetPartners(slices.Collect(maps.Keys(b.partners)))
	}
	if len(b.entries) > 0 {
		l.log.Debug("committed", "size", newHead.Size, "entries", len(b.entries), "rejected", len(b.rejections))
	}
	known := knownNodes{known: b.nodes, s: l.cfg.Store}
	for i, id := range edge {
		known.known[id] = edgeHashes[i]
	}
	for _, a := range b.answers {
		l.send(a, newHead, known)
	}
	// The consumer acks all: acking the batch's last message (they come in
	// stream order) acknowledges the batch.
	if len(msgs) > 0 {
		if err := msgs[len(msgs)-1].msg.Ack(); err != nil {
			l.log.Warn("ack failed; the batch's events will be redelivered and recognised", "err", err)
		}
	}
	return nil
}

// resync brings the in-memory head and tree edge back to what the store
// holds after a failed batch: the head before it if the commit did not
// persist, or the store's newer head if it persisted although Commit
// reported an error (the redelivered events are then recognised by digest
// or stream sequence, and nothing is appended twice).
func (l *Ledger) resync(before Head) {
	head := before
	if h, err := l.cfg.Store.Head(); err == nil && h.Size >= before.Size && h.StreamSeq >= before.StreamSeq {
		head = h
	} else if err != nil {
		l.log.Error("reading the head after a failed commit", "err", err)
	}
	rng, err := loadRange(l.cfg.Store, head.Size)
	if err != nil {
		l.log.Error("reloading the tree edge after a failed commit", "err", err)
		return
	}
	l.rng = rng
	if head.StreamSeq != before.StreamSeq {
		l.mu.Lock()
		l.head = head
		l.mu.Unlock()
		l.forgetPartners(nil)
	}
}

// process handles one prepared event inside a batch.
func (b *batch) process(pr *prepared, size *uint64) error {
	l := b.l
	now := l.cfg.Now()
	subject, data, seq := pr.subject, pr.data, pr.seq
	signed, err := pr.signed, pr.openErr
	if err != nil {
		// The subject names the publisher (NATS permissions let a partner
		// publish only under its own prefix), so it can be told why.
		d := sha256.Sum256(data)
		partner, target := subjectParts(subject)
		b.refuse(d[:], partner, target, reject(events.CodeMalformed, "%v", err), now.Unix())
		return nil
	}
	st := signed.Statement
	partner, target := st.Predicate.Partner, st.Target()
	if pr.early != nil && pr.early.Code == events.CodeSubject {
		// The envelope claims another partner than the subject it came
		// on; NATS permissions make the subject's partner the sender, so
		// the answer and the record are the sender's, not the claimed
		// partner's.
		partner, target = subjectParts(subject)
	}
	// A redelivered or republished event is recognised by digest.
	if idx, ok := b.digests[signed.Digest]; ok {
		b.answers = append(b.answers, answer{partner: partner, digest: signed.DigestHex(), index: idx, logged: true, existing: true})
		return nil
	}
	if idx, err := l.cfg.Store.EntryIndexByDigest(signed.Digest[:]); err == nil {
		b.answers = append(b.answers, answer{partner: partner, digest: signed.DigestHex(), index: idx, logged: true, existing: true})
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	// The event's time: when the ledger integrates it, to the second, as
	// the entry records it (IntegratedTime) and offline replay reads it.
	at := time.Unix(now.Unix(), 0)
	if st.Predicate.Kind == events.KindBatchSigned && pr.early == nil {
		return b.processBatch(pr, size, now, at) // rules_batch.go
	}
	res, rerr := b.verify(pr, at)
	if rerr != nil {
		var re *RuleError
		if !errors.As(rerr, &re) {
			return rerr // storage failure: retry the batch
		}
		if res == nil || !res.evidence {
			b.refuse(signed.Digest[:], partner, target, re, now.Unix())
			return nil
		}
	}
	// An event ID names one event of its signer: another envelope with the
	// same ID is refused (the same envelope was answered above, by digest).
	idKey := eventIDKey(partner, st.Predicate.EventID)
	if prev, err := b.eventDigest(partner, st.Predicate.EventID); err != nil {
		return err
	} else if prev != nil && !bytes.Equal(prev, signed.Digest[:]) {
		b.refuse(signed.Digest[:], partner, target, reject(events.CodeDuplicateID, "%s already logged another event with event ID %s (digest %x); a new event needs a new ID", partner, st.Predicate.EventID, prev), now.Unix())
		return nil
	}
	body, err := pr.leaf(res.signerCert)
	if err != nil {
		b.refuse(signed.Digest[:], partner, target, reject(events.CodeBadSignature, "hashedrekord: %v", err), now.Unix())
		return nil
	}
	idx := *size
	e := &Entry{
		Index: idx, Digest: bytes.Clone(signed.Digest[:]), Kind: st.Predicate.Kind,
		Partner: partner, Target: target, Status: events.StatusAccepted,
		IntegratedTime: now.Unix(), StreamSeq: seq, Body: body, Envelope: bytes.Clone(data),
		EventID: st.Predicate.EventID,
	}
	if signed.Manifest != nil {
		// A parcel: the entry keeps the envelope, the manifest and each
		// device's proof apart (a device's history carries only its own).
		e.Envelope, e.Manifest, e.Proofs = bytes.Clone(signed.Raw), pr.manifest, pr.proofs
	}
	if rerr != nil { // logged as evidence
		var re *RuleError
		errors.As(rerr, &re)
		e.Status, e.Code, e.Reason = events.StatusEvidence, string(re.Code), re.Reason
	}
	if err := l.rng.Append(LeafHash(body), func(id compact.NodeID, h []byte) { b.nodes[id] = h }); err != nil {
		return err
	}
	*size = idx + 1
	b.entries = append(b.entries, e)
	b.digests[signed.Digest] = idx
	b.eventIDs[idKey] = bytes.Clone(signed.Digest[:])
	if res.apply != nil {
		res.apply(idx)
	}
	a := answer{partner: partner, digest: signed.DigestHex(), index: idx, logged: true, entry: e}
	if e.Status == events.StatusEvidence {
		a.receipt = &events.Receipt{Status: events.StatusEvidence, Code: e.Code, Reason: e.Reason}
	}
	b.answers = append(b.answers, a)
	return nil
}

// eventIDKey is the batch's key of an event ID.
func eventIDKey(partner, eventID string) string { return partner + "/" + eventID }

// eventDigest returns the digest of the event partner logged with eventID,
// in this batch or before it, or nil. Stores written before the event-ID
// index existed have no entry for older events: those IDs are not known.
func (b *batch) eventDigest(partner, eventID string) ([]byte, error) {
	if d, ok := b.eventIDs[eventIDKey(partner, eventID)]; ok {
		return d, nil
	}
	d, err := b.l.cfg.Store.EventDigestByID(partner, eventID)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return d, err
}

// refuse records the refusal of an event (for a batch refused whole after
// its members were judged, their verdicts) and answers its publisher.
func (b *batch) refuse(digest []byte, partner, target string, re *RuleError, now int64, members ...events.MemberVerdict) {
	r := b.recordRefusal(digest, partner, target, re, now)
	r.Members = members
	if partner != "" {
		b.answers = append(b.answers, answer{partner: partner, digest: hex.EncodeToString(digest), receipt: r.Receipt()})
	}
}

// recordRefusal records the refusal of an event without answering it (a
// batch's member: the batch's receipt carries its verdict).
func (b *batch) recordRefusal(digest []byte, partner, target string, re *RuleError, now int64) *Rejection {
	r := &Rejection{Digest: digest, Code: string(re.Code), Reason: re.Reason, Partner: partner, Target: target, Time: now}
	b.rejections = append(b.rejections, r)
	b.l.log.Info("event rejected", "code", re.Code, "reason", re.Reason, "partner", partner, "target", target)
	return r
}

// answerExisting builds the answer for an event already in the log.
func (l *Ledger) answerExisting(data []byte) (answer, bool) {
	signed, err := events.OpenMessage(data)
	if signed == nil || (err != nil && !errors.Is(err, events.ErrManifest)) {
		return answer{}, false
	}
	idx, err := l.cfg.Store.EntryIndexByDigest(signed.Digest[:])
	if err != nil {
		return answer{}, false
	}
	return answer{partner: signed.Statement.Predicate.Partner, digest: signed.DigestHex(), index: idx, logged: true, existing: true}, true
}

// send publishes an answer on the partner's receipt or rejection subject.
func (l *Ledger) send(a answer, head Head, nodes nodeReader) {
	var r *events.Receipt
	if !a.logged {
		r = a.receipt
		l.publish(events.RejectionSubject(a.partner, a.digest), r)
		return
	}
	r, err := l.receipt(a.index, a.entry, head, nodes)
	if err != nil {
		l.log.Error("building receipt", "err", err, "index", a.index)
		return
	}
	l.publish(events.ReceiptSubject(a.partner, a.digest), r)
}

func (l *Ledger) publish(subject string, r *events.Receipt) {
	data, err := json.Marshal(r)
	if err != nil {
		return
	}
	send := l.cfg.NATS.Publish
	if l.answer != nil {
		send = l.answer
	}
	if err := send(subject, data); err != nil {
		l.log.Warn("publishing answer", "subject", subject, "err", err)
	}
}

// Receipt builds the receipt of the entry at index against head.
func (l *Ledger) Receipt(index uint64, head Head) (*events.Receipt, error) {
	return l.receipt(index, nil, head, l.cfg.Store)
}

// receipt builds a receipt, reading the entry unless e is given.
func (l *Ledger) receipt(index uint64, e *Entry, head Head, nodes nodeReader) (*events.Receipt, error) {
	if e == nil {
		var err error
		if e, err = l.cfg.Store.Entry(index); err != nil {
			return nil, err
		}
	}
	hashes, err := inclusionProof(nodes, index, head.Size)
	if err != nil {
		return nil, err
	}
	return &events.Receipt{
		Digest: e.DigestHex(), Status: e.Status, Code: e.Code, Reason: e.Reason,
		Kind: e.Kind, Partner: e.Partner, Target: e.Target,
		LogIndex: index, TreeSize: head.Size, RootHash: head.Root, Hashes: hashes,
		Checkpoint: string(head.Checkpoint), Members: e.Members,
	}, nil
}

// subjectParts returns the partner and target tokens of an event subject
// (custody.v1.events.<partner>.<target>), or empty strings.
func subjectParts(subject string) (partner, target string) {
	rest, ok := strings.CutPrefix(subject, events.EventsPrefix+".")
	if !ok {
		return "", ""
	}
	partner, target, _ = strings.Cut(rest, ".")
	if !events.ValidPartnerName(partner) {
		return "", ""
	}
	return partner, target
}
