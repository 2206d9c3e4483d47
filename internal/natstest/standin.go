package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
)

// StandInLedger creates the events stream on nc and calls answer, in its
// own goroutine, with every event published to it, opened (an event that
// does not open fails the test), acking each after answer returns: a
// stand-in for the ledger in tests of publishers. It stops with the test.
func StandInLedger(t testing.TB, ctx context.Context, nc *nats.Conn, answer func(m jetstream.Msg, s *events.Signed)) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(ctx, events.StreamConfig(1))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		s, err := events.Open(m.Data())
		if err != nil {
			t.Error(err)
			return
		}
		answer(m, s)
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}
