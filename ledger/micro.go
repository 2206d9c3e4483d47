package ledger

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/nats-io/nats.go/micro"

	"github.com/custodyledger/custody/events"
)

// MicroSubjectPrefix is where the ledger's query service listens:
// custody.v1.ledger.<endpoint>.
const MicroSubjectPrefix = events.LedgerAPIPrefix

// AddMicroService serves the read API as a NATS micro service (discoverable
// with `nats micro ls`), with the same answers as the HTTP API:
//
//	custody.v1.ledger.checkpoint    ""            the latest signed checkpoint
//	custody.v1.ledger.provenance    device ID     Provenance (entries with proofs; partners only)
//	custody.v1.ledger.entry         log index     one entry with its inclusion proof
//	                                              (its envelope only for a reader with a right to it)
//	custody.v1.ledger.consistency   {"first","second"}  consistency proof
//	custody.v1.ledger.shipment      digest (hex)  a shipment offer and its manifest
//	                                              (its sender and recipient only)
//	custody.v1.ledger.event         digest (hex)  a publisher's receipt or rejection
//	                                              (that publisher only)
//
// Private reads take a read token in the request's Authorization header,
// as on HTTP (see access.go). Errors carry a status code ("400", "401",
// "403", "404", "500") and a sentence.
func (l *Ledger) AddMicroService() (micro.Service, error) {
	svc, err := micro.AddService(l.cfg.NATS, micro.Config{
		Name:        "custody-ledger",
		Version:     "1.0.0",
		Description: "Custody ledger: checkpoints, proofs, provenance",
	})
	if err != nil {
		return nil, err
	}
	g := svc.AddGroup(MicroSubjectPrefix)
	add := func(name string, fn func(micro.Request)) error {
		return g.AddEndpoint(name, micro.HandlerFunc(func(r micro.Request) {
			// The requester chooses the reply subject; the ledger's
			// connection may publish anywhere, so it answers only into
			// an inbox (events.IsInbox), never onto an event subject, a
			// KV key or the checkpoint topic.
			if events.IsInbox(r.Reply()) {
				fn(r)
			}
		}))
	}
	errs := []error{
		add("checkpoint", func(r micro.Request) { _ = r.Respond(l.Head().Checkpoint) }),
		add("provenance", func(r micro.Request) {
			reader, err := l.Authenticate(r.Headers().Get("Authorization"))
			if respondErr(r, err) {
				return
			}
			p, err := l.ProvenanceFor(string(r.Data()), reader)
			if respondErr(r, err) {
				return
			}
			_ = r.RespondJSON(p)
		}),
		add("entry", func(r micro.Request) {
			i, err := strconv.ParseUint(string(r.Data()), 10, 64)
			head := l.Head()
			if err != nil || i >= head.Size {
				_ = r.Error("404", "no entry at that index", nil)
				return
			}
			reader, err := l.Authenticate(r.Headers().Get("Authorization"))
			if respondErr(r, err) {
				return
			}
			pe, err := l.entryFor(i, head.Size, reader)
			if respondErr(r, err) {
				return
			}
			_ = r.RespondJSON(map[string]any{"entry": pe, "treeSize": head.Size, "rootHash": head.Root, "checkpoint": string(head.Checkpoint)})
		}),
		add("consistency", func(r micro.Request) {
			var q struct{ First, Second uint64 }
			if err := json.Unmarshal(r.Data(), &q); err != nil {
				_ = r.Error("400", "want {\"first\": size, \"second\": size}", nil)
				return
			}
			hashes, err := l.ConsistencyProof(q.First, q.Second)
			if err != nil {
				_ = r.Error("400", "no consistency proof between those sizes: need first ≤ second ≤ the tree size", nil)
				return
			}
			_ = r.RespondJSON(map[string]any{"first": q.First, "second": q.Second, "hashes": hashes})
		}),
		// As on HTTP: a shipment offer and its manifest for its sender and
		// recipient only (anyone else, and a digest that is no shipment
		// offer, the same 403); a receipt for its publisher only.
		add("shipment", l.privateByDigest("a shipment offer's digest", func(d []byte, reader string) (any, error) {
			return l.ShipmentFor(d, reader)
		})),
		add("event", l.privateByDigest("an event digest", func(d []byte, reader string) (any, error) {
			return l.EventStatusFor(d, reader)
		})),
	}
	if err := errors.Join(errs...); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

// privateByDigest is a query of the read token's partner (401 without
// one) about the digest (named what) the request carries, answered by
// read.
func (l *Ledger) privateByDigest(what string, read func(digest []byte, reader string) (any, error)) func(micro.Request) {
	return func(r micro.Request) {
		reader, err := l.Authenticate(r.Headers().Get("Authorization"))
		if err == nil && reader == "" {
			err = ErrUnauthenticated
		}
		if respondErr(r, err) {
			return
		}
		d, err := hex.DecodeString(string(r.Data()))
		if err != nil || len(d) != 32 {
			_ = r.Error("400", "the request is "+what+": 64 hex digits", nil)
			return
		}
		v, err := read(d, reader)
		if respondErr(r, err) {
			return
		}
		_ = r.RespondJSON(v)
	}
}

// respondErr answers a failed query; it reports whether it did.
func respondErr(r micro.Request, err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNotFound):
		_ = r.Error("404", "not found", nil)
	case errors.Is(err, ErrUnauthenticated):
		_ = r.Error("401", err.Error(), nil)
	case errors.Is(err, ErrForbidden):
		_ = r.Error("403", forbiddenHistory, nil)
	default:
		_ = r.Error("500", "internal error", nil)
	}
	return true
}
