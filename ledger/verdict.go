package ledger

// Remote verification: the verifier pool (docs/design/verifiers.md).
//
// The stateless checks of prepare.go (schema, the partner's signature, the
// TPM quote against the device's IAK) are most of ingest's CPU. Verifier
// processes, on machines of their own, read the events stream through a
// shared consumer of their own (VerifierConsumer), run those checks with
// the same code (Verifier.Verify) and publish what passed as verdicts on
// events.VerdictSubject, in batches. The ledger, reading the stream in
// order as before, takes an event's verdict (waiting a little for it while
// verifiers are sending) and uses each part of it only when it was made
// against the certificate and the IAK that the ledger itself holds for the
// event; whatever a verdict does not cover, or a verdict that does not come,
// the ledger checks itself. A verdict carries only passes: a refusal is
// always the ledger's own.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// VerifierConsumer is the durable consumer the verifier pool shares: each
// event goes to one verifier. The ledger creates it when it takes verdicts
// (Config.VerdictWait); its ack policy is none, since a verdict that is
// lost costs only the ledger's own check.
const VerifierConsumer = "verifiers"

// Verdict is a verifier's finding on one statement (an envelope's, or a
// batch member's, by its digest): which of the stateless checks passed,
// and against what.
type Verdict struct {
	Digest [32]byte
	// Schema: the statement validated against its kind's schema and was
	// published on its own subject.
	Schema bool
	// SigCert is the SHA-256 of the certificate the envelope's signature
	// verified with (zero: not checked, or it did not verify; a batch
	// member's is its batch's).
	SigCert [32]byte
	// IAK is the SHA-256 of the IAK public area the quote verified with
	// over the statement's binding digest, and Quote what it attests
	// (IAK zero: no quote verified).
	IAK   [32]byte
	Quote *attest.QuoteInfo
}

// Verdict batch encoding limits (a verdict message is hostile input until
// checked, though only verifiers may publish it).
const (
	verdictVersion    = 1
	maxVerdictsPerMsg = 4096
	maxVerdictField   = 64 // nonce, PCR digest and PCR values: SHA-256 at most, SHA-512 to spare
	maxVerdictPCRs    = 24
)

const (
	flagSchema = 1 << iota
	flagSig
	flagQuote
)

// EncodeVerdicts encodes a batch of verdicts for events.VerdictSubject.
// seq is the last stream sequence the verifier checked: the ledger need not
// wait for a verdict on an event at or before it (a verdict on it came, or
// none will).
func EncodeVerdicts(seq uint64, vs []Verdict) []byte {
	b := make([]byte, 0, 12+len(vs)*200)
	b = append(b, verdictVersion)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for i := range vs {
		v := &vs[i]
		b = append(b, v.Digest[:]...)
		var flags byte
		if v.Schema {
			flags |= flagSchema
		}
		if v.SigCert != ([32]byte{}) {
			flags |= flagSig
		}
		if v.IAK != ([32]byte{}) && v.Quote != nil {
			flags |= flagQuote
		}
		b = append(b, flags)
		if flags&flagSig != 0 {
			b = append(b, v.SigCert[:]...)
		}
		if flags&flagQuote == 0 {
			continue
		}
		q := v.Quote
		b = append(b, v.IAK[:]...)
		b = appendField(b, q.Nonce)
		b = binary.AppendUvarint(b, q.Clock)
		b = binary.AppendUvarint(b, uint64(q.ResetCount))
		b = binary.AppendUvarint(b, uint64(q.RestartCount))
		b = append(b, boolByte(q.Safe))
		b = binary.AppendUvarint(b, q.FirmwareVersion)
		b = appendField(b, q.PCRDigest)
		b = binary.AppendUvarint(b, uint64(len(q.PCRs)))
		for i := range maxVerdictPCRs {
			if v, ok := q.PCRs[i]; ok {
				b = binary.AppendUvarint(b, uint64(i))
				b = appendField(b, v)
			}
		}
	}
	return b
}

