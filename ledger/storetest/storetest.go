// Package storetest is the conformance suite of ledger.Store: one set of
// tests that every storage backend of the ledger passes (ledger/pebble,
// ledger/trillian), so that the ledger, its proofs and its Rekor and C2SP
// views read the same answers whichever backend holds the log.
//
// Run exercises the whole contract written in ledger/store.go: the head of
// an empty store; every read method after a commit, and ErrNotFound for
// each kind of miss; entries over several commits, with inclusion and
// consistency proofs from the stored nodes; a station batch's members and
// proofs and a shipment's manifest and proofs; pending offers made,
// replaced and withdrawn; the same state after the store is closed and
// reopened; and readers running alongside commits, which must never see
// half of one.
//
// The commits are built as the ledger builds them (ledger/apply.go): leaf
// bodies are hashedrekord bodies (ledger.HashedRekordBody), nodes are those
// a compact range emits as leaves are appended, and the head carries a
// checkpoint signed with a log key. The suite keeps its own model of what
// was committed and compares every read with it.
package storetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// Opener opens a new, empty store for one test, and returns with it a
// function that opens the same store again after the suite has closed it
// (as a restarted process would). The suite closes the stores it is given;
// the Opener's own t.Cleanup removes whatever else it made.
type Opener func(t *testing.T) (s ledger.Store, reopen func() (ledger.Store, error))

