// Package nodetest holds what tests of a running node share.
package nodetest

import (
	"context"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/services/node"
)

// PublishAs publishes envelope on partner's own NATS connection to n and
// returns the ledger's answer (within 30 s of ctx).
func PublishAs(t testing.TB, ctx context.Context, n *node.Node, partner string, envelope []byte) *events.Receipt {
	t.Helper()
	nc, err := n.Connect(partner)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rv, err := n.ReceiptVerifier(partner)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := events.NewPublisher(nc, partner, rv)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := pub.Publish(pctx, envelope)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
