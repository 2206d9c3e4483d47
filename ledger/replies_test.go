package ledger_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/ledger"
)

// TestRepliesOnlyIntoInboxes: a requester chooses the reply subject of its
// status and query requests, and the ledger's connection may publish
// anywhere. Requests whose reply subject is not an inbox (another
// partner's event subject, a KV key, any other subject) get no answer, so
// nothing is written there in the ledger's name; requests from an inbox
// are answered, and a status answer echoes only a validated digest.
func TestRepliesOnlyIntoInboxes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tl := newTestLedger(t, ctx, nil, 0)
	l, nc := tl.l, tl.nc
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Ready once every service asked below answers from an inbox.
	for _, subj := range []string{events.StatusSubject, ledger.MicroSubjectPrefix + ".checkpoint", ledger.MicroSubjectPrefix + ".event"} {
		for deadline := time.Now().Add(30 * time.Second); ; {
			if _, err := nc.Request(subj, []byte(strings.Repeat("0", 64)), 200*time.Millisecond); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("%s: %v", subj, err)
			}
		}
	}

	hostile := []string{
		events.EventSubject("nova-oem", strings.Repeat("7", 64)), // into another partner's events (and the stream)
		// Into the checkpoint bucket. Not its key "latest": the ledger
		// writes its own checkpoint there, the same note a hostile
		// checkpoint query would write.
		"$KV." + ledger.CheckpointBucket + ".hijacked",
		"custody.v1.hijack",
		"_INBOX",        // the bare namespace
		"_INBOXX.a",     // not the namespace
		"_INBOX_.a",     // no user
		"_INBOX_Nova.a", // not a partner name
	}
	spy, err := nc.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	digest := strings.Repeat("ab", 32)
	for _, reply := range hostile {
		for _, subj := range []string{events.StatusSubject, ledger.MicroSubjectPrefix + ".checkpoint", ledger.MicroSubjectPrefix + ".event"} {
			if err := nc.PublishRequest(subj, reply, []byte(digest)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Requests from an inbox are answered. Each endpoint answers its
	// requests in order, so once these answers are in, the hostile requests
	// before them were handled too.
	ask := func(subj, data string) *nats.Msg {
		t.Helper()
		m, err := nc.Request(subj, []byte(data), 10*time.Second)
		if err != nil {
			t.Fatalf("%s from an inbox: %v", subj, err)
		}
		return m
	}
	var r events.Receipt
	if err := json.Unmarshal(ask(events.StatusSubject, digest).Data, &r); err != nil || r.Digest != digest || r.Status != events.StatusUnknown {
		t.Fatalf("status of an unknown digest: %+v %v", r, err)
	}
	junk := strings.Repeat("<script>", 1000)
	r = events.Receipt{}
	if err := json.Unmarshal(ask(events.StatusSubject, junk).Data, &r); err != nil || r.Digest != "" || strings.Contains(r.Reason, "<script>") || r.Reason == "" {
		t.Fatalf("status of junk echoes it or says nothing: %+v %v", r, err)
	}
	if m := ask(ledger.MicroSubjectPrefix+".checkpoint", ""); len(m.Data) == 0 {
		t.Fatal("no checkpoint from an inbox")
	}
	_ = ask(ledger.MicroSubjectPrefix+".event", digest)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := spy.NextMsg(0)
		if err != nil {
			break
		}
		for _, h := range hostile {
			if m.Subject == h {
				t.Errorf("the ledger answered onto %s: %q", h, m.Data)
			}
		}
	}
}

// TestIsInbox: the reply subjects the ledger answers into.
func TestIsInbox(t *testing.T) {
	for subj, want := range map[string]bool{
		"_INBOX.abc.def":                       true,
		events.InboxPrefix("acme-tpm") + ".x1": true,
		"_INBOX_custody-ledger.x":              true,
		"_INBOX":                               false,
		"_INBOX.":                              false,
		"_INBOX_acme-tpm":                      false,
		"_INBOX_acme-tpm.":                     false,
		"_INBOX_ACME.x":                        false,
		"_INBOX.a.>":                           false,
		"custody.v1.events.a.b":                false,
		"$KV.CUSTODY_CHECKPOINTS.latest":       false,
		"":                                     false,
	} {
		if got := events.IsInbox(subj); got != want {
			t.Errorf("IsInbox(%q) = %v, want %v", subj, got, want)
		}
	}
	for subj, want := range map[string]string{
		events.InboxPrefix("acme-tpm") + ".x1": "acme-tpm",
		"_INBOX.abc.def":                       "",
		"_INBOX_acme-tpm":                      "",
		"_INBOX_acme-tpm.":                     "",
		"_INBOX_ACME.x":                        "",
		"custody.v1.events.a.b":                "",
	} {
		if got := events.InboxOwner(subj); got != want {
			t.Errorf("InboxOwner(%q) = %q, want %q", subj, got, want)
		}
	}
}
