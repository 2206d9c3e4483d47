package pebble

// Tree node storage: small tiles for the lowest levels, node keys above.
//
// The nodes of levels 0..7 are stored in tiles of tileH levels: the tile
// (band b, index t) holds, for the 16 nodes of level 4b under node
// (4b+4, t), those nodes and the nodes above them up to level 4b+3, 30
// hashes (960 bytes) when complete. A tile is one Pebble value under
// tileKey, written by every commit that adds nodes to it (only the tree's
// right edge has an open tile in each band: a commit rewrites at most two
// values of under 1 KiB beside the tiles it completes). Nodes of level 8 and
// above keep one key each (nodeKey) and are all held in memory (see upper).
//
// Band-1 tiles (levels 4..7, about 4 bytes a leaf: 40 MB for 10M leaves)
// are also all held in memory, loaded at Open (loadBand1) and kept by
// Commit (keepNodes), as the nodes above them are. So an inclusion proof
// reads one small value, its band-0 tile, whatever the tree's size, rather
// than eight seeks that each touch every level of the LSM; a device's
// provenance reads one band-0 tile per entry.
//
// Compatibility: a store written before tiles (2026-12) has a node key for
// every node, and no 't' keys. It stays readable as it is: a node missing
// from its tile (no tile value) is read from its node key, as before (one
// more Get, which the bloom filters answer). Its nodes stay in that layout;
// the tiles begun after the upgrade are tile values (the tiles open at the
// upgrade finish as node keys). A commit whose nodes are not an append to
// a tile (no store Commit does that) also writes node keys. There is no
// way back: a binary from before tiles does not read tile values and
// answers proofs with "tree node not found".

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	cpebble "github.com/cockroachdb/pebble/v2"
	"github.com/transparency-dev/merkle/compact"

	"github.com/custodyledger/custody/ledger"
)

const (
	tileH      = 4                // levels per tile
	tileBase   = 1 << tileH       // nodes of a tile's lowest level
	tileNodes  = 2*tileBase - 2   // nodes in a complete tile
	tileLevels = 2 * tileH        // levels stored in tiles: 0..tileLevels-1
	tileV1     = 1                // format byte of a tile value
	tileMaxLen = 2 + tileNodes*32 // a complete tile's value
)

// Tiles hold exactly the levels below upperLevel (compile-time checks).
var (
	_ [tileLevels - upperLevel]struct{}
	_ [upperLevel - tileLevels]struct{}
)

// tileRef names a tile.
type tileRef struct {
	band uint8
	t    uint64
}

// tileKey is t <band:1><tile:8>.
func tileKey(r tileRef) []byte { return u64([]byte{'t', r.band}, r.t) }

// tileOf is the tile holding a node of level below tileLevels, and the
// node's slot in it: level by level from the tile's lowest, each level
// left to right.
func tileOf(id compact.NodeID) (tileRef, int) {
	band := id.Level / tileH
	j := id.Level % tileH
	shift := tileH - j
	t := id.Index >> shift
	return tileRef{uint8(band), t}, 2*tileBase - 2*tileBase>>j + int(id.Index-t<<shift)
}

// tileNodeID is the node in slot of tile r.
func tileNodeID(r tileRef, slot int) compact.NodeID {
	j := uint(0)
	for slot >= tileBase>>j {
		slot -= tileBase >> j
		j++
	}
	return compact.NewNodeID(uint(r.band)*tileH+j, r.t<<(tileH-j)+uint64(slot))
}

// A tile value is: format byte tileV1, k (the nodes of the tile's lowest
// level it has, 1..tileBase, from the left), then the hashes of each level
// from the lowest, k>>j of level j: the nodes an append has made.
func encodeTile(h *[tileNodes][]byte, k int) []byte {
	v := make([]byte, 2, tileMaxLen)
	v[0], v[1] = tileV1, byte(k)
	for j := range tileH {
		off := 2*tileBase - 2*tileBase>>j
		for i := range k >> j {
			v = append(v, h[off+i]...)
		}
	}
	return v
}

