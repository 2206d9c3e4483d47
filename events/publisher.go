package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes one partner's signed events to JetStream and waits for
// the ledger's receipt. An event is done when its receipt arrives, not when
// JetStream acknowledges it: JetStream may hold it only in memory until its
// next fsync, while the ledger's receipt means the event is durable in the log.
//
// A Publisher holds one standing subscription to the partner's receipts and
// one to its rejections (custody.v1.receipts.<partner>.* and
// custody.v1.rejections.<partner>.*), made at its first Publish, and hands
// each answer to the Publish waiting for that digest. Answers nobody waits
// for (events of the same partner published by another process) are
// dropped. A Publisher is safe for concurrent use.
//
// Every answer is checked ([VerifyReceipt]) before it counts: a receipt for
// another digest, or one that says the event is logged without an
// inclusion proof under a checkpoint signed by the log's key, makes
// Publish fail with a [*BadReceiptError] and leaves the event in the
// outbox, to be sent (and its answer checked) again. Whoever can publish
// on the partner's receipt subjects can thus delay an event, never make it
// look logged.
type Publisher struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	partner  string
	receipts ReceiptVerifier
	outbox   *Outbox // nil: no durability across station restarts

	subMu      sync.Mutex
	subscribed bool
	mu         sync.Mutex
	waiting    map[string][]chan *nats.Msg // event digest (hex) → Publish calls waiting for it
}

// NewPublisher returns a publisher for partner over nc. receipts proves
// the ledger's receipts (ledger.NewReceiptVerifier with the log's public
// key and the certificate partner is registered with); it is required.
func NewPublisher(nc *nats.Conn, partner string, receipts ReceiptVerifier) (*Publisher, error) {
	if !ValidPartnerName(partner) {
		return nil, fmt.Errorf("events: invalid partner name %q", partner)
	}
	if nc == nil || receipts == nil {
		return nil, errors.New("events: a publisher needs a NATS connection and a receipt verifier")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Publisher{nc: nc, js: js, partner: partner, receipts: receipts, waiting: map[string][]chan *nats.Msg{}}, nil
}

// subscribeTimeout bounds the wait for the server to confirm the standing
// subscriptions when the caller's context has no deadline.
const subscribeTimeout = 10 * time.Second

// subscribe makes the standing subscriptions, once, and waits until the
// server has them, so that no answer to an event published afterwards is
// missed. A failed attempt leaves nothing behind; the next Publish tries
// again.
func (p *Publisher) subscribe(ctx context.Context) error {
	p.subMu.Lock()
	defer p.subMu.Unlock()
	if p.subscribed {
		return nil
	}
	var subs []*nats.Subscription
	err := func() error {
		for _, prefix := range []string{ReceiptsPrefix, RejectPrefix} {
			sub, err := p.nc.Subscribe(prefix+"."+p.partner+".*", p.route)
			if err != nil {
				return err
			}
			subs = append(subs, sub)
			// Answers are small and handed on at once; a burst of other
			// processes' answers must not make this one a slow consumer.
			_ = sub.SetPendingLimits(1<<20, 256<<20)
		}
		// FlushWithContext refuses a context without a deadline (a
		// restarted station recovers under its whole run's context).
		fctx, cancel := ctx, context.CancelFunc(func() {})
		if _, ok := ctx.Deadline(); !ok {
			fctx, cancel = context.WithTimeout(ctx, subscribeTimeout)
		}
		defer cancel()
		return p.nc.FlushWithContext(fctx)
	}()
	if err != nil {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
		return fmt.Errorf("events: subscribing to the ledger's answers: %w", err)
	}
	p.subscribed = true
	return nil
}

// route hands an answer to the Publish calls waiting for its digest (the
// subject's last token).
func (p *Publisher) route(m *nats.Msg) {
	i := strings.LastIndexByte(m.Subject, '.')
	if i < 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ch := range p.waiting[m.Subject[i+1:]] {
		select {
		case ch <- m:
		default: // the waiter has answers to read already
		}
	}
}

// wait registers a Publish waiting for digest's answers; the returned func
// ends the wait.
func (p *Publisher) wait(digest string, answers chan *nats.Msg) func() {
	p.mu.Lock()
	p.waiting[digest] = append(p.waiting[digest], answers)
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		ws := slices.DeleteFunc(p.waiting[digest], func(c chan *nats.Msg) bool { return c == answers })
		if len(ws) == 0 {
			delete(p.waiting, digest)
		} else {
			p.waiting[digest] = ws
		}
	}
}

// WithOutbox makes the publisher keep every event in o until it is
// answered by a receipt that verifies.
func (p *Publisher) WithOutbox(o *Outbox) *Publisher {
	p.outbox = o
	return p
}

// ResendConcurrency is how many outbox events Resend has in flight at once.
const ResendConcurrency = 64

// ErrBadOutboxEntry marks an outbox file that is not a signed envelope of
// this publisher's partner: it can never be sent, and is left in place for
// an operator to look at.
var ErrBadOutboxEntry = errors.New("outbox entry is not a signed envelope of this partner")

// BadOutboxEntryError is Resend's error for one outbox entry that cannot be
// sent; it matches [ErrBadOutboxEntry].
type BadOutboxEntryError struct {
	Digest string
	Err    error
}

func (e *BadOutboxEntryError) Error() string {
	return fmt.Sprintf("events: outbox %s: %v: %v", e.Digest, ErrBadOutboxEntry, e.Err)
}

func (e *BadOutboxEntryError) Is(target error) bool { return target == ErrBadOutboxEntry }
func (e *BadOutboxEntryError) Unwrap() error        { return e.Err }

