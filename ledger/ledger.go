package ledger

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// Config configures a ledger. Store, NATS, LogKey, Consortium and TPMTrust
// are required.
type Config struct {
	// Store is the durable log and state (ledger/pebble by default).
	Store Store
	// NATS is the connection the ledger consumes events and answers on.
	NATS *nats.Conn
	// LogKey signs checkpoints.
	LogKey *LogKey
	// Consortium is the consortium CA certificate: its key signs partner
	// registry events and it issues every partner certificate.
	Consortium *x509.Certificate
	// TPMTrust is the trust bundle for EK and IAK certificates (roots,
	// intermediates and cross-certificates).
	TPMTrust *attest.Bundle
	// Replicas of the events stream (1 for a single server, 3 for a cluster).
	Replicas int
	// BatchSize bounds the events fetched, verified in parallel and applied
	// in one durable commit. Default 256, at most 4096.
	BatchSize int
	// CheckpointInterval is how often the latest checkpoint is published on
	// events.CheckpointTopic and in the KV bucket CheckpointBucket, when the
	// log has grown: a stable checkpoint for witnesses and monitors (one per
	// entry would keep witnesses from agreeing). Receipts carry the
	// checkpoint of their own commit regardless. Default 1s.
	CheckpointInterval time.Duration
	// LeaseTTL, when positive, makes this ledger a sequencer candidate
	// (lease.go): several run on one shared Store (ledger/trillian) and
	// only the holder of the sequencer lease applies events; a holder that
	// stops renewing loses it after LeaseTTL and a standby takes over.
	// Instance names the candidate (required with LeaseTTL). Zero: this
	// ledger is the only writer, as with the Pebble store.
	LeaseTTL time.Duration
	Instance string
	// VerdictWait, when positive, has the ledger take verdicts from the
	// verifier pool (verdict.go, docs/design/verifiers.md): it serves the
	// verifiers' facts requests, makes sure their consumer exists, and waits
	// up to VerdictWait for an event's verdict, while verifiers are sending,
	// before checking the event itself. Zero: every check is the ledger's.
	VerdictWait time.Duration
	// Logger receives operational logs. Default: discard.
	Logger *slog.Logger
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

// CheckpointBucket is the KV bucket holding the latest published checkpoint
// under the key "latest" (history: the last 64 published).
const CheckpointBucket = events.CheckpointBucket

func (c *Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("ledger: Config.Store is required")
	case c.NATS == nil:
		return errors.New("ledger: Config.NATS is required")
	case c.LogKey == nil:
		return errors.New("ledger: Config.LogKey is required")
	case c.Consortium == nil:
		return errors.New("ledger: Config.Consortium is required")
	case c.TPMTrust == nil:
		return errors.New("ledger: Config.TPMTrust is required")
	}
	if c.LeaseTTL > 0 && (c.Instance == "" || c.LeaseTTL < 300*time.Millisecond) {
		return errors.New("ledger: a sequencer candidate (LeaseTTL) needs an Instance name and a lease of at least 300ms")
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	c.BatchSize = min(c.BatchSize, 4096)
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Ledger verifies custody events from JetStream against the custody rules
// and appends them to a Merkle log.
type Ledger struct {
	cfg            Config
	log            *slog.Logger
	consortium     *x509.CertPool
	consortiumHash [32]byte // SHA-256 of the consortium CA certificate
	stream         jetstream.Stream
	// checkpoints is the KV bucket of published checkpoints.
	checkpoints jetstream.KeyValue
	cons        jetstream.Consumer // the fetcher's; replaced only while no pipeline runs

	mu   sync.RWMutex // guards head; the ingest loop is the only writer
	head Head
	rng  *compact.Range // right edge of the tree at head.Size (ingest loop only)

	facts  *facts     // immutable facts for the parallel verification (prepare.go)
	lookup FactSource // where facts are read: the store (a Verifier's: the ledger's facts service)
	// verdicts holds the verifier pool's verdicts (nil: no pool).
	verdicts *verdicts
	// verdictsOnly marks a Verifier's Ledger: prepare skips what only the
	// ledger uses (leaf bodies, member proofs, a device's birth checks).
	verdictsOnly bool
	chains       attest.ChainCache // the verified CA parts of EK and IAK certificate chains
	ids          identities        // verified client-certificate chains (identity.go)

	// answer sends a publisher its receipt or rejection: a NATS publish
	// (publish); tests of the rules without NATS replace it.
	answer func(subject string, data []byte) error

	ready     chan struct{}
	readyOnce sync.Once
	// leading is set while this ledger applies events (lease.go).
	leading atomic.Bool
	// standbyHead is the Store's head as a standing-by candidate last read
	// it (storeHead), at standbyRead.
	standbyMu   sync.Mutex
	standbyHead Head
	standbyRead time.Time
}

// ConsumerName is the ledger's durable JetStream consumer.
const ConsumerName = "ledger"

// New opens the ledger: loads the head, rebuilds the tree's right edge,
// and makes sure the events stream and the ledger's consumer exist.
func New(ctx context.Context, cfg Config) (*Ledger, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	head, rng, err := loadHead(cfg.Store)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cfg.Consortium)
	js, err := jetstream.New(cfg.NATS)
	if err != nil {
		return nil, err
	}
	// A sequencer candidate may start while its NATS cluster is still
	// electing leaders (or a node restarts): it keeps asking while
	// JetStream answers "unavailable". A ledger of its own broker fails at
	// once.
	transient := func(error) bool { return false }
	if cfg.LeaseTTL > 0 {
		transient = JetStreamUnavailable
	}
	var stream jetstream.Stream
	if err := retry(ctx, cfg.Logger, "the events stream", transient, func() (err error) {
		stream, err = openStream(ctx, js, events.StreamConfig(cfg.Replicas))
		return err
	}); err != nil {
		return nil, fmt.Errorf("ledger: events stream: %w", err)
	}
	var kv jetstream.KeyValue
	if err := retry(ctx, cfg.Logger, "the checkpoint bucket", transient, func() (err error) {
		kv, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      CheckpointBucket,
			Description: "The ledger's latest signed checkpoint (key: latest)",
			History:     64,
			Storage:     jetstream.FileStorage,
			Replicas:    max(cfg.Replicas, 1),
		})
		return err
	}); err != nil {
		return nil, fmt.Errorf("ledger: checkpoint bucket: %w", err)
	}
	l := &Ledger{cfg: cfg, log: cfg.Logger, consortium: pool, consortiumHash: sha256.Sum256(cfg.Consortium.Raw), stream: stream, checkpoints: kv, facts: newFacts(), ready: make(chan struct{})}
	if cfg.VerdictWait > 0 {
		l.verdicts = newVerdicts()
	}
	if cfg.LeaseTTL > 0 {
		// A candidate reads the log as it stands, and takes the stream
		// over only with the lease (takeOver).
		if head, err = withEmptyCheckpoint(ctx, cfg, head); err != nil {
			return nil, err
		}
		l.head, l.rng = head, rng
		return l, nil
	}
	if err := l.start(ctx, head, rng); err != nil {
		return nil, err
	}
	return l, nil
}