// decodeTile fills h with the hashes of value v (slices of v).
func decodeTile(v []byte, h *[tileNodes][]byte) error {
	if len(v) < 2 || v[0] != tileV1 || v[1] == 0 || v[1] > tileBase {
		return fmt.Errorf("pebble store: a tree tile not of format %d, the one this version reads", tileV1)
	}
	k := int(v[1])
	n := 0
	for j := range tileH {
		n += k >> j
	}
	if len(v) != 2+32*n {
		return fmt.Errorf("pebble store: a tree tile of %d bytes for %d nodes", len(v), n)
	}
	v = v[2:]
	for j := range tileH {
		off := 2*tileBase - 2*tileBase>>j
		for i := range k >> j {
			h[off+i], v = v[:32:32], v[32:]
		}
	}
	return nil
}

// appendOf is the k for which the nodes in h are exactly those an append
// of k nodes of the tile's lowest level makes, or 0.
func appendOf(h *[tileNodes][]byte) int {
	k := 0
	for k < tileBase && h[k] != nil {
		k++
	}
	for j := range tileH {
		off := 2*tileBase - 2*tileBase>>j
		for i := range tileBase >> j {
			if (h[off+i] != nil) != (i < k>>j) || (h[off+i] != nil && len(h[off+i]) != 32) {
				return 0
			}
		}
	}
	return k
}

// putNodes adds a commit's new tree nodes to b: the nodes of levels below
// tileLevels into their tiles, the others (and any a tile cannot take) as
// node keys.
// It returns the band-1 tile values written, for keepNodes.
func (s *Store) putNodes(b *cpebble.Batch, nodes map[compact.NodeID][]byte) (map[uint64][]byte, error) {
	tiles := map[tileRef]*[tileNodes][]byte{}
	for id, h := range nodes {
		if id.Level >= tileLevels {
			if err := b.Set(nodeKey(id), h, nil); err != nil {
				return nil, err
			}
			continue
		}
		r, slot := tileOf(id)
		th := tiles[r]
		if th == nil {
			th = new([tileNodes][]byte)
			tiles[r] = th
		}
		th[slot] = h
	}
	band1 := map[uint64][]byte{}
	for r, th := range tiles {
		v, err := s.putTile(b, r, th)
		if err != nil {
			return nil, err
		}
		if r.band == 1 && v != nil {
			band1[r.t] = v
		}
	}
	return band1, nil
}

// keepNodes keeps in memory what a commit wrote of the tree's upper part:
// its nodes of level upperLevel and above, and its band-1 tiles.
func (s *Store) keepNodes(nodes map[compact.NodeID][]byte, band1 map[uint64][]byte) {
	s.upperMu.Lock()
	defer s.upperMu.Unlock()
	for id, h := range nodes {
		if id.Level >= upperLevel {
			s.upper[id] = h
		}
	}
	for t, v := range band1 {
		s.band1[t] = v
	}
}

// loadBand1 reads every band-1 tile into memory.
func (s *Store) loadBand1() error {
	it, err := s.db.NewIter(&cpebble.IterOptions{LowerBound: []byte{'t', 1}, UpperBound: []byte{'t', 2}})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		k := it.Key()
		if len(k) != 1+1+8 {
			return fmt.Errorf("tree tile key of %d bytes", len(k))
		}
		s.band1[binary.BigEndian.Uint64(k[2:])] = bytes.Clone(it.Value())
	}
	return it.Error()
}

// storedTile is tile r's value, from memory for band 1 (nil for none);
// release must be called when done with it.
func (s *Store) storedTile(r tileRef) (v []byte, release func(), err error) {
	if r.band == 1 {
		s.upperMu.RLock()
		v = s.band1[r.t]
		s.upperMu.RUnlock()
		return v, func() {}, nil
	}
	return s.diskTile(r)
}

