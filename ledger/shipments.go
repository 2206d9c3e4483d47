package ledger

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/custodyledger/custody/events"
)

// Shipment is a logged shipment offer and its manifest.
type Shipment struct {
	Index    uint64           `json:"logIndex"`
	Digest   string           `json:"digest"`
	Shipment events.Shipment  `json:"shipment"`
	Manifest *events.Manifest `json:"manifest"`
}

// ShipmentOffer reads a logged shipment.offered by its digest from a
// store: its entry's statement and its manifest (ErrNotFound for a digest
// that is not a logged shipment offer). It checks nothing about who asks:
// ShipmentFor does, and a station reads its own store through it.
func ShipmentOffer(s Store, digest []byte) (*Shipment, error) {
	idx, err := s.EntryIndexByDigest(digest)
	if err != nil {
		return nil, err
	}
	e, err := s.Entry(idx)
	if err != nil {
		return nil, err
	}
	if e.Kind != events.KindShipmentOffered {
		return nil, ErrNotFound
	}
	signed, err := events.Open(e.Envelope)
	if err != nil {
		return nil, fmt.Errorf("ledger: the logged shipment %d: %w", idx, err)
	}
	raw, err := s.Manifest(idx)
	if err != nil {
		return nil, err
	}
	var m events.Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("ledger: the manifest of shipment %d: %w", idx, err)
	}
	return &Shipment{Index: idx, Digest: e.DigestHex(), Shipment: *signed.Statement.Predicate.Shipment, Manifest: &m}, nil
}

// ShipmentFor is ShipmentOffer as reader may see it: only the shipment's
// sender and its recipient read its manifest (the list of the devices on a
// pallet is theirs); ErrForbidden for anyone else, ErrUnauthenticated for
// the anonymous reader. A digest that is not a logged shipment offer
// answers ErrForbidden too, so that a stranger learns nothing of what the
// log holds.
func (l *Ledger) ShipmentFor(digest []byte, reader string) (*Shipment, error) {
	if reader == "" {
		return nil, ErrUnauthenticated
	}
	sh, err := ShipmentOffer(l.cfg.Store, digest)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrForbidden
	}
	if err != nil {
		return nil, err
	}
	if reader != sh.Shipment.From && reader != sh.Shipment.To {
		return nil, ErrForbidden
	}
	if sh.Index >= l.Head().Size {
		return nil, ErrForbidden // committed a moment ago: not in the served tree yet
	}
	return sh, nil
}