func appendField(b, f []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// errVerdicts names what is wrong with a verdict message.
var errVerdicts = errors.New("malformed verdict batch")

// DecodeVerdicts decodes a batch of verdicts and the last stream sequence
// it covers, checking every count and length against the limits above.
func DecodeVerdicts(data []byte) (seq uint64, _ []Verdict, _ error) {
	d := verdictDecoder{b: data}
	if d.byte() != verdictVersion {
		return 0, nil, fmt.Errorf("%w: version", errVerdicts)
	}
	seq = d.uvarint()
	n := d.uvarint()
	if d.err != nil || n > maxVerdictsPerMsg || n > uint64(len(d.b))/33 {
		return 0, nil, fmt.Errorf("%w: count", errVerdicts)
	}
	vs := make([]Verdict, n)
	for i := range vs {
		v := &vs[i]
		d.array(&v.Digest)
		flags := d.byte()
		if flags&^(flagSchema|flagSig|flagQuote) != 0 {
			return 0, nil, fmt.Errorf("%w: flags", errVerdicts)
		}
		v.Schema = flags&flagSchema != 0
		if flags&flagSig != 0 {
			d.array(&v.SigCert)
		}
		if flags&flagQuote != 0 {
			d.array(&v.IAK)
			q := &attest.QuoteInfo{}
			q.Nonce = d.field()
			q.Clock = d.uvarint()
			q.ResetCount = d.uint32()
			q.RestartCount = d.uint32()
			switch d.byte() {
			case 0:
			case 1:
				q.Safe = true
			default:
				d.fail("safe")
			}
			q.FirmwareVersion = d.uvarint()
			q.PCRDigest = d.field()
			np := d.uvarint()
			if np > maxVerdictPCRs {
				d.fail("PCR count")
			}
			q.PCRs = make(map[int][]byte, np)
			for range np {
				idx := d.uvarint()
				val := d.field()
				if _, dup := q.PCRs[int(idx)]; dup || idx >= maxVerdictPCRs {
					d.fail("PCR index")
					break
				}
				q.PCRs[int(idx)] = val
			}
			v.Quote = q
		}
		if d.err != nil {
			return 0, nil, d.err
		}
	}
	if d.err != nil {
		return 0, nil, d.err
	}
	if len(d.b) != 0 {
		return 0, nil, fmt.Errorf("%w: trailing bytes", errVerdicts)
	}
	return seq, vs, nil
}

type verdictDecoder struct {
	b   []byte
	err error
}

func (d *verdictDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errVerdicts, what)
	}
	d.b = nil
}

func (d *verdictDecoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *verdictDecoder) array(a *[32]byte) {
	if len(d.b) < 32 {
		d.fail("truncated")
		return
	}
	copy(a[:], d.b)
	d.b = d.b[32:]
}

func (d *verdictDecoder) uvarint() uint64 {
	v, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[k:]
	return v
}

func (d *verdictDecoder) uint32() uint32 {
	v := d.uvarint()
	if v > 1<<32-1 {
		d.fail("counter")
	}
	return uint32(v)
}

func (d *verdictDecoder) field() []byte {
	n := d.uvarint()
	if n > maxVerdictField || n > uint64(len(d.b)) {
		d.fail("field length")
		return nil
	}
	f := bytes.Clone(d.b[:n])
	d.b = d.b[n:]
	return f
}

// verdicts holds the verdicts the ledger received and has not used yet, by
// statement digest, at most maxHeldVerdicts (the oldest go first).
type verdicts struct {
	mu      sync.Mutex
	m       map[[32]byte]*Verdict
	order   [][32]byte // ring, oldest at next
	next    int
	waiters map[[32]byte][]waiter
	last    time.Time // arrival of the last batch
	covered uint64    // the last stream sequence verifiers checked

	used, waited, missed atomic.Uint64
}

// waiter is an event waiting for its verdict.
type waiter struct {
	seq  uint64
	done chan struct{}
}

// maxHeldVerdicts bounds the verdicts held (about 300 bytes each): far
// more than the ledger has in flight (4 batches of at most 4096).
const maxHeldVerdicts = 1 << 16

// verdictsStale is how long after the last batch of verdicts the ledger
// still waits for verdicts: when verifiers stop sending, it checks
// everything itself without waiting.
const verdictsStale = 2 * time.Second

func newVerdicts() *verdicts {
	return &verdicts{m: map[[32]byte]*Verdict{}, order: make([][32]byte, maxHeldVerdicts), waiters: map[[32]byte][]waiter{}}
}

