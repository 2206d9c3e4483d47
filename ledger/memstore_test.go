package ledger

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/attest"
	"github.com/custodyledger/custody/events"
)

// memStore is a Store in memory for the ledger's own tests: the same
// contract as ledger/pebble (whole commits, readers never see half of one),
// without durability.
type memStore struct {
	mu         sync.RWMutex
	head       Head
	entries    []*Entry
	byDigest   map[string]uint64
	byEventID  map[string][]byte // partner/event ID → digest
	byLeaf     map[string]uint64
	byDevice   map[string][]uint64
	devices    map[string]*Device
	partners   map[string]*Partner
	rejections map[string]*Rejection
	nodes      map[compact.NodeID][]byte
	proofs     map[string][]byte // device/index → manifest proof
	manifests  map[uint64][]byte
}

func (s *memStore) Manifest(index uint64) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m, ok := s.manifests[index]
	if !ok {
		return nil, ErrNotFound
	}
	return m, nil
}

func proofKey(dev string, idx uint64) string { return dev + "/" + strconv.FormatUint(idx, 10) }

func (s *memStore) ManifestProof(device string, index uint64) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.proofs[proofKey(device, index)]
	if !ok {
		return nil, ErrNotFound
	}
	return p, nil
}

func newMemStore() *memStore {
	return &memStore{
		byDigest: map[string]uint64{}, byEventID: map[string][]byte{}, byLeaf: map[string]uint64{}, byDevice: map[string][]uint64{},
		devices: map[string]*Device{}, partners: map[string]*Partner{}, rejections: map[string]*Rejection{},
		nodes: map[compact.NodeID][]byte{}, proofs: map[string][]byte{}, manifests: map[uint64][]byte{},
	}
}

func (s *memStore) Head() (Head, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.head, nil
}

func (s *memStore) Commit(c *Commit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range c.Entries {
		if e.Index != uint64(len(s.entries)) {
			return errNotAppend
		}
		s.entries = append(s.entries, e)
		s.byLeaf[string(LeafHash(e.Body))] = e.Index
		for _, ev := range e.Events() {
			s.byDigest[string(ev.Digest)] = e.Index
			if ev.EventID != "" {
				s.byEventID[eventIDKey(e.Partner, ev.EventID)] = ev.Digest
			}
		}
		if e.OfDevice() {
			s.byDevice[e.Target] = append(s.byDevice[e.Target], e.Index)
		}
		if e.Manifest != nil {
			s.manifests[e.Index] = e.Manifest
		}
		for dev, proof := range e.Proofs {
			s.byDevice[dev] = append(s.byDevice[dev], e.Index)
			s.proofs[proofKey(dev, e.Index)] = proof
		}
	}
	for id, h := range c.Nodes {
		s.nodes[id] = h
	}
	for _, d := range c.Devices {
		s.devices[d.ID] = d.Clone()
	}
	for _, p := range c.Partners {
		cp := *p
		s.partners[p.Name] = &cp
	}
	for _, r := range c.Rejections {
		cp := *r
		s.rejections[string(r.Digest)] = &cp
	}
	s.head = c.Head
	return nil
}

var errNotAppend = errors.New("memStore: entries must be appended in order")

func (s *memStore) Entry(index uint64) (*Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if index >= uint64(len(s.entries)) {
		return nil, ErrNotFound
	}
	e := *s.entries[index]
	return &e, nil
}

func (s *memStore) lookup(m map[string]uint64, k []byte) (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i, ok := m[string(k)]
	if !ok {
		return 0, ErrNotFound
	}
	return i, nil
}

func (s *memStore) EntryIndexByDigest(d []byte) (uint64, error) { return s.lookup(s.byDigest, d) }
func (s *memStore) EventDigestByID(partner, eventID string) ([]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.byEventID[eventIDKey(partner, eventID)]
	if !ok {
		return nil, ErrNotFound
	}
	return d, nil
}

func (s *memStore) EntryIndexByLeafHash(h []byte) (uint64, error) { return s.lookup(s.byLeaf, h) }

func (s *memStore) DeviceEntries(device string) ([]uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.byDevice[device]), nil
}