// Run runs the conformance suite against the stores open makes, one fresh
// store per subtest.
func Run(t *testing.T, open Opener) {
	t.Run("Empty", func(t *testing.T) { testEmpty(t, open) })
	t.Run("CommitAndRead", func(t *testing.T) { testCommitAndRead(t, open) })
	t.Run("SeveralCommits", func(t *testing.T) { testSeveralCommits(t, open) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("ConcurrentReaders", func(t *testing.T) { testConcurrentReaders(t, open) })
}

// opened is a store under test with its reopen function; closing it twice
// is harmless.
type opened struct {
	ledger.Store
	reopen func() (ledger.Store, error)
	closed bool
}

func openStore(t *testing.T, open Opener) *opened {
	t.Helper()
	s, reopen := open(t)
	o := &opened{Store: s, reopen: reopen}
	t.Cleanup(func() {
		if !o.closed {
			_ = o.Store.Close()
		}
	})
	return o
}

// restart closes the store and opens it again.
func (o *opened) restart(t *testing.T) {
	t.Helper()
	if err := o.Store.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	o.closed = true
	s, err := o.reopen()
	if err != nil {
		t.Fatalf("reopening the store: %v", err)
	}
	o.Store, o.closed = s, false
}

func testEmpty(t *testing.T, open Opener) {
	s := openStore(t, open)
	h, err := s.Head()
	if err != nil {
		t.Fatalf("Head of an empty store: %v", err)
	}
	if h.Size != 0 || h.Root != nil || h.StreamSeq != 0 || h.Checkpoint != nil {
		t.Fatalf("Head of an empty store is %+v, want the zero Head", h)
	}
	m := newModel(t)
	m.check(t, s)
	if n, err := s.Nodes(nil); err != nil || len(n) != 0 {
		t.Fatalf("Nodes(nil) = %d hashes, %v; want none and no error", len(n), err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s.closed = true
}

// testCommitAndRead commits one group holding every kind of record and
// reads each back.
func testCommitAndRead(t *testing.T, open Opener) {
	s := openStore(t, open)
	m := newModel(t)
	m.commit(t, s, m.story(0))
	m.check(t, s)
	m.checkCopies(t, s)
}

// testSeveralCommits appends over several commits, one of them with no
// entries (only rejections and the stream position), one moving the
// stream position back, and checks the whole store and every proof after
// each.
func testSeveralCommits(t *testing.T, open Opener) {
	s := openStore(t, open)
	m := newModel(t)
	for round := range 4 {
		m.commit(t, s, m.story(round))
		m.check(t, s)
	}
	// Only a rejection and the stream position move.
	g := m.group()
	g.rejections = append(g.rejections, m.rejection("orbit-odm", m.dev(9), nil))
	m.commit(t, s, g)
	m.check(t, s)
	// The stream position moves back (the ledger's rebase on a stream
	// that lost its tail: a commit of the head alone).
	rebased := m.head
	rebased.StreamSeq -= 2
	if err := s.Commit(&ledger.Commit{Head: rebased}); err != nil {
		t.Fatalf("a commit that moves the stream position back: %v", err)
	}
	m.record(&ledger.Commit{Head: rebased})
	m.seq = rebased.StreamSeq
	m.check(t, s)
	// A commit of many entries (several of Trillian's and SQL's batches).
	g = m.group()
	for i := range 300 {
		g.entries = append(g.entries, m.deviceEntry(events.KindStageRecorded, "orbit-odm", m.dev(i%17), fmt.Sprintf("bulk-%d", i)))
	}
	m.commit(t, s, g)
	m.check(t, s)
}

// testReopen checks that a closed and reopened store holds what was
// committed, and that appending goes on after it.
func testReopen(t *testing.T, open Opener) {
	s := openStore(t, open)
	m := newModel(t)
	m.commit(t, s, m.story(0))
	m.commit(t, s, m.story(1))
	s.restart(t)
	m.check(t, s)
	m.commit(t, s, m.story(2))
	m.check(t, s)
	s.restart(t)
	m.check(t, s)
}

// testConcurrentReaders runs readers beside a writer. A reader that reads
// a head must find every entry, digest and node that head covers (the
// commit that wrote the head wrote them, in the same atomic write), and
// the root it rebuilds from the nodes must be the head's root; a reader
// that finds an entry must then read a head that covers it; a device's
// state and its history move together.
func testConcurrentReaders(t *testing.T, open Opener) {
	s := openStore(t, open)
	m := newModel(t)
	m.commit(t, s, m.story(0))
	dev := m.dev(42)
	g := m.group()
	g.entries = append(g.entries, m.deviceEntry(events.KindTPMManufactured, "acme-tpm", dev, "born"))
	d := m.device(dev)
	d.Handoffs = 1
	g.devices = append(g.devices, d)
	m.commit(t, s, g)
	var done atomic.Bool
	var wg sync.WaitGroup
	var reads atomic.Int64
	for r := range 3 {
		wg.Go(func() {
			for !done.Load() {
				if err := readerCheck(s, dev, r); err != nil {
					t.Error(err)
					done.Store(true)
					return
				}
				reads.Add(1)
			}
		})
	}
	const commits = 40
	for n := range commits {
		g := m.group()
		for i := range 1 + n%5 {
			g.entries = append(g.entries, m.deviceEntry(events.KindStageRecorded, "orbit-odm", dev, fmt.Sprintf("c%d-%d", n, i)))
		}
		d := m.device(dev)
		d.Handoffs = len(m.devIdx[dev]) + len(g.entries) // the history's length, committed with it
		g.devices = append(g.devices, d)
		m.commit(t, s, g)
	}
	done.Store(true)
	wg.Wait()
	if reads.Load() == 0 {
		t.Fatal("no reader ran beside the commits")
	}
	m.check(t, s)
}

// readerCheck is one round of a concurrent reader (see
// testConcurrentReaders).
func readerCheck(s ledger.Store, dev string, r int) error {
	h, err := s.Head()
	if err != nil {
		return fmt.Errorf("Head: %w", err)
	}
	if h.Size == 0 {
		return errors.New("a head of size 0 after the first commit")
	}
	e, err := s.Entry(h.Size - 1)
	if err != nil {
		return fmt.Errorf("the head has size %d, but entry %d: %w", h.Size, h.Size-1, err)
	}
	if i, err := s.EntryIndexByDigest(e.Digest); err != nil || i != e.Index {
		return fmt.Errorf("entry %d under a head of size %d: by digest %d, %v", e.Index, h.Size, i, err)
	}
	if i, err := s.EntryIndexByLeafHash(ledger.LeafHash(e.Body)); err != nil || i != e.Index {
		return fmt.Errorf("entry %d under a head of size %d: by leaf hash %d, %v", e.Index, h.Size, i, err)
	}
	root, err := rootFromNodes(s, h.Size)
	if err != nil {
		return fmt.Errorf("the nodes of the tree of size %d: %w", h.Size, err)
	}
	if !bytes.Equal(root, h.Root) {
		return fmt.Errorf("the nodes of the tree of size %d hash to %x, the head's root is %x", h.Size, root, h.Root)
	}
	// An entry seen before the head is read is covered by it.
	probe := h.Size + uint64(r)
	if e, err := s.Entry(probe); err == nil {
		h2, err := s.Head()
		if err != nil {
			return err
		}
		if h2.Size <= e.Index {
			return fmt.Errorf("read entry %d, then a head of size %d", e.Index, h2.Size)
		}
	} else if !errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("entry %d: %w", probe, err)
	}
	// The device's state names the length of its history as committed
	// with it (every commit appends to the history and writes the state):
	// the state read after the head is at least as new as the head, and
	// the history read after the state at least as new as the state.
	d, err := s.Device(dev)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	idx, err := s.DeviceEntries(dev)
	if err != nil {
		return fmt.Errorf("device entries: %w", err)
	}
	below := 0
	for _, i := range idx {
		if i < h.Size {
			below++
		}
	}
	if d.Handoffs < below {
		return fmt.Errorf("read a head of size %d, whose commits gave the device %d entries, then a state of the device committed with %d", h.Size, below, d.Handoffs)
	}
	if len(idx) < d.Handoffs {
		return fmt.Errorf("the device's state was committed with %d entries in its history, then its history read %d", d.Handoffs, len(idx))
	}
	return nil
}

// rootFromNodes rebuilds the root of the tree of size from the store's
// nodes, as the ledger does at start.
func rootFromNodes(s ledger.Store, size uint64) ([]byte, error) {
	ids := compact.RangeNodes(0, size, nil)
	hashes, err := s.Nodes(ids)
	if err != nil {
		return nil, err
	}
	if len(hashes) != len(ids) {
		return nil, fmt.Errorf("asked for %d nodes, got %d", len(ids), len(hashes))
	}
	rng, err := rangeFactory.NewRange(0, size, hashes)
	if err != nil {
		return nil, err
	}
	return rng.GetRootHash(nil)
}

var rangeFactory = compact.RangeFactory{Hash: ledger.Hasher.HashChildren}

// model is what the suite committed: every read is compared with it.
type model struct {
	key  *ledger.LogKey
	cert []byte // a signer certificate (DER) for the leaf bodies
	rng  *compact.Range
	seq  uint64
	n    int // events made, for unique digests and IDs

	head       ledger.Head
	heads      []ledger.Head // every committed head, for consistency proofs
	entries    []*ledger.Entry
	byDigest   map[string]uint64
	byEventID  map[string][]byte
	devIdx     map[string][]uint64
	proofs     map[string][]byte // device/index → proof
	manifests  map[uint64][]byte
	devices    map[string]*ledger.Device
	partners   map[string]*ledger.Partner
	rejections map[string]*ledger.Rejection
	nodes      map[compact.NodeID][]byte
	missDigest [][]byte // digests refused or never logged
}

func newModel(t testing.TB) *model {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lk, err := ledger.NewLogKey("custody.storetest", key)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "orbit-odm", Organization: []string{"Orbit ODM"}},
		NotBefore: time.Unix(1700000000, 0), NotAfter: time.Unix(1900000000, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &model{
		key: lk, cert: cert, rng: rangeFactory.NewEmptyRange(0),
		byDigest: map[string]uint64{}, byEventID: map[string][]byte{}, devIdx: map[string][]uint64{},
		proofs: map[string][]byte{}, manifests: map[uint64][]byte{}, devices: map[string]*ledger.Device{},
		partners: map[string]*ledger.Partner{}, rejections: map[string]*ledger.Rejection{}, nodes: map[compact.NodeID][]byte{},
	}
}

// group is one commit being built.
type group struct {
	entries    []*ledger.Entry
	devices    []*ledger.Device
	partners   []*ledger.Partner
	rejections []*ledger.Rejection
}

func (m *model) group() *group { return &group{} }

// dev is the ID of the suite's device number i.
func (m *model) dev(i int) string {
	d := sha256.Sum256([]byte("storetest device " + strconv.Itoa(i)))
	return hex.EncodeToString(d[:])
}

// digest makes a fresh event digest.
func (m *model) digest() []byte {
	m.n++
	d := sha256.Sum256([]byte("storetest event " + strconv.Itoa(m.n)))
	return d[:]
}

// body is the hashedrekord leaf of an event digest (a signature of the
// usual size; the store does not verify it).
func (m *model) body(t testing.TB, digest []byte) []byte {
	sig := append([]byte{0x30, 0x45, 0x02, 0x20}, digest...)
	sig = append(append(sig, 0x02, 0x21, 0x00), digest...)
	b, err := ledger.HashedRekordBody(digest, sig, m.cert)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// envelope is a DSSE-shaped envelope of about the size of a real one.
func (m *model) envelope(digest []byte, extra string) []byte {
	payload := bytes.Repeat([]byte(hex.EncodeToString(digest)), 24)
	return fmt.Appendf(nil, `{"payloadType":"application/vnd.in-toto+json","payload":"%s","signatures":[{"keyid":"%s","sig":"%x"}]}`, payload, extra, digest)
}

// deviceEntry is a logged device event with an event ID.
func (m *model) deviceEntry(kind, partner, device, eventID string) *ledger.Entry {
	d := m.digest()
	return &ledger.Entry{
		Digest: d, Kind: kind, Partner: partner, Target: device, Status: events.StatusAccepted,
		IntegratedTime: 1700000000 + int64(m.n), EventID: eventID + "-" + strconv.Itoa(m.n),
		Envelope: m.envelope(d, partner),
	}
}

// device is the model's current state of a device, or a new one.
func (m *model) device(id string) *ledger.Device {
	if d, ok := m.devices[id]; ok {
		return d.Clone()
	}
	return &ledger.Device{
		ID: id, Vendor: "acme-tpm", EKCertificate: bytes.Repeat([]byte{0x30, 0x82}, 600), EKPublic: []byte("ek public " + id),
		IAKPublic: []byte("iak public " + id), Custodian: "acme-tpm", Stages: map[string]uint64{},
		ExpectedPCRs: map[string]string{"0": "00", "7": "ab"}, LastQuote: &ledger.QuoteCounters{Clock: 1, ResetCount: 2, RestartCount: 3},
	}
}

func (m *model) rejection(partner, target string, members []events.MemberVerdict) *ledger.Rejection {
	d := m.digest()
	m.missDigest = append(m.missDigest, d)
	return &ledger.Rejection{Digest: d, Code: string(events.CodeNotCustodian), Reason: "orbit-odm is not the custodian of " + target,
		Partner: partner, Target: target, Time: 1700000000 + int64(m.n), Members: members}
}

// story is a commit with every kind of record the ledger writes, varied
// by round: a registry event, device events (one of them evidence, one
// without an event ID, one with an empty envelope), a shipment over
// three devices with its manifest and proofs, a station batch with a new
// member, a member logged before and a refused one, offers made,
// replaced and withdrawn, partners and rejections.
func (m *model) story(round int) *group {
	g := m.group()
	r := strconv.Itoa(round)
	a, b, c := m.dev(3*round), m.dev(3*round+1), m.dev(3*round+2)

	reg := m.deviceEntry(events.KindPartnerRegistered, "consortium", "blue-operator-"+r, "reg")
	g.entries = append(g.entries, reg)
	p := &ledger.Partner{Name: "blue-operator-" + r, Role: "operator", Certificate: m.cert, Operator: "blue", Registered: m.head.Size}
	g.partners = append(g.partners, p)
	if round > 0 { // a partner's state changes: revoked
		old := *m.partners["blue-operator-"+strconv.Itoa(round-1)]
		old.Revoked, old.RevokedIndex = true, m.head.Size
		g.partners = append(g.partners, &old)
	}

	for _, id := range []string{a, b, c} {
		g.entries = append(g.entries, m.deviceEntry(events.KindTPMManufactured, "acme-tpm", id, "born"))
		st := m.deviceEntry(events.KindStageRecorded, "orbit-odm", id, "stage")
		g.entries = append(g.entries, st)
	}
	g.entries[len(g.entries)-1].EventID = "" // as entries logged before the event-ID index
	g.entries[len(g.entries)-2].Envelope = nil
	ev := m.deviceEntry(events.KindHandoffOffered, "orbit-odm", a, "equivocation")
	ev.Status, ev.Code, ev.Reason = events.StatusEvidence, string(events.CodeEquivocation), "a second offer of "+a
	g.entries = append(g.entries, ev)

	// A shipment of a, b, c: its manifest, and each device's proof.
	ship := m.deviceEntry(events.KindShipmentOffered, "orbit-odm", events.ShipmentTarget("s-"+r), "ship")
	ship.Manifest = fmt.Appendf(nil, `{"id":"s-%s","root":"%x","devices":[%q,%q,%q]}`, r, ship.Digest, a, b, c)
	ship.Proofs = map[string][]byte{}
	for i, id := range []string{a, b, c} {
		ship.Proofs[id] = fmt.Appendf(nil, `{"position":%d,"size":3,"path":"pallet-1/carton-%d","hashes":["%x"]}`, i, i, id)
	}
	g.entries = append(g.entries, ship)

	// A station batch: one new member (b), one logged before (the first
	// entry of a), one refused (c).
	batch := m.deviceEntry(events.KindBatchSigned, "orbit-odm", events.BatchTarget("b-"+r), "batch")
	newMember := m.digest()
	refused := m.digest()
	m.missDigest = append(m.missDigest, refused)
	batch.Members = []events.MemberVerdict{
		{Digest: hex.EncodeToString(newMember), Target: b, Kind: events.KindStageRecorded, EventID: "member-" + r, Status: events.StatusAccepted},
		{Digest: hex.EncodeToString(g.entries[1].Digest), Target: a, Kind: events.KindTPMManufactured, Status: events.StatusAccepted, Existing: true, LogIndex: m.head.Size + 1},
		{Digest: hex.EncodeToString(refused), Target: c, Kind: events.KindStageRecorded, EventID: "refused-" + r, Status: events.StatusRejected, Code: string(events.CodeNotCustodian), Reason: "not the custodian"},
	}
	batch.Proofs = map[string][]byte{b: fmt.Appendf(nil, `{"position":0,"size":3,"hashes":[],"payload":"%x"}`, newMember)}
	g.entries = append(g.entries, batch)

	// Device states: a offered to blue, b offered to blue then (next
	// round) re-offered elsewhere, c flagged; the previous round's offers
	// are replaced and withdrawn.
	da, db, dc := m.device(a), m.device(b), m.device(c)
	da.Custodian, da.Pending = "orbit-odm", &ledger.Offer{Digest: hex.EncodeToString(ev.Digest), From: "orbit-odm", To: "blue-operator", Index: m.head.Size}
	db.Custodian, db.Pending = "orbit-odm", &ledger.Offer{Digest: hex.EncodeToString(ship.Digest), From: "orbit-odm", To: "blue-operator", Shipment: "s-" + r}
	dc.Flag = &ledger.DeviceFlag{Reason: "equivocation", By: "orbit-odm", Index: m.head.Size}
	da.Stages["firmware"], da.Handoffs = m.head.Size, 1
	g.devices = append(g.devices, da, db, dc)
	if round > 0 {
		pa, pb := m.device(m.dev(3*(round-1))), m.device(m.dev(3*(round-1)+1))
		pa.Pending = nil                     // withdrawn
		pb.Pending.To = "grey-operator-" + r // replaced: offered to another
		pb.Enrolled = true
		g.devices = append(g.devices, pa, pb)
	}
	g.rejections = append(g.rejections,
		m.rejection("orbit-odm", c, nil),
		m.rejection("orbit-odm", events.BatchTarget("whole-"+r), batch.Members))
	return g
}

// commit builds the group's commit, commits it and records it.
func (m *model) commit(t testing.TB, s ledger.Store, g *group) {
	t.Helper()
	(&Log{m: m}).Commit(t, s, m.build(t, g))
}

// build fills in the group's indices, bodies, nodes and head as the
// ledger does (the tree's right edge moves on: the commit must be
// recorded before the next is built).
func (m *model) build(t testing.TB, g *group) *ledger.Commit {
	t.Helper()
	nodes := map[compact.NodeID][]byte{}
	size := m.head.Size
	for _, e := range g.entries {
		e.Index = size
		e.StreamSeq = m.seq + 1
		if e.Body == nil {
			e.Body = m.body(t, e.Digest)
		}
		if err := m.rng.Append(ledger.LeafHash(e.Body), func(id compact.NodeID, h []byte) { nodes[id] = h }); err != nil {
			t.Fatal(err)
		}
		size++
		m.seq++
	}
	m.seq += 3 // messages refused or answered as duplicates
	head := ledger.Head{Size: size, StreamSeq: m.seq, Root: m.head.Root, Checkpoint: m.head.Checkpoint}
	if len(g.entries) > 0 {
		root, err := m.rng.GetRootHash(nil)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := m.key.SignCheckpoint(context.Background(), size, root)
		if err != nil {
			t.Fatal(err)
		}
		head.Root, head.Checkpoint = root, cp
	}
	return &ledger.Commit{Head: head, Entries: g.entries, Nodes: nodes, Devices: g.devices, Partners: g.partners, Rejections: g.rejections}
}

// record adds a committed commit to the model.
func (m *model) record(c *ledger.Commit) {
	m.head = c.Head
	m.heads = append(m.heads, c.Head)
	for _, e := range c.Entries {
		m.entries = append(m.entries, e)
		for _, ev := range e.Events() {
			m.byDigest[string(ev.Digest)] = e.Index
			if ev.EventID != "" {
				m.byEventID[e.Partner+"/"+ev.EventID] = ev.Digest
			}
		}
		if e.OfDevice() {
			m.devIdx[e.Target] = append(m.devIdx[e.Target], e.Index)
		}
		for dev, p := range e.Proofs {
			m.devIdx[dev] = append(m.devIdx[dev], e.Index)
			m.proofs[dev+"/"+strconv.FormatUint(e.Index, 10)] = p
		}
		if e.Manifest != nil {
			m.manifests[e.Index] = e.Manifest
		}
	}
	for id, h := range c.Nodes {
		m.nodes[id] = h
	}
	for _, d := range c.Devices {
		m.devices[d.ID] = d.Clone()
	}
	for _, p := range c.Partners {
		cp := *p
		m.partners[p.Name] = &cp
	}
	for _, r := range c.Rejections {
		cp := *r
		m.rejections[string(r.Digest)] = &cp
	}
}

// Log is a log built as the ledger builds it, for a backend's own tests
// and benchmarks beyond the suite: Build makes the next commit, Committed
// records it once the store took it, Check compares a store with it.
type Log struct{ m *model }

// NewLog returns an empty log.
func NewLog(t testing.TB) *Log { return &Log{m: newModel(t)} }

// Build returns the next commit: n device events (a birth record and
// stages, about the size of real ones, over n/4+1 devices) with their
// devices' new states and one rejection. Every commit built must be
// recorded with Committed (perhaps after failed attempts to commit it)
// before the next is built.
func (l *Log) Build(t testing.TB, n int) *ledger.Commit {
	t.Helper()
	m := l.m
	g := m.group()
	devs := n/4 + 1
	for i := range n {
		id := m.dev(int(m.head.Size) + i%devs)
		kind := events.KindStageRecorded
		if _, ok := m.devices[id]; !ok && i < devs {
			kind = events.KindTPMManufactured
		}
		g.entries = append(g.entries, m.deviceEntry(kind, "orbit-odm", id, "e"))
	}
	for i := range min(n, devs) {
		d := m.device(m.dev(int(m.head.Size) + i))
		d.Stages["test"] = m.head.Size + uint64(i)
		g.devices = append(g.devices, d)
	}
	g.rejections = append(g.rejections, m.rejection("orbit-odm", m.dev(-2), nil))
	return m.build(t, g)
}

// Committed records c, built by Build, as committed.
func (l *Log) Committed(c *ledger.Commit) { l.m.record(c) }

// Commit commits c, built by Build, to s and records it (the test fails
// if s refuses it).
func (l *Log) Commit(t testing.TB, s ledger.Store, c *ledger.Commit) {
	t.Helper()
	if err := s.Commit(c); err != nil {
		t.Fatalf("Commit of %d entries at size %d: %v", len(c.Entries), l.m.head.Size, err)
	}
	l.m.record(c)
}

// Head is the head of the last commit recorded.
func (l *Log) Head() ledger.Head { return l.m.head }

// Check compares every read of s with the commits recorded.
func (l *Log) Check(t testing.TB, s ledger.Store) {
	t.Helper()
	l.m.check(t, s)
}

// check compares every read of s with the model.
func (m *model) check(t testing.TB, s ledger.Store) {
	t.Helper()
	h, err := s.Head()
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if h.Size != m.head.Size || !bytes.Equal(h.Root, m.head.Root) || h.StreamSeq != m.head.StreamSeq || !bytes.Equal(h.Checkpoint, m.head.Checkpoint) {
		t.Fatalf("Head = size %d root %x seq %d checkpoint %q; committed size %d root %x seq %d checkpoint %q",
			h.Size, h.Root, h.StreamSeq, h.Checkpoint, m.head.Size, m.head.Root, m.head.StreamSeq, m.head.Checkpoint)
	}
	m.checkEntries(t, s)
	m.checkDevices(t, s)
	m.checkRecords(t, s)
	m.checkTree(t, s)
}

func (m *model) checkEntries(t testing.TB, s ledger.Store) {
	t.Helper()
	for _, want := range m.entries {
		got, err := s.Entry(want.Index)
		if err != nil {
			t.Fatalf("Entry(%d): %v", want.Index, err)
		}
		if err := sameEntry(got, want); err != nil {
			t.Fatalf("Entry(%d): %v", want.Index, err)
		}
		if i, err := s.EntryIndexByLeafHash(ledger.LeafHash(want.Body)); err != nil || i != want.Index {
			t.Fatalf("EntryIndexByLeafHash of entry %d = %d, %v", want.Index, i, err)
		}
	}
	for d, want := range m.byDigest {
		if i, err := s.EntryIndexByDigest([]byte(d)); err != nil || i != want {
			t.Fatalf("EntryIndexByDigest(%x) = %d, %v; want %d", d, i, err, want)
		}
	}
	for k, want := range m.byEventID {
		partner, id, _ := strings.Cut(k, "/")
		if d, err := s.EventDigestByID(partner, id); err != nil || !bytes.Equal(d, want) {
			t.Fatalf("EventDigestByID(%s, %s) = %x, %v; want %x", partner, id, d, err, want)
		}
	}
	// Misses.
	size := m.head.Size
	if _, err := s.Entry(size); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Entry(%d) past the head: %v, want ErrNotFound", size, err)
	}
	if _, err := s.Entry(1 << 62); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Entry(2^62): %v, want ErrNotFound", err)
	}
	misses := append(slices.Clone(m.missDigest), bytes.Repeat([]byte{0xee}, 32))
	for _, d := range misses {
		if i, err := s.EntryIndexByDigest(d); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("EntryIndexByDigest of an event never logged (%x) = %d, %v; want ErrNotFound", d, i, err)
		}
	}
	if i, err := s.EntryIndexByLeafHash(bytes.Repeat([]byte{0xee}, 32)); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("EntryIndexByLeafHash of a leaf never logged = %d, %v; want ErrNotFound", i, err)
	}
	for _, e := range m.entries {
		if e.EventID == "" {
			continue
		}
		// The same ID from another signer is another event.
		if d, err := s.EventDigestByID("nova-oem", e.EventID); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("EventDigestByID of %s under another partner = %x, %v; want ErrNotFound", e.EventID, d, err)
		}
		break
	}
	for _, e := range m.entries {
		for _, mv := range e.Members {
			if mv.Logged() {
				continue
			}
			if d, err := s.EventDigestByID(e.Partner, mv.EventID); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("EventDigestByID of a refused member %s = %x, %v; want ErrNotFound", mv.EventID, d, err)
			}
		}
	}
	if d, err := s.EventDigestByID("orbit-odm", "never-used"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("EventDigestByID of an unused ID = %x, %v; want ErrNotFound", d, err)
	}
}

