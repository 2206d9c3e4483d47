// Package verifier is a process of the verifier pool: it runs the ledger's
// stateless checks of custody events (schemas, partners' signatures, TPM
// quotes) ahead of the ledger and sends the ledger what passed as verdicts,
// so that the checks that are most of ingest's CPU run on machines of their
// own (docs/design/verifiers.md).
//
// A verifier reads the events stream through the consumer the pool shares
// (ledger.VerifierConsumer: each event goes to one verifier), checks each
// fetched batch on every core with ledger.Verifier (the ledger's own code),
// and publishes one message of verdicts per batch on events.VerdictSubject.
// It reads partners' certificates and devices' IAKs from the ledger's facts
// service (events.FactsSubject) and keeps them: neither changes once logged.
// It holds no state worth keeping: kill it at any moment and the ledger
// checks the events it had in hand itself.
package verifier

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// Config configures a verifier.
type Config struct {
	// NATS is the connection, as the verifier user (node.VerifierUser).
	NATS *nats.Conn
	// Consortium is the consortium CA certificate.
	Consortium *x509.Certificate
	// TPMTrust is the trust bundle for EK and IAK certificates.
	TPMTrust *attest.Bundle
	// BatchSize is the most events fetched and checked at once. Default 256.
	BatchSize int
	// Workers check events in parallel. Default GOMAXPROCS.
	Workers int
	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
}

// Verifier is one process of the pool.
type Verifier struct {
	cfg   Config
	v     *ledger.Verifier
	facts *natsFacts

	checked, verdicts, skipped atomic.Uint64
	// ledgerSeq is how far the ledger has applied the stream (refreshed
	// every positionEvery): messages at or before it are not checked.
	ledgerSeq atomic.Uint64
}

// positionEvery is how often a verifier asks the ledger how far it is.
const positionEvery = 500 * time.Millisecond

// New returns a verifier.
func New(cfg Config) (*Verifier, error) {
	if cfg.NATS == nil {
		return nil, errors.New("verifier: a NATS connection is required")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	cfg.BatchSize = min(cfg.BatchSize, 4096)
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	facts := &natsFacts{nc: cfg.NATS}
	v, err := ledger.NewVerifier(ledger.VerifierConfig{
		Consortium: cfg.Consortium, TPMTrust: cfg.TPMTrust, Logger: cfg.Logger, Facts: facts,
	})
	if err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, v: v, facts: facts}, nil
}

// Stats are a verifier's counts since it started.
type Stats struct {
	Checked  uint64 // messages checked
	Verdicts uint64 // verdicts sent (a batch's members count one each)
	Skipped  uint64 // messages the ledger had already applied
}

// Stats reports what the verifier did.
func (vf *Verifier) Stats() Stats {
	return Stats{Checked: vf.checked.Load(), Verdicts: vf.verdicts.Load(), Skipped: vf.skipped.Load()}
}

