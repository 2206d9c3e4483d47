package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publisher publishes one partner's signed events to JetStream and waits for
// the ledger's receipt. An event is done when its receipt arrives, not when
// JetStream acknowledges it: JetStream may hold it only in memory until its
// next fsync, while the ledger's receipt means the event is durable in the log.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	partner string
}

// NewPublisher returns a publisher for partner over nc.
func NewPublisher(nc *nats.Conn, partner string) (*Publisher, error) {
	if !ValidPartnerName(partner) {
		return nil, fmt.Errorf("events: invalid partner name %q", partner)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &Publisher{nc: nc, js: js, partner: partner}, nil
}

// ErrNoReceipt reports that no receipt arrived before the context ended. The
// event may still be logged: publishing the same envelope again is safe, as
// the ledger recognises it by digest and answers with the same receipt.
var ErrNoReceipt = errors.New("no receipt from the ledger yet")

// Publish sends the envelope and waits for the ledger's answer. It returns
// the receipt whatever its status; callers check Receipt.Status.
func (p *Publisher) Publish(ctx context.Context, envelope []byte) (*Receipt, error) {
	signed, err := Open(envelope)
	if err != nil {
		return nil, err
	}
	if signed.Statement.Predicate.Partner != p.partner {
		return nil, fmt.Errorf("events: publisher %q cannot publish an event by %q", p.partner, signed.Statement.Predicate.Partner)
	}
	digest := signed.DigestHex()
	answers := make(chan *nats.Msg, 2)
	var subs []*nats.Subscription
	for _, subj := range []string{ReceiptSubject(p.partner, digest), RejectionSubject(p.partner, digest)} {
		sub, err := p.nc.ChanSubscribe(subj, answers)
		if err != nil {
			return nil, err
		}
		subs = append(subs, sub)
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	if err := p.nc.FlushWithContext(ctx); err != nil {
		return nil, err
	}
	subject := EventSubject(p.partner, signed.Statement.Target())
	if _, err := p.js.Publish(ctx, subject, envelope, jetstream.WithMsgID(digest)); err != nil {
		return nil, fmt.Errorf("events: publishing %s: %w", subject, err)
	}
	// The ledger answers once the event's batch is durable. A redelivered or
	// republished event is answered again from the log.
	resend := time.NewTicker(10 * time.Second)
	defer resend.Stop()
	for {
		select {
		case m := <-answers:
			var r Receipt
			if err := json.Unmarshal(m.Data, &r); err != nil {
				return nil, fmt.Errorf("events: bad receipt: %w", err)
			}
			return &r, nil
		case <-resend.C:
			// Past JetStream's duplicate window this is a new message; the
			// ledger dedups it by digest and re-sends the receipt.
			if _, err := p.js.Publish(ctx, subject, envelope, jetstream.WithMsgID(digest)); err != nil {
				return nil, fmt.Errorf("events: re-publishing %s: %w", subject, err)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %v", ErrNoReceipt, ctx.Err())
		}
	}
}