// sameEntry compares what Store.Entry reads back: everything but a
// shipment's manifest and proofs (served by Manifest and ManifestProof).
func sameEntry(got, want *ledger.Entry) error {
	if got == nil {
		return errors.New("nil entry")
	}
	switch {
	case got.Index != want.Index:
		return fmt.Errorf("index %d, want %d", got.Index, want.Index)
	case !bytes.Equal(got.Digest, want.Digest):
		return fmt.Errorf("digest %x, want %x", got.Digest, want.Digest)
	case got.Kind != want.Kind || got.Partner != want.Partner || got.Target != want.Target:
		return fmt.Errorf("kind/partner/target %s/%s/%s, want %s/%s/%s", got.Kind, got.Partner, got.Target, want.Kind, want.Partner, want.Target)
	case got.Status != want.Status || got.Code != want.Code || got.Reason != want.Reason:
		return fmt.Errorf("status %s %s %q, want %s %s %q", got.Status, got.Code, got.Reason, want.Status, want.Code, want.Reason)
	case got.IntegratedTime != want.IntegratedTime || got.StreamSeq != want.StreamSeq:
		return fmt.Errorf("time %d seq %d, want %d %d", got.IntegratedTime, got.StreamSeq, want.IntegratedTime, want.StreamSeq)
	case got.EventID != want.EventID:
		return fmt.Errorf("event ID %q, want %q", got.EventID, want.EventID)
	case !bytes.Equal(got.Body, want.Body):
		return fmt.Errorf("body %q, want %q", got.Body, want.Body)
	case !bytes.Equal(got.Envelope, want.Envelope):
		return fmt.Errorf("envelope %q, want %q", got.Envelope, want.Envelope)
	case len(got.Members) != len(want.Members) || (len(want.Members) > 0 && !reflect.DeepEqual(got.Members, want.Members)):
		return fmt.Errorf("members %+v, want %+v", got.Members, want.Members)
	}
	return nil
}