// add takes a batch of verdicts covering the stream up to seq, and wakes
// the events waiting for one of them, or whose sequence the verifiers
// have passed without a verdict for it.
func (c *verdicts) add(seq uint64, vs []Verdict, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = now
	c.covered = max(c.covered, seq)
	for i := range vs {
		v := &vs[i]
		if _, ok := c.m[v.Digest]; !ok {
			delete(c.m, c.order[c.next])
			c.order[c.next] = v.Digest
			c.next = (c.next + 1) % len(c.order)
		}
		c.m[v.Digest] = v
	}
	for d, ws := range c.waiters {
		_, found := c.m[d]
		keep := ws[:0]
		for _, w := range ws {
			if found || (w.seq != 0 && w.seq <= c.covered) {
				close(w.done)
			} else {
				keep = append(keep, w)
			}
		}
		if len(keep) == 0 {
			delete(c.waiters, d)
		} else {
			c.waiters[d] = keep
		}
	}
}

// live reports whether verifiers are sending verdicts.
func (c *verdicts) live(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return now.Sub(c.last) <= verdictsStale
}

// take returns and forgets the verdict on digest (an event at stream
// sequence seq, 0 if unknown), waiting up to wait for it while verifiers
// are sending and have not passed seq; nil when none came.
func (c *verdicts) take(digest [32]byte, seq uint64, wait time.Duration, now time.Time) *Verdict {
	c.mu.Lock()
	if v, ok := c.m[digest]; ok {
		delete(c.m, digest)
		c.mu.Unlock()
		c.used.Add(1)
		return v
	}
	if wait <= 0 || now.Sub(c.last) > verdictsStale || (seq != 0 && seq <= c.covered) {
		c.mu.Unlock()
		c.missed.Add(1)
		return nil
	}
	w := waiter{seq: seq, done: make(chan struct{})}
	c.waiters[digest] = append(c.waiters[digest], w)
	c.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
	c.mu.Lock()
	v, ok := c.m[digest]
	delete(c.m, digest)
	ws := c.waiters[digest]
	for i, x := range ws {
		if x.done == w.done { // still waiting: timed out
			ws = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(ws) == 0 {
		delete(c.waiters, digest)
	} else {
		c.waiters[digest] = ws
	}
	c.mu.Unlock()
	if !ok {
		c.missed.Add(1)
		return nil
	}
	c.waited.Add(1)
	return v
}

// VerdictStats counts the events whose verdict the ledger used (found at
// once, or after waiting) and those it checked itself for want of one.
type VerdictStats struct {
	Used, Waited, Missed uint64
}

// VerdictStats reports the use of verifiers' verdicts since start.
func (l *Ledger) VerdictStats() VerdictStats {
	if l.verdicts == nil {
		return VerdictStats{}
	}
	return VerdictStats{Used: l.verdicts.used.Load(), Waited: l.verdicts.waited.Load(), Missed: l.verdicts.missed.Load()}
}

// receiveVerdicts subscribes to the verifiers' verdicts.
func (l *Ledger) receiveVerdicts() (*nats.Subscription, error) {
	return l.cfg.NATS.Subscribe(events.VerdictSubject, func(m *nats.Msg) {
		seq, vs, err := DecodeVerdicts(m.Data)
		if err != nil {
			l.log.Warn("a verdict batch was refused", "err", err)
			return
		}
		l.log.Debug("verdicts received", "covered", seq, "verdicts", len(vs))
		l.verdicts.add(seq, vs, l.cfg.Now())
	})
}

// openVerifierConsumer makes sure the verifier pool's consumer exists. It
// delivers from the first message the ledger has not applied when it is
// created, and then onwards, each message to one verifier.
func (l *Ledger) openVerifierConsumer(ctx context.Context, seq uint64) error {
	if _, err := l.stream.Consumer(ctx, VerifierConsumer); err == nil {
		return nil // it keeps its position
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("ledger: verifier consumer: %w", err)
	}
	_, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       VerifierConsumer,
		Description:   "The verifier pool: stateless checks of events ahead of the ledger",
		AckPolicy:     jetstream.AckNonePolicy,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   seq + 1,
		MaxWaiting:    512,
	})
	if err != nil && !errors.Is(err, jetstream.ErrConsumerExists) {
		return fmt.Errorf("ledger: verifier consumer: %w", err)
	}
	return nil
}

// FactsRequest asks the ledger, on events.FactsSubject, for what a
// verifier checks an event against: a partner's registry record or a
// device's IAK; or, with Position, how far the ledger has applied the
// stream (a verifier skips what is behind it). Exactly one is set.
type FactsRequest struct {
	Partner  string `json:"partner,omitempty"`
	Device   string `json:"device,omitempty"`
	Position bool   `json:"position,omitempty"`
}