// openStream returns the stream of want's name, creating it, or updating
// it when its configuration differs in what want sets. A stream that is
// as wanted is left alone: several sequencer candidates start against one
// cluster, and an update of a live stream while another candidate creates
// its consumers is needless work for JetStream (and raced inside
// nats-server v2.15.2: its fileStore.UpdateConfig against ConsumerStore,
// seen by the race detector in TestSequencerLease).
func openStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, want.Name)
	if err == nil {
		have := st.CachedInfo().Config
		if have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) && have.Storage == want.Storage &&
			have.Retention == want.Retention && have.MaxAge == want.MaxAge && have.MaxMsgSize == want.MaxMsgSize &&
			have.Duplicates == want.Duplicates && have.Replicas == want.Replicas && have.Discard == want.Discard {
			return st, nil
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateStream(ctx, want)
}

// retry calls f until it succeeds, fails with an error transient does not
// accept, or ctx ends (ctx's error), a second apart, logging each wait.
func retry(ctx context.Context, log *slog.Logger, what string, transient func(error) bool, f func() error) error {
	for {
		err := f()
		if err == nil || !transient(err) {
			return err
		}
		log.Warn("waiting for JetStream", "for", what, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// JetStreamUnavailable reports whether err is JetStream not answering yet
// (a cluster forming, electing a leader, or a node restarting) rather
// than a request it refused.
func JetStreamUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrConnectionClosed)
}

// loadHead reads the committed head and rebuilds the tree's right edge,
// which must hash to the head's root.
func loadHead(s Store) (Head, *compact.Range, error) {
	head, err := s.Head()
	if err != nil {
		return head, nil, err
	}
	rng, err := loadRange(s, head.Size)
	if err != nil {
		return head, nil, err
	}
	if head.Size > 0 {
		root, err := rng.GetRootHash(nil)
		if err != nil {
			return head, nil, err
		}
		if string(root) != string(head.Root) {
			return head, nil, fmt.Errorf("ledger: stored tree of size %d does not hash to the stored root", head.Size)
		}
	}
	return head, rng, nil
}

// withEmptyCheckpoint gives the head of an empty log its signed
// checkpoint: a tree of size 0 is never served without one.
func withEmptyCheckpoint(ctx context.Context, cfg Config, head Head) (Head, error) {
	if head.Size > 0 {
		return head, nil
	}
	cp, err := cfg.LogKey.SignCheckpoint(ctx, 0, Hasher.EmptyRoot())
	if err != nil {
		return head, err
	}
	head.Root, head.Checkpoint = Hasher.EmptyRoot(), cp
	return head, nil
}

// start makes this ledger the log's writer from the loaded head and tree
// edge: the stream position moved back if the stream lost its tail
// (rebaseOnStream), and the ledger's consumers (the verifier pool's too)
// delivering from it.
func (l *Ledger) start(ctx context.Context, head Head, rng *compact.Range) error {
	head, err := rebaseOnStream(ctx, l.cfg, l.stream, head)
	if err != nil {
		return err
	}
	if head, err = withEmptyCheckpoint(ctx, l.cfg, head); err != nil {
		return err
	}
	l.mu.Lock()
	l.head, l.rng = head, rng
	l.mu.Unlock()
	if err := l.openConsumer(ctx, head.StreamSeq); err != nil {
		return err
	}
	if l.verdicts != nil {
		return l.openVerifierConsumer(ctx, head.StreamSeq)
	}
	return nil
}

// rebaseOnStream handles an events stream that ends before the last
// sequence the log applied: the broker lost its unsynced tail (power loss)
// or its data was replaced. New messages would reuse sequence numbers the
// log holds as applied and be skipped, so the log's position moves back to
// the stream's end (durably, before any message is consumed). Nothing is
// appended twice: an event the log already holds is recognised by digest
// when its publisher re-sends it from its outbox.
func rebaseOnStream(ctx context.Context, cfg Config, stream jetstream.Stream, head Head) (Head, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return head, fmt.Errorf("ledger: events stream: %w", err)
	}
	last := info.State.LastSeq
	if head.StreamSeq <= last {
		return head, nil
	}
	cfg.Logger.Warn("the events stream ends before the log's position: the broker lost messages the log applied; resuming at the stream's end (re-sent events are recognised by digest)",
		"log_stream_seq", head.StreamSeq, "stream_last_seq", last)
	head.StreamSeq = last
	if err := cfg.Store.Commit(&Commit{Head: head}); err != nil {
		return head, fmt.Errorf("ledger: moving the stream position back to %d: %w", last, err)
	}
	return head, nil
}

