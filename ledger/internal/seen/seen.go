// Package seen is the stores' in-memory filter of logged digests and
// event IDs. Every new event costs the ledger two lookups that almost
// always miss: its digest (a re-sent event is answered from the log) and
// its signer's event ID (one event per ID). A Filter answers most misses
// from memory: a Bloom filter over every key its store has logged, filled
// from the store in the background at open and by every commit. "Absent"
// is certain (no lookup); "maybe" goes to the store. Until the store marks
// it ready, everything is "maybe".
//
// The filter grows as the log does: a chain of Bloom filters, each twice
// the capacity of the one before (a scalable Bloom filter), 10 bits and 7
// probes per key, about 1 % false positives; 10M events take about 25 MB.
package seen

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"
)

// bitsPerKey, probes and firstCap size each filter of the chain.
const (
	bitsPerKey = 10
	probes     = 7
	firstCap   = 1 << 16
)

type filterBits struct {
	bits []uint64
	n    int // keys added
	cap  int // keys it was sized for
}

func newFilterBits(capacity int) *filterBits {
	words := (capacity*bitsPerKey + 63) / 64
	return &filterBits{bits: make([]uint64, words), cap: capacity}
}

// probe calls f with each bit position of the key hashed to h1, h2
// (double hashing).
func (b *filterBits) probe(h1, h2 uint64, f func(word int, mask uint64) bool) bool {
	m := uint64(len(b.bits) * 64)
	for i := range uint64(probes) {
		p := (h1 + i*h2) % m
		if !f(int(p/64), 1<<(p%64)) {
			return false
		}
	}
	return true
}

func (b *filterBits) add(h1, h2 uint64) {
	b.probe(h1, h2, func(w int, m uint64) bool { b.bits[w] |= m; return true })
	b.n++
}

func (b *filterBits) has(h1, h2 uint64) bool {
	return b.probe(h1, h2, func(w int, m uint64) bool { return b.bits[w]&m != 0 })
}

// Filter is a store's filter of logged keys. The zero value is not
// usable: make one with New.
type Filter struct {
	mu      sync.RWMutex
	filters []*filterBits
	ready   atomic.Bool
}

// New returns an empty filter, not ready.
func New() *Filter {
	return &Filter{filters: []*filterBits{newFilterBits(firstCap)}}
}

// hashKey is the filter's two hashes of a key.
func hashKey(k []byte) (uint64, uint64) {
	h := sha256.Sum256(k)
	return binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16]) | 1
}

// Add adds a key (a key added in vain, for a commit that failed, is only
// a false positive).
func (f *Filter) Add(k []byte) {
	h1, h2 := hashKey(k)
	f.mu.Lock()
	last := f.filters[len(f.filters)-1]
	if last.n >= last.cap {
		last = newFilterBits(2 * last.cap)
		f.filters = append(f.filters, last)
	}
	last.add(h1, h2)
	f.mu.Unlock()
}

// SetReady marks the filter as holding every key of its store (or, with
// false, as not to be trusted: every answer is "maybe").
func (f *Filter) SetReady(ready bool) { f.ready.Store(ready) }

// Ready reports whether the filter holds every key of its store.
func (f *Filter) Ready() bool { return f.ready.Load() }

// Absent reports whether k is certainly not in the store (false: maybe).
func (f *Filter) Absent(k []byte) bool {
	if !f.ready.Load() {
		return false
	}
	h1, h2 := hashKey(k)
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, b := range f.filters {
		if b.has(h1, h2) {
			return false
		}
	}
	return true
}
