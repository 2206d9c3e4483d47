package station

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/schemas"
)

// Shipments: a station moves a manifest of boxed devices with one signed
// event (docs/design/shipments.md). Nothing contacts the devices: a boxed
// device is not powered. A receiving station quotes a sample of a
// shipment with RecordStage(agent, receiving-inspection) and accepts what
// arrived, all of it or part of it (a split), with AcceptShipment; it sends
// parts on with Ship.

// Ship offers the devices of m, packed as m says, to partner to as
// shipment id: one shipment.offered, signed once. Like Offer, it refuses
// unsigned (a *PendingOfferError) when the manifest's first device has an
// offer from this partner to another recipient pending: the ledger would
// log the shipment as a double sale and flag every device in it (a
// mistyped recipient for a whole pallet). Only the first device is read,
// so that a station reading the ledger over HTTP can ship a pallet without
// a round trip per device; the ledger judges every device.
func (s *Station) Ship(ctx context.Context, id, to string, m *events.Manifest) (*Result, error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("station: manifest: %w", err)
	}
	// A retry to the same recipient goes on: the ledger answers it as the
	// repeat it is (already-exists).
	if _, err := s.ownPendingOffer(m.Items()[0].Device, to); err != nil {
		return nil, err
	}
	return s.EquivocateShipment(ctx, id, to, m)
}

// EquivocateShipment is Ship without the check for a pending offer: a
// shipment of devices pending elsewhere is logged as a double sale and
// flags every device in it. It exists to test the ledger and the gate
// (the simulator's double-sold pallet).
func (s *Station) EquivocateShipment(ctx context.Context, id, to string, m *events.Manifest) (*Result, error) {
	sh := events.Shipment{ID: id, From: s.cfg.Name, To: to}
	return s.signShipment(ctx, events.KindShipmentOffered, sh, m)
}

// ShipmentReader reads a logged shipment offer and its manifest by digest:
// a station accepts or withdraws a whole shipment without being given its
// manifest. ledger.Store is one through ledger.ShipmentOffer (StoreState),
// LedgerClient another.
type ShipmentReader interface {
	ShipmentOffer(digest string) (*ledger.Shipment, error)
}

// StoreState is a ledger.Store read in process as a station's DeviceState
// and ShipmentReader.
type StoreState struct{ ledger.Store }

// ShipmentOffer implements ShipmentReader.
func (s StoreState) ShipmentOffer(digest string) (*ledger.Shipment, error) {
	d, err := hex.DecodeString(digest)
	if err != nil || len(d) != 32 {
		return nil, fmt.Errorf("station: %q is not a digest", digest)
	}
	return ledger.ShipmentOffer(s.Store, d)
}

// wholeShipment is the manifest of shipment offer digest, read from the
// ledger, when the caller gave none; side checks the station's partner
// is the shipment's party that may act.
func (s *Station) wholeShipment(offer string, m *events.Manifest, party func(*events.Shipment) bool) (*events.Manifest, error) {
	if m != nil {
		return m, nil
	}
	r, ok := s.cfg.Ledger.(ShipmentReader)
	if !ok {
		return nil, errors.New("station: give the manifest: this station cannot read shipments from the ledger")
	}
	sh, err := r.ShipmentOffer(offer)
	if err != nil {
		return nil, fmt.Errorf("station: shipment offer %s: %w", offer, err)
	}
	if !party(&sh.Shipment) {
		return nil, fmt.Errorf("station: shipment offer %s is from %s to %s: not %s's to act on", offer, sh.Shipment.From, sh.Shipment.To, s.cfg.Name)
	}
	return sh.Manifest, nil
}

// AcceptShipment takes the devices of m from the pending shipment offer
// whose digest is offer: every device of m must be pending to this
// partner under that offer. m may be part of the offer's manifest (what
// arrived); the rest stays pending. A nil m accepts the whole shipment,
// its manifest read from the ledger.
func (s *Station) AcceptShipment(ctx context.Context, offer string, m *events.Manifest) (*Result, error) {
	m, err := s.wholeShipment(offer, m, func(sh *events.Shipment) bool { return sh.To == s.cfg.Name })
	if err != nil {
		return nil, err
	}
	p, err := s.pendingShipment(offer, m, func(o *ledger.Offer) bool { return o.To == s.cfg.Name })
	if err != nil {
		return nil, err
	}
	sh := events.Shipment{ID: p.Shipment, From: p.From, To: s.cfg.Name, Offer: offer}
	return s.signShipment(ctx, events.KindShipmentAccepted, sh, m)
}

// WithdrawShipment takes back the devices of m still pending under this
// partner's shipment offer (nil m: the whole shipment, its manifest read
// from the ledger).
func (s *Station) WithdrawShipment(ctx context.Context, offer string, m *events.Manifest) (*Result, error) {
	m, err := s.wholeShipment(offer, m, func(sh *events.Shipment) bool { return sh.From == s.cfg.Name })
	if err != nil {
		return nil, err
	}
	p, err := s.pendingShipment(offer, m, func(o *ledger.Offer) bool { return o.From == s.cfg.Name })
	if err != nil {
		return nil, err
	}
	sh := events.Shipment{ID: p.Shipment, From: s.cfg.Name, To: p.To, Offer: offer}
	return s.signShipment(ctx, events.KindShipmentWithdrawn, sh, m)
}

// pendingShipment reads the pending offer of the manifest's first device
// and checks it is the shipment offer named, on this partner's side.
func (s *Station) pendingShipment(offer string, m *events.Manifest, ours func(*ledger.Offer) bool) (*ledger.Offer, error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("station: manifest: %w", err)
	}
	first := m.Items()[0].Device
	state, err := s.cfg.Ledger.Device(first)
	if errors.Is(err, ledger.ErrNotFound) {
		return nil, fmt.Errorf("station: device %s is unknown to the ledger", first)
	}
	if err != nil {
		return nil, fmt.Errorf("station: device %s: %w", first, err)
	}
	p := state.Pending
	if p == nil || p.Digest != offer || p.Shipment == "" || !ours(p) {
		return nil, fmt.Errorf("station: device %s is not pending under shipment offer %s on %s's side", first, offer, s.cfg.Name)
	}
	return p, nil
}

func (s *Station) signShipment(ctx context.Context, kind string, sh events.Shipment, m *events.Manifest) (*Result, error) {
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("station: manifest: %w", err)
	}
	st, err := events.NewShipmentStatement(kind, s.cfg.Name, sh, m, s.cfg.Now(), events.NewEventID())
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	if err := schemas.Validate(payload); err != nil {
		return nil, fmt.Errorf("station: %w", err)
	}
	signed, err := events.SignShipment(ctx, st, m, s.cfg.Key, s.cfg.Name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptTimeout)
	defer cancel()
	r, err := s.pub.Publish(ctx, signed.Wire())
	if err != nil {
		return nil, err
	}
	s.cfg.Logger.Info("shipment answered", "kind", kind, "shipment", sh.ID, "devices", m.Len(), "status", r.Status, "code", r.Code, "index", r.LogIndex)
	res := &Result{Receipt: r}
	if r.Status != events.StatusAccepted {
		return res, &RejectedError{Receipt: r}
	}
	return res, nil
}