// Run consumes events, and answers status requests, until ctx ends.
// Run must not be called twice.
//
// Ingest is a streaming pipeline. A fetcher takes batches from the consumer
// and queues each message to a pool of verifiers, one per core, which run
// the stateless checks (prepare.go); the applier takes the batches in order
// and applies each event, in stream order, as soon as its verification is
// done, then commits the batch. So verification of later events overlaps
// with the rules, the commit and its fsync of earlier ones. At most two
// batches wait between fetcher and applier, so at most four are unacked
// (MaxAckPending). If a batch fails to commit, it and everything fetched
// after it are nak'ed, and the pipeline restarts on a fresh consumer from
// the last committed stream sequence (see openConsumer).
//
// A sequencer candidate (Config.LeaseTTL) does all this only while it
// holds the sequencer lease, and stands by otherwise (lease.go); with a
// verifier pool (Config.VerdictWait) the checks of prepare.go use the
// pool's verdicts where they can (verdict.go).
func (l *Ledger) Run(ctx context.Context) error {
	if l.cfg.LeaseTTL > 0 {
		return l.runCandidate(ctx)
	}
	l.leading.Store(true)
	return l.lead(ctx)
}

// markReady closes Ready, once: when the ledger's services answer, or
// when a sequencer candidate stands by.
func (l *Ledger) markReady() { l.readyOnce.Do(func() { close(l.ready) }) }

// Ready is closed once Run serves: the ledger's services answer, or a
// sequencer candidate stands by.
func (l *Ledger) Ready() <-chan struct{} { return l.ready }