func (s *memStore) Device(id string) (*Device, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	d, ok := s.devices[id]
	if !ok {
		return nil, ErrNotFound
	}
	return d.Clone(), nil
}

func (s *memStore) Partner(name string) (*Partner, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p, ok := s.partners[name]
	if !ok {
		return nil, ErrNotFound
	}
	cp := *p
	return &cp, nil
}

func (s *memStore) Rejection(digest []byte) (*Rejection, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.rejections[string(digest)]
	if !ok {
		return nil, ErrNotFound
	}
	cp := *r
	return &cp, nil
}

func (s *memStore) PendingOffers(to string) ([]string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for id, d := range s.devices {
		if d.Pending != nil && d.Pending.To == to {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *memStore) Nodes(ids []compact.NodeID) ([][]byte, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([][]byte, len(ids))
	for i, id := range ids {
		h, ok := s.nodes[id]
		if !ok {
			return nil, ErrNotFound
		}
		out[i] = h
	}
	return out, nil
}

func (s *memStore) Close() error { return nil }

// memMsg is a JetStream message as the ledger's consumer hands it over:
// subject, data and stream sequence.
type memMsg struct {
	jetstream.Msg // not called by the ledger beyond the methods below
	subject       string
	data          []byte
	seq           uint64
}

func (m *memMsg) Subject() string { return m.subject }
func (m *memMsg) Data() []byte    { return m.data }
func (m *memMsg) Ack() error      { return nil }
func (m *memMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}}, nil
}

// memLedger is a ledger on a memStore with no NATS: events go in through
// Feed, in stream order, and come out as the answers publishers would get.
type memLedger struct {
	t        *testing.T
	l        *Ledger
	store    *memStore
	seq      uint64
	mu       sync.Mutex
	answers  map[string]*events.Receipt // by digest (hex)
	subjects map[string]bool            // every subject answered on
}

func newMemLedger(t *testing.T, consortium *x509.Certificate, trust *attest.Bundle) *memLedger {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := NewLogKey("custody.test", key)
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore()
	rng, err := loadRange(store, 0)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(consortium)
	m := &memLedger{t: t, store: store, answers: map[string]*events.Receipt{}, subjects: map[string]bool{}}
	m.l = &Ledger{
		cfg: Config{Store: store, LogKey: logKey, Consortium: consortium, TPMTrust: trust,
			Logger: slog.New(slog.DiscardHandler), Now: time.Now, BatchSize: 256},
		log: slog.New(slog.DiscardHandler), consortium: pool, rng: rng, facts: newFacts(), ready: make(chan struct{}),
	}
	m.l.answer = func(subject string, data []byte) error {
		var r events.Receipt
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		m.answers[subject[strings.LastIndexByte(subject, '.')+1:]] = &r // the event's digest
		m.subjects[subject] = true
		return nil
	}
	return m
}

// Feed applies raw messages (subject, data) as one batch, in order, and
// returns the answer to each (nil where nobody is answered).
func (m *memLedger) Feed(msgs ...[2][]byte) []*events.Receipt {
	m.t.Helper()
	prs := make([]*prepared, len(msgs))
	for i, msg := range msgs {
		m.seq++
		prs[i] = &prepared{msg: &memMsg{subject: string(msg[0]), data: msg[1], seq: m.seq}, done: make(chan struct{})}
		m.l.prepare(prs[i])
		close(prs[i].done)
	}
	if err := m.l.apply(context.Background(), prs); err != nil {
		m.t.Fatal(err)
	}
	out := make([]*events.Receipt, len(msgs))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, pr := range prs {
		d := hex.EncodeToString(pr.signedDigest())
		out[i] = m.answers[d]
	}
	return out
}

// mustOpen returns an envelope's digest (hex).
func mustOpen(t *testing.T, env []byte) string {
	t.Helper()
	s, err := events.Open(env)
	if err != nil {
		t.Fatal(err)
	}
	return s.DigestHex()
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// signedDigest is the event's digest, or the SHA-256 of a malformed
// message's bytes (what its rejection names).
func (pr *prepared) signedDigest() []byte {
	if pr.signed != nil {
		return pr.signed.Digest[:]
	}
	d := sha256.Sum256(pr.data)
	return d[:]
}