func (m *model) checkDevices(t testing.TB, s ledger.Store) {
	t.Helper()
	for id, want := range m.devices {
		got, err := s.Device(id)
		if err != nil {
			t.Fatalf("Device(%s): %v", id, err)
		}
		if !reflect.DeepEqual(normDevice(got), normDevice(want)) {
			t.Fatalf("Device(%s) = %+v, want %+v", id, got, want)
		}
	}
	if d, err := s.Device(m.dev(-1)); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Device of a device never seen = %+v, %v; want ErrNotFound", d, err)
	}
	// Histories: every device of the model, and one never seen.
	seen := map[string]bool{}
	for dev, want := range m.devIdx {
		seen[dev] = true
		got, err := s.DeviceEntries(dev)
		if err != nil {
			t.Fatalf("DeviceEntries(%s): %v", dev, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("DeviceEntries(%s) = %v, want %v", dev, got, want)
		}
		for _, i := range want {
			p, ok := m.proofs[dev+"/"+strconv.FormatUint(i, 10)]
			got, err := s.ManifestProof(dev, i)
			switch {
			case ok && (err != nil || !bytes.Equal(got, p)):
				t.Fatalf("ManifestProof(%s, %d) = %q, %v; want %q", dev, i, got, err, p)
			case !ok && !errors.Is(err, ledger.ErrNotFound):
				t.Fatalf("ManifestProof(%s, %d) of the device's own entry = %q, %v; want ErrNotFound", dev, i, got, err)
			}
		}
	}
	for id := range m.devices {
		if !seen[id] {
			t.Fatalf("model: device %s has no history", id)
		}
	}
	if got, err := s.DeviceEntries(m.dev(-1)); err != nil || len(got) != 0 {
		t.Fatalf("DeviceEntries of a device never seen = %v, %v; want none", got, err)
	}
	// Proofs and manifests: a shipment does not hold a device it does not
	// list, and an entry that is no shipment has no manifest.
	for _, e := range m.entries {
		if e.Manifest != nil {
			got, err := s.Manifest(e.Index)
			if err != nil || !bytes.Equal(got, e.Manifest) {
				t.Fatalf("Manifest(%d) = %q, %v; want %q", e.Index, got, err, e.Manifest)
			}
			if p, err := s.ManifestProof(m.dev(-1), e.Index); !errors.Is(err, ledger.ErrNotFound) {
				t.Fatalf("ManifestProof of a device not in shipment %d = %q, %v; want ErrNotFound", e.Index, p, err)
			}
		} else if got, err := s.Manifest(e.Index); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("Manifest(%d) of a %s entry = %q, %v; want ErrNotFound", e.Index, e.Kind, got, err)
		}
	}
	if got, err := s.Manifest(m.head.Size + 5); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Manifest past the head = %q, %v; want ErrNotFound", got, err)
	}
	// Pending offers, by recipient, from the devices' states.
	byTo := map[string][]string{}
	for id, d := range m.devices {
		if d.Pending != nil {
			byTo[d.Pending.To] = append(byTo[d.Pending.To], id)
		}
	}
	byTo["nobody"] = nil
	for to, want := range byTo {
		slices.Sort(want)
		got, err := s.PendingOffers(to)
		if err != nil {
			t.Fatalf("PendingOffers(%s): %v", to, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("PendingOffers(%s) = %v, want %v", to, got, want)
		}
	}
	// A recipient whose name is a prefix of another's is another.
	if got, err := s.PendingOffers("blue"); err != nil || len(got) != 0 {
		t.Fatalf("PendingOffers(blue) = %v, %v; want none (blue-operator is another recipient)", got, err)
	}
}