// lead applies events and serves the ledger's NATS services until ctx
// ends.
func (l *Ledger) lead(ctx context.Context) error {
	sub, err := l.cfg.NATS.QueueSubscribe(events.StatusSubject, ConsumerName, l.answerStatus)
	if err != nil {
		return fmt.Errorf("ledger: status service: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	svc, err := l.AddMicroService()
	if err != nil {
		return fmt.Errorf("ledger: query service: %w", err)
	}
	defer func() { _ = svc.Stop() }()
	if l.verdicts != nil {
		vsub, err := l.receiveVerdicts()
		if err != nil {
			return fmt.Errorf("ledger: verdicts: %w", err)
		}
		defer func() { _ = vsub.Unsubscribe() }()
		fsub, err := l.serveFacts()
		if err != nil {
			return fmt.Errorf("ledger: facts service: %w", err)
		}
		defer func() { _ = fsub.Unsubscribe() }()
	}
	_ = l.cfg.NATS.Flush() // the server holds its subscriptions: its services answer
	l.markReady()
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		l.publishCheckpoints(ctx)
	}()
	defer func() { <-pubDone }()
	for ctx.Err() == nil {
		err := l.runPipeline(ctx)
		for err != nil && ctx.Err() == nil {
			l.log.Error("applying a batch failed; resuming after the last commit", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
			err = l.openConsumer(ctx, l.Head().StreamSeq)
		}
	}
	return nil
}

// openConsumer (re)creates the ledger's consumer to deliver the stream from
// the message after seq, the last one the store holds as applied. The
// store's stream sequence, not the consumer's ack state, is the ledger's
// position: a fresh consumer delivers in stream order, whereas redeliveries
// of nak'ed or timed-out messages after a failure may come out of order.
// So the consumer is recreated at start and after every failed commit.
func (l *Ledger) openConsumer(ctx context.Context, seq uint64) error {
	if err := l.stream.DeleteConsumer(ctx, ConsumerName); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("ledger: consumer: %w", err)
	}
	cons, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "The custody ledger: verifies and logs events in stream order",
		AckPolicy:     jetstream.AckAllPolicy, // one ack per committed batch: its last message
		AckWait:       time.Minute,
		MaxAckPending: 4 * l.cfg.BatchSize,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   seq + 1,
	})
	if err != nil {
		return fmt.Errorf("ledger: consumer: %w", err)
	}
	l.cons = cons
	return nil
}

// runPipeline runs the fetcher, the verifiers and the applier until ctx
// ends (nil) or a batch fails to commit (its error, after every fetched
// message was nak'ed).
func (l *Ledger) runPipeline(ctx context.Context) error {
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	jobs := make(chan *prepared, l.cfg.BatchSize)
	batches := make(chan []*prepared, 2)
	var workers sync.WaitGroup
	// While verifiers send verdicts, each event is prepared on a goroutine
	// of its own (at most waiters at once): most of them wait for their
	// verdict, and waiting must not idle a core.
	waiters := make(chan struct{}, 2*l.cfg.BatchSize)
	for range runtime.GOMAXPROCS(0) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for pr := range jobs {
				l.prepare(pr)
				close(pr.done)
			}
		}()
	}
	go func() {
		defer close(batches)
		defer close(jobs)
		for pctx.Err() == nil {
			msgs := l.fetch(pctx)
			if len(msgs) == 0 {
				continue
			}
			prs := make([]*prepared, len(msgs))
			for i, m := range msgs {
				prs[i] = &prepared{msg: m, done: make(chan struct{})}
			}
			for _, pr := range prs {
				if pctx.Err() != nil {
					break // stopped: the applier naks this batch without waiting for it
				}
				if l.verdicts != nil && l.verdicts.live(l.cfg.Now()) {
					waiters <- struct{}{}
					workers.Add(1)
					go func() {
						defer workers.Done()
						l.prepare(pr)
						close(pr.done)
						<-waiters
					}()
					continue
				}
				jobs <- pr // the verifiers drain jobs until it is closed
			}
			// Every fetched batch goes to the applier, which naks it if the
			// pipeline stopped: naks happen in one place, in stream order.
			batches <- prs
		}
	}()
	var failed error
	for prs := range batches {
		if failed != nil || ctx.Err() != nil {
			nakAll(prs)
			continue
		}
		if err := l.apply(ctx, prs); err != nil {
			// Nothing was acked: JetStream redelivers and nothing is lost.
			nakAll(prs)
			failed = err
			stop()
		}
	}
	workers.Wait()
	return failed
}

// fetch takes the next batch of messages (Fetch).
func (l *Ledger) fetch(ctx context.Context) []jetstream.Msg {
	return Fetch(ctx, l.cons, l.cfg.BatchSize, l.log)
}