// diskTile is tile r's value as stored (nil for none); release must be
// called when done with it.
func (s *Store) diskTile(r tileRef) (v []byte, release func(), err error) {
	v, closer, err := s.db.Get(tileKey(r))
	if errors.Is(err, cpebble.ErrNotFound) {
		return nil, func() {}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	return v, func() { closer.Close() }, nil
}

// putTile writes tile r with the new nodes in th: added to the tile's
// stored value when they extend it (the commit does not begin the tile),
// as node keys when they do not make an append.
// It returns the tile's new value, or nil.
func (s *Store) putTile(b *cpebble.Batch, r tileRef, th *[tileNodes][]byte) ([]byte, error) {
	all := *th
	if th[0] == nil { // the tile was begun by an earlier commit
		v, release, err := s.storedTile(r)
		if err != nil {
			return nil, err
		}
		if v != nil {
			var old [tileNodes][]byte
			err = decodeTile(v, &old)
			for i, h := range old {
				if all[i] == nil && h != nil {
					all[i] = bytes.Clone(h)
				}
			}
		}
		release()
		if err != nil {
			return nil, err
		}
	}
	if k := appendOf(&all); k > 0 {
		v := encodeTile(&all, k)
		return v, b.Set(tileKey(r), v, nil)
	}
	for slot, h := range th {
		if h != nil {
			if err := b.Set(nodeKey(tileNodeID(r, slot)), h, nil); err != nil {
				return nil, err
			}
		}
	}
	return nil, nil
}

// Nodes implements ledger.Store: nodes of level upperLevel and above from
// memory, the others from their tiles (one Get per tile, however many of
// its nodes are asked), else from their node keys (stores written before
// tiles) with one iterator.
func (s *Store) Nodes(ids []compact.NodeID) ([][]byte, error) {
	out := make([][]byte, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	buf := make([]byte, 32*len(ids))
	type want struct {
		r    tileRef
		slot int
		at   int
	}
	var low []want
	var rest []int // read from node keys
	s.upperMu.RLock()
	for i, id := range ids {
		if id.Level >= tileLevels {
			if h, ok := s.upper[id]; ok {
				out[i] = h
			} else {
				rest = append(rest, i)
			}
			continue
		}
		r, slot := tileOf(id)
		low = append(low, want{r, slot, i})
	}
	s.upperMu.RUnlock()
	// By tile, in key order: one Get per tile.
	slices.SortFunc(low, func(a, b want) int {
		return cmp.Or(cmp.Compare(a.r.band, b.r.band), cmp.Compare(a.r.t, b.r.t))
	})
	for j := 0; j < len(low); {
		r := low[j].r
		end := j + 1
		for end < len(low) && low[end].r == r {
			end++
		}
		v, release, err := s.storedTile(r)
		if err != nil {
			return nil, err
		}
		var th [tileNodes][]byte
		if v != nil {
			if err := decodeTile(v, &th); err != nil {
				release()
				return nil, fmt.Errorf("tree tile (band %d, index %d): %w", r.band, r.t, err)
			}
		}
		if r.band == 1 && slices.ContainsFunc(low[j:end], func(w want) bool { return th[w.slot] == nil }) {
			// A commit is between its batch and keepNodes: the head a
			// reader saw may cover nodes the tile in memory lacks, and
			// they are on disk.
			release()
			if v, release, err = s.diskTile(r); err != nil {
				return nil, err
			}
			th = [tileNodes][]byte{}
			if v != nil {
				if err := decodeTile(v, &th); err != nil {
					release()
					return nil, fmt.Errorf("tree tile (band %d, index %d): %w", r.band, r.t, err)
				}
			}
		}
		for _, w := range low[j:end] {
			if th[w.slot] == nil {
				rest = append(rest, w.at)
				continue
			}
			h := buf[32*w.at : 32*w.at+32 : 32*w.at+32]
			copy(h, th[w.slot])
			out[w.at] = h
		}
		release()
		j = end
	}
	if len(rest) == 0 {
		return out, nil
	}
	it, err := s.db.NewIter(&cpebble.IterOptions{LowerBound: []byte{'n'}, UpperBound: []byte{'n' + 1}})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for _, i := range rest {
		id := ids[i]
		k := nodeKey(id)
		if !it.SeekGE(k) || !bytes.Equal(it.Key(), k) {
			if err := it.Error(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("tree node (level %d, index %d): %w", id.Level, id.Index, ledger.ErrNotFound)
		}
		out[i] = bytes.Clone(it.Value())
		if id.Level >= upperLevel { // perfect-subtree nodes never change
			s.upperMu.Lock()
			s.upper[id] = out[i]
			s.upperMu.Unlock()
		}
	}
	return out, it.Error()
}