// normDevice makes empty and nil maps and byte slices compare equal.
func normDevice(d *ledger.Device) *ledger.Device {
	c := d.Clone()
	if len(c.Stages) == 0 {
		c.Stages = nil
	}
	if len(c.ExpectedPCRs) == 0 {
		c.ExpectedPCRs = nil
	}
	for _, b := range []*[]byte{&c.EKCertificate, &c.EKPublic, &c.IAKPublic} {
		if len(*b) == 0 {
			*b = nil
		}
	}
	return c
}

func (m *model) checkRecords(t testing.TB, s ledger.Store) {
	t.Helper()
	for name, want := range m.partners {
		got, err := s.Partner(name)
		if err != nil {
			t.Fatalf("Partner(%s): %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Partner(%s) = %+v, want %+v", name, got, want)
		}
	}
	if p, err := s.Partner("never-registered"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Partner of a partner never registered = %+v, %v; want ErrNotFound", p, err)
	}
	for d, want := range m.rejections {
		got, err := s.Rejection([]byte(d))
		if err != nil {
			t.Fatalf("Rejection(%x): %v", d, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Rejection(%x) = %+v, want %+v", d, got, want)
		}
	}
	for _, e := range m.entries {
		if r, err := s.Rejection(e.Digest); !errors.Is(err, ledger.ErrNotFound) {
			t.Fatalf("Rejection of logged entry %d = %+v, %v; want ErrNotFound", e.Index, r, err)
		}
		break
	}
}

// checkTree reads every node, in a shuffled order, and checks inclusion
// proofs of every entry and consistency proofs between committed heads.
func (m *model) checkTree(t testing.TB, s ledger.Store) {
	t.Helper()
	ids := make([]compact.NodeID, 0, len(m.nodes))
	for id := range m.nodes {
		ids = append(ids, id)
	}
	mrand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	got, err := s.Nodes(ids)
	if err != nil {
		t.Fatalf("Nodes of %d committed nodes: %v", len(ids), err)
	}
	if len(got) != len(ids) {
		t.Fatalf("Nodes of %d nodes returned %d", len(ids), len(got))
	}
	for i, id := range ids {
		if !bytes.Equal(got[i], m.nodes[id]) {
			t.Fatalf("node %+v = %x, want %x", id, got[i], m.nodes[id])
		}
	}
	// The same node twice, in one request.
	if len(ids) > 0 {
		two, err := s.Nodes([]compact.NodeID{ids[0], ids[0]})
		if err != nil || len(two) != 2 || !bytes.Equal(two[0], m.nodes[ids[0]]) || !bytes.Equal(two[1], m.nodes[ids[0]]) {
			t.Fatalf("Nodes of one node twice: %x, %v", two, err)
		}
	}
	missing := []compact.NodeID{compact.NewNodeID(0, m.head.Size), compact.NewNodeID(0, 0)}
	if _, err := s.Nodes(missing); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Nodes with a leaf past the head: %v, want ErrNotFound", err)
	}
	if _, err := s.Nodes([]compact.NodeID{compact.NewNodeID(40, 0)}); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("Nodes of a node of level 40: %v, want ErrNotFound", err)
	}
	if m.head.Size == 0 {
		return
	}
	if root, err := rootFromNodes(s, m.head.Size); err != nil || !bytes.Equal(root, m.head.Root) {
		t.Fatalf("the stored nodes hash to %x, %v; the head's root is %x", root, err, m.head.Root)
	}
	cp, err := ledger.VerifyCheckpoint(m.head.Checkpoint, m.key.Public)
	if err != nil || cp.Size != m.head.Size || !bytes.Equal(cp.Root, m.head.Root) {
		t.Fatalf("the stored checkpoint: %+v, %v", cp, err)
	}
	for _, e := range m.entries {
		p, err := ledger.ProveInclusion(s, e.Index, m.head.Size)
		if err != nil {
			t.Fatalf("inclusion proof of %d in %d: %v", e.Index, m.head.Size, err)
		}
		if err := ledger.VerifyInclusion(e.Body, e.Index, m.head.Size, p, m.head.Root); err != nil {
			t.Fatalf("inclusion proof of %d in %d: %v", e.Index, m.head.Size, err)
		}
	}
	for _, old := range m.heads {
		if old.Size == 0 || old.Size == m.head.Size {
			continue
		}
		p, err := ledger.ProveConsistency(s, old.Size, m.head.Size)
		if err != nil {
			t.Fatalf("consistency proof %d → %d: %v", old.Size, m.head.Size, err)
		}
		if err := ledger.VerifyConsistency(old.Size, m.head.Size, p, old.Root, m.head.Root); err != nil {
			t.Fatalf("consistency proof %d → %d: %v", old.Size, m.head.Size, err)
		}
	}
}

// checkCopies checks that a caller's copy of a device's state is its own.
func (m *model) checkCopies(t *testing.T, s ledger.Store) {
	t.Helper()
	for id, want := range m.devices {
		got, err := s.Device(id)
		if err != nil {
			t.Fatal(err)
		}
		if got.Stages != nil {
			got.Stages["tampered"] = 1
		}
		if len(got.EKCertificate) > 0 {
			got.EKCertificate[0] ^= 0xff
		}
		if got.LastQuote != nil {
			got.LastQuote.Clock = 1 << 40
		}
		got.Custodian = "grey-market"
		again, err := s.Device(id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(normDevice(again), normDevice(want)) {
			t.Fatalf("a caller's change to its copy of device %s reached the store: %+v", id, again)
		}
	}
}