// Resend publishes the unconfirmed events of the outbox named by digests
// (none: all of them) again and waits for their answers, returning them by
// digest. Events the ledger already logged are answered from the log;
// nothing is logged twice. The events are re-sent concurrently (a backlog
// after a long outage is answered in a few ledger batches, not one round
// trip each). The error joins those of the events that got no answer, which
// stay in the outbox; an entry that cannot be sent is reported as a
// [*BadOutboxEntryError]. ctx needs no deadline: without one, Resend waits as
// long as the ledger takes.
func (p *Publisher) Resend(ctx context.Context, digests ...string) (map[string]*Receipt, error) {
	if p.outbox == nil {
		return nil, nil
	}
	pending, err := p.outbox.Unconfirmed()
	if err != nil {
		return nil, err
	}
	if len(digests) > 0 {
		only := make(map[string][]byte, len(digests))
		for _, d := range digests {
			if env, ok := pending[d]; ok {
				only[d] = env
			}
		}
		pending = only
	}
	var (
		mu   sync.Mutex
		out  = map[string]*Receipt{}
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, ResendConcurrency)
	)
	for d, env := range pending {
		signed, err := OpenMessage(env)
		if err == nil && (signed.DigestHex() != d || signed.Statement.Predicate.Partner != p.partner) {
			err = fmt.Errorf("digest %s, partner %q", signed.DigestHex(), signed.Statement.Predicate.Partner)
		}
		if err != nil {
			errs = append(errs, &BadOutboxEntryError{Digest: d, Err: err})
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r, err := p.PublishSigned(ctx, signed)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("events: re-sending %s: %w", d, err))
				return
			}
			out[d] = r
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// askStatus requests the event's status from the ledger; the answer joins
// the receipts on answers.
func (p *Publisher) askStatus(digest string, answers chan *nats.Msg) *nats.Subscription {
	inbox := p.nc.NewRespInbox()
	sub, err := p.nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return nil
	}
	_ = sub.AutoUnsubscribe(1)
	_ = p.nc.PublishRequest(StatusSubject, inbox, []byte(digest))
	return sub
}

// ErrNoReceipt reports that no receipt arrived before the context ended. The
// event may still be logged: publishing the same envelope again is safe, as
// the ledger recognises it by digest and answers with the same receipt.
var ErrNoReceipt = errors.New("no receipt from the ledger yet")

// Publish sends the envelope and waits for the ledger's answer. It returns
// the receipt whatever its status, once it verified ([VerifyReceipt]);
// callers check Receipt.Status. An answer that does not verify is an error
// (a [*BadReceiptError]) and the event stays in the outbox.
func (p *Publisher) Publish(ctx context.Context, envelope []byte) (*Receipt, error) {
	signed, err := OpenMessage(envelope)
	if err != nil {
		return nil, err
	}
	return p.PublishSigned(ctx, signed)
}

// PublishSigned is Publish for an envelope already opened (by [Open] or
// [SignStatement]).
func (p *Publisher) PublishSigned(ctx context.Context, signed *Signed) (*Receipt, error) {
	if signed.Statement.Predicate.Partner != p.partner {
		return nil, fmt.Errorf("events: publisher %q cannot publish an event by %q", p.partner, signed.Statement.Predicate.Partner)
	}
	envelope := signed.Wire()
	digest := signed.DigestHex()
	if p.outbox != nil && !p.outbox.Has(digest) { // a re-send is already on disk
		if err := p.outbox.Put(digest, envelope); err != nil {
			return nil, fmt.Errorf("events: outbox: %w", err)
		}
	}
	if err := p.subscribe(ctx); err != nil {
		return nil, err
	}
	answers := make(chan *nats.Msg, 4)
	defer p.wait(digest, answers)()
	var asked []*nats.Subscription // status requests, on duplicates
	defer func() {
		for _, sub := range asked {
			_ = sub.Unsubscribe()
		}
	}()
	subject := EventSubject(p.partner, signed.Statement.Target())
	send := func() error {
		ack, err := p.js.Publish(ctx, subject, envelope, jetstream.WithMsgID(digest))
		if err != nil {
			return fmt.Errorf("events: publishing %s: %w", subject, err)
		}
		if ack.Duplicate {
			// JetStream already holds this event: the ledger may have
			// answered long ago. Ask it.
			if sub := p.askStatus(digest, answers); sub != nil {
				asked = append(asked, sub)
			}
		}
		return nil
	}
	if err := send(); err != nil {
		return nil, err
	}
	// The ledger answers once the event's batch is durable. A redelivered or
	// republished event is answered again from the log.
	retry := time.NewTicker(5 * time.Second)
	defer retry.Stop()
	for {
		select {
		case m := <-answers:
			var r Receipt
			if err := json.Unmarshal(m.Data, &r); err != nil {
				return nil, fmt.Errorf("events: bad receipt: %w", err)
			}
			if r.Status == StatusUnknown {
				continue // still in the stream: the ledger will answer
			}
			if err := VerifyReceipt(signed, &r, p.receipts); err != nil {
				return nil, err
			}
			if p.outbox != nil {
				if err := p.outbox.Done(digest); err != nil {
					return &r, fmt.Errorf("events: outbox: %w", err)
				}
			}
			return &r, nil
		case <-retry.C:
			// Past JetStream's duplicate window this is a new message; the
			// ledger dedups it by digest and answers again.
			if err := send(); err != nil {
				return nil, err
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrNoReceipt, ctx.Err())
		}
	}
}
