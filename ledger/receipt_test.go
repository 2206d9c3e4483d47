package ledger

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/custodyledger/custody/events"
)

// receiptFixture is a ledger in memory that has logged seven partner
// registrations in two batches, and the receipts it answered them with.
type receiptFixture struct {
	f        *registryFixture
	signed   []*events.Signed
	receipts []*events.Receipt
	refused  *events.Signed  // a registration repeated with a new event ID
	rejected *events.Receipt // the ledger's answer to it
	v        *ReceiptVerifier
}

func newReceiptFixture(t *testing.T) *receiptFixture {
	t.Helper()
	f := newRegistryFixture(t)
	x := &receiptFixture{f: f}
	var (
		msgs [][2][]byte
		err  error
	)
	for _, name := range []string{"orbit-odm", "nova-oem", "delta-ems", "acme-ems", "vega-odm", "lyra-oem", "ursa-ems"} {
		p := f.newPartner(f.ca, name, events.RoleEMS)
		f.partners[name] = p
		m := f.msg(f.registryEvent(events.KindPartnerRegistered, p, ""), f.ca.Key, events.ConsortiumPartner, "")
		s, err := events.Open(m[1])
		if err != nil {
			t.Fatal(err)
		}
		msgs, x.signed = append(msgs, m), append(x.signed, s)
	}
	x.receipts = append(f.m.Feed(msgs[:3]...), f.m.Feed(msgs[3:]...)...)
	for i, r := range x.receipts {
		if r == nil || r.Status != events.StatusAccepted {
			t.Fatalf("registration %d: %+v", i, r)
		}
	}
	again := f.msg(f.registryEvent(events.KindPartnerRegistered, f.partners["orbit-odm"], ""), f.ca.Key, events.ConsortiumPartner, "")
	if x.rejected = f.m.Feed(again)[0]; x.rejected == nil || x.rejected.Status != events.StatusRejected {
		t.Fatalf("repeated registration: %+v", x.rejected)
	}
	if x.refused, err = events.Open(again[1]); err != nil {
		t.Fatal(err)
	}
	if x.v, err = NewReceiptVerifier(f.m.l.cfg.LogKey.Public, f.ca.Cert.Raw); err != nil {
		t.Fatal(err)
	}
	return x
}

// clone is a deep copy of a receipt, to tamper with.
func clone(r *events.Receipt) *events.Receipt {
	c := *r
	c.RootHash = bytes.Clone(r.RootHash)
	c.Hashes = make([][]byte, len(r.Hashes))
	for i, h := range r.Hashes {
		c.Hashes[i] = bytes.Clone(h)
	}
	return &c
}

