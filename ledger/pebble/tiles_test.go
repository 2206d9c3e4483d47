package pebble

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	cpebble "github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/ledger"
)

// treeBuilder appends leaves and remembers every node the tree has.
type treeBuilder struct {
	rng  *compact.Range
	all  map[compact.NodeID][]byte
	size uint64
}

func newTreeBuilder() *treeBuilder {
	rf := compact.RangeFactory{Hash: ledger.Hasher.HashChildren}
	return &treeBuilder{rng: rf.NewEmptyRange(0), all: map[compact.NodeID][]byte{}}
}

// appendLeaves appends n leaves and returns the nodes they create.
func (tb *treeBuilder) appendLeaves(t *testing.T, n uint64) map[compact.NodeID][]byte {
	t.Helper()
	nodes := map[compact.NodeID][]byte{}
	var leaf [8]byte
	for range n {
		binary.BigEndian.PutUint64(leaf[:], tb.size)
		tb.size++
		if err := tb.rng.Append(ledger.LeafHash(leaf[:]), func(id compact.NodeID, h []byte) { nodes[id] = h; tb.all[id] = h }); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

func (tb *treeBuilder) commit(t *testing.T, s *Store, n uint64) {
	t.Helper()
	nodes := tb.appendLeaves(t, n)
	root, _ := tb.rng.GetRootHash(nil)
	if err := s.Commit(&ledger.Commit{Head: ledger.Head{Size: tb.size, Root: root}, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
}

// check reads every node of the tree back, all at once and one by one.
func (tb *treeBuilder) check(t *testing.T, s *Store) {
	t.Helper()
	var ids []compact.NodeID
	for id := range tb.all {
		ids = append(ids, id)
	}
	got, err := s.Nodes(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if !bytes.Equal(got[i], tb.all[id]) {
			t.Fatalf("node %+v: %x, want %x", id, got[i], tb.all[id])
		}
	}
	for _, id := range ids[:min(len(ids), 300)] {
		h, err := s.Nodes([]compact.NodeID{id})
		if err != nil || !bytes.Equal(h[0], tb.all[id]) {
			t.Fatalf("node %+v alone: %x %v", id, h, err)
		}
	}
	for _, i := range []uint64{0, 1, 255, 256, 700, tb.size - 1} {
		if i >= tb.size {
			continue
		}
		p, err := ledger.ProveInclusion(s, i, tb.size)
		if err != nil {
			t.Fatal(err)
		}
		var leaf [8]byte
		binary.BigEndian.PutUint64(leaf[:], i)
		root, _ := tb.rng.GetRootHash(nil)
		if err := ledger.VerifyInclusion(leaf[:], i, tb.size, p, root); err != nil {
			t.Fatalf("leaf %d: %v", i, err)
		}
	}
}

// lowNodeKeys counts the node keys of levels below tileLevels.
func lowNodeKeys(t *testing.T, s *Store) int {
	t.Helper()
	it, err := s.db.NewIter(&cpebble.IterOptions{LowerBound: []byte{'n', 0}, UpperBound: []byte{'n', 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer it.Close()
	n := 0
	for it.First(); it.Valid(); it.Next() {
		if it.Key()[10] < tileLevels {
			n++
		}
	}
	return n
}

// hasTile says whether tile r has a value.
func hasTile(t *testing.T, s *Store, r tileRef) bool {
	t.Helper()
	_, closer, err := s.db.Get(tileKey(r))
	switch {
	case err == nil:
		closer.Close()
		return true
	case !errors.Is(err, cpebble.ErrNotFound):
		t.Fatal(err)
	}
	return false
}

// TestTileSlots: every node of a tile has its own slot, and back.
func TestTileSlots(t *testing.T) {
	seen := map[tileRef]map[int]bool{}
	for level := range uint(tileLevels) {
		for i := range uint64(3*256) >> level {
			id := compact.NewNodeID(level, i)
			r, slot := tileOf(id)
			if slot < 0 || slot >= tileNodes || seen[r][slot] {
				t.Fatalf("node %+v: tile %+v slot %d", id, r, slot)
			}
			if seen[r] == nil {
				seen[r] = map[int]bool{}
			}
			seen[r][slot] = true
			if back := tileNodeID(r, slot); back != id {
				t.Fatalf("node %+v: tile %+v slot %d is node %+v", id, r, slot, back)
			}
		}
	}
}

// TestTiles appends a tree in commits of many sizes (beginning, extending
// and completing tiles within one commit and across several) and reads
// every node back, before and after reopening: the nodes below level
// tileLevels are all in tile values.
func TestTiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tb := newTreeBuilder()
	for _, n := range []uint64{1, 1, 7, 100, 300, 3, 600, 1, 256, 77} {
		tb.commit(t, s, n)
		tb.check(t, s)
	}
	if n := lowNodeKeys(t, s); n != 0 {
		t.Fatalf("%d node keys below level %d", n, tileLevels)
	}
	if !hasTile(t, s, tileRef{0, (tb.size - 1) / 16}) || !hasTile(t, s, tileRef{1, 0}) || !hasTile(t, s, tileRef{1, (tb.size - 1) / 256}) {
		t.Fatal("tiles missing")
	}
	s = reopen(t, s, dir)
	defer s.Close()
	tb.check(t, s)
	tb.commit(t, s, 500)
	tb.check(t, s)
}

// TestTilesOldLayout opens a store written before tile values (a node key
// for every node), reads it, and goes on appending to it: the tiles open at
// the upgrade finish as node keys, the later ones are tile values.
func TestTilesOldLayout(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tb := newTreeBuilder()
	for _, n := range []uint64{100, 200, 300} { // 600 leaves, as the old Commit wrote their nodes
		nodes := tb.appendLeaves(t, n)
		b := s.db.NewBatch()
		for id, h := range nodes {
			if err := b.Set(nodeKey(id), h, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Commit(cpebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
	s = reopen(t, s, dir)
	defer s.Close()
	tb.check(t, s)
	old := lowNodeKeys(t, s)
	tb.commit(t, s, 5)
	tb.commit(t, s, 400)
	tb.check(t, s)
	// Leaf 600 is in band-0 tile 37 (begun at leaf 592) and band-1 tile 2
	// (begun at leaf 512): both finish as node keys; the tiles after them
	// are values.
	for r, want := range map[tileRef]bool{{0, 36}: false, {0, 37}: false, {0, 38}: true, {1, 2}: false, {1, 3}: true} {
		if hasTile(t, s, r) != want {
			t.Fatalf("tile %+v: value %v", r, !want)
		}
	}
	if n := lowNodeKeys(t, s); n <= old {
		t.Fatalf("%d node keys after the upgrade, %d before", n, old)
	}
}

// TestTilesNotAppend commits a tile's nodes with one missing (not an
// append): the nodes given are kept as node keys.
func TestTilesNotAppend(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tb := newTreeBuilder()
	nodes := tb.appendLeaves(t, 256)
	delete(nodes, compact.NewNodeID(0, 17))
	if err := s.Commit(&ledger.Commit{Head: ledger.Head{Size: 256}, Nodes: nodes}); err != nil {
		t.Fatal(err)
	}
	if hasTile(t, s, tileRef{0, 1}) || !hasTile(t, s, tileRef{0, 2}) {
		t.Fatal("tile 1 is a value, or tile 2 is not")
	}
	if _, err := s.Nodes([]compact.NodeID{compact.NewNodeID(0, 17)}); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("the missing node: %v", err)
	}
	ids := []compact.NodeID{compact.NewNodeID(0, 16), compact.NewNodeID(1, 8), compact.NewNodeID(8, 0), compact.NewNodeID(0, 40)}
	got, err := s.Nodes(ids)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if !bytes.Equal(got[i], tb.all[id]) {
			t.Fatalf("node %+v: %x", id, got[i])
		}
	}
}

// TestTileCorrupt: a tile value of another format is an error, not a
// wrong hash.
func TestTileCorrupt(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, v := range [][]byte{{2, 1, 2, 3}, {}, {1, 2, 0}} {
		if err := s.db.Set(tileKey(tileRef{0, 3}), v, cpebble.Sync); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Nodes([]compact.NodeID{compact.NewNodeID(2, 3*4+1)}); err == nil {
			t.Fatalf("tile %x was read", v)
		}
	}
}
