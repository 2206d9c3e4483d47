package ledger

// The sequencer lease: several ledger processes (sequencer candidates) on
// one shared Store (ledger/trillian) and one JetStream; the one holding
// the lease applies events, the others stand by and take over when it
// lapses (docs/design/cluster.md).
//
// The lease is a key in a JetStream KV bucket whose entries expire
// LeaseTTL after their last write: the holder created the key (Create
// succeeds for one candidate only) and renews it every LeaseTTL/3 with an
// Update on the revision it last wrote, which fails if the key expired
// and another candidate created it since. A holder whose renewal fails
// stops applying at once. Between a holder's last successful renewal and
// its noticing the loss, a new holder may start: the Store's own check
// that a commit extends the head it read (ledger/trillian's ErrConflict)
// keeps the two from both committing.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the KV bucket of the sequencer lease (key LeaseKey, value
// the holder's Config.Instance).
const (
	LeaseBucket = "CUSTODY_SEQUENCER"
	LeaseKey    = "lease"
)

type lease struct {
	kv  jetstream.KeyValue
	id  string
	ttl time.Duration
	rev uint64
}

func (l *Ledger) openLease(ctx context.Context) (*lease, error) {
	kv, err := jetstream.New(l.cfg.NATS)
	if err != nil {
		return nil, err
	}
	b, err := kv.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "The sequencer lease: the ledger process that applies events",
		History:     1,
		TTL:         l.cfg.LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    max(l.cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: lease bucket: %w", err)
	}
	return &lease{kv: b, id: l.cfg.Instance, ttl: l.cfg.LeaseTTL}, nil
}

// acquire waits until this candidate holds the lease (nil) or ctx ends.
func (ls *lease) acquire(ctx context.Context) error {
	t := time.NewTicker(ls.ttl / 4)
	defer t.Stop()
	for {
		rev, err := ls.kv.Create(ctx, LeaseKey, []byte(ls.id))
		if err == nil {
			ls.rev = rev
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// hold renews the lease until ctx ends or a renewal fails, and then
// cancels lost (the holder's applying).
func (ls *lease) hold(ctx context.Context, lost context.CancelCauseFunc) {
	t := time.NewTicker(ls.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, ls.ttl/3)
		rev, err := ls.kv.Update(rctx, LeaseKey, []byte(ls.id), ls.rev)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				lost(fmt.Errorf("ledger: the sequencer lease was lost: %w", err))
			}
			return
		}
		ls.rev = rev
	}
}

// release gives the lease up at once (a clean stop), if still held.
func (ls *lease) release() {
	ctx, cancel := context.WithTimeout(context.Background(), ls.ttl)
	defer cancel()
	_ = ls.kv.Delete(ctx, LeaseKey, jetstream.LastRevision(ls.rev))
}

// Leading reports whether this ledger applies events: always without a
// lease, and while it holds the lease with one.
func (l *Ledger) Leading() bool { return l.leading.Load() }

// runCandidate is Run for a sequencer candidate: stand by until the lease
// is held, take over the log's state from the Store, lead until the lease
// is lost or ctx ends, and stand by again.
func (l *Ledger) runCandidate(ctx context.Context) error {
	// A NATS cluster electing the bucket's leader (or short of a quorum)
	// does not answer for seconds: a candidate keeps asking.
	var ls *lease
	if err := retry(ctx, l.log, "the lease bucket", func(error) bool { return true }, func() (err error) {
		ls, err = l.openLease(ctx)
		return err
	}); err != nil {
		return nil
	}
	l.markReady()
	for ctx.Err() == nil {
		l.log.Info("sequencer candidate standing by", "instance", l.cfg.Instance)
		if err := ls.acquire(ctx); err != nil {
			return nil
		}
		lctx, lost := context.WithCancelCause(ctx)
		go ls.hold(lctx, lost)
		start := time.Now()
		err := l.takeOver(lctx)
		if err == nil {
			l.log.Info("sequencer lease held: applying events", "instance", l.cfg.Instance, "size", l.Head().Size, "takeover", time.Since(start))
			l.leading.Store(true)
			err = l.lead(lctx)
			l.leading.Store(false)
		}
		cause := context.Cause(lctx)
		lost(nil)
		if ctx.Err() != nil {
			ls.release()
			return nil
		}
		if err != nil {
			l.log.Error("sequencer: leading failed; giving the lease up", "err", err)
			ls.release()
		} else if cause != nil && !errors.Is(cause, context.Canceled) {
			l.log.Warn("sequencer stopped applying", "cause", cause)
		}
	}
	return nil
}

// takeOver loads the log's state as another holder of the lease left it
// (the head and the tree's right edge from the Store) and starts from it
// (start). Partners are read again (one may have been revoked).
func (l *Ledger) takeOver(ctx context.Context) error {
	head, rng, err := loadHead(l.cfg.Store)
	if err != nil {
		return err
	}
	l.forgetPartners(nil)
	return l.start(ctx, head, rng)
}
