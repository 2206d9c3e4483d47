package ledger

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/natstest"
)

// openStream updates a stream whose configuration differs in what the
// ledger sets, and returns one as wanted as it is.
func TestOpenStream(t *testing.T) {
	ctx := t.Context()
	js, err := jetstream.New(natstest.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	want := events.StreamConfig(1)
	old := want
	old.MaxAge = time.Hour
	if _, err := js.CreateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	st, err := openStream(ctx, js, want)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxAge; got != want.MaxAge {
		t.Fatalf("a stream of another MaxAge kept %s, want %s", got, want.MaxAge)
	}
	created := st.CachedInfo().Created
	st, err = openStream(ctx, js, want)
	if err != nil {
		t.Fatal(err)
	}
	if st.CachedInfo().Config.MaxAge != want.MaxAge || !st.CachedInfo().Created.Equal(created) {
		t.Fatalf("the stream as wanted changed: %+v", st.CachedInfo())
	}
}
