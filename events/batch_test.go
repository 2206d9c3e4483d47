package events_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/custodyledger/custody/events"
	"github.com/custodyledger/custody/internal/eventtest"
)

func batchMembers(partner string, n int) []*events.Statement {
	out := make([]*events.Statement, n)
	for i := range out {
		out[i] = eventtest.UnquotedStage(partner, fmt.Sprintf("%064x", i+1), events.StageTestPassed, events.NewEventID())
	}
	return out
}

// A batch opens from its parcel with every member, each member verifies
// with the batch's signature and its own proof, and each member's digest is
// what it would be in an envelope of its own.
func TestBatchRoundTrip(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ms := batchMembers("acme-odm", 5)
	b, err := events.SignBatch(context.Background(), "line-7", ms, key, "acme-odm")
	if err != nil {
		t.Fatal(err)
	}
	got, err := events.OpenMessage(b.Parcel)
	if err != nil {
		t.Fatal(err)
	}
	if got.Statement.Target() != "batch-line-7" || len(got.Members) != 5 || got.Digest != b.Digest {
		t.Fatalf("opened batch: target %s, %d members", got.Statement.Target(), len(got.Members))
	}
	if err := got.Verify(&key.PublicKey); err != nil {
		t.Fatal(err)
	}
	proofs, err := got.MemberProofs()
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range got.Members {
		if err := m.Verify(&key.PublicKey); err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		if err := m.Verify(&other.PublicKey); !errors.Is(err, events.ErrBadSignature) {
			t.Fatalf("member %d verified with another key: %v", i, err)
		}
		own, err := events.Sign(context.Background(), ms[i], key, "acme-odm")
		if err != nil {
			t.Fatal(err)
		}
		alone, err := events.Open(own)
		if err != nil {
			t.Fatal(err)
		}
		if alone.Digest != m.Digest {
			t.Fatalf("member %d: digest differs from its own envelope's", i)
		}
		pm, err := proofs[i].Verify(got.Statement.BatchRoot())
		if err != nil {
			t.Fatalf("member %d proof: %v", i, err)
		}
		if pm.Digest != m.Digest || pm.Statement.Device() != ms[i].Device() {
			t.Fatalf("member %d proof opens another member", i)
		}
		if _, err := proofs[(i+1)%5].Verify(got.Statement.BatchRoot()); err != nil {
			t.Fatal(err)
		}
		bad := *proofs[i]
		bad.Position = uint64((i + 1) % 5)
		if _, err := bad.Verify(got.Statement.BatchRoot()); err == nil {
			t.Fatalf("member %d proof verified at another position", i)
		}
	}
}

// What a batch refuses: members that do not hash to the signed root
// (ErrManifest, with the batch opened so the refusal names it), and
// malformed members.
func TestBatchRefusals(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, err := events.SignBatch(context.Background(), "b1", batchMembers("acme-odm", 3), key, "acme-odm")
	if err != nil {
		t.Fatal(err)
	}
	var p events.Parcel
	if err := json.Unmarshal(b.Parcel, &p); err != nil {
		t.Fatal(err)
	}
	reparcel := func(members []string) []byte {
		q := p
		q.Members = members
		raw, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	// A member taken out, or swapped for another.
	for name, members := range map[string][]string{
		"dropped": p.Members[:2],
		"swapped": {p.Members[1], p.Members[0], p.Members[2]},
	} {
		s, err := events.OpenMessage(reparcel(members))
		if !errors.Is(err, events.ErrManifest) || s == nil || s.Digest != b.Digest {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Members that cannot be in a batch.
	same := batchMembers("acme-odm", 2)
	same[1] = eventtest.UnquotedStage("acme-odm", same[0].Device(), events.StageAssembly, events.NewEventID())
	other := batchMembers("acme-odm", 2)
	other[1] = eventtest.UnquotedStage("acme-oem", other[1].Device(), events.StageAssembly, events.NewEventID())
	reg := events.NewPartnerStatement(events.KindPartnerRegistered, events.PartnerInfo{Name: "x-y"}, strings.Repeat("ab", 32), time.Now(), events.NewEventID())
	for name, c := range map[string]struct {
		ms   []*events.Statement
		want string
	}{
		"two events about one device": {same, "both about"},
		"another partner's event":     {other, "is by acme-oem"},
		"a registry event":            {[]*events.Statement{reg}, "cannot be a batch member"},
	} {
		if _, err := events.SignBatch(context.Background(), "b2", c.ms, key, "acme-odm"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	// A batch envelope alone, without its members.
	if _, err := events.OpenMessage(p.Envelope); !errors.Is(err, events.ErrMalformed) {
		t.Errorf("bare batch envelope: %v", err)
	}
}

// FuzzDecodeBatchParcel holds the batch parcel's fast decoding to
// encoding/json's decoding into a Parcel: where it decodes, the envelope
// and every member's base64 decoding are the same (or no base64 in both).
func FuzzDecodeBatchParcel(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := events.SignBatch(context.Background(), "f1", batchMembers("acme-odm", 2), key, "acme-odm")
	f.Add(b.Parcel)
	f.Add([]byte(`{"envelope":{"a":"}"},"members":["x","y"]}`))
	f.Add([]byte(`{"envelope":{"a":"\"}"},"members":["x"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := events.DecodeBatchParcelForTest(data)
		if !ok {
			return
		}
		var slow events.Parcel
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&slow); err != nil || dec.More() {
			// encoding/json refuses what the fast path took: only an
			// envelope or member Open refuses next is acceptable.
			if _, err := events.Open(fast.Envelope); err == nil {
				for _, m := range fast.Members {
					if _, err := base64.StdEncoding.DecodeString(m); err != nil {
						return
					}
				}
				t.Fatalf("the fast path took a parcel encoding/json refuses (%v) and whose envelope and members decode", err)
			}
			return
		}
		if !bytes.Equal(fast.Envelope, slow.Envelope) || slow.Manifest != nil || len(fast.Members) != len(slow.Members) {
			t.Fatalf("fast %q %d members, slow %q %d members", fast.Envelope, len(fast.Members), slow.Envelope, len(slow.Members))
		}
		for i := range fast.Members {
			// The same member, or no base64 in either reading.
			f, ferr := base64.StdEncoding.DecodeString(fast.Members[i])
			s, serr := base64.StdEncoding.DecodeString(slow.Members[i])
			if (ferr == nil) != (serr == nil) || !bytes.Equal(f, s) {
				t.Fatalf("member %d: %q, %q", i, fast.Members[i], slow.Members[i])
			}
		}
	})
}
