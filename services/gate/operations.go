package gate

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"time"

	"github.com/custodyledger/custody/services/gate/gatewire"
)

// operation is a decided registration, pollable by the device that ran it.
type operation struct {
	regID   string
	auth    [32]byte // SHA-256 of the Authorization header that started it
	out     *gatewire.Outcome
	expires time.Time
}

// remember records a decision and its operation.
func (g *Gate) remember(d *gatewire.Decision, out *gatewire.Outcome, authorization string) {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.decisions = append(g.decisions, d)
	if len(g.decisions) > maxDecisions {
		g.decisions = dropFront(g.decisions, len(g.decisions)-maxDecisions)
	}
	g.ops[out.OperationID] = &operation{
		regID: d.RegistrationID, auth: sha256.Sum256([]byte(authorization)), out: out,
		expires: now.Add(g.cfg.OperationTTL),
	}
	g.opOrder = append(g.opOrder, out.OperationID)
	// Drop expired operations from the front, and the oldest beyond the cap.
	for len(g.opOrder) > 0 {
		op := g.ops[g.opOrder[0]]
		if op != nil && now.Before(op.expires) && len(g.opOrder) <= maxOperations {
			break
		}
		delete(g.ops, g.opOrder[0])
		g.opOrder = g.opOrder[1:]
	}
}

func dropFront[T any](s []T, n int) []T {
	return append(s[:0:0], s[n:]...)
}

// Operation returns a registration operation (DPS's operation status
// lookup). The caller must present the Authorization header that started
// it; an unknown, expired or foreign operation is ErrNotFound, so an
// operation ID reveals nothing to anybody else.
func (g *Gate) Operation(idScope, regID, opID, authorization string) (*gatewire.Outcome, error) {
	if idScope != g.cfg.IDScope {
		return nil, fmt.Errorf("%w: ID scope %q is not served by this gate", ErrBadRequest, idScope)
	}
	h := sha256.Sum256([]byte(authorization))
	g.mu.Lock()
	op := g.ops[opID]
	g.mu.Unlock()
	if op == nil || op.regID != regID || g.cfg.Now().After(op.expires) || subtle.ConstantTimeCompare(h[:], op.auth[:]) != 1 {
		return nil, ErrNotFound
	}
	return op.out, nil
}