// Fetch takes the next batch of up to max messages from cons: whatever is
// waiting, without delay; when nothing is, it waits (up to a second) for
// the first message and then takes whatever arrived with it. A lone event
// is thus handled within milliseconds, and a busy stream in full batches.
// The ledger and the verifier pool fetch alike, so that a verifier has an
// event when the ledger does.
func Fetch(ctx context.Context, cons jetstream.Consumer, max int, log *slog.Logger) []jetstream.Msg {
	msgs := pull(ctx, cons, max, 0, log)
	if len(msgs) > 0 || ctx.Err() != nil {
		return msgs
	}
	msgs = pull(ctx, cons, 1, time.Second, log)
	if len(msgs) == 0 {
		return nil
	}
	return append(msgs, pull(ctx, cons, max-1, 0, log)...)
}

// pull fetches up to n messages, waiting up to wait (0: no wait).
func pull(ctx context.Context, cons jetstream.Consumer, n int, wait time.Duration, log *slog.Logger) []jetstream.Msg {
	if n <= 0 {
		return nil
	}
	var batch jetstream.MessageBatch
	var err error
	if wait == 0 {
		batch, err = cons.FetchNoWait(n)
	} else {
		batch, err = cons.Fetch(n, jetstream.FetchMaxWait(wait))
	}
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("fetch failed", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		return nil
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil {
		log.Debug("fetch ended", "err", err)
	}
	return msgs
}

func nakAll(prs []*prepared) {
	for _, pr := range prs {
		_ = pr.msg.Nak()
	}
}

// Head returns the current committed head. A sequencer candidate that
// stands by reads it from the shared Store (at most every 250ms), so that
// its read API answers with the log another candidate writes.
func (l *Ledger) Head() Head {
	if l.cfg.LeaseTTL > 0 && !l.leading.Load() {
		return l.storeHead()
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.head
}

// storeHead is the Store's head, read again once the last read is 250ms
// old; the last head known when the Store cannot be read.
func (l *Ledger) storeHead() Head {
	l.standbyMu.Lock()
	defer l.standbyMu.Unlock()
	if time.Since(l.standbyRead) > 250*time.Millisecond {
		if h, err := l.cfg.Store.Head(); err == nil {
			l.standbyHead, l.standbyRead = h, time.Now()
		}
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.standbyHead.Size < l.head.Size {
		return l.head
	}
	return l.standbyHead
}

// Store returns the ledger's store (read side).
func (l *Ledger) Store() Store { return l.cfg.Store }

// LogKey returns the checkpoint identity.
func (l *Ledger) LogKey() *LogKey { return l.cfg.LogKey }

// answerStatus replies to a status request (body: event digest in hex) with
// the event's receipt, its rejection, or status "unknown".
func (l *Ledger) answerStatus(m *nats.Msg) {
	if !events.IsInbox(m.Reply) {
		return // an answer there would be a write in the ledger's name
	}
	r := &events.Receipt{Status: events.StatusUnknown, Reason: "the request is an event digest: 64 hex digits"}
	if d, err := hex.DecodeString(string(m.Data)); err == nil && len(d) == 32 {
		r = &events.Receipt{Digest: hex.EncodeToString(d), Status: events.StatusUnknown}
		// A partner's own inbox hears only about that partner's events
		// (EventStatusFor); the node's own users (the ledger's, which are
		// no partners) hear about every event.
		status := l.EventStatus
		if owner := events.InboxOwner(m.Reply); owner != "" && l.partnerKey(owner) != nil {
			status = func(d []byte) (*events.Receipt, error) { return l.EventStatusFor(d, owner) }
		}
		if rc, err := status(d); err == nil {
			r = rc
		} else if !errors.Is(err, ErrNotFound) {
			l.log.Warn("status request", "err", err)
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return
	}
	_ = m.Respond(data)
}

// publishCheckpoints publishes the latest checkpoint every
// CheckpointInterval while the log grows, until ctx ends.
func (l *Ledger) publishCheckpoints(ctx context.Context) {
	t := time.NewTicker(l.cfg.CheckpointInterval)
	defer t.Stop()
	var published uint64
	first := true
	for {
		head := l.Head()
		if first || head.Size > published {
			if err := l.PublishCheckpoint(ctx, head); err != nil {
				if ctx.Err() != nil {
					return
				}
				l.log.Warn("publishing checkpoint", "err", err, "size", head.Size)
			} else {
				published, first = head.Size, false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PublishCheckpoint publishes head's signed checkpoint on
// events.CheckpointTopic and as "latest" in CheckpointBucket.
func (l *Ledger) PublishCheckpoint(ctx context.Context, head Head) error {
	if len(head.Checkpoint) == 0 {
		return nil
	}
	if _, err := l.checkpoints.Put(ctx, "latest", head.Checkpoint); err != nil {
		return err
	}
	return l.cfg.NATS.Publish(events.CheckpointTopic, head.Checkpoint)
}