// otherLog is a log key the publisher does not trust.
func otherLog(t *testing.T) *LogKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewLogKey("custody.test", key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A publisher accepts the receipts a real ledger answers with, and refuses
// each one tampered with, naming the rule it broke: the digest, the status,
// the checkpoint's signature, its tree size and root, the inclusion proof.
func TestReceiptVerifies(t *testing.T) {
	x := newReceiptFixture(t)
	const at = 4 // logged in the second batch: its proof has hashes from both
	good, signed := x.receipts[at], x.signed[at]
	if len(good.Hashes) < 2 || good.TreeSize != 7 {
		t.Fatalf("receipt %+v: want a proof of several hashes in a tree of 7", good)
	}
	for i, r := range x.receipts {
		if err := events.VerifyReceipt(x.signed[i], r, x.v); err != nil {
			t.Fatalf("the ledger's receipt of event %d: %v", i, err)
		}
	}
	sign := func(k *LogKey, size uint64, root []byte) string {
		cp, err := k.SignCheckpoint(context.Background(), size, root)
		if err != nil {
			t.Fatal(err)
		}
		return string(cp)
	}
	realKey := x.f.m.l.cfg.LogKey
	earlier := x.receipts[1] // a real receipt of the first batch (tree of 3)
	for _, tc := range []struct {
		name   string
		tamper func(r *events.Receipt)
		want   error
	}{
		{"another event's digest", func(r *events.Receipt) { r.Digest = x.signed[0].DigestHex() }, events.ErrReceiptDigest},
		{"no digest", func(r *events.Receipt) { r.Digest = "" }, events.ErrReceiptDigest},
		{"a status the ledger does not answer with", func(r *events.Receipt) { r.Status = "logged" }, events.ErrReceiptStatus},
		{"a proof hash changed", func(r *events.Receipt) { r.Hashes[1][0] ^= 1 }, events.ErrReceiptProof},
		{"a proof hash left out", func(r *events.Receipt) { r.Hashes = r.Hashes[:len(r.Hashes)-1] }, events.ErrReceiptProof},
		{"no proof", func(r *events.Receipt) { r.Hashes = nil }, events.ErrReceiptProof},
		{"another log index", func(r *events.Receipt) { r.LogIndex = 5 }, events.ErrReceiptProof},
		{"the root changed", func(r *events.Receipt) { r.RootHash[0] ^= 1 }, events.ErrReceiptTree},
		{"the tree size changed", func(r *events.Receipt) { r.TreeSize = 8 }, events.ErrReceiptTree},
		{"an earlier signed tree's size and root", func(r *events.Receipt) { r.TreeSize, r.RootHash = earlier.TreeSize, earlier.RootHash }, events.ErrReceiptTree},
		{"an earlier checkpoint", func(r *events.Receipt) { r.Checkpoint = earlier.Checkpoint }, events.ErrReceiptTree},
		{"the checkpoint's signature changed", func(r *events.Receipt) {
			// "— <name> <base64(key hint ‖ signature)>\n": flip a bit of
			// the signature, past the 4-byte key hint.
			line := strings.TrimSuffix(r.Checkpoint, "\n")
			i := strings.LastIndexByte(line, ' ')
			sig, err := base64.StdEncoding.DecodeString(line[i+1:])
			if err != nil || len(sig) < 12 {
				t.Fatalf("checkpoint signature line %q: %v", line[i+1:], err)
			}
			sig[10] ^= 1
			r.Checkpoint = line[:i+1] + base64.StdEncoding.EncodeToString(sig) + "\n"
		}, events.ErrReceiptCheckpoint},
		{"the checkpoint's size edited to match", func(r *events.Receipt) {
			r.TreeSize = 8
			r.Checkpoint = strings.Replace(r.Checkpoint, "\n7\n", "\n8\n", 1)
		}, events.ErrReceiptCheckpoint},
		{"no checkpoint", func(r *events.Receipt) { r.Checkpoint = "" }, events.ErrReceiptCheckpoint},
		{"the same tree signed by another log's key", func(r *events.Receipt) {
			r.Checkpoint = sign(otherLog(t), r.TreeSize, r.RootHash)
		}, events.ErrReceiptCheckpoint},
		{"a tree of the event alone, signed by another log's key", func(r *events.Receipt) {
			body, _ := HashedRekordBody(signed.Digest[:], signed.Signature, x.f.ca.Cert.Raw)
			r.LogIndex, r.TreeSize, r.RootHash, r.Hashes = 0, 1, LeafHash(body), nil
			r.Checkpoint = sign(otherLog(t), 1, r.RootHash)
		}, events.ErrReceiptCheckpoint},
		{"a tree without the event, signed by the log's key", func(r *events.Receipt) {
			// What a ledger holding its key could claim for an event it
			// never logged: a real signed tree, a made-up path into it.
			r.LogIndex, r.TreeSize, r.RootHash = earlier.LogIndex, earlier.TreeSize, earlier.RootHash
			r.Hashes, r.Checkpoint = earlier.Hashes, sign(realKey, earlier.TreeSize, earlier.RootHash)
		}, events.ErrReceiptProof},
		{"another event's receipt, relabelled", func(r *events.Receipt) {
			*r = *clone(x.receipts[at-1])
			r.Digest = signed.DigestHex()
		}, events.ErrReceiptProof},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := clone(good)
			tc.tamper(r)
			err := events.VerifyReceipt(signed, r, x.v)
			var bad *events.BadReceiptError
			if !errors.Is(err, tc.want) || !errors.Is(err, events.ErrBadReceipt) || !errors.As(err, &bad) || bad.Digest != signed.DigestHex() {
				t.Fatalf("VerifyReceipt = %v, want a BadReceiptError naming %q", err, tc.want)
			}
			t.Log(err)
			for _, other := range []error{events.ErrReceiptDigest, events.ErrReceiptStatus, events.ErrReceiptCheckpoint, events.ErrReceiptTree, events.ErrReceiptProof} {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("VerifyReceipt = %v: names %q too", err, other)
				}
			}
		})
	}
	// The receipt proves this event signed with this certificate: a
	// verifier for another signer's leaves refuses it.
	p := x.f.partners["orbit-odm"]
	other, err := NewReceiptVerifier(realKey.Public, p.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.VerifyReceipt(signed, good, other); !errors.Is(err, events.ErrReceiptProof) {
		t.Fatalf("a receipt checked against another signer's certificate: %v", err)
	}
	// A verifier that trusts another log refuses every real receipt.
	foreign, err := NewReceiptVerifier(otherLog(t).Public, x.f.ca.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := events.VerifyReceipt(signed, good, foreign); !errors.Is(err, events.ErrReceiptCheckpoint) {
		t.Fatalf("a receipt checked against another log's key: %v", err)
	}
}

// A rejection carries no proof: a publisher checks it answers its event.
func TestReceiptRejectionChecksTheDigest(t *testing.T) {
	x := newReceiptFixture(t)
	if err := events.VerifyReceipt(x.refused, x.rejected, x.v); err != nil {
		t.Fatalf("the ledger's rejection: %v", err)
	}
	for name, s := range map[string]*events.Signed{"another event's rejection": x.signed[0]} {
		if err := events.VerifyReceipt(s, x.rejected, x.v); !errors.Is(err, events.ErrReceiptDigest) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	r := clone(x.rejected)
	r.Digest = strings.ToUpper(r.Digest)
	if err := events.VerifyReceipt(x.refused, r, x.v); !errors.Is(err, events.ErrReceiptDigest) {
		t.Fatalf("a rejection naming the digest in upper case: %v", err)
	}
}

func TestNewReceiptVerifierValidates(t *testing.T) {
	x := newReceiptFixture(t)
	p256 := x.f.m.l.cfg.LogKey.Public
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, tc := range map[string]struct {
		key  *ecdsa.PublicKey
		cert []byte
	}{
		"no log key":        {nil, x.f.ca.Cert.Raw},
		"a P-384 log key":   {&p384.PublicKey, x.f.ca.Cert.Raw},
		"no certificate":    {p256, nil},
		"not a certificate": {p256, []byte("not DER")},
	} {
		if _, err := NewReceiptVerifier(tc.key, tc.cert); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