// FactsReply answers a FactsRequest; Error is "not found" when the log
// holds no such partner or device (yet).
type FactsReply struct {
	Partner   *Partner `json:"partner,omitempty"`
	IAKPublic []byte   `json:"iakPublic,omitempty"`
	StreamSeq uint64   `json:"streamSeq,omitempty"`
	Error     string   `json:"error,omitempty"`
}

// serveFacts answers verifiers' FactsRequests from the committed state.
func (l *Ledger) serveFacts() (*nats.Subscription, error) {
	return l.cfg.NATS.QueueSubscribe(events.FactsSubject, ConsumerName, func(m *nats.Msg) {
		data, _ := json.Marshal(l.answerFacts(m.Data))
		_ = m.Respond(data)
	})
}

func (l *Ledger) answerFacts(data []byte) *FactsReply {
	var req FactsRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return &FactsReply{Error: "a facts request is a JSON object"}
	}
	asked := 0
	for _, b := range []bool{req.Partner != "", req.Device != "", req.Position} {
		if b {
			asked++
		}
	}
	if asked != 1 || len(req.Partner) > 64 || len(req.Device) > 64 {
		return &FactsReply{Error: "a facts request names one partner, one device, or asks for the position"}
	}
	switch {
	case req.Position:
		return &FactsReply{StreamSeq: l.Head().StreamSeq}
	case req.Partner != "":
		if p, err := l.cfg.Store.Partner(req.Partner); err == nil && p != nil {
			return &FactsReply{Partner: p}
		}
	default:
		if d, err := l.cfg.Store.Device(req.Device); err == nil && d != nil {
			return &FactsReply{IAKPublic: d.IAKPublic}
		}
	}
	return &FactsReply{Error: ErrNotFound.Error()}
}

// FactSource is where a verifier reads the facts an event is checked
// against: the ledger's store in the ledger, the ledger's facts service
// (events.FactsSubject) in a verifier process. Both return ErrNotFound
// (or a nil record) for what the log does not hold.
type FactSource interface {
	Partner(name string) (*Partner, error)
	Device(id string) (*Device, error)
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Consortium is the consortium CA certificate (partner.* events).
	Consortium *x509.Certificate
	// TPMTrust is the trust bundle for EK and IAK certificates.
	TPMTrust *attest.Bundle
	// Facts is where partners' certificates and devices' IAKs are read.
	Facts FactSource
	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
}

// Verifier runs the ledger's stateless checks outside the ledger (a
// verifier process of the pool) and reports what passed as verdicts.
type Verifier struct {
	l *Ledger
}

// NewVerifier returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Consortium == nil || cfg.TPMTrust == nil || cfg.Facts == nil {
		return nil, errors.New("ledger: a verifier needs the consortium CA, the TPM trust bundle and a fact source")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cfg.Consortium)
	l := &Ledger{
		cfg:            Config{Consortium: cfg.Consortium, TPMTrust: cfg.TPMTrust, Logger: cfg.Logger, Now: time.Now},
		log:            cfg.Logger,
		consortium:     pool,
		facts:          newFacts(),
		lookup:         cfg.Facts,
		verdictsOnly:   true,
		consortiumHash: sha256.Sum256(cfg.Consortium.Raw),
	}
	return &Verifier{l: l}, nil
}

// Verify checks one message from the events stream (its subject and
// data) and returns the verdicts on its statement and, for a station
// batch, on each member: only what passed. None when the envelope does
// not open.
func (v *Verifier) Verify(subject string, data []byte) []Verdict {
	pr := &prepared{subject: subject, data: data}
	v.l.prepare(pr)
	if pr.signed == nil {
		return nil
	}
	out := []Verdict{verdictOf(pr)}
	for _, mp := range pr.members {
		out = append(out, verdictOf(mp))
	}
	return out
}

// verdictOf is what passed of a prepared statement.
func verdictOf(pr *prepared) Verdict {
	v := Verdict{Digest: pr.signed.Digest, Schema: pr.early == nil}
	if pr.batch == nil && pr.sigOK && pr.sigCert != nil {
		v.SigCert = pr.sigCertHash
	}
	if pr.iak != nil && pr.quote != nil && pr.quoteErr == nil {
		v.IAK, v.Quote = pr.iakDigest, pr.quote
	}
	return v
}