// Run checks events until ctx ends. It waits for the pool's consumer,
// which the ledger creates, to exist.
func (vf *Verifier) Run(ctx context.Context) error {
	js, err := jetstream.New(vf.cfg.NATS)
	if err != nil {
		return err
	}
	var cons jetstream.Consumer
	for {
		cons, err = js.Consumer(ctx, events.StreamName, ledger.VerifierConsumer)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		vf.cfg.Logger.Info("waiting for the ledger's verifier consumer", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	vf.cfg.Logger.Info("verifier running", "batch", vf.cfg.BatchSize, "workers", vf.cfg.Workers)
	go vf.followLedger(ctx)
	for ctx.Err() == nil {
		msgs := ledger.Fetch(ctx, cons, vf.cfg.BatchSize, vf.cfg.Logger)
		if len(msgs) == 0 {
			// Idle (Fetch waited a second): an empty batch tells the ledger
			// the pool is alive, so that it waits for verdicts on the
			// next burst instead of checking it all itself as if the
			// verifiers were gone.
			if err := vf.publish(0, nil); err != nil && ctx.Err() == nil {
				vf.cfg.Logger.Warn("sending verdicts failed", "err", err)
			}
			continue
		}
		// In chunks, each sent as soon as it is checked: a fetch of 256
		// station batches is 16,384 quotes, and the ledger waits for the
		// first of them.
		for len(msgs) > 0 {
			n := min(len(msgs), 4*vf.cfg.Workers)
			chunk := msgs[:n]
			msgs = msgs[n:]
			var last uint64
			if meta, err := chunk[n-1].Metadata(); err == nil {
				last = meta.Sequence.Stream
			}
			if err := vf.publish(last, vf.check(chunk)); err != nil && ctx.Err() == nil {
				vf.cfg.Logger.Warn("sending verdicts failed", "err", err)
			}
		}
	}
	return nil
}

// followLedger keeps ledgerSeq current until ctx ends. A verifier that
// starts behind the ledger (after an outage, or the first time, on a log
// that already ran) skips what the ledger has applied instead of checking
// it for nobody.
func (vf *Verifier) followLedger(ctx context.Context) {
	t := time.NewTicker(positionEvery)
	defer t.Stop()
	for {
		if rep, err := vf.facts.ask(ledger.FactsRequest{Position: true}); err == nil {
			vf.ledgerSeq.Store(max(vf.ledgerSeq.Load(), rep.StreamSeq))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs the stateless checks of a batch on every worker, and returns
// the verdicts in message order.
func (vf *Verifier) check(msgs []jetstream.Msg) []ledger.Verdict {
	applied := vf.ledgerSeq.Load()
	todo := msgs[:0:0]
	for _, m := range msgs {
		if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream <= applied {
			vf.skipped.Add(1)
			continue
		}
		todo = append(todo, m)
	}
	msgs = todo
	out := make([][]ledger.Verdict, len(msgs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(vf.cfg.Workers, len(msgs)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(msgs) {
					return
				}
				out[i] = vf.v.Verify(msgs[i].Subject(), msgs[i].Data())
			}
		})
	}
	wg.Wait()
	vf.checked.Add(uint64(len(msgs)))
	var all []ledger.Verdict
	for _, vs := range out {
		all = append(all, vs...)
	}
	return all
}

// publish sends verdicts in messages of at most maxPerMessage; the last
// says the stream is checked up to seq. A batch with no verdict (every
// message skipped or refused) is still sent: it tells the ledger that
// verifiers are at work and how far they got.
func (vf *Verifier) publish(seq uint64, vs []ledger.Verdict) error {
	const maxPerMessage = 1024
	for first := true; first || len(vs) > 0; first = false {
		n := min(len(vs), maxPerMessage)
		covered := uint64(0)
		if n == len(vs) {
			covered = seq
		}
		if err := vf.cfg.NATS.Publish(events.VerdictSubject, ledger.EncodeVerdicts(covered, vs[:n])); err != nil {
			return err
		}
		vf.verdicts.Add(uint64(n))
		vs = vs[n:]
	}
	return nil
}

// natsFacts reads facts from the ledger's facts service. A fact found is
// kept by ledger.Verifier (it never changes); one not found is asked
// again next time (a partner or device logged since).
type natsFacts struct{ nc *nats.Conn }

func (f *natsFacts) ask(req ledger.FactsRequest) (*ledger.FactsReply, error) {
	data, _ := json.Marshal(req)
	m, err := f.nc.Request(events.FactsSubject, data, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("verifier: facts: %w", err)
	}
	var rep ledger.FactsReply
	if err := json.Unmarshal(m.Data, &rep); err != nil {
		return nil, fmt.Errorf("verifier: facts reply: %w", err)
	}
	if rep.Error == ledger.ErrNotFound.Error() {
		return nil, ledger.ErrNotFound
	}
	if rep.Error != "" {
		return nil, fmt.Errorf("verifier: facts: %s", rep.Error)
	}
	return &rep, nil
}

func (f *natsFacts) Partner(name string) (*ledger.Partner, error) {
	rep, err := f.ask(ledger.FactsRequest{Partner: name})
	if err != nil {
		return nil, err
	}
	if rep.Partner == nil {
		return nil, ledger.ErrNotFound
	}
	return rep.Partner, nil
}

func (f *natsFacts) Device(id string) (*ledger.Device, error) {
	rep, err := f.ask(ledger.FactsRequest{Device: id})
	if err != nil {
		return nil, err
	}
	if len(rep.IAKPublic) == 0 {
		return nil, ledger.ErrNotFound
	}
	return &ledger.Device{ID: id, IAKPublic: rep.IAKPublic}, nil
}
