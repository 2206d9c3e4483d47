package gate

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/gate/gatewire"
)

// logEnrolled publishes device.enrolled with the fresh quote as evidence
// (its qualifyingData is the gate's nonce, recorded as the challenge) and
// waits for the ledger's receipt.
func (g *Gate) logEnrolled(ctx context.Context, req *gatewire.RegisterRequest, cert *x509.Certificate, nonce []byte) (uint64, error) {
	st := events.NewStatement(events.KindDeviceEnrolled, g.cfg.Name, req.RegistrationID, g.cfg.Now(), events.NewEventID())
	st.Predicate.Enrolled = &events.Enrolled{
		Operator: g.cfg.Operator, RegistrationID: req.RegistrationID, IDScope: g.cfg.IDScope,
		Challenge: nonce, LDevIDCertificate: cert.Raw,
	}
	st.Predicate.Evidence = req.Payload.Quote
	return g.publishFn(ctx, st)
}

// The gate's records are logged by group commit: a record waits while the
// records before it are being logged, and all that waited go out together
// as one station batch (events.SignBatch: one signature, one leaf), each
// caller answered by its member's verdict. A decision is still answered
// only once its record is logged; under load, the signature and the
// ledger's work per record are spread over the batch. A record alone is a
// plain envelope. One batch holds one record per device; a second record
// about a device waits for the next.

// maxRecordBatch bounds the records of one batch (each holds a quote and,
// for an enrollment, the LDevID certificate: about 2.5 KB).
const maxRecordBatch = 256

// recorder queues the gate's records for group commit.
type recorder struct {
	mu    sync.Mutex
	queue []*pendingRecord
	busy  bool // a flusher runs
}

type pendingRecord struct {
	st   *events.Statement
	done chan recordResult
}

type recordResult struct {
	index uint64
	err   error
}

// publishGrouped is publishFn's group commit: it queues st and waits for
// its verdict.
func (g *Gate) publishGrouped(ctx context.Context, st *events.Statement) (uint64, error) {
	p := &pendingRecord{st: st, done: make(chan recordResult, 1)}
	r := &g.rec
	r.mu.Lock()
	r.queue = append(r.queue, p)
	start := !r.busy
	r.busy = true
	r.mu.Unlock()
	if start {
		go g.flushRecords()
	}
	select {
	case res := <-p.done:
		return res.index, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// flushRecords logs queued records, batch after batch, until none wait.
func (g *Gate) flushRecords() {
	r := &g.rec
	for {
		if w := g.cfg.RecordWindow; w > 0 {
			time.Sleep(w)
		}
		r.mu.Lock()
		var take, keep []*pendingRecord
		seen := map[string]bool{}
		for _, p := range r.queue {
			dev := p.st.Device()
			if len(take) == maxRecordBatch || seen[dev] {
				keep = append(keep, p)
				continue
			}
			seen[dev] = true
			take = append(take, p)
		}
		r.queue = keep
		if len(take) == 0 {
			r.busy = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		g.logRecords(take)
	}
}

// logRecords logs records as one batch (or one envelope) and answers each.
func (g *Gate) logRecords(recs []*pendingRecord) {
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.PublishTimeout)
	defer cancel()
	if len(recs) == 1 {
		idx, err := g.publish(ctx, recs[0].st)
		recs[0].done <- recordResult{idx, err}
		return
	}
	fail := func(err error) {
		for _, p := range recs {
			p.done <- recordResult{err: err}
		}
	}
	sts := make([]*events.Statement, len(recs))
	for i, p := range recs {
		sts[i] = p.st
	}
	b, err := events.SignBatch(ctx, "gate-"+events.NewEventID()[:16], sts, g.cfg.Key, g.cfg.Name)
	if err != nil {
		fail(err)
		return
	}
	r, err := g.pub.PublishSigned(ctx, b)
	if err != nil {
		fail(err)
		return
	}
	if len(r.Members) != len(recs) {
		fail(fmt.Errorf("the ledger refused the batch of records: %s: %s", r.Code, r.Reason))
		return
	}
	for i, p := range recs {
		v := r.Members[i]
		switch {
		case v.Status == events.StatusAccepted && v.Existing:
			p.done <- recordResult{index: v.LogIndex}
		case v.Status == events.StatusAccepted:
			p.done <- recordResult{index: r.LogIndex}
		default:
			p.done <- recordResult{err: fmt.Errorf("the ledger refused it: %s: %s", v.Code, v.Reason)}
		}
	}
}

// publish signs st with the gate's key, publishes it and waits for the
// ledger's receipt.
func (g *Gate) publish(ctx context.Context, st *events.Statement) (uint64, error) {
	signed, err := events.SignStatement(ctx, st, g.cfg.Key, g.cfg.Name)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.PublishTimeout)
	defer cancel()
	r, err := g.pub.PublishSigned(ctx, signed)
	if err != nil {
		return 0, err
	}
	if r.Status != events.StatusAccepted {
		return 0, fmt.Errorf("the ledger refused it: %s: %s", r.Code, r.Reason)
	}
	return r.LogIndex, nil
}
