package pebble_test

import (
	"testing"

	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/ledger/pebble"
	"github.com/custodyledger/custody/ledger/storetest"
)

// TestConformance runs the ledger.Store conformance suite on Pebble.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (ledger.Store, func() (ledger.Store, error)) {
		dir := t.TempDir()
		s, err := pebble.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return s, func() (ledger.Store, error) { return pebble.Open(dir) }
	})
}
