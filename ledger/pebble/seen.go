package pebble

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"

	cpebble "github.com/cockroachdb/pebble/v2"
)

// Every new event costs the ledger two lookups that almost always miss:
// its digest (a re-sent event is answered from the log) and its signer's
// event ID (one event per ID). A miss in Pebble still searches the
// memtables and consults each table's filter, about 6 µs each. seen
// answers most misses from memory instead: a Bloom filter over every
// logged digest and event-ID key, filled from the store in the background
// at Open and by every Commit. "Not in the filter" is certain (no lookup);
// "maybe" goes to Pebble as before. Until the background fill is done,
// everything is "maybe".
//
// The filter grows as the log does: a chain of Bloom filters, each twice
// the capacity of the one before (a scalable Bloom filter), 10 bits and 7
// probes per key, about 1 % false positives; 10M events take about 25 MB.

// seenBitsPerKey and seenProbes size each filter of the chain.
const (
	seenBitsPerKey = 10
	seenProbes     = 7
	seenFirstCap   = 1 << 16
)

type filterBits struct {
	bits []uint64
	n    int // keys added
	cap  int // keys it was sized for
}

func newFilterBits(capacity int) *filterBits {
	words := (capacity*seenBitsPerKey + 63) / 64
	return &filterBits{bits: make([]uint64, words), cap: capacity}
}

// probes calls f with each bit position of the key hashed to h1, h2
// (double hashing).
func (b *filterBits) probes(h1, h2 uint64, f func(word int, mask uint64) bool) bool {
	m := uint64(len(b.bits) * 64)
	for i := range uint64(seenProbes) {
		p := (h1 + i*h2) % m
		if !f(int(p/64), 1<<(p%64)) {
			return false
		}
	}
	return true
}

func (b *filterBits) add(h1, h2 uint64) {
	b.probes(h1, h2, func(w int, m uint64) bool { b.bits[w] |= m; return true })
	b.n++
}

func (b *filterBits) has(h1, h2 uint64) bool {
	return b.probes(h1, h2, func(w int, m uint64) bool { return b.bits[w]&m != 0 })
}

// seen is the store's filter of logged digests and event IDs.
type seen struct {
	mu      sync.RWMutex
	filters []*filterBits
	ready   atomic.Bool
	stop    chan struct{}
	done    chan struct{}
}

// hashKey is the filter's two hashes of a key of the digest or event-ID
// index (the key as the store writes it).
func hashKey(k []byte) (uint64, uint64) {
	h := sha256.Sum256(k)
	return binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16]) | 1
}

func (s *seen) add(k []byte) {
	h1, h2 := hashKey(k)
	s.mu.Lock()
	last := s.filters[len(s.filters)-1]
	if last.n >= last.cap {
		last = newFilterBits(2 * last.cap)
		s.filters = append(s.filters, last)
	}
	last.add(h1, h2)
	s.mu.Unlock()
}

// absent reports whether k is certainly not in the store (false: maybe).
func (s *seen) absent(k []byte) bool {
	if !s.ready.Load() {
		return false
	}
	h1, h2 := hashKey(k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, f := range s.filters {
		if f.has(h1, h2) {
			return false
		}
	}
	return true
}

// startSeen fills the filter from the digest and event-ID indexes in the
// background; Commit adds what it writes meanwhile.
func (s *Store) startSeen() {
	s.seen = &seen{filters: []*filterBits{newFilterBits(seenFirstCap)}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.seen.done)
		for _, prefix := range []byte{'g', 'v'} {
			it, err := s.db.NewIter(&cpebble.IterOptions{LowerBound: []byte{prefix}, UpperBound: []byte{prefix + 1}})
			if err != nil {
				return // stays not ready: every lookup goes to Pebble
			}
			n := 0
			for it.First(); it.Valid(); it.Next() {
				s.seen.add(it.Key())
				if n++; n%4096 == 0 {
					select {
					case <-s.seen.stop:
						_ = it.Close()
						return
					default:
					}
				}
			}
			if err := it.Close(); err != nil {
				return
			}
		}
		s.seen.ready.Store(true)
	}()
}

// stopSeen stops the background fill (at Close).
func (s *Store) stopSeen() {
	close(s.seen.stop)
	<-s.seen.done
}
