package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/clitest"
	"github.com/custodyledger/custody/ledger"
	"github.com/custodyledger/custody/services/node"
	"github.com/custodyledger/custody/services/pki"
)

// ledgerConn connects to custodyd's NATS as the ledger's own user (its seed
// is in the PKI folder), to hold and release the ledger's consumer and to
// ask the status of events.
type ledgerConn struct {
	nc     *nats.Conn
	stream jetstream.Stream
}

func dialLedger(t *testing.T, d *clitest.Custodyd) *ledgerConn {
	t.Helper()
	p, err := pki.LoadDemo(filepath.Join(d.Data, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := p.NKey(node.LedgerUser)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(d.NATS, append(node.UserOptions(node.LedgerUser, kp), node.NATSTLS(p))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	return &ledgerConn{nc: nc, stream: stream}
}

// hold pauses the ledger's consumer: events reach the stream and wait
// there, unanswered, as they would while the ledger is down or behind.
func (l *ledgerConn) hold(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.stream.PauseConsumer(ctx, ledger.ConsumerName, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// release resumes the ledger's consumer.
func (l *ledgerConn) release(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.stream.ResumeConsumer(ctx, ledger.ConsumerName); err != nil {
		t.Fatal(err)
	}
}

// messages is how many events the stream holds.
func (l *ledgerConn) messages(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// status asks the ledger what became of the event with this digest.
func (l *ledgerConn) status(t *testing.T, digest string) *events.Receipt {
	t.Helper()
	m, err := l.nc.Request(events.StatusSubject, []byte(digest), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r events.Receipt
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

// logSize is the ledger's tree size, from its checkpoint note.
func logSize(t *testing.T, d *clitest.Custodyd) string {
	t.Helper()
	resp, err := d.Client(t, "").Get(d.HTTP + "/ledger/v1/log/checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	lines := strings.Split(b.String(), "\n")
	if resp.StatusCode != http.StatusOK || len(lines) < 2 {
		t.Fatalf("checkpoint: %s %q", resp.Status, b.String())
	}
	return lines[1]
}

// outboxDigests lists the events waiting in an outbox folder.
func outboxDigests(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if d, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(d, ".") {
			out = append(out, d)
		}
	}
	return out
}

// poll waits until cond holds (at most a minute).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

// manufactureInBackground asks a station for a device's birth record; the
// request waits for the ledger's answer, which the test may never let come.
func manufactureInBackground(hc *http.Client, stationURL, agent string) {
	go func() {
		body := fmt.Sprintf(`{"agent":%q}`, agent)
		resp, err := hc.Post(stationURL+"/v1/manufacture", "application/json", strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
		}
	}()
}

// pendingEvent leaves one real event behind in outbox: published, held in
// the stream, never answered. It returns the event's digest.
func pendingEvent(t *testing.T, l *ledgerConn, hc *http.Client, stationURL, agent, outbox string) string {
	t.Helper()
	l.hold(t)
	before := l.messages(t)
	manufactureInBackground(hc, stationURL, agent)
	var digests []string
	poll(t, "the event is in the outbox and in the stream", func() bool {
		digests = outboxDigests(t, outbox)
		return len(digests) == 1 && l.messages(t) > before
	})
	if r := l.status(t, digests[0]); r.Status != events.StatusUnknown {
		t.Fatalf("the held ledger answered the event already: %+v", r)
	}
	return digests[0]
}

// TestRestartWithPendingEvent: custodyd and a standalone station killed
// after publishing an event and before the ledger answered it start again
// with the event in their outbox, serve at once, and re-send it until the
// ledger logs it, once.
func TestRestartWithPendingEvent(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	d := clitest.StartCustodyd(t, data)
	l := dialLedger(t, d)

	// custodyd's own station.
	{
		agent := clitest.StartAgent(t, t.TempDir(), filepath.Join(data, "pki"), 71)
		outbox := filepath.Join(data, "outbox", "acme-tpm")
		digest := pendingEvent(t, l, d.Client(t, "acme-tpm"), d.HTTP+"/stations/acme-tpm", agent, outbox)
		d.Kill()

		// Before the fix the restart failed on every start: "re-sending …:
		// subscribing to the ledger's answers: nats: context requires a
		// deadline".
		d = clitest.StartCustodyd(t, data)
		l = dialLedger(t, d)
		poll(t, "the outbox is empty", func() bool { return len(outboxDigests(t, outbox)) == 0 })
		r := l.status(t, digest)
		if r.Status != events.StatusAccepted {
			t.Fatalf("recovered event: %+v, want accepted", r)
		}
		size := logSize(t, d)

		// Another restart re-sends nothing and logs nothing twice.
		d.Stop(t)
		d = clitest.StartCustodyd(t, data)
		l = dialLedger(t, d)
		if got := logSize(t, d); got != size {
			t.Fatalf("log size %s after a clean restart, was %s", got, size)
		}
		if again := l.status(t, digest); again.LogIndex != r.LogIndex {
			t.Fatalf("event at #%d after restart, was #%d", again.LogIndex, r.LogIndex)
		}
	}

	// A standalone station, as its partner runs it.
	{
		agent := clitest.StartAgent(t, t.TempDir(), filepath.Join(data, "pki"), 72)
		dir := t.TempDir()
		outbox := filepath.Join(dir, "outbox")
		listening := regexp.MustCompile(`station listening.*url=(\S+)`)
		args := []string{"station", "run", "--partner", "acme-tpm", "--pki", filepath.Join(data, "pki"),
			"--nats", d.NATS, "--ledger", d.HTTP + "/ledger", "--listen", "127.0.0.1:0", "--outbox", outbox}
		st := clitest.Start(t, dir, "custody", args...)
		url := st.WaitLine(t, listening, time.Minute)[1]
		digest := pendingEvent(t, l, d.Client(t, "acme-tpm"), url, agent, outbox)
		st.Kill()

		// The ledger is still held: the station must start and serve
		// anyway, with the event still pending.
		st = clitest.Start(t, dir, "custody", args...)
		url = st.WaitLine(t, listening, time.Minute)[1]
		resp, err := d.Client(t, "acme-tpm").Get(url + "/v1/unconfirmed")
		if err != nil {
			t.Fatal(err)
		}
		var un struct{ Unconfirmed []string }
		err = json.NewDecoder(resp.Body).Decode(&un)
		resp.Body.Close()
		if err != nil || len(un.Unconfirmed) != 1 || un.Unconfirmed[0] != digest {
			t.Fatalf("unconfirmed while the ledger is held: %+v %v, want [%s]", un, err, digest)
		}

		l.release(t)
		poll(t, "the station's outbox is empty", func() bool { return len(outboxDigests(t, outbox)) == 0 })
		if r := l.status(t, digest); r.Status != events.StatusAccepted {
			t.Fatalf("recovered event: %+v, want accepted", r)
		}
	}
}
