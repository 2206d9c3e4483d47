package seen

import (
	"crypto/rand"
	"testing"
)

// The filter never forgets a key, as it grows past its first capacity, and
// says "absent" for almost every key it was not given.
func TestSeenFilter(t *testing.T) {
	s := New()
	s.SetReady(true)
	var keys [][]byte
	for range 3 * firstCap {
		k := make([]byte, 33)
		_, _ = rand.Read(k)
		keys = append(keys, k)
		s.Add(k)
	}
	if len(s.filters) < 2 {
		t.Fatalf("%d filters after %d keys: it did not grow", len(s.filters), len(keys))
	}
	for _, k := range keys {
		if s.Absent(k) {
			t.Fatalf("key %x added but said absent", k)
		}
	}
	fp := 0
	const tries = 100_000
	for range tries {
		k := make([]byte, 33)
		_, _ = rand.Read(k)
		if !s.Absent(k) {
			fp++
		}
	}
	if rate := float64(fp) / tries; rate > 0.05 {
		t.Fatalf("false positives %.3f", rate)
	}
	// Not ready: every key may be there.
	s.SetReady(false)
	k := make([]byte, 33)
	_, _ = rand.Read(k)
	if s.Absent(k) {
		t.Fatal("a filter still filling said absent")
	}
}
