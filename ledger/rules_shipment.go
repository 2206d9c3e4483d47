package ledger

import (
	"fmt"

	"github.com/custodyledger/custody/events"
)

// Shipments (docs/design/shipments.md). A shipment event moves every
// device of its manifest under one signature. The custody rules are the
// single-device hand-off rules, applied to each device in the manifest
// (shipmentView maps the shipment to the hand-off each device sees), so
// ingest and offline replay judge a device's part of a shipment with the
// same deviceRule. The shipment's verdict combines its devices':
//
//   - any device refused (unknown, not held by the sender, decommissioned,
//     not pending to this recipient, …): the whole shipment is refused,
//     naming the first such device and how many there are; nothing moves;
//   - else any device with a pending offer to another recipient: a
//     double-sold pallet. The shipment is logged as evidence
//     (equivocation) and every device in it is flagged;
//   - else every device a repeat (already-exists): a retry, refused as such;
//     some repeats among new ones are refused too (send the rest alone);
//   - else every device moves.

// shipmentView is the hand-off one device of a shipment sees: the same
// parties, the same offer, the kind's hand-off counterpart.
func shipmentView(p *events.Predicate) *events.Predicate {
	v := *p
	sh := p.Shipment
	switch p.Kind {
	case events.KindShipmentOffered:
		v.Kind = events.KindHandoffOffered
	case events.KindShipmentAccepted:
		v.Kind = events.KindHandoffAccepted
	case events.KindShipmentWithdrawn:
		v.Kind = events.KindHandoffWithdrawn
	}
	v.Handoff = &events.Handoff{From: sh.From, To: sh.To, Offer: sh.Offer}
	v.Shipment = nil
	v.Evidence = nil
	return &v
}

// shipmentDeviceRule is the rule of one device of a shipment: deviceRule
// over the device's hand-off view, without a quote (the policy gives
// shipments none). It returns the device's next state on success.
func shipmentDeviceRule(p *events.Predicate, digest string, signer *Partner, dev *Device, partners partnerLookup) (*ruling, *RuleError) {
	view := shipmentView(p)
	r, rerr := deviceRuleAs(p.Kind, view, digest, signer, dev, nil, nil, partners)
	if rerr != nil || r.logged != nil {
		return r, rerr
	}
	next := r.next
	r.next = func(idx uint64) *Device {
		d := next(idx)
		if d.Pending != nil && p.Kind == events.KindShipmentOffered {
			d.Pending.Shipment = p.Shipment.ID
		}
		return d
	}
	return r, nil
}

// shipmentFlag is a device's state after a double-sold shipment holding it
// is logged at idx: flagged for equivocation, nothing else changed.
func shipmentFlag(dev *Device, by string, idx uint64) *Device {
	next := dev.Clone()
	next.Flag = &DeviceFlag{Reason: "equivocation", By: by, Index: idx}
	return next
}

// shipment applies the custody rules to every device of a shipment, in
// manifest order, against the batch's state (see above).
func (b *batch) shipment(pr *prepared, signer *Partner, v *verdict) (*verdict, error) {
	s := pr.signed
	p := &s.Statement.Predicate
	sh := p.Shipment
	if pr.nonceErr != nil {
		return nil, pr.nonceErr
	}
	if pr.proofs == nil {
		// The verifiers did not build the proofs (the signature was checked
		// against a certificate the sequential state does not hold).
		var rerr *RuleError
		if pr.manifest, pr.proofs, rerr = encodeManifest(s.Manifest); rerr != nil {
			return nil, rerr
		}
	}
	if sh.From != p.Partner && p.Kind != events.KindShipmentAccepted {
		return nil, reject(events.CodeNotCustodian, "a shipment is offered or withdrawn by its sender (%s), not %s", sh.From, p.Partner)
	}
	if p.Kind == events.KindShipmentAccepted && sh.To != p.Partner {
		return nil, reject(events.CodeNotRecipient, "a shipment is accepted by its recipient (%s), not %s", sh.To, p.Partner)
	}
	digest := s.DigestHex()
	items := s.Manifest.Items()
	type part struct {
		id   string
		dev  *Device
		next func(uint64) *Device
	}
	parts := make([]part, 0, len(items))
	var (
		firstRefusal           *RuleError
		firstRefused           string
		refused, repeats, eqvs int
		firstEquivocation      *RuleError
	)
	for _, it := range items {
		dev, err := b.device(it.Device)
		if err != nil {
			return nil, err
		}
		if dev == nil {
			refused++
			if firstRefusal == nil {
				firstRefusal, firstRefused = reject(events.CodeUnknownDevice, "device %s has no tpm.manufactured record", it.Device), it.Device
			}
			continue
		}
		r, rerr := shipmentDeviceRule(p, digest, signer, dev, b.partner)
		switch {
		case rerr != nil && rerr.Code == events.CodeAlreadyExists:
			repeats++
			parts = append(parts, part{id: it.Device, dev: dev})
		case rerr != nil:
			refused++
			if firstRefusal == nil {
				firstRefusal, firstRefused = rerr, it.Device
			}
		case r.logged != nil && r.logged.Code == events.CodeEquivocation:
			eqvs++
			if firstEquivocation == nil {
				firstEquivocation = r.logged
			}
			parts = append(parts, part{id: it.Device, dev: dev})
		case r.logged != nil:
			return nil, fmt.Errorf("ledger: unexpected ruling %s for a shipment", r.logged.Code)
		default:
			parts = append(parts, part{id: it.Device, dev: dev, next: r.next})
		}
	}
	n := len(items)
	switch {
	case refused > 0:
		return nil, reject(firstRefusal.Code, "shipment %s: %d of its %d devices break the custody rules; nothing moved. Device %s: %s", sh.ID, refused, n, firstRefused, firstRefusal.Reason)
	case eqvs > 0:
		// A double-sold pallet: every device in it is flagged.
		v.evidence = true
		v.apply = func(idx uint64) {
			for _, pt := range parts {
				b.devices[pt.id] = shipmentFlag(pt.dev, p.Partner, idx)
			}
		}
		return v, reject(events.CodeEquivocation, "shipment %s: %d of its %d devices are pending in another hand-off: double sale; every device of the shipment is flagged. First: %s", sh.ID, eqvs, n, firstEquivocation.Reason)
	case repeats == n:
		return nil, reject(events.CodeAlreadyExists, "shipment %s: every one of its %d devices is already in this state (a retry of a logged shipment event)", sh.ID, n)
	case repeats > 0:
		return nil, reject(events.CodeAlreadyExists, "shipment %s: %d of its %d devices are already in this state; nothing moved: send the others in a shipment of their own", sh.ID, repeats, n)
	}
	v.apply = func(idx uint64) {
		for _, pt := range parts {
			b.devices[pt.id] = pt.next(idx)
		}
	}
	return v, nil
}
